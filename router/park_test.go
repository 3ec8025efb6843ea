package router

import (
	"context"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

func parkRouter(t *testing.T, cfg Config) (*testRouter, *frontListener) {
	t.Helper()
	n := startFakeNode(t, okReply("hi"))
	// Parking is the goroutine path's: the event loop's idle connections
	// have no goroutine to park.
	cfg.DisableH1EventLoop = true
	r := startRouter(t, cfg)
	r.table.AddStatic("p.test", n.addr(), 1)
	var l *frontListener
	waitFor(t, "the listener", func() bool {
		r.rt.mu.Lock()
		defer r.rt.mu.Unlock()
		if len(r.rt.frontListenersLocked()) == 0 {
			return false
		}
		l = r.rt.frontListenersLocked()[0]
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
	parkRounds(t, dialKeepAlive(t, r.addr), l, r.rt)
}

// parkRounds drives k, on l of rt, through parks: three idle rounds (each
// parks, and the connection stays counted open), a head split across a
// park, pipelined requests after one, one more request; then it closes k
// and waits for it to be counted closed.
func parkRounds(t *testing.T, k *keepAlive, l *frontListener, rt *Router) {
	t.Helper()
	for round := range 3 {
		k.get(getP, 1, "hi")
		waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
		if got := rt.h1Open.Load(); got != 1 {
			t.Fatalf("round %d: open HTTP/1.1 connections while parked = %d; want 1", round, got)
		}
	}
	// A head that arrives in pieces (for TLS, two records) after the park.
	k.Send(getP[:10])
	time.Sleep(50 * time.Millisecond)
	k.get(getP[10:], 1, "hi")
	// Pipelined requests after a park, then one more on the same connection.
	waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
	k.get(getP+getP+getP, 3, "hi")
	k.get(getP, 1, "hi")
	if got := l.parks.Load(); got < 4 {
		t.Errorf("parks = %d; want ≥ 4", got)
	}
	k.Close()
	waitFor(t, "the closed connection to be counted closed", func() bool {
		return rt.h1Open.Load() == 0 && l.parkedCount() == 0
	})
}

// A connection whose requests come quicker than parkAfter never parks.
// The requests come parkAfter/5 apart; on a loaded machine the client can
// be descheduled for longer than parkAfter between two of them, and then a
// park is right. So a trial counts only when every gap the client saw
// stayed under parkAfter/2, and up to 5 trials are made for one that did.
func TestBusyConnectionDoesNotPark(t *testing.T) {
	r, l := parkRouter(t, Config{})
	var gaps []time.Duration
	for trial := range 5 {
		k := dialKeepAlive(t, r.addr)
		before := l.parks.Load()
		var worst time.Duration
		for range 12 {
			k.get(getP, 1, "hi")
			done := time.Now()
			time.Sleep(parkAfter / 5)
			worst = max(worst, time.Since(done))
		}
		parks := l.parks.Load() - before
		k.Close()
		if worst >= parkAfter/2 {
			gaps = append(gaps, worst)
			t.Logf("trial %d disturbed: a gap of %v between requests (%d parks)", trial, worst, parks)
			continue
		}
		if parks != 0 {
			t.Fatalf("parks = %d with requests at most %v apart; want 0 for a busy connection", parks, worst)
		}
		return
	}
	t.Fatalf("no undisturbed trial in 5: the longest gaps were %v (want < %v)", gaps, parkAfter/2)
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
	k.Close()
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
				// Not Send, whose failure would end the test from this goroutine.
				_ = k.Conn().SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.WriteString(k.Conn(), getP); err != nil {
					errs <- err.Error()
					return
				}
				_, b, err := k.Next("GET")
				if err != nil {
					errs <- err.Error()
					return
				}
				if b != "hi" {
					errs <- "body " + b
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

// Shutdown returns when its ctx ends even with a clear-text HTTP/1.1
// response still streaming, and the client's connection is closed then
// (its node connection too: cut_test.go).
func TestShutdownBoundedByCtxWithStreamingResponse(t *testing.T) {
	// A long Content-Length body, one byte per 50ms.
	n := uwsgitest.NewNode(t, uwsgitest.Stream("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n", "x", 50*time.Millisecond))
	r := startRouter(t, Config{Timeout: 30 * time.Second})
	r.table.AddStatic("p.test", n.Addr(), 1)
	cl := uwsgitest.Dial(t, r.addr)
	c := cl.Conn()
	cl.Send("GET / HTTP/1.1\r\nHost: p.test\r\n\r\n")
	clientDone := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(clientDone) }()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- r.rt.Shutdown(ctx) }()
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("Shutdown = nil after %v with a response still streaming; want its context's error", time.Since(start))
		}
		select {
		case <-clientDone:
		case <-time.After(2 * time.Second):
			t.Error("the client's connection is still open after Shutdown returned")
		}
	case <-time.After(5 * time.Second):
		t.Errorf("Shutdown still blocked %v after its 500ms ctx ended", time.Since(start))
		c.Close()
		<-done
	}
}

// Response 1 of a pipelined pair must not wait for request 2's backend.
func TestPipelinedResponseNotHeldBehindNext(t *testing.T) {
	n := startFakeNode(t, func(vars map[string]string, _ []byte) string {
		if vars["PATH_INFO"] == "/slow" {
			time.Sleep(2 * time.Second)
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("p.test", n.addr(), 1)
	c := uwsgitest.Dial(t, r.addr)
	start := time.Now()
	c.Send("GET /fast HTTP/1.1\r\nHost: p.test\r\n\r\nGET /slow HTTP/1.1\r\nHost: p.test\r\n\r\n")
	if _, _, err := c.Next("GET"); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("response to the first pipelined request took %v (held behind the second)", d)
	}
}

// Expect: 100-continue whose body comes 150ms after the 100; chunked upload
// with a 150ms pause; both on a connection that parked before.
func TestSlowBodiesAcrossPark(t *testing.T) {
	n := startFakeNode(t, func(vars map[string]string, body []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + string(body)
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("p.test", n.addr(), 1)
	k := dialKeepAlive(t, r.addr)
	k.get(getP, 1, "")
	time.Sleep(200 * time.Millisecond) // parked
	k.Send("POST / HTTP/1.1\r\nHost: p.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := k.Reader().ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	k.Reader().ReadString('\n')
	time.Sleep(150 * time.Millisecond)
	k.get("hello", 1, "hello")
	time.Sleep(200 * time.Millisecond) // parked
	k.Send("POST / HTTP/1.1\r\nHost: p.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
	time.Sleep(150 * time.Millisecond)
	k.Send("2\r\nde\r\n")
	time.Sleep(150 * time.Millisecond)
	k.get("0\r\n\r\n", 1, "abcde")
	// pipelined: second head split, its tail after 150ms
	time.Sleep(200 * time.Millisecond)
	k.Send(getP + getP[:12])
	time.Sleep(150 * time.Millisecond)
	k.get(getP[12:], 2, "")
	// HEAD
	time.Sleep(200 * time.Millisecond)
	k.get("HEAD / HTTP/1.1\r\nHost: p.test\r\n\r\n", 0, "")
	time.Sleep(200 * time.Millisecond)
	k.get(getP, 1, "")
}

// Parked connections hold no goroutine each (park_linux.go): with 40
// more parked, the router runs about as many goroutines as
// with none.
func TestParkedConnectionsHoldNoGoroutine(t *testing.T) {
	if !canPark {
		t.Skip("connections park on Linux only")
	}
	const n = 40
	ca := testcert.NewCA(t, "router test CA")
	addr, l, _, _ := parkTLSRouterWith(t, ca, Config{Timeout: time.Minute}) // none expires meanwhile
	dialTLSKeepAlive(t, addr, ca, nil).get(getP, 1, "hi")                   // starts the parker
	waitFor(t, "the first connection to park", func() bool { return l.parkedCount() == 1 })
	base := runtime.NumGoroutine()
	for range n {
		dialTLSKeepAlive(t, addr, ca, nil).get(getP, 1, "hi")
	}
	waitFor(t, "every connection to park", func() bool { return l.parkedCount() == n+1 })
	waitFor(t, "the goroutines of the parked connections to end", func() bool {
		return runtime.NumGoroutine() < base+n/4
	})
	if got := l.parkedCount(); got != n+1 {
		t.Fatalf("%d connections parked; want %d", got, n+1)
	}
}

// If the parker's epoll instance fails, the connections it holds are
// closed and counted closed (none is left waiting for nothing), and
// connections are still served, closed when they would park.
func TestParkerFailureClosesParked(t *testing.T) {
	if !canPark {
		t.Skip("connections park on Linux only")
	}
	r, l := parkRouter(t, Config{Timeout: time.Minute})
	k := dialKeepAlive(t, r.addr)
	k.get(getP, 1, "hi")
	// Counted parked before it reaches the parker, which starts (makes its
	// epoll) on the first park: wait for it to be on the parker.
	var ep *os.File
	waitFor(t, "the connection to be on the parker", func() bool {
		k := &r.rt.parker
		k.mu.Lock()
		defer k.mu.Unlock()
		ep = k.ep
		return l.parkedCount() == 1 && len(k.m) == 1
	})
	_ = ep.Close() // what stop does, without stopping: epoll_wait fails
	k.expectEOF(5 * time.Second)
	waitFor(t, "the parked connection to be counted closed", func() bool {
		return r.rt.h1Open.Load() == 0 && l.parkedCount() == 0
	})
	k2 := dialKeepAlive(t, r.addr)
	k2.get(getP, 1, "hi")
	k2.expectEOF(5 * time.Second) // closed at its park
}
