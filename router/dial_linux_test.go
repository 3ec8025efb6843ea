//go:build linux

package router

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// dialRouter is a Router with a table holding one static node at addr.
func dialRouter(t *testing.T, addr string, connect time.Duration) (*Router, *balancer.Node) {
	t.Helper()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	if err := table.AddStatic("d.test", addr, 1); err != nil {
		t.Fatal(err)
	}
	rt, err := New(Config{Pools: table, ConnectTimeout: connect, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	n := table.Lookup([]byte("d.test")).Node(addr)
	if n == nil {
		t.Fatal("node not in table")
	}
	return rt, n
}

// TestDial: the raw dialer reaches IPv4, IPv6 and unix nodes, its
// connections read, write and time out like net.Conns, and failures are
// errors of the right kind.
func TestDial(t *testing.T) {
	// Nodes that echo one read back, then close.
	echo := func(network, addr string) string {
		return uwsgitest.NewNode(t, uwsgitest.Echo(), uwsgitest.WithProto(uwsgitest.Raw), uwsgitest.ListenOn(network, addr)).Addr()
	}
	addrs := []string{echo("tcp", "127.0.0.1:0")}
	if ln6, err := net.Listen("tcp", "[::1]:0"); err == nil { // where the machine has IPv6
		ln6.Close()
		addrs = append(addrs, echo("tcp", "[::1]:0"))
	}
	addrs = append(addrs, echo("unix", filepath.Join(t.TempDir(), "n.sock")))
	addrs = append(addrs, echo("unix", "@fastrouter-dial-test-"+strconv.Itoa(os.Getpid())))

	for _, addr := range addrs {
		rt, n := dialRouter(t, addr, time.Second)
		c, err := rt.dial(context.Background(), n)
		if err != nil {
			t.Fatalf("%s: %v", addr, err)
		}
		if c.RemoteAddr().String() != addr {
			t.Errorf("%s: RemoteAddr %q", addr, c.RemoteAddr())
		}
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatalf("%s: write: %v", addr, err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "ping" {
			t.Fatalf("%s: read %q, %v", addr, b, err)
		}
		// The node closes after its echo: EOF, as on a net.Conn.
		if _, err := c.Read(b[:]); err != io.EOF {
			t.Errorf("%s: read after close: %v; want io.EOF", addr, err)
		}
		c.Close()
	}

	// A read deadline on a silent node is a timeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	rt, n := dialRouter(t, silent.Addr().String(), time.Second)
	c, err := rt.dial(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := c.Read(make([]byte, 1)); !isTimeout(err) {
		t.Errorf("read from a silent node: %v; want a timeout", err)
	}
	c.Close()

	// Refused and missing: errors, not timeouts.
	refused := uwsgitest.Refused(t)
	for _, addr := range []string{refused, filepath.Join(t.TempDir(), "none.sock")} {
		rt, n := dialRouter(t, addr, time.Second)
		if c, err := rt.dial(context.Background(), n); err == nil || isTimeout(err) {
			if c != nil {
				c.Close()
			}
			t.Errorf("%s: %v; want a refusal", addr, err)
		}
	}
}

// TestDialWaitsForHandshake: a connect still in progress when dial first
// asks (its SYN dropped by a full accept queue) completes once the node
// makes room and the SYN is sent again; the dial returns a working
// connection, not an error.
func TestDialWaitsForHandshake(t *testing.T) {
	addr, accept := uwsgitest.Unanswered(t)
	rt, n := dialRouter(t, addr, 10*time.Second)
	// Make room after the dial has found the handshake unfinished; the
	// kernel resends the SYN about a second after the first.
	time.AfterFunc(200*time.Millisecond, accept)
	start := time.Now()
	c, err := rt.dial(context.Background(), n)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Fatalf("connected after %v, before the node made room: the handshake was not pending", d)
	}
	if _, err := c.Write([]byte("x")); err != nil {
		t.Errorf("write on the connection: %v", err)
	}
}

// TestDialTimeout: a node that never answers the SYN costs the connect
// timeout, reported as a timeout; an h2 client going away ends the wait at
// once.
func TestDialTimeout(t *testing.T) {
	addr, _ := uwsgitest.Unanswered(t)
	rt, n := dialRouter(t, addr, 300*time.Millisecond)
	start := time.Now()
	c, err := rt.dial(context.Background(), n)
	if err == nil {
		c.Close()
		t.Fatal("connect to a full listener succeeded")
	}
	if !isTimeout(err) {
		t.Errorf("error %v; want a timeout", err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 5*time.Second {
		t.Errorf("gave up after %v; want the 300ms connect timeout", d)
	}

	rt, n = dialRouter(t, addr, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(100*time.Millisecond, cancel)
	start = time.Now()
	c, err = rt.dial(ctx, n)
	if err == nil {
		c.Close()
		t.Fatal("connect to a full listener succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("client gone, yet the connect waited %v", d)
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("context not canceled")
	}
}

// A TCP node connection closes with a reset (SO_LINGER 0): the node, which
// closed first, keeps no TIME_WAIT socket, and one still reading learns at
// once that the router is gone.
func TestDialClosesWithReset(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	rt, n := dialRouter(t, ln.Addr().String(), time.Second)
	c, err := rt.dial(context.Background(), n)
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := c.Write([]byte("req")); err != nil {
		t.Fatal(err)
	}
	c.Close()
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 8)
	got, err := io.ReadAtLeast(peer, b, 3)
	if got != 3 || string(b[:3]) != "req" {
		t.Fatalf("node read %q, %v; want the request before the reset", b[:got], err)
	}
	if _, err := peer.Read(b); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("node's read after the router closed = %v; want ECONNRESET (a FIN would be io.EOF)", err)
	}
}

// A tunnel (101) whose client sends a burst and leaves while the node is
// not reading yet: the node still gets every byte, then EOF. With the reset
// a dialled connection closes with, the bytes still in the router's send
// buffer would be thrown away.
func TestTunnelDeliversClientBytesAfterClientLeaves(t *testing.T) {
	got := make(chan int64, 1)
	node := uwsgitest.NewNode(t, func(c *uwsgitest.Conn, _ *uwsgitest.Request) {
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n")
		time.Sleep(500 * time.Millisecond) // the client sends all and leaves meanwhile
		n, _ := io.Copy(io.Discard, c)
		got <- n
	}, uwsgitest.Deadline(20*time.Second))
	r := startRouter(t, Config{})
	r.table.AddStatic("u.test", node.Addr(), 1)
	cl := uwsgitest.Dial(t, r.addr)
	cl.Send("GET / HTTP/1.1\r\nHost: u.test\r\nConnection: Upgrade\r\nUpgrade: x\r\n\r\n")
	c := cl.Conn()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if resp, err := http.ReadResponse(cl.Reader(), nil); err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v, %v; want 101", resp, err)
	}
	const sent = 16 << 20
	if _, err := c.Write(make([]byte, sent)); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case n := <-got:
		if n != sent {
			t.Fatalf("node got %d of the %d bytes the client sent before leaving", n, sent)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("node never saw the tunnel end")
	}
}

// TestSendAwait: sendAwait writes the request and returns once the answer
// can be read; a silent node costs the deadline; a request larger than the
// socket takes at once comes back part-written for the caller to finish; a
// node already gone is a write error.
func TestSendAwait(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "unix" {
				addr = filepath.Join(t.TempDir(), "n.sock")
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			nodes := make(chan net.Conn, 4)
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					nodes <- c
				}
			}()
			rt, n := dialRouter(t, ln.Addr().String(), time.Second)
			dial := func() (*backendConn, net.Conn) {
				t.Helper()
				c, err := rt.dial(context.Background(), n)
				if err != nil {
					t.Fatal(err)
				}
				select {
				case nc := <-nodes:
					t.Cleanup(func() { nc.Close(); c.Close() })
					return c.(*backendConn), nc
				case <-time.After(5 * time.Second):
					t.Fatal("node accepted nothing")
				}
				return nil, nil
			}

			// Answered: the answer arrives after the write, even when the node
			// waits a little, and is there to read.
			c, nc := dial()
			go func() {
				var b [4]byte
				_, _ = io.ReadFull(nc, b[:])
				time.Sleep(50 * time.Millisecond)
				_, _ = nc.Write(b[:])
			}()
			start := time.Now()
			if n, err := c.sendAwait([]byte("ping"), time.Now(), time.Now().Add(5*time.Second)); n != 4 || err != nil {
				t.Fatalf("sendAwait = %d, %v", n, err)
			}
			if d := time.Since(start); d < 40*time.Millisecond {
				t.Errorf("returned after %v, before the node answered", d)
			}
			var b [4]byte
			if _, err := io.ReadFull(c, b[:]); err != nil || string(b[:]) != "ping" {
				t.Fatalf("read %q, %v", b, err)
			}

			// Silent: the deadline, reported as a timeout with all written.
			c, _ = dial()
			if n, err := c.sendAwait([]byte("ping"), time.Now(), time.Now().Add(50*time.Millisecond)); n != 4 || !isTimeout(err) {
				t.Errorf("silent node: sendAwait = %d, %v; want 4 and a timeout", n, err)
			}

			// Larger than the socket takes: part written, no error; the rest
			// goes the usual way and the node gets all of it.
			c, nc = dial()
			big := make([]byte, 32<<20)
			got := make(chan int, 1)
			go func() {
				time.Sleep(100 * time.Millisecond) // let the socket buffers fill
				m, _ := io.Copy(io.Discard, io.LimitReader(nc, int64(len(big))))
				got <- int(m)
			}()
			w, err := c.sendAwait(big, time.Now(), time.Now().Add(5*time.Second))
			if w >= len(big) || err != nil {
				t.Fatalf("big request: sendAwait = %d, %v; want a part and no error", w, err)
			}
			_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Write(big[w:]); err != nil {
				t.Fatal(err)
			}
			if m := <-got; m != len(big) {
				t.Errorf("node read %d bytes; want %d", m, len(big))
			}

			// Gone: the node closed and reset; the write fails.
			c, nc = dial()
			if tc, ok := nc.(*net.TCPConn); ok {
				_ = tc.SetLinger(0)
			}
			nc.Close()
			time.Sleep(20 * time.Millisecond)
			var werr error
			for i := 0; i < 3 && werr == nil; i++ { // a unix socket fails at once; TCP after the reset
				if w, err := c.sendAwait([]byte("ping"), time.Now(), time.Now().Add(time.Second)); w < 4 {
					werr = err
				}
			}
			if werr == nil {
				t.Error("writes to a node that is gone did not fail")
			}
		})
	}
}
