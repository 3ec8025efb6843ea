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
	"testing/iotest"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// startLoopRouter is startRouter with the event loop on, whatever
// FASTROUTER_TEST_H1LOOP says.
func startLoopRouter(t *testing.T, cfg Config) *testRouter {
	t.Helper()
	cfg.DisableH1EventLoop = false
	return startRouterAsIs(t, cfg)
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

// setLoop turns the event loop on or off in cfg (a test comparing both
// paths).
func setLoop(cfg *Config, on bool) { cfg.DisableH1EventLoop = !on }

// A drain's deadline cuts the node connection of a request in flight on
// the event loop as on the goroutine path, and the client sees the same:
// a 502 while the node has not answered, a body cut short (chunked without
// its last chunk) and the connection closed once it streams. The drain
// counts the connection as forced.
func TestH1LoopDrainDeadlineCutsNode(t *testing.T) {
	for _, loop := range []bool{true, false} {
		for _, stream := range []bool{false, true} {
			t.Run(fmt.Sprintf("loop=%v/stream=%v", loop, stream), func(t *testing.T) {
				cfg := Config{Timeout: 30 * time.Second}
				setLoop(&cfg, loop)
				r := startRouterAsIs(t, cfg)
				node := startHeldNode(t, stream)
				r.table.AddStatic("held.test", node.Addr(), 1)
				c := uwsgitest.Dial(t, r.addr)
				defer c.Close()
				c.Send("GET / HTTP/1.1\r\nHost: held.test\r\n\r\n")
				waitFor(t, "the node to have the request", func() bool { return node.Served() == 1 })
				if n := r.rt.backends.size(); n != 1 {
					t.Fatalf("node connections tracked: %d; want 1", n)
				}
				if _, err := r.table.Drain("held.test", node.Addr(), time.Millisecond, true); err != nil {
					t.Fatal(err)
				}
				var ev balancer.DrainEvent
				waitFor(t, "the drain to end", func() bool {
					evs := r.table.Tick()
					if len(evs) == 1 {
						ev = evs[0]
					}
					return len(evs) == 1
				})
				if !ev.Forced || ev.Info.Forced != 1 {
					t.Fatalf("drain event %+v; want forced, one connection closed", ev)
				}
				_ = c.Conn().SetReadDeadline(time.Now().Add(5 * time.Second))
				resp, err := http.ReadResponse(c.Reader(), nil)
				if err != nil {
					t.Fatalf("client: %v", err)
				}
				body, err := io.ReadAll(resp.Body)
				switch {
				case !stream && (resp.StatusCode != 502 || err != nil || string(body) != string(errorBodies[502])):
					t.Fatalf("held node cut: %d %q %v; want the 502 page", resp.StatusCode, body, err)
				case stream && (resp.StatusCode != 200 || err != io.ErrUnexpectedEOF || len(body) == 0):
					t.Fatalf("streaming node cut: %d, %d bytes, %v; want 200 and a body cut short", resp.StatusCode, len(body), err)
				}
				if stream {
					if rest, err := io.ReadAll(c.Reader()); len(rest) != 0 || err != nil {
						t.Fatalf("after the cut body: %q %v; want the connection closed", rest, err)
					}
				}
				waitFor(t, "the node's connection to close", func() bool { return node.Open() == 0 })
				if n := r.rt.backends.size(); n != 0 {
					t.Fatalf("node connections tracked after the cut: %d", n)
				}
				if loop {
					if s, _ := loopCounts(t, r); s != 1 {
						t.Fatalf("the loop served %d requests; want 1", s)
					}
				}
			})
		}
	}
}

// A node's chunked body reaches the client the same on the event loop as
// on the goroutine path (relay.go): de-chunked and chunked again, its
// trailers dropped, complete at the node's last chunk even when the node
// keeps its connection open, the client's connection kept alive after it;
// cut short (no last chunk) and the connection closed when the node closes
// early or breaks the framing, so that nothing the node sends after the
// break, nor after its last chunk, can pass for the answer to the client's
// next request.
func TestH1LoopChunkedNodeBodies(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	const forged = "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nforged"
	for _, c := range []struct {
		name     string
		node     uwsgitest.Handler
		body     string
		complete bool
	}{
		{"well-formed", uwsgitest.Reply(head + "5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n"), "hello world", true},
		{"trailers", uwsgitest.Reply(head + "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n"), "hello", true},
		{"kept open", uwsgitest.Partial(head + "5\r\nhello\r\n0\r\n\r\n"), "hello", true},
		{"bytes after the last chunk", uwsgitest.Reply(head + "5\r\nhello\r\n0\r\n\r\n" + forged), "hello", true},
		{"truncated", uwsgitest.Reply(head + "5\r\nhello\r\n6\r\n wo"), "hello wo", false},
		{"malformed", uwsgitest.Reply(head + "5\r\nhelloXX0\r\n\r\n" + forged), "hello", false},
		{"bad size", uwsgitest.Reply(head + "5\r\nhello\r\nzz\r\n" + forged), "hello", false},
	} {
		for _, loop := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/loop=%v", c.name, loop), func(t *testing.T) {
				cfg := Config{Timeout: 30 * time.Second}
				setLoop(&cfg, loop)
				r := startRouterAsIs(t, cfg)
				r.table.AddStatic("chunked.test", uwsgitest.NewNode(t, c.node).Addr(), 1)
				r.table.AddStatic("ok.test", startFakeNode(t, okReply("ok")).addr(), 1)
				cl := uwsgitest.Dial(t, r.addr)
				defer cl.Close()
				_ = cl.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
				cl.Send("GET / HTTP/1.1\r\nHost: chunked.test\r\n\r\n")
				resp, err := http.ReadResponse(cl.Reader(), nil)
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(resp.Body)
				if resp.StatusCode != 200 || string(got) != c.body || (err == nil) != c.complete || len(resp.Trailer) != 0 {
					t.Fatalf("%d %q %v (trailers %v); want 200 %q, complete %v", resp.StatusCode, got, err, resp.Trailer, c.body, c.complete)
				}
				if !c.complete {
					if rest, err := io.ReadAll(cl.Reader()); len(rest) != 0 || err != nil {
						t.Fatalf("after the cut body: %q %v; want the connection closed", rest, err)
					}
					return
				}
				resp2, body2 := cl.Do("GET / HTTP/1.1\r\nHost: ok.test\r\n\r\n")
				if resp2.StatusCode != 200 || body2 != "ok" {
					t.Fatalf("the next request on the connection: %d %q; want 200 \"ok\"", resp2.StatusCode, body2)
				}
				if loop {
					wantCounts(t, r, 2, 0)
				}
			})
		}
	}
}

