package router

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// fakeNode is an in-process uwsgi backend: it reads one request per
// connection, hands the vars and body to reply, writes what reply returns
// and closes, as a uWSGI worker does.
type fakeNode struct {
	ln    net.Listener
	reply func(vars map[string]string, body []byte) string
	mu    sync.Mutex
	seen  []map[string]string
	mods  [][2]uint8
}

func startFakeNode(t *testing.T, reply func(map[string]string, []byte) string) *fakeNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &fakeNode{ln: ln, reply: reply}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go n.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return n
}

func (n *fakeNode) addr() string { return n.ln.Addr().String() }

func (n *fakeNode) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	var hb [4]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return
	}
	h, _ := uwsgi.ParseHeader(hb[:])
	block := make([]byte, h.Size)
	if _, err := io.ReadFull(br, block); err != nil {
		return
	}
	vars := map[string]string{}
	for off := 0; off < len(block); {
		k, v, next, err := uwsgi.NextVar(block, off)
		if err != nil {
			return
		}
		vars[string(k)] = string(v)
		off = next
	}
	var body []byte
	if cl := vars["CONTENT_LENGTH"]; cl != "" {
		var n int
		fmt.Sscan(cl, &n)
		body = make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return
		}
	}
	n.mu.Lock()
	n.seen = append(n.seen, vars)
	n.mods = append(n.mods, [2]uint8{h.Modifier1, h.Modifier2})
	n.mu.Unlock()
	io.WriteString(c, n.reply(vars, body))
}

func (n *fakeNode) last() map[string]string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.seen) == 0 {
		return nil
	}
	return n.seen[len(n.seen)-1]
}

type testRouter struct {
	addr  string
	table *balancer.Table
	rt    *Router
}

func startRouter(t *testing.T, cfg Config) *testRouter {
	t.Helper()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pools = table
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); rt.Serve(ln, "test") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt.Shutdown(ctx)
		<-done
	})
	return &testRouter{addr: ln.Addr().String(), table: table, rt: rt}
}

// raw sends one raw request on a fresh connection and returns the parsed
// response and its body.
func raw(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading response to %q: %v", req, err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, string(body)
}

func okReply(body string) func(map[string]string, []byte) string {
	return func(map[string]string, []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body
	}
}

