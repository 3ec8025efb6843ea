package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// parseHTTPHead parses what appendHTTPRequest wrote.
func parseHTTPHead(t *testing.T, b []byte) *http.Request {
	t.Helper()
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(b)))
	if err != nil {
		t.Fatalf("not a valid HTTP request head: %v\n%s", err, b)
	}
	return req
}

func TestAppendHTTPRequestHeaders(t *testing.T) {
	r := sampleRequest()
	r.Method = []byte("POST")
	r.BodyLen = 5
	r.ContentType = []byte("text/plain")
	r.Headers = append(r.Headers,
		hdr{[]byte("Connection"), []byte("keep-alive, X-Hop")},
		hdr{[]byte("X-Hop"), []byte("named by Connection")},
		hdr{[]byte("Keep-Alive"), []byte("timeout=5")},
		hdr{[]byte("Proxy-Connection"), []byte("keep-alive")},
		hdr{[]byte("TE"), []byte("trailers")},
		hdr{[]byte("Trailer"), []byte("X-T")},
		hdr{[]byte("Transfer-Encoding"), []byte("chunked")},
		hdr{[]byte("Upgrade"), []byte("websocket")},
		hdr{[]byte("Expect"), []byte("100-continue")},
		hdr{[]byte("Proxy"), []byte("http://evil")},
		hdr{[]byte("X_Forwarded_For"), []byte("6.6.6.6")},
		hdr{[]byte("Content-Type"), []byte("text/plain")},
		hdr{[]byte("Content-Length"), []byte("999")},
		hdr{[]byte("X-Forwarded-For"), []byte("203.0.113.9")},
		hdr{[]byte("X-Forwarded-Proto"), []byte("https")},
		hdr{[]byte("X-Forwarded-Host"), []byte("front.example")},
		hdr{[]byte("X-Dup"), []byte("one")},
		hdr{[]byte("X-Dup"), []byte("two")},
	)
	for _, trusted := range []bool{false, true} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			r.Trusted = trusted
			req := parseHTTPHead(t, appendHTTPRequest(nil, r, false))
			if req.Method != "POST" || req.RequestURI != "/app/items?id=42" || req.Proto != "HTTP/1.1" || req.Host != "shop.example.com" {
				t.Errorf("request line/host = %s %s %s host %s", req.Method, req.RequestURI, req.Proto, req.Host)
			}
			if req.ContentLength != 5 || req.Header.Get("Content-Type") != "text/plain" || len(req.Header["Content-Type"]) != 1 {
				t.Errorf("Content-Length %d, Content-Type %q", req.ContentLength, req.Header["Content-Type"])
			}
			for _, k := range []string{"Connection", "X-Hop", "Keep-Alive", "Proxy-Connection", "Te", "Trailer",
				"Transfer-Encoding", "Upgrade", "Expect", "Proxy", "X_forwarded_for"} {
				if v, ok := req.Header[k]; ok {
					t.Errorf("%s forwarded: %q", k, v)
				}
			}
			if got := req.Header.Values("X-Dup"); len(got) != 2 || got[0] != "one" || got[1] != "two" {
				t.Errorf("X-Dup = %q; want both lines", got)
			}
			if got := req.Header.Get("X-Request-Id"); got != "7f9c2ba4e88f827d616045507605853e" {
				t.Errorf("X-Request-Id = %q", got)
			}
			wantXFF, wantXFP, wantXFH := "192.0.2.7", "http", "shop.example.com"
			if trusted {
				wantXFF, wantXFP, wantXFH = "203.0.113.9, 192.0.2.7", "https", "front.example"
			}
			if got := req.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != wantXFF {
				t.Errorf("X-Forwarded-For = %q; want %q", got, wantXFF)
			}
			if got := req.Header.Values("X-Forwarded-Proto"); len(got) != 1 || got[0] != wantXFP {
				t.Errorf("X-Forwarded-Proto = %q; want %q", got, wantXFP)
			}
			if got := req.Header.Values("X-Forwarded-Host"); len(got) != 1 || got[0] != wantXFH {
				t.Errorf("X-Forwarded-Host = %q; want %q", got, wantXFH)
			}
		})
	}
}

