package router

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// keepAlive is one client connection sending requests in turn.
type keepAlive struct {
	t  *testing.T
	c  net.Conn
	br *bufio.Reader
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &keepAlive{t: t, c: c, br: bufio.NewReader(c)}
}

// get sends raw (one or more requests) and reads n responses, checking each
// is 200 with body want.
func (k *keepAlive) get(raw string, n int, want string) {
	k.t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(k.c, raw); err != nil {
		k.t.Fatal(err)
	}
	for i := range n {
		resp, err := http.ReadResponse(k.br, nil)
		if err != nil {
			k.t.Fatalf("response %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != want {
			k.t.Fatalf("response %d: %d %q; want 200 %q", i, resp.StatusCode, b, want)
		}
	}
}

// expectEOF waits for the router to close the connection.
func (k *keepAlive) expectEOF(within time.Duration) {
	k.t.Helper()
	_ = k.c.SetDeadline(time.Now().Add(within))
	if n, err := k.br.Read(make([]byte, 1)); err != io.EOF {
		k.t.Fatalf("read = %d, %v; want EOF (connection closed by the router)", n, err)
	}
}

func parkRouter(t *testing.T, cfg Config) (*testRouter, *frontListener) {
	t.Helper()
	n := startFakeNode(t, okReply("hi"))
	r := startRouter(t, cfg)
	r.table.AddStatic("p.test", n.addr(), 1)
	var l *frontListener
	waitFor(t, "the listener", func() bool {
		r.rt.mu.Lock()
		defer r.rt.mu.Unlock()
		if len(r.rt.listeners) == 0 {
			return false
		}
		l = r.rt.listeners[0]
		return true
	})
	return r, l
}

const getP = "GET / HTTP/1.1\r\nHost: p.test\r\n\r\n"

// An idle keep-alive connection leaves fasthttp after parkAfter and is
// served again, on the same connection, when its next request comes; it
// stays counted open throughout.
func TestParkIdleConnection(t *testing.T) {
	r, l := parkRouter(t, Config{})
	k := dialKeepAlive(t, r.addr)
	for round := range 3 {
		k.get(getP, 1, "hi")
		waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
		if got := r.rt.h1Open.Load(); got != 1 {
			t.Fatalf("round %d: open HTTP/1.1 connections while parked = %d; want 1", round, got)
		}
	}
	// A head that arrives in pieces after the park.
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(k.c, getP[:10])
	time.Sleep(50 * time.Millisecond)
	k.get(getP[10:], 1, "hi")
	// Pipelined requests after a park, then one more on the same connection.
	waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
	k.get(getP+getP+getP, 3, "hi")
	k.get(getP, 1, "hi")
	if got := l.parks.Load(); got < 4 {
		t.Errorf("parks = %d; want ≥ 4", got)
	}
	k.c.Close()
	waitFor(t, "the closed connection to be counted closed", func() bool {
		return r.rt.h1Open.Load() == 0 && l.parkedCount() == 0
	})
}

// A connection whose requests come quicker than parkAfter never parks.
func TestBusyConnectionDoesNotPark(t *testing.T) {
	r, l := parkRouter(t, Config{})
	k := dialKeepAlive(t, r.addr)
	for range 12 {
		k.get(getP, 1, "hi")
		time.Sleep(parkAfter / 5)
	}
	if got := l.parks.Load(); got != 0 {
		t.Fatalf("parks = %d; want 0 for a busy connection", got)
	}
}

// The idle timeout (--timeout) still ends a parked connection, and the
// connection is then counted closed.
func TestParkedConnectionIdleTimeout(t *testing.T) {
	r, l := parkRouter(t, Config{Timeout: 700 * time.Millisecond})
	k := dialKeepAlive(t, r.addr)
	start := time.Now()
	k.get(getP, 1, "hi")
	waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
	k.expectEOF(5 * time.Second)
	if d := time.Since(start); d < 600*time.Millisecond {
		t.Errorf("closed after %v; want the 700ms idle timeout", d)
	}
	waitFor(t, "the connection to be counted closed", func() bool {
		return r.rt.h1Open.Load() == 0 && l.parkedCount() == 0
	})
}

// Shutdown closes parked connections after its grace and returns; it does
// not wait for their idle timeout.
func TestShutdownClosesParked(t *testing.T) {
	r, l := parkRouter(t, Config{Timeout: time.Minute})
	k := dialKeepAlive(t, r.addr)
	k.get(getP, 1, "hi")
	waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := r.rt.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > drainGrace+2*time.Second {
		t.Errorf("Shutdown took %v with a parked connection", d)
	}
	k.expectEOF(time.Second)
	if got := r.rt.h1Open.Load(); got != 0 {
		t.Errorf("open connections after Shutdown = %d", got)
	}
}

// Parking works under the wrappers: PROXY header (with the first request in
// the same packet) and --max-conns, whose slot is freed only by the real
// close.
func TestParkUnderProxyAndLimit(t *testing.T) {
	r, l := parkRouter(t, Config{ProxyProtocol: true, MaxConns: 4})
	k := dialKeepAlive(t, r.addr)
	k.get("PROXY TCP4 203.0.113.7 127.0.0.1 4000 80\r\n"+getP, 1, "hi")
	waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
	k.get(getP, 1, "hi")
	if got := l.limit.open.Load(); got != 1 {
		t.Fatalf("--max-conns slots held = %d; want 1", got)
	}
	k.c.Close()
	waitFor(t, "the slot to be freed", func() bool { return l.limit.open.Load() == 0 })
}

// Many connections park and wake concurrently, requests arriving around the
// park boundary included; none is lost.
func TestParkManyConnections(t *testing.T) {
	r, l := parkRouter(t, Config{})
	const n = 40
	ks := make([]*keepAlive, n)
	for i := range ks {
		ks[i] = dialKeepAlive(t, r.addr)
		ks[i].get(getP, 1, "hi")
	}
	waitFor(t, "every connection to park", func() bool { return l.parkedCount() == n })
	for round := range 4 {
		errs := make(chan string, n)
		for i, k := range ks {
			go func() {
				// Stagger around the park boundary.
				time.Sleep(time.Duration(i%8) * parkAfter / 8)
				_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(k.c, getP); err != nil {
					errs <- err.Error()
					return
				}
				resp, err := http.ReadResponse(k.br, nil)
				if err != nil {
					errs <- err.Error()
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "hi" {
					errs <- "body " + string(b)
					return
				}
				errs <- ""
			}()
		}
		var bad []string
		for range n {
			if e := <-errs; e != "" {
				bad = append(bad, e)
			}
		}
		if len(bad) > 0 {
			t.Fatalf("round %d: %d failures: %s", round, len(bad), strings.Join(bad, "; "))
		}
	}
	if got := r.rt.h1Open.Load(); got != n {
		t.Errorf("open = %d; want %d", got, n)
	}
}

// A reload (SetTimeouts) while a connection is parked: its next request is
// served by the newest generation's server, on the same connection.
func TestParkedConnectionAfterReload(t *testing.T) {
	r, l := parkRouter(t, Config{})
	k := dialKeepAlive(t, r.addr)
	k.get(getP, 1, "hi")
	waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
	old := l.gen.Load()
	if err := r.rt.SetTimeouts(Timeouts{Connect: time.Second, Timeout: 700 * time.Millisecond, Header: time.Second}); err != nil {
		t.Fatal(err)
	}
	if l.gen.Load() == old {
		t.Fatal("SetTimeouts made no new generation")
	}
	k.get(getP, 1, "hi")
	// The new generation's 700ms idle timeout now applies to it.
	start := time.Now()
	k.expectEOF(5 * time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("closed after %v; want the reloaded 700ms idle timeout", d)
	}
}
