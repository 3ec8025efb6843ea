package router

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

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

	c := uwsgitest.Dial(t, r.addr)
	localPort := c.Conn().LocalAddr().(*net.TCPAddr).Port
	req := "POST /a%2Fb/./c/../d?x=1&y=%20 HTTP/1.1\r\nHost: v.test:81\r\nX-Dup: one\r\nX-Dup: two\r\n" +
		"X_Dup: spoof\r\nProxy: http://evil\r\nX-Forwarded-For: 10.0.0.1\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"
	c.Do(req)
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
	c := uwsgitest.Dial(t, r.addr)
	for i := 0; i < 5; i++ {
		_, b := c.Do("POST / HTTP/1.1\r\nHost: k.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
		if b != "len=11 cl=11" {
			t.Fatalf("request %d: body %q; want len=11 cl=11", i, b)
		}
	}
}

func TestErrorStatuses(t *testing.T) {
	deadAddr := uwsgitest.Refused(t)
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
	deadAddr := uwsgitest.Refused(t)
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
	n := uwsgitest.NewNode(t, uwsgitest.Hold()) // reads, answers nothing
	r := startRouter(t, Config{Timeout: 300 * time.Millisecond})
	r.table.AddStatic("slow.test", n.Addr(), 1)
	resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: slow.test\r\n\r\n")
	if resp.StatusCode != 504 {
		t.Fatalf("status %d; want 504", resp.StatusCode)
	}
}

func TestHTTP10UnknownLengthClosesConnection(t *testing.T) {
	n := startFakeNode(t, okReply(strings.Repeat("x", 100000)))
	r := startRouter(t, Config{})
	r.table.AddStatic("h10.test", n.addr(), 1)
	c := uwsgitest.Dial(t, r.addr)
	c.Send("GET / HTTP/1.0\r\nHost: h10.test\r\n\r\n")
	head, body, _ := strings.Cut(c.Rest(), "\r\n\r\n")
	if strings.Contains(strings.ToLower(head), "chunked") {
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
	c := uwsgitest.Dial(t, r.addr)
	c.Send("GET / HTTP/1.1\r\nHost: short.test\r\n\r\n")
	resp, err := http.ReadResponse(c.Reader(), nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	if err == nil || len(got) > len(big) {
		t.Errorf("short node body: %d bytes, err %v; want at most %d bytes and an unexpected EOF", len(got), err, len(big))
	}
}