func TestAppendHTTPRequestUpgradeAndHTTP10(t *testing.T) {
	r := sampleRequest()
	r.Headers = append(r.Headers, hdr{[]byte("Connection"), []byte("Upgrade")}, hdr{[]byte("Upgrade"), []byte("websocket")},
		hdr{[]byte("Sec-WebSocket-Key"), []byte("dGhlIHNhbXBsZSBub25jZQ==")})
	req := parseHTTPHead(t, appendHTTPRequest(nil, r, true))
	if req.Header.Get("Upgrade") != "websocket" || req.Header.Get("Connection") != "Upgrade" || req.Header.Get("Sec-Websocket-Key") == "" {
		t.Errorf("upgrade headers: %v", req.Header)
	}
	r = sampleRequest()
	r.Proto = []byte("HTTP/1.0")
	req = parseHTTPHead(t, appendHTTPRequest(nil, r, false))
	if req.Proto != "HTTP/1.0" || req.Header.Get("Connection") != "" {
		t.Errorf("HTTP/1.0 client: proto %s, Connection %q", req.Proto, req.Header.Get("Connection"))
	}
	r.Proto = []byte("HTTP/2.0") // h2 front
	if req = parseHTTPHead(t, appendHTTPRequest(nil, r, false)); req.Proto != "HTTP/1.1" {
		t.Errorf("h2 client: proto %s; want HTTP/1.1", req.Proto)
	}
}

// Re-encoding for a node of the other kind keeps the inline body bytes.
func TestEncodeSwitchKeepsInlineBody(t *testing.T) {
	x := getExchange()
	defer putExchange(x)
	x.req = *sampleRequest()
	x.req.BodyLen = 5
	if err := x.encode(wireUwsgi); err != nil {
		t.Fatal(err)
	}
	x.buf = append(x.buf, "hello"...)
	for _, w := range []wire{wireHTTP, wireUwsgi, wireHTTP} {
		if err := x.encode(w); err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix(x.buf, []byte("hello")) || len(x.buf) != x.headLen+5 {
			t.Fatalf("after encode(%d): buf ends %q, len %d, head %d", w, x.buf[max(0, len(x.buf)-8):], len(x.buf), x.headLen)
		}
	}
	req := parseHTTPHead(t, x.buf)
	if b, _ := io.ReadAll(req.Body); string(b) != "hello" {
		t.Fatalf("body = %q", b)
	}
}

func clReply(body string) string {
	return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nKeep-Alive: timeout=5\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
}