// The event loop reads the router's clock three times per request: the
// request's start (which the first connect attempt shares), the response
// head, the end; its keep-alive wait takes the loop's own clock.
func TestH1LoopClockReadsPerRequest(t *testing.T) {
	if got, want := clockReadsPerRequest(t, Config{}), 3.0; got != want {
		t.Errorf("%.2f readings of the clock per request; want %v", got, want)
	}
}

// A request that says "Connection: close" gets a response that says so,
// and the connection closes after it, on both paths; the same for its
// error page, and for a node's "Connection: close". A body the node ends
// by closing reaches the client whole (chunked, with its last chunk) on
// such a last response too.
func TestH1LoopRequestConnectionClose(t *testing.T) {
	for _, c := range []struct {
		host, hdr, body string
		code            int
	}{
		{"ok.test", "Connection: close\r\n", "ok", 200},
		{"none.test", "Connection: close\r\n", string(errorBodies[502]), 502},
		{"untilclose.test", "Connection: close\r\n", "until close", 200},
		{"nodeclose.test", "", "node closes", 200},
	} {
		for _, loop := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/loop=%v", c.host, loop), func(t *testing.T) {
				var cfg Config
				setLoop(&cfg, loop)
				r := startRouterAsIs(t, cfg)
				r.table.AddStatic("ok.test", startFakeNode(t, okReply("ok")).addr(), 1)
				r.table.AddStatic("none.test", closedPort(t), 1)
				r.table.AddStatic("untilclose.test", uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\n\r\nuntil close")).Addr(), 1)
				r.table.AddStatic("nodeclose.test", uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nnode closes")).Addr(), 1)
				cl := uwsgitest.Dial(t, r.addr)
				defer cl.Close()
				_ = cl.Conn().SetReadDeadline(time.Now().Add(10 * time.Second))
				cl.Send("GET / HTTP/1.1\r\nHost: " + c.host + "\r\n" + c.hdr + "\r\n")
				resp, err := http.ReadResponse(cl.Reader(), nil)
				if err != nil {
					t.Fatal(err)
				}
				body, err := io.ReadAll(resp.Body)
				if resp.StatusCode != c.code || string(body) != c.body || err != nil || !resp.Close {
					t.Fatalf("%d %q %v, close %v; want %d %q, whole, and Connection: close", resp.StatusCode, body, err, resp.Close, c.code, c.body)
				}
				if rest, err := io.ReadAll(cl.Reader()); len(rest) != 0 || err != nil {
					t.Fatalf("after the response: %q %v; want the connection closed", rest, err)
				}
				if loop {
					wantCounts(t, r, 1, 0)
				}
			})
		}
	}
}

