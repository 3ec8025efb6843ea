package router

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
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
		k.c.Close()
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

// trickleNode answers every request with a long Content-Length body sent
// one byte per 50ms.
func trickleNode(t *testing.T) string {
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
				br := bufio.NewReader(c)
				var hb [4]byte
				if _, err := io.ReadFull(br, hb[:]); err != nil {
					return
				}
				h, _ := uwsgi.ParseHeader(hb[:])
				io.CopyN(io.Discard, br, int64(h.Size))
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
				for i := 0; i < 400; i++ {
					if _, err := c.Write([]byte("x")); err != nil {
						return
					}
					time.Sleep(50 * time.Millisecond)
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// Shutdown returns when its ctx ends even with a clear-text HTTP/1.1
// response still streaming, and the client's connection is closed then
// (its node connection too: cut_test.go).
func TestShutdownBoundedByCtxWithStreamingResponse(t *testing.T) {
	addr := trickleNode(t)
	r := startRouter(t, Config{Timeout: 30 * time.Second})
	r.table.AddStatic("p.test", addr, 1)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: p.test\r\n\r\n")
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
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	io.WriteString(c, "GET /fast HTTP/1.1\r\nHost: p.test\r\n\r\nGET /slow HTTP/1.1\r\nHost: p.test\r\n\r\n")
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.ReadAll(resp.Body)
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
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(k.c, "POST / HTTP/1.1\r\nHost: p.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := k.br.ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("want 100 Continue, got %q %v", line, err)
	}
	k.br.ReadString('\n')
	time.Sleep(150 * time.Millisecond)
	k.get("hello", 1, "hello")
	time.Sleep(200 * time.Millisecond) // parked
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(k.c, "POST / HTTP/1.1\r\nHost: p.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
	time.Sleep(150 * time.Millisecond)
	io.WriteString(k.c, "2\r\nde\r\n")
	time.Sleep(150 * time.Millisecond)
	k.get("0\r\n\r\n", 1, "abcde")
	// pipelined: second head split, its tail after 150ms
	time.Sleep(200 * time.Millisecond)
	_ = k.c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(k.c, getP+getP[:12])
	time.Sleep(150 * time.Millisecond)
	k.get(getP[12:], 2, "")
	// HEAD
	time.Sleep(200 * time.Millisecond)
	k.get("HEAD / HTTP/1.1\r\nHost: p.test\r\n\r\n", 0, "")
	time.Sleep(200 * time.Millisecond)
	k.get(getP, 1, "")
}