// Responses read to their exact end leave the connection for the next
// request at once (HEAD, 204 and 304 answers are the exception:
// TestHTTPNodeLateBodyNotReused, TestHTTPNodeSettledReuse).
func TestHTTPNodeKeepAliveReuse(t *testing.T) {
	bodies := map[string]string{
		"/cl":      clReply("fixed"),
		"/chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nX-T: 1\r\n\r\n",
		"/post":    clReply("posted"),
	}
	f := startHTTPFake(t, func(req *http.Request, body []byte, _ int) (string, bool) {
		return bodies[req.URL.Path], false
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("h.test", f.addr(), 1)
	c := uwsgitest.Dial(t, r.addr)
	for i := 0; i < 3; i++ {
		for _, tc := range []struct{ req, want string }{
			{"GET /cl HTTP/1.1\r\nHost: h.test\r\n\r\n", "fixed"},
			{"GET /chunked HTTP/1.1\r\nHost: h.test\r\n\r\n", "abcde"},
			{"POST /post HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\n\r\nabcd", "posted"},
			{"POST /post HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n", "posted"},
		} {
			resp, body := c.Do(tc.req)
			if resp.StatusCode/100 != 2 || body != tc.want {
				t.Fatalf("%.30q: %d %q; want %q", tc.req, resp.StatusCode, body, tc.want)
			}
			if v := resp.Header.Get("Keep-Alive"); v != "" {
				t.Errorf("the node's Keep-Alive header reached the client: %q", v)
			}
		}
	}
	if got := f.Accepted(); got != 1 {
		t.Errorf("node accepted %d connections for 12 sequential requests; want 1 (keep-alive)", got)
	}
	for _, req := range f.requests() {
		if req.Method == "POST" && (req.ContentLength != 4 || len(req.TransferEncoding) != 0) {
			t.Errorf("POST reached the node with CL %d TE %v; want CL 4", req.ContentLength, req.TransferEncoding)
		}
	}
	if n := r.table.Pool("h.test").Node(f.addr()).IdleConns(); n != 1 {
		t.Errorf("idle connections = %d; want 1", n)
	}
}

// Responses that end the connection, or that were not read to their end,
// never put the connection back.
func TestHTTPNodeNotReused(t *testing.T) {
	big := strings.Repeat("x", 1<<20)
	f := startHTTPNode(t, func(c *uwsgitest.Conn, r *uwsgitest.Request) {
		switch r.HTTP.URL.Path {
		case "/close":
			io.WriteString(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok") // the fake keeps it open; the router must not
		case "/eof":
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil-eof")
			c.Close()
		case "/big":
			uwsgitest.Partial("HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n"+big)(c, r)
		default:
			io.WriteString(c, clReply("ok"))
		}
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("h.test", f.addr(), 1)
	node := r.table.Pool("h.test").Node(f.addr())

	for i, tc := range []struct{ req, want string }{
		{"GET /close HTTP/1.1\r\nHost: h.test\r\n\r\n", "ok"},
		{"GET /eof HTTP/1.1\r\nHost: h.test\r\n\r\n", "until-eof"},
		{"GET / HTTP/1.0\r\nHost: h.test\r\n\r\n", "ok"},
	} {
		resp, body := raw(t, r.addr, tc.req)
		if resp.StatusCode != 200 || body != tc.want {
			t.Fatalf("%.30q: %d %q", tc.req, resp.StatusCode, body)
		}
		if resp.Close && i == 0 {
			t.Error("the node's Connection: close closed the client's connection")
		}
		if n := node.IdleConns(); n != 0 {
			t.Fatalf("%.30q: %d idle connections; want 0", tc.req, n)
		}
	}
	if got := f.Accepted(); got != 3 {
		t.Errorf("accepted %d; want 3 (one per request)", got)
	}

	// A client that leaves in the middle of a download: the node's
	// connection is cut, not reused with a body still in it.
	c := uwsgitest.Dial(t, r.addr)
	c.Send("GET /big HTTP/1.1\r\nHost: h.test\r\n\r\n")
	if _, err := c.Reader().Peek(1); err != nil {
		t.Fatal(err)
	}
	c.Close()
	waitFor(t, "the node's connection to close after the client left", func() bool { return f.Open() == 0 })
	if n := node.IdleConns(); n != 0 {
		t.Errorf("idle connections after a cut download = %d; want 0", n)
	}
}

// The keep-alive race: the node closes an idle connection just as a request
// is sent on it. The request goes again on a fresh connection; the client
// never sees the failure.
func TestHTTPNodeStaleRetry(t *testing.T) {
	var attempts atomic.Int32
	f := startHTTPFake(t, func(req *http.Request, body []byte, nth int) (string, bool) {
		attempts.Add(1)
		if nth == 1 { // the second request on any connection: drop it unanswered
			return "", true
		}
		return clReply("got " + string(body)), false
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("h.test", f.addr(), 1)
	node := r.table.Pool("h.test").Node(f.addr())
	for i, req := range []string{
		"GET / HTTP/1.1\r\nHost: h.test\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: h.test\r\nContent-Length: 3\r\n\r\nabc", // retried: the body is in memory
		"POST / HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nxyz\r\n0\r\n\r\n",
	} {
		resp, body := raw(t, r.addr, req)
		if resp.StatusCode != 200 || !strings.HasPrefix(body, "got") {
			t.Fatalf("request %d: %d %q; want 200 after a retry", i, resp.StatusCode, body)
		}
		if node.IdleConns() != 1 {
			t.Fatalf("request %d: %d idle; want 1", i, node.IdleConns())
		}
	}
	if got, want := f.Accepted(), 3; got != want {
		t.Errorf("accepted %d connections; want %d (first, then one fresh per retry)", got, want)
	}
	if info := node.Info(); info.Failures != 0 || info.State != balancer.StateActive {
		t.Errorf("a stale keep-alive connection counted against the node: %+v", info)
	}
}

// An idle connection the node closed is noticed before it is used (Linux:
// MSG_PEEK), so nothing is even sent on it.
func TestHTTPNodeClosedIdleIsSkipped(t *testing.T) {
	f := startHTTPFake(t, func(*http.Request, []byte, int) (string, bool) {
		return clReply("ok"), true // says keep-alive, closes anyway (uWSGI --http-socket)
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("h.test", f.addr(), 1)
	for i := 0; i < 5; i++ {
		if resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: h.test\r\n\r\n"); resp.StatusCode != 200 || body != "ok" {
			t.Fatalf("request %d: %d %q", i, resp.StatusCode, body)
		}
		waitFor(t, "the node to close", func() bool { return f.Open() == 0 })
	}
	if got := f.Served(); got != 5 {
		t.Errorf("served %d; want 5", got)
	}
}

func TestHTTPNodeIdleLimitAndRemoval(t *testing.T) {
	release := make(chan struct{})
	f := startHTTPFake(t, func(req *http.Request, _ []byte, _ int) (string, bool) {
		if req.URL.Path == "/wait" {
			<-release
		}
		return clReply("ok"), false
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("h.test", f.addr(), 1)
	node := r.table.Pool("h.test").Node(f.addr())
	const n = httpIdlePerNode + 8
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			raw(t, r.addr, "GET /wait HTTP/1.1\r\nHost: h.test\r\n\r\n")
		}()
	}
	waitFor(t, "all requests at the node", func() bool { return node.Inflight() == n && f.Accepted() == n })
	close(release)
	wg.Wait()
	if got := node.IdleConns(); got != httpIdlePerNode {
		t.Errorf("idle = %d; want the cap %d", got, httpIdlePerNode)
	}
	waitFor(t, "connections over the cap to close", func() bool { return f.Open() == httpIdlePerNode })
	r.table.RemoveNode("h.test", f.addr())
	waitFor(t, "idle connections to close with the node", func() bool { return f.Open() == 0 })
}

// A pool of a uwsgi node and an http node: each gets its own encoding, with
// the inline body intact whichever kind the head was first built for.
func TestMixedPool(t *testing.T) {
	u := startFakeNode(t, func(_ map[string]string, body []byte) string {
		return "HTTP/1.1 200 OK\r\n\r\nuwsgi:" + string(body)
	})
	h := startHTTPFake(t, func(_ *http.Request, body []byte, _ int) (string, bool) {
		return clReply("http:" + string(body)), false
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("m.test", u.addr(), 1)
	r.table.AddStatic("m.test", h.addr(), 1)
	got := map[string]int{}
	for i := 0; i < 10; i++ {
		resp, body := raw(t, r.addr, "POST /p HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\n\r\nhello")
		if resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		got[body]++
	}
	if got["uwsgi:hello"] != 5 || got["http:hello"] != 5 {
		t.Errorf("responses = %v; want 5 from each kind, body intact", got)
	}
}

// The uwsgi front relays packets verbatim; http nodes are skipped, and a
// pool of only http nodes answers 502.
func TestUwsgiFrontSkipsHTTPNodes(t *testing.T) {
	h := startHTTPFake(t, func(*http.Request, []byte, int) (string, bool) { return clReply("no"), false })
	r := startRouter(t, Config{})
	r.table.AddStatic("u.test", h.addr(), 1)
	c := uwsgitest.Dial(t, startUwsgiFront(t, r))
	c.Send(string(uwsgitest.Packet("HTTP_HOST", "u.test", "REQUEST_METHOD", "GET", "REMOTE_ADDR", "127.0.0.1")))
	resp, _, err := c.Next("GET")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 502 || h.Accepted() != 0 {
		t.Errorf("status %d, node connections %d; want 502 and none", resp.StatusCode, h.Accepted())
	}
}