// The loop serves pools with an in-flight cap, auto as well as a count, and
// leaves to the goroutine path whole a pool with an http:// node beside its
// uwsgi ones (handing over only the requests picked for the http node
// would have the goroutine path pick again, and a round robin would never
// reach that node): both of its nodes serve.
func TestH1LoopCappedAndMixedPools(t *testing.T) {
	r := startLoopRouter(t, Config{})
	if err := r.table.SetPolicies(balancer.Policy{}, map[string]balancer.Policy{
		"auto.test": {MaxInflight: balancer.LimitAuto}, "two.test": {MaxInflight: 2}}); err != nil {
		t.Fatal(err)
	}
	u := startFakeNode(t, okReply("uwsgi"))
	h := uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nhttp"), uwsgitest.WithProto(uwsgitest.HTTP))
	r.table.AddStatic("auto.test", u.addr(), 1)
	r.table.AddStatic("two.test", u.addr(), 1)
	r.table.AddStatic("mixed.test", u.addr(), 1)
	r.table.AddStatic("mixed.test", "http://"+h.Addr(), 1)
	for _, host := range []string{"auto.test", "two.test"} {
		if resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n"); resp.StatusCode != 200 || body != "uwsgi" {
			t.Fatalf("%s: %d %q", host, resp.StatusCode, body)
		}
	}
	got := map[string]int{}
	for range 4 {
		resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: mixed.test\r\n\r\n")
		if resp.StatusCode != 200 {
			t.Fatalf("mixed.test: %d %q", resp.StatusCode, body)
		}
		got[body]++
	}
	if got["uwsgi"] != 2 || got["http"] != 2 {
		t.Fatalf("mixed pool answers %v; want two from each node", got)
	}
	wantCounts(t, r, 2, 4)
}

// capQueueRouter is a loop router with pool cap.test capped at one request
// in flight (queue of queue, timing out after wait) on a node that holds
// each request until release gets a value, and pool free.test, uncapped,
// on another node.
func capQueueRouter(t *testing.T, queue int, wait time.Duration) (r *testRouter, node *fakeNode, release chan struct{}) {
	t.Helper()
	r = startLoopRouter(t, Config{})
	if err := r.table.SetPolicies(balancer.Policy{}, map[string]balancer.Policy{
		"cap.test": {MaxInflight: 1, QueueSize: queue, QueueTimeout: wait}}); err != nil {
		t.Fatal(err)
	}
	release = make(chan struct{}, 16)
	node = startFakeNode(t, func(map[string]string, []byte) string {
		select {
		case <-release:
		case <-time.After(10 * time.Second):
		}
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nheld"
	})
	r.table.AddStatic("cap.test", node.addr(), 1)
	r.table.AddStatic("free.test", startFakeNode(t, okReply("free")).addr(), 1)
	return r, node, release
}