func TestRoutesByHostAndReframes(t *testing.T) {
	a := startFakeNode(t, okReply("from-a"))
	b := startFakeNode(t, func(map[string]string, []byte) string {
		return "HTTP/1.1 201 Created\r\nContent-Length: 6\r\n\r\nfrom-b"
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("a.test", a.addr(), 1)
	r.table.AddStatic("b.test", b.addr(), 1)

	resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != 200 || body != "from-a" {
		t.Fatalf("a.test: %d %q; want 200 from-a", resp.StatusCode, body)
	}
	if te := resp.TransferEncoding; len(te) != 1 || te[0] != "chunked" {
		t.Errorf("EOF-terminated backend body: TransferEncoding = %v; want chunked", te)
	}
	resp, body = raw(t, r.addr, "GET / HTTP/1.1\r\nHost: B.TEST:8080\r\n\r\n")
	if resp.StatusCode != 201 || body != "from-b" || resp.ContentLength != 6 {
		t.Fatalf("b.test: %d %q CL=%d; want 201 from-b CL=6", resp.StatusCode, body, resp.ContentLength)
	}
}

func TestVars(t *testing.T) {
	n := startFakeNode(t, okReply("ok"))
	r := startRouter(t, Config{})
	r.table.AddStatic("v.test", n.addr(), 1)

	c, err := net.DialTCP("tcp", nil, net.TCPAddrFromAddrPort(netip.MustParseAddrPort(r.addr)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	localPort := c.LocalAddr().(*net.TCPAddr).Port
	req := "POST /a%2Fb/./c/../d?x=1&y=%20 HTTP/1.1\r\nHost: v.test:81\r\nX-Dup: one\r\nX-Dup: two\r\n" +
		"X_Dup: spoof\r\nProxy: http://evil\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	io.WriteString(c, req)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	v := n.last()
	want := map[string]string{
		"REQUEST_METHOD":         "POST",
		"REQUEST_URI":            "/a%2Fb/./c/../d?x=1&y=%20",
		"PATH_INFO":              "/a/b/d",
		"QUERY_STRING":           "x=1&y=%20",
		"SERVER_PROTOCOL":        "HTTP/1.1",
		"SCRIPT_NAME":            "",
		"SERVER_NAME":            "v.test",
		"REMOTE_ADDR":            "127.0.0.1",
		"REMOTE_PORT":            fmt.Sprint(localPort),
		"REQUEST_SCHEME":         "http",
		"CONTENT_LENGTH":         "5",
		"CONTENT_TYPE":           "text/plain",
		"HTTP_HOST":              "v.test:81",
		"HTTP_X_DUP":             "one, two",
		"HTTP_X_FORWARDED_FOR":   "10.0.0.1, 127.0.0.1",
		"HTTP_X_FORWARDED_PROTO": "http",
	}
	for k, w := range want {
		if got, ok := v[k]; !ok || got != w {
			t.Errorf("%s = %q (present %v); want %q", k, got, ok, w)
		}
	}
	for _, k := range []string{"HTTP_PROXY", "HTTPS", "HTTP_CONTENT_LENGTH", "HTTP_CONTENT_TYPE"} {
		if _, ok := v[k]; ok {
			t.Errorf("%s present; want absent", k)
		}
	}
	if strings.Contains(v["HTTP_X_DUP"], "spoof") {
		t.Errorf("underscore header leaked into HTTP_X_DUP: %q", v["HTTP_X_DUP"])
	}
}

func TestKeepAliveAndChunkedUpload(t *testing.T) {
	n := startFakeNode(t, func(v map[string]string, body []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\n\r\nlen=%d cl=%s", len(body), v["CONTENT_LENGTH"])
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("k.test", n.addr(), 1)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		io.WriteString(c, "POST / HTTP/1.1\r\nHost: k.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if string(b) != "len=11 cl=11" {
			t.Fatalf("request %d: body %q; want len=11 cl=11", i, b)
		}
	}
}

func TestErrorStatuses(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	r := startRouter(t, Config{MaxHeaderBytes: 4096})
	r.table.AddStatic("dead.test", deadAddr, 1)
	garbage := startFakeNode(t, func(map[string]string, []byte) string { return "\x00\x01garbage" })
	r.table.AddStatic("garbage.test", garbage.addr(), 1)

	cases := []struct {
		name, req string
		want      int
	}{
		{"no pool", "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n", 404},
		{"two hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"cl and te", "POST / HTTP/1.1\r\nHost: dead.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
		{"no host 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
		{"obs-fold", "GET / HTTP/1.1\r\nHost: dead.test\r\nX-A: 1\r\n  folded\r\n\r\n", 400},
		{"huge header", "GET / HTTP/1.1\r\nHost: dead.test\r\nX-Big: " + strings.Repeat("a", 8000) + "\r\n\r\n", 431},
		{"refused", "GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n", 502},
		{"failed backoff", "GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n", 503},
		{"garbage", "GET / HTTP/1.1\r\nHost: garbage.test\r\n\r\n", 502},
	}
	for _, tc := range cases {
		resp, body := raw(t, r.addr, tc.req)
		if resp.StatusCode != tc.want {
			t.Errorf("%s: status %d; want %d", tc.name, resp.StatusCode, tc.want)
		}
		if body == "" {
			t.Errorf("%s: empty body", tc.name)
		}
		if tc.want == 503 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: 503 without Retry-After", tc.name)
		}
	}
}

func TestRetryOnConnectFailure(t *testing.T) {
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	live := startFakeNode(t, okReply("live"))
	r := startRouter(t, Config{})
	r.table.AddStatic("r.test", deadAddr, 1)
	r.table.AddStatic("r.test", live.addr(), 1)
	for i := 0; i < 10; i++ {
		resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: r.test\r\n\r\n")
		if resp.StatusCode != 200 || body != "live" {
			t.Fatalf("request %d: %d %q; want 200 live", i, resp.StatusCode, body)
		}
	}
}

func TestBackendTimeout(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close() // read nothing, answer nothing
		}
	}()
	r := startRouter(t, Config{Timeout: 300 * time.Millisecond})
	r.table.AddStatic("slow.test", ln.Addr().String(), 1)
	resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
	if resp.StatusCode != 504 {
		t.Fatalf("status %d; want 504", resp.StatusCode)
	}
}

func TestHTTP10UnknownLengthClosesConnection(t *testing.T) {
	n := startFakeNode(t, okReply(strings.Repeat("x", 100000)))
	r := startRouter(t, Config{})
	r.table.AddStatic("h10.test", n.addr(), 1)
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.0\r\nHost: h10.test\r\n\r\n")
	all, err := io.ReadAll(c)
	if err != nil {
		t.Fatal(err)
	}
	head, body, _ := bytes.Cut(all, []byte("\r\n\r\n"))
	if bytes.Contains(bytes.ToLower(head), []byte("chunked")) {
		t.Errorf("HTTP/1.0 response is chunked:\n%s", head)
	}
	if len(body) != 100000 {
		t.Errorf("body %d bytes; want 100000", len(body))
	}
}

// TestLargeBodies: Content-Length bodies larger than the copy buffer arrive
// whole (backendBody.WriteTo), through HTTP/1.1 and HTTP/1.0 clients; a node
// that closes short of its Content-Length leaves the client with a short
// body and a closed connection, never a hang or a padded body.
func TestLargeBodies(t *testing.T) {
	big := strings.Repeat("0123456789abcdef", 300<<10/16) // 300 KiB
	whole := startFakeNode(t, func(map[string]string, []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big), big)
	})
	short := startFakeNode(t, func(map[string]string, []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(big)+100, big)
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("whole.test", whole.addr(), 1)
	r.table.AddStatic("short.test", short.addr(), 1)
	for _, proto := range []string{"HTTP/1.1", "HTTP/1.0"} {
		resp, body := raw(t, r.addr, "GET / "+proto+"\r\nHost: whole.test\r\n\r\n")
		if resp.StatusCode != 200 || body != big || resp.ContentLength != int64(len(big)) {
			t.Errorf("%s: %d, %d bytes (CL %d); want 200 and %d bytes", proto, resp.StatusCode, len(body), resp.ContentLength, len(big))
		}
	}
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: short.test\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err == nil || len(got) > len(big) {
		t.Errorf("short node body: %d bytes, err %v; want at most %d bytes and an unexpected EOF", len(got), err, len(big))
	}
}
