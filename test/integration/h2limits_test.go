package integration

// The request side of HTTP/2 under hostile input, against the real binary
// and real uWSGI nodes, driven frame by frame with x/net/http2's Framer:
// pseudo-header rules, declared bodies over --max-body-bytes (HTTP/1.1,
// HTTP/2 and the --uwsgi front), and the rapid-reset flood.

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// dialH2C opens a raw HTTP/2 prior-knowledge connection to addr
// (newH2Conn).
func dialH2C(t *testing.T, addr string) *h2Conn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return newH2Conn(t, c)
}

// writeReq writes one HEADERS frame with fields in order (pseudo-headers
// first, as given) and flushes.
func (h *h2Conn) writeReq(id uint32, fields [][2]string, endStream bool) error {
	h.hb.Reset()
	for _, f := range fields {
		_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndStream: endStream, EndHeaders: true}); err != nil {
		return err
	}
	return h.bw.Flush()
}

// h2Outcome is how the server ended a stream or the connection.
type h2Outcome struct {
	status string         // :status of the response HEADERS; "" when none
	body   string         // DATA of the stream up to END_STREAM, when a status came
	rst    *http2.ErrCode // RST_STREAM on the stream
	goaway *http2.GoAwayFrame
	err    error // the connection failed (read error, closed)
}

func (o h2Outcome) String() string {
	switch {
	case o.status != "":
		return fmt.Sprintf(":status %s %.60q", o.status, o.body)
	case o.rst != nil:
		return "RST_STREAM " + o.rst.String()
	case o.goaway != nil:
		return fmt.Sprintf("GOAWAY %v (last stream %d, %q)", o.goaway.ErrCode, o.goaway.LastStreamID, o.goaway.DebugData())
	}
	return fmt.Sprintf("connection error %v", o.err)
}

// await reads frames until stream id gets a response (its whole body, for
// a :status), a reset, or the connection a GOAWAY or an error. SETTINGS
// are acknowledged.
func (h *h2Conn) await(id uint32, d time.Duration) h2Outcome {
	_ = h.SetReadDeadline(time.Now().Add(d))
	defer h.SetReadDeadline(time.Time{})
	var o h2Outcome
	var body bytes.Buffer
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			o.err = err
			if o.status != "" {
				o.body = body.String()
			}
			return o
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				_ = h.fr.WriteSettingsAck()
				_ = h.bw.Flush()
			}
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				o.status = f.PseudoValue("status")
				if f.StreamEnded() {
					return o
				}
			}
		case *http2.DataFrame:
			if f.StreamID == id {
				body.Write(f.Data())
				if f.StreamEnded() {
					o.body = body.String()
					return o
				}
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				code := f.ErrCode
				o.rst = &code
				o.body = body.String()
				return o
			}
		case *http2.GoAwayFrame:
			o.goaway = f
			return o
		}
	}
}