// get sends one GET for host on a connection of its own and returns its
// answer on the channel.
func get(t *testing.T, addr, host string) <-chan string {
	ch := make(chan string, 1)
	go func() {
		c, err := net.DialTimeout("tcp", addr, 10*time.Second)
		if err != nil {
			ch <- err.Error()
			return
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(readerAfterWrite(c, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")), nil)
		if err != nil {
			ch <- err.Error()
			return
		}
		body, _ := io.ReadAll(resp.Body)
		ch <- fmt.Sprintf("%d %s %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}()
	return ch
}

// readerAfterWrite writes req to c and returns c to read the answer from
// (an error to write reads as an error).
func readerAfterWrite(c net.Conn, req string) io.Reader {
	if _, err := c.Write([]byte(req)); err != nil {
		return iotest.ErrReader(err)
	}
	return c
}

// A request that finds a capped pool's node at its cap waits in the pool's
// queue, on the loop, which serves its other connections meanwhile, and is
// served when the node's request ends; with the queue full the next one
// gets 503 with Retry-After. Every request is the loop's.
func TestH1LoopQueuesAtCap(t *testing.T) {
	r, node, release := capQueueRouter(t, 1, 10*time.Second)
	first := get(t, r.addr, "cap.test")
	waitFor(t, "the first request at the node", func() bool { return node.Accepted() == 1 })
	second := get(t, r.addr, "cap.test")
	pool := r.table.Pool("cap.test")
	waitFor(t, "the second request queued", func() bool { return pool.Waiting() == 1 })
	if got := <-get(t, r.addr, "cap.test"); got != "503 1 "+string(errorBodies[503]) {
		t.Errorf("queue full: %q, want 503 with Retry-After", got)
	}
	if got := <-get(t, r.addr, "free.test"); got != "200  free" {
		t.Errorf("another pool while one waits: %q", got)
	}
	release <- struct{}{}
	release <- struct{}{}
	for _, ch := range []<-chan string{first, second} {
		if got := <-ch; got != "200  held" {
			t.Errorf("capped request: %q", got)
		}
	}
	wantCounts(t, r, 4, 0)
	if n := pool.Nodes()[0]; n.Inflight() != 0 || pool.Waiting() != 0 {
		t.Errorf("after: %d in flight, %d waiting", n.Inflight(), pool.Waiting())
	}
}

// A queued request whose wait ends (--queue-timeout) gets 503; one whose
// client goes away while it waits lets its place go, and the node it would
// have been given comes back: nothing stays in flight.
func TestH1LoopQueueTimeoutAndClientGone(t *testing.T) {
	r, node, release := capQueueRouter(t, 4, 150*time.Millisecond)
	first := get(t, r.addr, "cap.test")
	waitFor(t, "the first request at the node", func() bool { return node.Accepted() == 1 })
	if got := <-get(t, r.addr, "cap.test"); got != "503 1 "+string(errorBodies[503]) {
		t.Errorf("queue timeout: %q, want 503 with Retry-After", got)
	}
	pool := r.table.Pool("cap.test")
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\nHost: cap.test\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the request queued", func() bool { return pool.Waiting() == 1 })
	c.(*net.TCPConn).SetLinger(0)
	c.Close() // a reset: the loop sees the client gone
	release <- struct{}{}
	if got := <-first; got != "200  held" {
		t.Errorf("first: %q", got)
	}
	n := pool.Nodes()[0]
	waitFor(t, "nothing in flight or waiting", func() bool { return n.Inflight() == 0 && pool.Waiting() == 0 })
	waitFor(t, "the loop's connections closed", func() bool { return loopOpen(r) == 0 })
}

// loopOpen is the connections r's loops serve.
func loopOpen(r *testRouter) int64 {
	r.rt.mu.Lock()
	defer r.rt.mu.Unlock()
	var n int64
	for _, f := range r.rt.fronts {
		if l, ok := f.(*frontListener); ok && l.loops != nil {
			n += l.loops.open.Load()
		}
	}
	return n
}

// The loops share the connections evenly: one at a time, each served and
// kept open, sixteen connections end on two loops within two of each
// other (the kernel alone wakes the same loop for every one of them).
func TestH1LoopSpreadsConnections(t *testing.T) {
	r := startLoopRouter(t, Config{H1Loops: 2})
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

// Config.H1Loops sets the loops per listener whatever GOMAXPROCS is;
// 0 is GOMAXPROCS, a negative count is refused.
func TestH1LoopCount(t *testing.T) {
	for _, c := range []struct{ set, want int }{{3, 3}, {0, runtime.GOMAXPROCS(0)}} {
		r := startLoopRouter(t, Config{H1Loops: c.set})
		r.rt.mu.Lock()
		for _, f := range r.rt.fronts {
			if l, ok := f.(*frontListener); ok && len(l.loops.workers) != c.want {
				t.Errorf("H1Loops %d: %d loops, want %d", c.set, len(l.loops.workers), c.want)
			}
		}
		r.rt.mu.Unlock()
	}
	if _, err := New(Config{Pools: emptyPools{}, H1Loops: -1}); err == nil {
		t.Fatal("H1Loops -1 accepted")
	}
}
