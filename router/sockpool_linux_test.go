//go:build linux

package router

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// nodeServer accepts on a fresh 127.0.0.1 listener and hands each
// connection to serve in a goroutine of its own.
func nodeServer(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				serve(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// poolRouter is a Router with a table holding static nodes at addrs.
func poolRouter(t *testing.T, addrs ...string) (*Router, map[string]*balancer.Node) {
	t.Helper()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		if err := table.AddStatic("d.test", a, 1); err != nil {
			t.Fatal(err)
		}
	}
	rt, err := New(Config{Pools: table, ConnectTimeout: time.Second, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	nodes := map[string]*balancer.Node{}
	for _, a := range addrs {
		if nodes[a] = table.Lookup([]byte("d.test")).Node(a); nodes[a] == nil {
			t.Fatal("node not in table")
		}
	}
	return rt, nodes
}

func dialBackend(t *testing.T, rt *Router, n *balancer.Node) *backendConn {
	t.Helper()
	c, err := rt.dial(context.Background(), n)
	if err != nil {
		t.Fatalf("dial %s: %v", n.Address, err)
	}
	return c.(*backendConn)
}

// TestRecycledSocketIsReused: a TCP connection whose exchange ended goes
// back to the pool disconnected: the node sees a reset (no FIN, no
// TIME_WAIT), and the next dial, to another node too, takes the same
// socket, which carries nothing of its former connection.
func TestRecycledSocketIsReused(t *testing.T) {
	reset := make(chan error, 1)
	first := nodeServer(t, func(c net.Conn) {
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err != nil {
			reset <- err
			return
		}
		_, _ = c.Write([]byte("stale bytes the router never reads"))
		_, err := c.Read(b[:])
		reset <- err
	})
	second := nodeServer(t, func(c net.Conn) {
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			_, _ = c.Write([]byte("new:" + string(b[:])))
		}
	})
	rt, nodes := poolRouter(t, first, second)

	c1 := dialBackend(t, rt, nodes[first])
	if _, err := c1.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // let the stale bytes arrive
	s := c1.s
	c1.recycle(time.Now())
	select {
	case err := <-reset:
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("node's read after the recycle = %v; want ECONNRESET", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("node saw nothing after the recycle")
	}
	if got := rt.socks.size(); got != 1 {
		t.Fatalf("pool holds %d sockets after the recycle; want 1", got)
	}

	c2 := dialBackend(t, rt, nodes[second])
	defer c2.Close()
	if c2.s != s {
		t.Fatal("the second dial opened a new socket instead of the pooled one")
	}
	if _, err := c2.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c2)
	if err != nil || string(got) != "new:pong" {
		t.Fatalf("reused socket read %q, %v; want only the new node's answer", got, err)
	}
}

// TestLateCloseLeavesReusedSocket: a Close that comes after the exchange
// recycled its connection (a drain cut or an abort hook that lost the
// race) does nothing to the socket, which by then serves another
// connection.
func TestLateCloseLeavesReusedSocket(t *testing.T) {
	addr := nodeServer(t, func(c net.Conn) {
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			_, _ = c.Write(b[:])
		}
	})
	rt, nodes := poolRouter(t, addr)
	c1 := dialBackend(t, rt, nodes[addr])
	c1.recycle(time.Now())
	c2 := dialBackend(t, rt, nodes[addr])
	defer c2.Close()
	if c2.s != c1.s {
		t.Fatal("socket not reused")
	}
	if err := c1.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.sendAwait([]byte("ping"), time.Now(), time.Now().Add(time.Second)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("sendAwait on the closed connection = %v; want os.ErrClosed", err)
	}
	if n, err := c2.sendAwait([]byte("ping"), time.Now(), time.Now().Add(5*time.Second)); n != 4 || err != nil {
		t.Fatalf("sendAwait on the new connection = %d, %v", n, err)
	}
	var b [4]byte
	if _, err := io.ReadFull(c2, b[:]); err != nil || string(b[:]) != "ping" {
		t.Fatalf("new connection read %q, %v after the old one's late Close", b, err)
	}
}

// TestCloseCutsAndDrops: a Close from another goroutine (drain cut,
// shutdown deadline) ends a read waiting on the node, and the socket is
// closed, not pooled: its owner may still be using it.
func TestCloseCutsAndDrops(t *testing.T) {
	addr := nodeServer(t, func(c net.Conn) { _, _ = io.Copy(io.Discard, c) })
	rt, nodes := poolRouter(t, addr)
	c := dialBackend(t, rt, nodes[addr])
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	time.AfterFunc(50*time.Millisecond, func() { c.Close() })
	start := time.Now()
	if _, err := c.Read(make([]byte, 8)); err == nil {
		t.Fatal("read on a cut connection succeeded")
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cut read returned after %v", d)
	}
	c.recycle(time.Now()) // the owner's release after the cut: a no-op
	if got := rt.socks.size(); got != 0 {
		t.Fatalf("pool holds %d sockets after a cut; want 0", got)
	}
}

// TestShutdownClosesPooledSockets: Shutdown closes the idle sockets and the
// pool keeps none after it.
func TestShutdownClosesPooledSockets(t *testing.T) {
	addr := nodeServer(t, func(c net.Conn) {})
	rt, nodes := poolRouter(t, addr)
	c := dialBackend(t, rt, nodes[addr])
	s := c.s
	c.recycle(time.Now())
	if rt.socks.size() != 1 {
		t.Fatal("socket not pooled")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	if rt.socks.size() != 0 {
		t.Fatal("pooled sockets left after Shutdown")
	}
	if err := s.rc.Control(func(uintptr) {}); err == nil {
		t.Error("pooled socket still open after Shutdown")
	}
	c = dialBackend(t, rt, nodes[addr])
	c.recycle(time.Now())
	if rt.socks.size() != 0 {
		t.Error("a socket recycled after Shutdown was pooled")
	}
}

// TestReusedSocketsUnderChurn: many exchanges at once, each on a socket the
// one before recycled, every node closing after its answer as uwsgi does:
// none fails. (A reused socket once carried the reset's error into its next
// connect, where an epoll scan could see it alone and make the runtime
// poller refuse the next read as "not pollable".)
func TestReusedSocketsUnderChurn(t *testing.T) {
	addr := nodeServer(t, func(c net.Conn) {
		var b [4]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			_, _ = c.Write(b[:])
		}
	})
	rt, nodes := poolRouter(t, addr)
	n := nodes[addr]
	const workers, rounds = 8, 1000
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < rounds; i++ {
				c, err := rt.dial(context.Background(), n)
				if err != nil {
					errs <- err
					return
				}
				bc := c.(*backendConn)
				if _, err := bc.sendAwait([]byte("ping"), time.Now(), time.Now().Add(5*time.Second)); err != nil {
					bc.Close()
					errs <- err
					return
				}
				var b [4]byte
				if _, err := io.ReadFull(bc, b[:]); err != nil {
					bc.Close()
					errs <- err
					return
				}
				if _, err := bc.Read(b[:]); err != io.EOF {
					bc.Close()
					errs <- errors.New("no EOF after the answer")
					return
				}
				bc.recycle(time.Now())
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		if err := <-errs; err != nil {
			t.Fatalf("exchange on a reused socket failed: %v", err)
		}
	}
}

// TestLazyDial: a lazy dial returns before the handshake is known to be
// over; the first sendAwait says when it is not (errNotConnected, nothing
// written), finishConnect waits for it under the connect deadline, and the
// request then goes out whole.
func TestLazyDial(t *testing.T) {
	addr, accept := uwsgitest.Unanswered(t)
	rt, nodes := poolRouter(t, addr)
	start := time.Now()
	c, err := rt.dialNode(context.Background(), nodes[addr], true)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 500*time.Millisecond {
		t.Fatalf("lazy dial took %v: it waited for the handshake", d)
	}
	bc := c.(*backendConn)
	if n, err := bc.sendAwait([]byte("ping"), time.Now(), time.Now().Add(5*time.Second)); n != 0 || err != errNotConnected {
		t.Fatalf("sendAwait during the handshake = %d, %v; want 0, errNotConnected", n, err)
	}
	// The poller refusing the wait before the write (here a deadline
	// already past) is no write either: still errNotConnected, for
	// finishConnect to ask the socket (once it was a "write" of nothing
	// that the caller then retried as a plain write, failing the request
	// where another node could have taken it).
	if n, err := bc.sendAwait([]byte("ping"), time.Now(), time.Now().Add(-time.Second)); n != 0 || err != errNotConnected {
		t.Fatalf("sendAwait with a past deadline during the handshake = %d, %v; want 0, errNotConnected", n, err)
	}
	if err := bc.finishConnect(context.Background(), time.Now().Add(100*time.Millisecond)); !isTimeout(err) {
		t.Fatalf("finishConnect on a node that never answers = %v; want a timeout", err)
	}
	c.Close()

	// Made room: the SYN sent again is answered, the connection works.
	c2, err := rt.dialNode(context.Background(), nodes[addr], true)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	bc = c2.(*backendConn)
	if n, err := bc.sendAwait([]byte("ping"), time.Now(), time.Now().Add(5*time.Second)); n != 0 || err != errNotConnected {
		t.Fatalf("sendAwait during the handshake = %d, %v; want 0, errNotConnected", n, err)
	}
	accept()
	if err := bc.finishConnect(context.Background(), time.Now().Add(10*time.Second)); err != nil {
		t.Fatalf("finishConnect once the node made room: %v", err)
	}
	if n, err := bc.sendAwait([]byte("ping"), time.Now(), time.Now().Add(50*time.Millisecond)); n != 4 || !isTimeout(err) {
		t.Fatalf("sendAwait after the handshake = %d, %v; want all written and a timeout (the node answers nothing)", n, err)
	}
}

// TestLateConnectFailureTriesAnotherNode: a node whose handshake fails only
// at the lazy dial's write (refused: on loopback the reset comes after the
// connect returned; never answered: the connect timeout) costs the request
// nothing: it goes to the other node, and the failed node backs off.
func unanswered(t *testing.T) string {
	addr, _ := uwsgitest.Unanswered(t)
	return addr
}

func TestLateConnectFailureTriesAnotherNode(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := closed.Addr().String()
	closed.Close()
	for _, tc := range []struct{ name, dead string }{{"refused", refused}, {"no answer", unanswered(t)}} {
		t.Run(tc.name, func(t *testing.T) {
			live := startFakeNode(t, okReply("live"))
			r := startRouter(t, Config{ConnectTimeout: 300 * time.Millisecond})
			r.table.AddStatic("late.test", tc.dead, 1)
			r.table.AddStatic("late.test", live.addr(), 1)
			for i := 0; i < 6; i++ {
				resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: late.test\r\n\r\n")
				if resp.StatusCode != 200 || body != "live" {
					t.Fatalf("request %d: %d %q; want 200 from the live node", i, resp.StatusCode, body)
				}
			}
			if n := r.table.Lookup([]byte("late.test")).Node(tc.dead); n == nil || !n.Failing() {
				t.Error("the dead node was never tried, or not marked failed")
			}
		})
	}
}

// TestPooledSocketsExpire: sockets left idle in the pool are closed after
// the idle time, so a router at rest holds no node sockets; one in use
// again meanwhile is kept.
func TestPooledSocketsExpire(t *testing.T) {
	addr := nodeServer(t, func(c net.Conn) {})
	rt, nodes := poolRouter(t, addr)
	rt.socks.mu.Lock()
	rt.socks.idle = 100 * time.Millisecond
	rt.socks.mu.Unlock()
	a, b := dialBackend(t, rt, nodes[addr]), dialBackend(t, rt, nodes[addr])
	sa := a.s
	a.recycle(time.Now())
	b.recycle(time.Now())
	if got := rt.socks.size(); got != 2 {
		t.Fatalf("pool holds %d sockets; want 2", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for rt.socks.size() > 0 {
		if time.Now().After(deadline) {
			t.Fatalf("pool still holds %d sockets 5s after they went idle", rt.socks.size())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := sa.rc.Control(func(uintptr) {}); err == nil {
		t.Error("an expired socket is still open")
	}
	// The pool works on after it emptied.
	c := dialBackend(t, rt, nodes[addr])
	c.recycle(time.Now())
	if rt.socks.size() != 1 {
		t.Fatal("socket not pooled after the pool emptied")
	}
}
