//go:build linux

package router

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// startLoopRouter is startRouter with the event loop on.
func startLoopRouter(t *testing.T, cfg Config) *testRouter {
	t.Helper()
	cfg.H1EventLoop = true
	r := startRouter(t, cfg)
	return r
}

// loopCounts returns how many requests r's loops answered and how many
// connections they handed to the goroutine path.
func loopCounts(t *testing.T, r *testRouter) (served, handed int64) {
	t.Helper()
	r.rt.mu.Lock()
	defer r.rt.mu.Unlock()
	for _, f := range r.rt.fronts {
		if l, ok := f.(*frontListener); ok {
			if l.loops == nil {
				t.Fatal("the listener is not served by the event loop")
			}
			served += l.loops.served.Load()
			handed += l.loops.handed.Load()
		}
	}
	return served, handed
}

// wantCounts checks loopCounts.
func wantCounts(t *testing.T, r *testRouter, served, handed int64) {
	t.Helper()
	if s, h := loopCounts(t, r); s != served || h != handed {
		t.Fatalf("the loop served %d requests and handed over %d connections, want %d and %d", s, h, served, handed)
	}
}

func TestH1LoopSimpleGet(t *testing.T) {
	r := startLoopRouter(t, Config{})
	n := startFakeNode(t, okReply("hello"))
	r.table.AddStatic("example.com", n.addr(), 1)
	resp, body := raw(t, r.addr, "GET /x?y=1 HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 200 || body != "hello" {
		t.Fatalf("got %d %q", resp.StatusCode, body)
	}
	v := n.last()
	if v["PATH_INFO"] != "/x" || v["QUERY_STRING"] != "y=1" || v["HTTP_HOST"] != "example.com" {
		t.Fatalf("vars %v", v)
	}
	wantCounts(t, r, 1, 0)
}

// Keep-alive and pipelining: three requests in one write, three answers in
// order on the same connection, then one more.
func TestH1LoopKeepAlivePipelined(t *testing.T) {
	r := startLoopRouter(t, Config{})
	n := startFakeNode(t, func(v map[string]string, _ []byte) string {
		b := v["PATH_INFO"]
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	})
	r.table.AddStatic("example.com", n.addr(), 1)
	c := uwsgitest.Dial(t, r.addr)
	defer c.Close()
	c.Send("GET /a HTTP/1.1\r\nHost: example.com\r\n\r\nGET /bb HTTP/1.1\r\nHost: example.com\r\n\r\nGET /ccc HTTP/1.1\r\nHost: example.com\r\n\r\n")
	for _, want := range []string{"/a", "/bb", "/ccc"} {
		resp, body, err := c.Next("GET")
		if err != nil || resp.StatusCode != 200 || body != want {
			t.Fatalf("want %q: %v %v %q", want, err, resp, body)
		}
	}
	resp, body := c.Do("GET /d HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 200 || body != "/d" {
		t.Fatalf("after the pipeline: %d %q", resp.StatusCode, body)
	}
	wantCounts(t, r, 4, 0)
}

func TestH1LoopHeadAndReframing(t *testing.T) {
	r := startLoopRouter(t, Config{})
	// No Content-Length: uWSGI's framing is its close; the client gets chunks.
	n := startFakeNode(t, func(v map[string]string, _ []byte) string {
		return "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-App: 1\r\n\r\n" + strings.Repeat("z", 70000)
	})
	r.table.AddStatic("example.com", n.addr(), 1)
	c := uwsgitest.Dial(t, r.addr)
	defer c.Close()
	resp, body := c.Do("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 200 || len(body) != 70000 || resp.Header.Get("X-App") != "1" {
		t.Fatalf("got %d len %d %v", resp.StatusCode, len(body), resp.Header)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Fatalf("transfer-encoding %v, want chunked", resp.TransferEncoding)
	}
	if resp.Header.Get("Keep-Alive") != "" || resp.Header.Get("Connection") != "" {
		t.Fatalf("hop-by-hop headers relayed: %v", resp.Header)
	}
	resp, body = c.Do("HEAD / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 200 || body != "" {
		t.Fatalf("HEAD: %d %q", resp.StatusCode, body)
	}
	resp, body = c.Do("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 200 || len(body) != 70000 {
		t.Fatalf("after HEAD: %d %d", resp.StatusCode, len(body))
	}
	wantCounts(t, r, 3, 0)
}