// stdReq is a GET for path on authority over h2c, with extra fields after
// the pseudo-headers.
func stdReq(method, authority, path string, extra ...[2]string) [][2]string {
	return append([][2]string{{":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}}, extra...)
}

// TestH2RequestLineRules: what the HTTP/1.1 front refuses in a request
// line or header (strict.go) is refused over HTTP/2 too, from the
// pseudo-headers and fields of a HEADERS frame: a 400 (405 for CONNECT, 414
// for an overlong target) or a stream reset, counted, and nothing reaches
// the node. Before, `:method: GET /admin HTTP/1.1` reached a uwsgi app as
// REQUEST_METHOD 'GET /admin HTTP/1.1', `:path: /x y` as PATH_INFO '/x y'.
func TestH2RequestLineRules(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n := startNode(t, r, "rules.test", nodeOpts{id: "r"})
	waitForNodes(t, r, "rules.test", 1)
	h := dialH2C(t, r.http)

	// The baseline: a well-formed request is served (so a refusal below is
	// the rule, not a broken client).
	if err := h.writeReq(1, stdReq("GET", "rules.test", "/env"), true); err != nil {
		t.Fatal(err)
	}
	if o := h.await(1, 10*time.Second); o.status != "200" || !strings.Contains(o.body, `"REQUEST_METHOD": "GET"`) {
		t.Fatalf("a well-formed h2 GET: %v; want 200 from the node", o)
	}
	served := r.pool(t, "rules.test").node(n.addr).Requests

	long := "/" + strings.Repeat("a", 17<<10)
	cases := []struct {
		name   string
		fields [][2]string
		status string // "" = a stream reset (or 400) is expected, from x/net
		reason string // fastrouter_http_rejected_total reason, when the router refuses it
	}{
		{"method with a request line", stdReq("GET /admin HTTP/1.1", "rules.test", "/env"), "400", "request_line"},
		{"method with a space", stdReq("G T", "rules.test", "/env"), "400", "request_line"},
		{"method not a token", stdReq("GE(T", "rules.test", "/env"), "400", "request_line"},
		{"method with HTAB", stdReq("GE\tT", "rules.test", "/env"), "400", "request_line"},
		{"path with a request line", stdReq("GET", "rules.test", "/env HTTP/1.1"), "400", "request_line"},
		{"path with a space", stdReq("GET", "rules.test", "/echo x"), "400", "request_line"},
		{"path with a fragment", stdReq("GET", "rules.test", "/env#frag"), "400", "request_line"},
		{"path * for GET", stdReq("GET", "rules.test", "*"), "400", "request_line"},
		{"path over 16 KiB", stdReq("GET", "rules.test", long), "414", "request_line_too_long"},
		{"CONNECT", [][2]string{{":method", "CONNECT"}, {":authority", "rules.test:443"}}, "405", "connect"},
		{"value with a leading space", stdReq("GET", "rules.test", "/env", [2]string{"x-a", " v"}), "400", "header_value"},
		{"value with a trailing HTAB", stdReq("GET", "rules.test", "/env", [2]string{"x-a", "v\t"}), "400", "header_value"},
		{"two content-lengths", stdReq("POST", "rules.test", "/env", [2]string{"content-length", "0"}, [2]string{"content-length", "0"}), "400", "content_length"},
		{"content-length not a number", stdReq("POST", "rules.test", "/env", [2]string{"content-length", "+0"}), "400", "content_length"},
		// x/net/http2 refuses these itself (a stream error, or a 400 it
		// writes): the node must not see them either.
		{"path with HTAB", stdReq("GET", "rules.test", "/env\tx"), "", ""},
		{"path with DEL", stdReq("GET", "rules.test", "/env\x7f"), "", ""},
		{"path with NUL", stdReq("GET", "rules.test", "/env\x00"), "", ""},
		{"absolute-form path", stdReq("GET", "rules.test", "http://evil.test/env"), "", ""},
		{"empty method", stdReq("", "rules.test", "/env"), "", ""},
		{"value with CR LF", stdReq("GET", "rules.test", "/env", [2]string{"x-a", "v\r\nx-b: w"}), "", ""},
		{"upper-case field name", stdReq("GET", "rules.test", "/env", [2]string{"X-A", "v"}), "", ""},
		{"connection-specific field", stdReq("GET", "rules.test", "/env", [2]string{"transfer-encoding", "chunked"}), "", ""},
	}
	id := uint32(1)
	for _, c := range cases {
		id += 2
		before := 0.0
		if c.reason != "" {
			before = metricValue(t, r, `fastrouter_http_rejected_total{reason="`+c.reason+`"}`)
		}
		if err := h.writeReq(id, c.fields, true); err != nil {
			t.Fatalf("%s: write: %v", c.name, err)
		}
		o := h.await(id, 10*time.Second)
		switch {
		case o.goaway != nil || o.err != nil:
			// x/net answers a header it cannot decode with a connection
			// error; the next case gets a fresh connection.
			if c.status != "" {
				t.Errorf("%s: %v; want :status %s", c.name, o, c.status)
			}
			h.Close()
			h = dialH2C(t, r.http)
			id = 1
		case c.status != "" && o.status != c.status:
			t.Errorf("%s: %v; want :status %s", c.name, o, c.status)
		case c.status == "" && o.status != "" && o.status != "400":
			t.Errorf("%s: %v; want a stream reset or 400", c.name, o)
		}
		if c.reason != "" {
			if after := metricValue(t, r, `fastrouter_http_rejected_total{reason="`+c.reason+`"}`); after != before+1 {
				t.Errorf("%s: fastrouter_http_rejected_total{reason=%q} %v -> %v; want +1", c.name, c.reason, before, after)
			}
		}
		t.Logf("%-28s -> %v", c.name, o)
	}
	// OPTIONS * is a valid target (RFC 9113 §8.3.1): it reaches the node.
	id += 2
	if err := h.writeReq(id, stdReq("OPTIONS", "rules.test", "*"), true); err != nil {
		t.Fatal(err)
	}
	if o := h.await(id, 10*time.Second); o.status == "" || o.status == "400" {
		t.Errorf("OPTIONS *: %v; want it forwarded", o)
	}
	if got := r.pool(t, "rules.test").node(n.addr).Requests; got != served+1 {
		t.Errorf("the node was picked %d times for %d refused requests and one OPTIONS *; want 1", got-served, len(cases))
	}
	promtoolCheck(t, r)
}

// TestOversizedContentLength: a declared body over --max-body-bytes is
// answered 413 as soon as the head is read, with or without
// Expect: 100-continue, over HTTP/1.1 and HTTP/2; before, HTTP/1.1 without
// Expect waited for 8 KiB of body, or for --timeout (60s) and then 408.
func TestOversizedContentLength(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--max-body-bytes", "1000")
	n := startNode(t, r, "big.test", nodeOpts{id: "b"})
	waitForNodes(t, r, "big.test", 1)

	for _, c := range []struct{ name, head, body string }{
		{"2e9 and a few bytes", "Content-Length: 2000000000\r\n", "abc"},
		{"5000 and a few bytes", "Content-Length: 5000\r\n", "abc"},
		{"5000, no body yet", "Content-Length: 5000\r\n", ""},
		{"2e9 with Expect", "Content-Length: 2000000000\r\nExpect: 100-continue\r\n", ""},
	} {
		start := time.Now()
		resp, body := uwsgitest.Do(t, r.http, "POST /upload HTTP/1.1\r\nHost: big.test\r\n"+c.head+"\r\n"+c.body)
		took := time.Since(start)
		if resp.StatusCode != 413 || took > 5*time.Second {
			t.Errorf("HTTP/1.1 %s: %d %q after %s; want 413 at once", c.name, resp.StatusCode, body, took)
		}
		if !resp.Close {
			t.Errorf("HTTP/1.1 %s: the 413 keeps the connection open; the body that follows is not a request", c.name)
		}
		t.Logf("HTTP/1.1 %s: %d in %s", c.name, resp.StatusCode, took.Round(time.Millisecond))
	}
	// At the limit: served.
	payload := strings.Repeat("x", 1000)
	resp, body := uwsgitest.Do(t, r.http, "POST /upload HTTP/1.1\r\nHost: big.test\r\nConnection: close\r\nContent-Length: 1000\r\n\r\n"+payload)
	if resp.StatusCode != 200 || !strings.HasPrefix(body, "1000 ") {
		t.Errorf("HTTP/1.1 body of exactly --max-body-bytes: %d %q; want 200", resp.StatusCode, body)
	}

	h := dialH2C(t, r.http)
	for i, cl := range []string{"2000000000", "5000"} {
		id := uint32(2*i + 1)
		start := time.Now()
		if err := h.writeReq(id, stdReq("POST", "big.test", "/upload", [2]string{"content-length", cl}), false); err != nil {
			t.Fatal(err)
		}
		if err := h.fr.WriteData(id, false, []byte("abc")); err != nil || h.bw.Flush() != nil {
			t.Fatal(err)
		}
		o := h.await(id, 10*time.Second)
		if o.status != "413" || time.Since(start) > 5*time.Second {
			t.Errorf("HTTP/2 content-length %s: %v after %s; want 413 at once", cl, o, time.Since(start))
		}
	}
	if got := r.pool(t, "big.test").node(n.addr).Requests; got != 1 {
		t.Errorf("the node was picked %d times; want once (the body at the limit)", got)
	}
}

// TestUwsgiFrontMaxBodyBytes: the --uwsgi front applies --max-body-bytes
// to CONTENT_LENGTH: 413, as an HTTP response nginx relays, and nothing
// reaches the node. Before, a 5000-byte body reached the app under
// --max-body-bytes 1000.
func TestUwsgiFrontMaxBodyBytes(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	uw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--uwsgi", uw, "--max-body-bytes", "1000")
	n := startNode(t, r, "app.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "app.test", 1)
	ngx := startNginx(t, uw)
	c := client()

	for _, size := range []int{5000, 2 << 20} {
		req, _ := http.NewRequest("POST", "http://"+ngx+"/upload", bytes.NewReader(bytes.Repeat([]byte("x"), size)))
		req.Host = "app.test"
		resp, b := doReqRaw(t, c, req)
		if resp.StatusCode != 413 || !strings.Contains(b, "413") {
			t.Errorf("a %d-byte upload through nginx under --max-body-bytes 1000: %d %q; want the router's 413", size, resp.StatusCode, b)
		}
	}
	req, _ := http.NewRequest("POST", "http://"+ngx+"/upload", bytes.NewReader(bytes.Repeat([]byte("x"), 1000)))
	req.Host = "app.test"
	if resp, b := doReqRaw(t, c, req); resp.StatusCode != 200 || !strings.HasPrefix(b, "1000 ") {
		t.Errorf("a 1000-byte upload through nginx: %d %q; want 200", resp.StatusCode, b)
	}

	// Straight over the uwsgi protocol: the 413 comes before any body byte
	// is sent, and the connection is not read as a second request.
	pkt := uwsgitest.Packet("REQUEST_METHOD", "POST", "REQUEST_URI", "/upload", "PATH_INFO", "/upload",
		"SERVER_PROTOCOL", "HTTP/1.1", "HTTP_HOST", "app.test", "CONTENT_LENGTH", "2000000000")
	conn, err := net.DialTimeout("tcp", uw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write(pkt); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil || resp.StatusCode != 413 {
		t.Fatalf("uwsgi packet with CONTENT_LENGTH 2000000000: %v %v; want an HTTP 413", resp, err)
	}
	if got := r.pool(t, "app.test").node(n.addr).Requests; got != 1 {
		t.Errorf("the node was picked %d times; want once (the body at the limit)", got)
	}
}

// uwsgiRequests is the number of requests a uWSGI node's workers have
// served, from its stats server.
func uwsgiRequests(t *testing.T, stats string) int {
	t.Helper()
	doc := fetchStats(t, "tcp", stats)
	total := 0
	ws, _ := doc["workers"].([]any)
	for _, w := range ws {
		if m, ok := w.(map[string]any); ok {
			v, _ := m["requests"].(float64)
			total += int(v)
		}
	}
	return total
}

// goroutines reads the router's go_goroutines.
func goroutines(t *testing.T, r *router) int {
	t.Helper()
	return int(metricValue(t, r, "go_goroutines"))
}

// settleGoroutines waits until the router's goroutine count is back within
// slack of base and returns the last count seen.
func settleGoroutines(t *testing.T, r *router, base, slack int, what string) int {
	t.Helper()
	var g int
	eventually(t, 20*time.Second, fmt.Sprintf("goroutines back to %d±%d after %s", base, slack, what), func() bool {
		g = goroutines(t, r)
		return g <= base+slack
	})
	return g
}

// isClosed reports a read error that means the peer closed or reset.
func isClosed(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || strings.Contains(err.Error(), "reset by peer")
}

// floodNode starts a uWSGI node (2 processes × 2 threads) for key with a
// stats server, whose address it returns with the node.
func floodNode(t *testing.T, r *router, key, id string) (*node, string) {
	t.Helper()
	stats := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	sock := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	n := &node{addr: sock, proc: startProc(t, "uwsgi", "--plugin", "python3", "--master", "--socket", sock,
		"--wsgi-file", appPath, "--subscribe-to", r.sub+":"+key, "--subscribe-freq", "1",
		"--processes", "2", "--threads", "2", "--die-on-term", "--env", "NODE_ID="+id,
		"--buffer-size", "32768", "--disable-logging", "--stats", stats)}
	waitForNodes(t, r, key, 1)
	return n, stats
}

// rapidReset writes pairs HEADERS+RST_STREAM pairs on h as fast as the
// connection takes them (a GET for path on authority each, in 64 KiB
// writes; with pace, each frame is written on its own and the RST_STREAM
// pace after its HEADERS), then a PING,
// and reports how the server ended it: a GOAWAY (its code), an error, or
// the PING's ack (nothing stopped the flood). It returns the pairs
// written.
func rapidReset(t *testing.T, h *h2Conn, authority, path string, pairs int, pace time.Duration) (sent int, end string, goaway *http2.GoAwayFrame) {
	t.Helper()
	_ = h.SetDeadline(time.Now().Add(60 * time.Second))
	type result struct {
		end    string
		goaway *http2.GoAwayFrame
	}
	res := make(chan result, 1)
	ended := make(chan struct{}) // the writer stops when the reader has its answer
	go func() {
		defer close(ended)
		for {
			f, err := h.fr.ReadFrame()
			if err != nil {
				res <- result{end: "read error: " + err.Error()}
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				res <- result{end: fmt.Sprintf("GOAWAY %v", f.ErrCode), goaway: f}
				return
			case *http2.PingFrame:
				if f.IsAck() && f.Data == [8]byte{'f', 'l', 'o', 'o', 'd'} {
					res <- result{end: "PING ack after the whole flood"}
					return
				}
			}
		}
	}()
	var werr error
	for i := 0; i < pairs && werr == nil; i++ {
		select {
		case <-ended:
			werr = errors.New("the server ended the connection")
			continue
		default:
		}
		id := uint32(2*i + 1)
		h.hb.Reset()
		for _, f := range stdReq("GET", authority, path) {
			_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		werr = h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndStream: true, EndHeaders: true})
		if werr == nil && pace > 0 {
			if werr = h.bw.Flush(); werr == nil {
				time.Sleep(pace)
			}
		}
		if werr == nil {
			werr = h.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		if werr == nil && pace > 0 {
			werr = h.bw.Flush()
		}
		if werr == nil {
			sent++
		}
	}
	if werr == nil {
		werr = h.fr.WritePing(false, [8]byte{'f', 'l', 'o', 'o', 'd'})
	}
	if errors.Is(werr, net.ErrClosed) || werr != nil && isClosed(werr) {
		werr = nil
	}
	if werr == nil {
		werr = h.bw.Flush()
	}
	select {
	case r := <-res:
		return sent, r.end, r.goaway
	case <-time.After(60 * time.Second):
		t.Fatalf("no GOAWAY, close or PING ack within 60s of a flood of %d pairs (write error %v)", sent, werr)
	}
	return
}

// TestH2RapidResetFlood: 20,000 HEADERS+RST_STREAM pairs on one h2c
// connection (CVE-2023-44487). The router closes the connection with
// GOAWAY ENHANCE_YOUR_CALM once its resets pass the per-connection budget
// (h2guard.go), picks no node for a stream whose reset it has already
// received, and keeps serving other connections at once, the flooded pool
// included. Before: no GOAWAY, the connection stayed open, ~8.9k streams
// picked a node and dialled, ~110 reached the app, and a probe on another
// connection waited 1.7 s.
func TestH2RapidResetFlood(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n, stats := floodNode(t, r, "flood.test", "f")
	_, port, _ := net.SplitHostPort(r.http)
	probeC := h2Client(r.http, nil, nil)
	probe := func() (time.Duration, string) {
		start := time.Now()
		req, _ := http.NewRequest("GET", "http://flood.test:"+port+"/", nil)
		resp, err := probeC.Do(req)
		if err != nil {
			return time.Since(start), err.Error()
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return time.Since(start), fmt.Sprintf("%d %s", resp.StatusCode, b)
	}
	if _, got := probe(); got != "200 node=f" {
		t.Fatalf("probe before the flood: %q", got)
	}
	base := goroutines(t, r)
	hitsBefore := uwsgiRequests(t, stats)
	picksBefore := r.pool(t, "flood.test").node(n.addr).Requests

	// Probes on their own connection while the flood runs.
	type probeResult struct {
		worst time.Duration
		bad   string
		n     int
	}
	stop := make(chan struct{})
	probes := make(chan probeResult, 1)
	go func() {
		var pr probeResult
		for {
			select {
			case <-stop:
				probes <- pr
				return
			default:
			}
			d, got := probe()
			pr.n++
			pr.worst = max(pr.worst, d)
			if got != "200 node=f" && pr.bad == "" {
				pr.bad = got
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	h := dialH2C(t, r.http)
	start := time.Now()
	sent, end, goaway := rapidReset(t, h, "flood.test", "/slow?ms=1000", 20000, 0)
	took := time.Since(start)
	h.Close()
	time.Sleep(200 * time.Millisecond) // a few probes after the flood too
	close(stop)
	pr := <-probes

	eventually(t, 15*time.Second, `fastrouter_inflight_requests{pool="flood.test"} back to 0`, func() bool {
		return metricValue(t, r, `fastrouter_inflight_requests{pool="flood.test"}`) == 0
	})
	nd := r.pool(t, "flood.test").node(n.addr)
	picks := int(nd.Requests-picksBefore) - pr.n
	// Every app hit is a 1 s /slow: wait for them to be counted.
	time.Sleep(1500 * time.Millisecond)
	hits := uwsgiRequests(t, stats) - hitsBefore - pr.n
	g := settleGoroutines(t, r, base, 10, "the flood")
	t.Logf("rapid reset: %d pairs written, and %s, within %s; node picked %d times, app hit %d times; %d probes on another connection, slowest %s; goroutines %d -> %d",
		sent, end, took.Round(time.Millisecond), picks, hits, pr.n, pr.worst.Round(time.Millisecond), base, g)

	if goaway == nil || goaway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("flooding connection ended with %s; want GOAWAY ENHANCE_YOUR_CALM", end)
	}
	if sent == 20000 && goaway == nil {
		t.Errorf("all 20000 pairs were taken without a GOAWAY")
	}
	// Bounds: the reset budget is 500 plus 100/s (h2guard.go); streams
	// whose reset was not yet read when their handler ran may still pick.
	if picks > 1000 {
		t.Errorf("the node was picked for %d reset streams; want at most 1000", picks)
	}
	if hits > 200 {
		t.Errorf("%d reset streams reached the app; want at most 200", hits)
	}
	if pr.bad != "" || pr.worst > 3*time.Second {
		t.Errorf("probes during the flood: slowest %s, first failure %q; want every one answered within 3s", pr.worst, pr.bad)
	}
	if nd.State != "active" || nd.Failures != 0 {
		t.Errorf("after the flood the node is %q with %d failures; a client resetting its streams says nothing about the node", nd.State, nd.Failures)
	}
	if v := metricValue(t, r, `fastrouter_requests_total{code="504",pool="flood.test"}`); v > 0 {
		t.Errorf("%v requests of the flood were answered 504: reset streams must not wait on the node", v)
	}
	// Paced: each RST_STREAM 1 ms after its HEADERS, so the handler runs
	// before the reset arrives and goes as far as the node (path /, so the
	// app is not held). The budget still ends the connection: at most
	// h2ResetBurst (500) resets plus 100 a second.
	h = dialH2C(t, r.http)
	picksBefore = r.pool(t, "flood.test").node(n.addr).Requests
	start = time.Now()
	sent, end, goaway = rapidReset(t, h, "flood.test", "/", 5000, time.Millisecond)
	took = time.Since(start)
	h.Close()
	picks = int(r.pool(t, "flood.test").node(n.addr).Requests - picksBefore)
	t.Logf("paced rapid reset: %d pairs taken in %s, then %s; node picked %d times", sent, took.Round(time.Millisecond), end, picks)
	if goaway == nil || goaway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Errorf("paced flood ended with %s; want GOAWAY ENHANCE_YOUR_CALM", end)
	}
	if goaway != nil {
		// Streams up to the GOAWAY's last stream id were processed.
		if taken, limit := int(goaway.LastStreamID+1)/2, 500+int(100*took.Seconds())+50; taken > limit || picks > limit {
			t.Errorf("paced flood: %d streams taken (%d picked a node) in %s; want at most %d (the reset budget)", taken, picks, took, limit)
		}
	}
	if v := metricValue(t, r, `fastrouter_http2_errors_total{type="rapid_reset"}`); v != 2 {
		t.Errorf(`fastrouter_http2_errors_total{type="rapid_reset"} = %v; want 2`, v)
	}
	if code, body := get(t, client(), r.http, "flood.test", "/"); code != 200 || body != "node=f" {
		t.Errorf("the flooded pool after both floods: %d %q", code, body)
	}
	settleGoroutines(t, r, base, 10, "the paced flood")
	promtoolCheck(t, r)
}