// Each excluded case goes to the goroutine path with its bytes intact.
func TestH1LoopFallbacks(t *testing.T) {
	r := startLoopRouter(t, Config{})
	n := startFakeNode(t, func(v map[string]string, body []byte) string {
		b := v["REQUEST_METHOD"] + " " + v["SERVER_PROTOCOL"] + " " + string(body)
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	})
	r.table.AddStatic("example.com", n.addr(), 1)
	for _, tc := range []struct{ name, req, want string }{
		{"body", "POST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\n\r\nhello", "POST HTTP/1.1 hello"},
		{"chunked", "POST / HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", "POST HTTP/1.1 abc"},
		{"http/1.0", "GET / HTTP/1.0\r\nHost: example.com\r\n\r\n", "GET HTTP/1.0 "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, body := raw(t, r.addr, tc.req)
			if resp.StatusCode != 200 || body != tc.want {
				t.Fatalf("got %d %q, want %q", resp.StatusCode, body, tc.want)
			}
		})
	}
	// A head split over writes, then a body: the bytes the loop read reach
	// the goroutine path.
	c := uwsgitest.Dial(t, r.addr)
	defer c.Close()
	c.Send("POST / HTTP/1.1\r\nHo")
	time.Sleep(20 * time.Millisecond)
	c.Send("st: example.com\r\nContent-Length: 3\r\n\r\nxyz")
	resp, body, err := c.Next("POST")
	if err != nil || resp.StatusCode != 200 || body != "POST HTTP/1.1 xyz" {
		t.Fatalf("split head: %v %v %q", err, resp, body)
	}
	// Expect: the goroutine path's 100 Continue (spill.go).
	resp, _ = raw(t, r.addr, "PUT / HTTP/1.1\r\nHost: example.com\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok")
	if resp.StatusCode != 100 {
		t.Fatalf("expect: %d, want 100 Continue", resp.StatusCode)
	}
	// A bad head: the goroutine path's 400.
	resp, _ = raw(t, r.addr, "GET / HTTP/1.1\r\nHost: example.com\r\nBad Header\r\n\r\n")
	if resp.StatusCode != 400 {
		t.Fatalf("bad head: %d, want 400", resp.StatusCode)
	}
	// No pool: the goroutine path's 404.
	resp, _ = raw(t, r.addr, "GET / HTTP/1.1\r\nHost: nowhere.example\r\n\r\n")
	if resp.StatusCode != 404 {
		t.Fatalf("no pool: %d, want 404", resp.StatusCode)
	}
	wantCounts(t, r, 0, 7)
	// After requests the loop took, one it does not: the connection goes
	// over with the pipelined body request intact.
	k := uwsgitest.Dial(t, r.addr)
	defer k.Close()
	k.Send("GET / HTTP/1.1\r\nHost: example.com\r\n\r\nPOST / HTTP/1.1\r\nHost: example.com\r\nContent-Length: 4\r\n\r\nbody")
	for _, want := range []string{"GET HTTP/1.1 ", "POST HTTP/1.1 body"} {
		resp, body, err := k.Next("GET")
		if err != nil || resp.StatusCode != 200 || body != want {
			t.Fatalf("want %q: %v %v %q", want, err, resp, body)
		}
	}
	wantCounts(t, r, 1, 8)
}

// A refused node is retried on another; when all refuse, 502.
func TestH1LoopRetryThen502(t *testing.T) {
	r := startLoopRouter(t, Config{})
	dead := closedPort(t)
	n := startFakeNode(t, okReply("alive"))
	r.table.AddStatic("a.example", dead, 1)
	r.table.AddStatic("a.example", n.addr(), 1)
	for range 4 {
		resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: a.example\r\n\r\n")
		if resp.StatusCode != 200 || body != "alive" {
			t.Fatalf("with one node refusing: %d %q", resp.StatusCode, body)
		}
	}
	r.table.AddStatic("b.example", closedPort(t), 1)
	resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: b.example\r\n\r\n")
	if resp.StatusCode != 502 || body != string(errorBodies[502]) {
		t.Fatalf("every node refusing: %d %q", resp.StatusCode, body)
	}
	wantCounts(t, r, 5, 0)
}

func closedPort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}

// A node that never answers: 504 after --timeout.
func TestH1LoopBackendTimeout504(t *testing.T) {
	r := startLoopRouter(t, Config{Timeout: 300 * time.Millisecond})
	n := uwsgitest.NewNode(t, uwsgitest.Hold())
	r.table.AddStatic("example.com", n.Addr(), 1)
	start := time.Now()
	resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp.StatusCode != 504 {
		t.Fatalf("got %d, want 504", resp.StatusCode)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
		t.Fatalf("504 after %v", d)
	}
	wantCounts(t, r, 1, 0)
}

// A client that leaves mid-response, and one that reads slowly: the body
// stops being read from the node while the client is blocked and the
// whole of it arrives in the end.
func TestH1LoopClientGoneAndSlowClient(t *testing.T) {
	r := startLoopRouter(t, Config{})
	big := strings.Repeat("0123456789", 400_000) // 4 MB
	n := startFakeNode(t, okReply(big))
	r.table.AddStatic("example.com", n.addr(), 1)

	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(c, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	buf := make([]byte, 1000)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	c.Close() // gone mid-response

	c2, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	fmt.Fprint(c2, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	time.Sleep(200 * time.Millisecond) // blocked: the router must hold, not fail
	br := bufio.NewReader(c2)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil || string(got) != big {
		t.Fatalf("slow client got %d bytes, err %v", len(got), err)
	}
	// The router still serves (the first client's leaving broke nothing).
	resp2, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
	if resp2.StatusCode != 200 || len(body) != len(big) {
		t.Fatalf("after: %d %d", resp2.StatusCode, len(body))
	}
	wantCounts(t, r, 2, 0) // the first client's never finished
	c2.Close()
	waitFor(t, "loop connections closed", func() bool { return r.rt.h1Open.Load() == 0 })
}

// pooledSocks is how many idle node sockets r's loops hold.
func pooledSocks(t *testing.T, r *testRouter) int {
	t.Helper()
	r.rt.mu.Lock()
	defer r.rt.mu.Unlock()
	n := 0
	for _, f := range r.rt.fronts {
		l, ok := f.(*frontListener)
		if !ok || l.loops == nil {
			continue
		}
		for _, w := range l.loops.workers {
			got := make(chan int, 1)
			if w.loop.Submit(func() { got <- len(w.socks.free[0]) + len(w.socks.free[1]) }) != nil {
				t.Fatal("loop closed")
			}
			n += <-got
		}
	}
	return n
}

// A TCP node socket serves one exchange after another (disconnected and
// pooled in between), the node sees each request on a connection of its
// own, and a socket left idle closes.
func TestH1LoopReusesNodeSockets(t *testing.T) {
	r := startLoopRouter(t, Config{})
	n := startFakeNode(t, func(v map[string]string, _ []byte) string {
		b := v["PATH_INFO"]
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(b), b)
	})
	r.table.AddStatic("example.com", n.addr(), 1)
	c := uwsgitest.Dial(t, r.addr)
	defer c.Close()
	const reqs = 20
	for i := range reqs {
		want := fmt.Sprintf("/r%d", i)
		resp, body := c.Do("GET " + want + " HTTP/1.1\r\nHost: example.com\r\n\r\n")
		if resp.StatusCode != 200 || body != want {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
	}
	wantCounts(t, r, reqs, 0)
	var opened int64
	r.rt.mu.Lock()
	for _, f := range r.rt.fronts {
		if l, ok := f.(*frontListener); ok {
			opened += l.loops.opened.Load()
		}
	}
	r.rt.mu.Unlock()
	if opened != 1 {
		t.Fatalf("%d node sockets opened for %d requests in a row, want 1", opened, reqs)
	}
	if k := pooledSocks(t, r); k != 1 {
		t.Fatalf("%d sockets pooled, want 1", k)
	}
	waitFor(t, "the idle socket closed", func() bool { return pooledSocks(t, r) == 0 })
}

// FuzzHeadEnd checks the loop's end-of-head scan against the plain rule: the
// head ends after the first line feed that closes an empty line (a bare LF
// or CR LF after the previous line's LF).
func FuzzHeadEnd(f *testing.F) {
	for _, s := range []string{"GET / HTTP/1.1\r\nHost: a\r\n\r\n", "GET / HTTP/1.1\n\n", "\r\n\r\n", "\n\n", "\r\n", "a\n\rb\n\n", "GET / HTTP/1.1\r\nHost: a\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		want := 0
		for k := 1; k < len(b); k++ {
			if b[k] == '\n' && (b[k-1] == '\n' || k >= 2 && b[k-1] == '\r' && b[k-2] == '\n') {
				want = k + 1
				break
			}
		}
		if got := headEnd(b); got != want {
			t.Fatalf("headEnd(%q) = %d; want %d", b, got, want)
		}
	})
}

// The loops share the connections evenly: one at a time, each served and
// kept open, sixteen connections end on two loops within two of each
// other (the kernel alone wakes the same loop for every one of them).
func TestH1LoopSpreadsConnections(t *testing.T) {
	// The loops are counted when the listener starts: two of them.
	prev := runtime.GOMAXPROCS(2)
	t.Cleanup(func() { runtime.GOMAXPROCS(prev) })
	r := startLoopRouter(t, Config{})
	n := startFakeNode(t, okReply("hi"))
	r.table.AddStatic("example.com", n.addr(), 1)
	for range 16 {
		c := uwsgitest.Dial(t, r.addr)
		defer c.Close()
		c.Send("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
		if resp, body, err := c.Next("GET"); err != nil || resp.StatusCode != 200 || body != "hi" {
			t.Fatalf("got %v %q %v", resp, body, err)
		}
	}
	r.rt.mu.Lock()
	defer r.rt.mu.Unlock()
	for _, f := range r.rt.fronts {
		l, ok := f.(*frontListener)
		if !ok {
			continue
		}
		if len(l.loops.workers) != 2 {
			t.Fatalf("%d loops, want 2", len(l.loops.workers))
		}
		a, b := l.loops.workers[0].load.Load(), l.loops.workers[1].load.Load()
		if a+b != 16 || a-b > 2 || b-a > 2 {
			t.Fatalf("the loops serve %d and %d connections, want 16 within two of each other", a, b)
		}
	}
}
