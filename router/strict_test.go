package router

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

// head runs checkHead on a request line's parts and a header block.
func head(method, uri, proto, raw string) (*request, headReject) {
	r := &request{uri: []byte(uri), proto: []byte(proto), headers: make([]hdr, 0, 8)}
	for _, line := range strings.Split(raw, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "host") && r.host == nil {
			r.host = []byte(strings.TrimSpace(v)) // what fasthttp's Host() gives
		}
	}
	why := checkHead([]byte(method), []byte(raw), r, 5)
	return r, why
}

func TestCheckHead(t *testing.T) {
	const ok = rejNone
	long := "/" + strings.Repeat("a", maxRequestLine)
	for _, tc := range []struct {
		name, method, uri, proto, raw string
		want                          headReject
	}{
		{"plain", "GET", "/", "HTTP/1.1", "Host: a.test\r\nX-A: 1\r\n\r\n", ok},
		{"bare LF line ends", "GET", "/", "HTTP/1.1", "Host: a.test\nX-A: 1\n\n", ok},
		{"HTAB and obs-text in a value", "GET", "/", "HTTP/1.1", "Host: a.test\r\nX-A: a\tb\xe9\r\n\r\n", ok},
		{"HTTP/1.0 without Host", "GET", "/", "HTTP/1.0", "\r\n", ok},
		{"OPTIONS *", "OPTIONS", "*", "HTTP/1.1", "Host: a.test\r\n\r\n", ok},
		{"chunked", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked\r\n\r\n", ok},
		{"Chunked, any case, empty list elements", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: , CHUNKED ,\r\n\r\n", ok},
		{"Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 012\r\n\r\n", ok},
		{"non-ASCII byte in the target", "GET", "/caf\xc3\xa9", "HTTP/1.1", "Host: a\r\n\r\n", ok},

		{"obs-fold", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: 1\r\n folded\r\n\r\n", rejObsFold},
		{"whitespace before the first header", "GET", "/", "HTTP/1.1", " Host: a\r\n\r\n", rejObsFold},
		{"space before colon", "GET", "/", "HTTP/1.1", "Host : a\r\n\r\n", rejHeaderName},
		{"tab before colon", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A\t: 1\r\n\r\n", rejHeaderName},
		{"space in a name", "GET", "/", "HTTP/1.1", "Host: a\r\nX A: 1\r\n\r\n", rejHeaderName},
		{"empty name", "GET", "/", "HTTP/1.1", "Host: a\r\n: 1\r\n\r\n", rejHeaderName},
		{"no colon", "GET", "/", "HTTP/1.1", "Host: a\r\nnocolon\r\n\r\n", rejHeaderName},
		{"NUL in a name", "GET", "/", "HTTP/1.1", "Host: a\r\nX\x00A: 1\r\n\r\n", rejHeaderName},
		{"non-token name byte", "GET", "/", "HTTP/1.1", "Host: a\r\nX(A): 1\r\n\r\n", rejHeaderName},
		{"NUL in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: a\x00b\r\n\r\n", rejHeaderValue},
		{"bare CR in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: a\rb\r\n\r\n", rejHeaderValue},
		{"CTL in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: \x01\r\n\r\n", rejHeaderValue},
		{"DEL in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: \x7f\r\n\r\n", rejHeaderValue},
		{"too many headers", "GET", "/", "HTTP/1.1", "Host: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", rejHeaderCount},
		{"two Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", rejContentLength},
		{"listed Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 1, 1\r\n\r\n", rejContentLength},
		{"signed Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: +1\r\n\r\n", rejContentLength},
		{"negative Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: -1\r\n\r\n", rejContentLength},
		{"hex Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 0x10\r\n\r\n", rejContentLength},
		{"empty Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length:\r\n\r\n", rejContentLength},
		{"huge Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 9999999999999999999\r\n\r\n", rejContentLength},
		{"chunked not last", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", rejTransferEnc},
		{"chunked twice", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", rejTransferEnc},
		{"two TE lines", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", rejTransferEnc},
		{"TE without chunked", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip\r\n\r\n", rejTransferEnc},
		{"empty TE", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: \r\n\r\n", rejTransferEnc},
		{"chunked with a parameter", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", rejTransferEnc},
		{"TE on HTTP/1.0", "POST", "/", "HTTP/1.0", "Transfer-Encoding: chunked\r\n\r\n", rejTransferEnc},
		{"gzip then chunked", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", rejTECoding},
		{"CL and TE", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", rejCLAndTE},
		{"TE and CL", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", rejCLAndTE},
		{"no Host on 1.1", "GET", "/", "HTTP/1.1", "X-A: 1\r\n\r\n", rejHost},
		{"empty Host on 1.1", "GET", "/", "HTTP/1.1", "Host: \r\n\r\n", rejHost},
		{"two Host", "GET", "/", "HTTP/1.1", "Host: a\r\nhost: a\r\n\r\n", rejHost},
		{"two Host on 1.0", "GET", "/", "HTTP/1.0", "Host: a\r\nHost: b\r\n\r\n", rejHost},
		{"absolute form, other scheme", "GET", "ftp://a.test/", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"absolute form with userinfo", "GET", "http://u:p@a.test/", "HTTP/1.1", "Host: a\r\n\r\n", rejHost},
		{"absolute form, empty authority", "GET", "http:///x", "HTTP/1.1", "Host: a\r\n\r\n", rejHost},
		{"absolute form, bad authority", "GET", "http://a b/x", "HTTP/1.1", "Host: a\r\n\r\n", rejHost},
		{"HTTP/1.2", "GET", "/", "HTTP/1.2", "Host: a\r\n\r\n", rejVersion},
		{"HTTP/2.0 over HTTP/1", "GET", "/", "HTTP/2.0", "Host: a\r\n\r\n", rejVersion},
		{"HTTP/0.9", "GET", "/", "HTTP/0.9", "Host: a\r\n\r\n", rejVersion},
		{"CONNECT", "CONNECT", "a.test:443", "HTTP/1.1", "Host: a.test:443\r\n\r\n", rejConnect},
		{"non-token method", "G(T", "/", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"relative target", "GET", "a/b", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"* without OPTIONS", "GET", "*", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"fragment in the target", "GET", "/a#b", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"NUL in the target", "GET", "/a\x00", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"DEL in the target", "GET", "/a\x7f", "HTTP/1.1", "Host: a\r\n\r\n", rejRequestLine},
		{"request line too long", "GET", long, "HTTP/1.1", "Host: a\r\n\r\n", rejTargetLong},
	} {
		if _, got := head(tc.method, tc.uri, tc.proto, tc.raw); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, headRejectNames[got], headRejectNames[tc.want])
		}
	}
}

// An absolute-form target is the routing key and HTTP_HOST; REQUEST_URI is
// the target's origin form.
func TestCheckHeadAbsoluteForm(t *testing.T) {
	for _, tc := range []struct {
		uri, proto, raw string
		host, rest      string
		headers         int
	}{
		{"http://B.test:8080/p?q=1", "HTTP/1.1", "Host: a.test\r\nX: 1\r\n\r\n", "B.test:8080", "/p?q=1", 2},
		{"HTTPS://b.test", "HTTP/1.1", "Host: a.test\r\n\r\n", "b.test", "/", 1},
		{"http://b.test?x", "HTTP/1.1", "Host: a.test\r\n\r\n", "b.test", "/?x", 1},
		{"http://[::1]:81/", "HTTP/1.0", "\r\n", "[::1]:81", "/", 1}, // 1.0 without Host: HTTP_HOST added
	} {
		r, why := head("GET", tc.uri, tc.proto, tc.raw)
		if why != rejNone {
			t.Fatalf("%s: %s", tc.uri, headRejectNames[why])
		}
		if string(r.host) != tc.host || string(r.uri) != tc.rest || len(r.headers) != tc.headers {
			t.Errorf("%s: host %q uri %q %d headers; want %q %q %d", tc.uri, r.host, r.uri, len(r.headers), tc.host, tc.rest, tc.headers)
		}
		for _, h := range r.headers {
			if strings.EqualFold(string(h.k), "host") && string(h.v) != tc.host {
				t.Errorf("%s: Host header sent as %q; want %q", tc.uri, h.v, tc.host)
			}
		}
	}
}

// The strict checks run on the real front: statuses, bodies, the reason
// counter, and a closed connection after each refusal.
func TestStrictHeadOverTheWire(t *testing.T) {
	n := startFakeNode(t, func(v map[string]string, _ []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(v["HTTP_HOST"]+" "+v["REQUEST_URI"])) + "\r\n\r\n" +
			v["HTTP_HOST"] + " " + v["REQUEST_URI"]
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("b.test", n.addr(), 1)
	resp, body := raw(t, r.addr, "GET http://b.test/p?q HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != 200 || body != "b.test /p?q" {
		t.Fatalf("absolute form: %d %q; want 200 from b.test with REQUEST_URI /p?q", resp.StatusCode, body)
	}
	for _, tc := range []struct {
		req    string
		status int
		reason headReject
	}{
		{"GET / HTTP/1.1\r\nHost: b.test\r\nX: 1\r\n folded\r\n\r\n", 400, rejObsFold},
		{"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n", 405, rejConnect},
		{"GET /" + strings.Repeat("x", maxRequestLine) + " HTTP/1.1\r\nHost: b.test\r\n\r\n", 414, rejTargetLong},
		{"GET / HTTP/1.2\r\nHost: b.test\r\n\r\n", 505, rejVersion},
		{"GET /#f HTTP/1.1\r\nHost: b.test\r\n\r\n", 400, rejRequestLine},
	} {
		resp, body := raw(t, r.addr, tc.req)
		if resp.StatusCode != tc.status || body == "" || !resp.Close {
			t.Errorf("%.40q: %d %q close=%v; want %d, a body, Connection: close", tc.req, resp.StatusCode, body, resp.Close, tc.status)
		}
		if got := testutil.ToFloat64(r.rt.headRejects[tc.reason]); got != 1 {
			t.Errorf("%.40q: rejected{%s} = %v; want 1", tc.req, headRejectNames[tc.reason], got)
		}
	}
}

func TestMaxConns(t *testing.T) {
	n := startFakeNode(t, okReply("ok"))
	r := startRouter(t, Config{MaxConns: 2})
	r.table.AddStatic("m.test", n.addr(), 1)
	var held []net.Conn
	for range 2 {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	// The two held connections may still be on their way through accept;
	// a third is refused once both are counted.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: m.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("over the limit: %v; want a 503", err)
		}
		if resp.StatusCode == 503 {
			if resp.Header.Get("Retry-After") == "" || !resp.Close {
				t.Fatalf("refusal without Retry-After or Connection: close: %v", resp.Header)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("third connection answered %d; want 503", resp.StatusCode)
		}
	}
	if got := testutil.ToFloat64(r.rt.connsRefused.WithLabelValues("test")); got < 1 {
		t.Fatalf("refused counter = %v", got)
	}
	// Closing a held connection frees its slot.
	held[0].Close()
	eventually(t, func() bool {
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			return false
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: m.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		return err == nil && resp.StatusCode == 200
	})
	// The held connection still works.
	_ = held[1].SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(held[1], "GET / HTTP/1.1\r\nHost: m.test\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(held[1]), nil); err != nil || resp.StatusCode != 200 {
		t.Fatalf("held connection: %v %v", resp, err)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// FuzzCheckHead: checkHead never panics on any request line parts and
// header block, and when it accepts a head that net/http also parses, both
// frame the body the same way (no body, a Content-Length, or chunked), so
// the router can never read a different body than an RFC parser would.
func FuzzCheckHead(f *testing.F) {
	f.Add("GET", "/", "HTTP/1.1", "Host: a\r\n\r\n")
	f.Add("POST", "/u", "HTTP/1.1", "Host: a\r\nContent-Length: 5\r\n\r\n")
	f.Add("POST", "/u", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n")
	f.Add("GET", "http://b/x?y", "HTTP/1.0", "X: a\r\n b\r\n\r\n")
	f.Add("OPTIONS", "*", "HTTP/1.1", "Host: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	f.Fuzz(func(t *testing.T, method, uri, proto, raw string) {
		r, why := head(method, uri, proto, raw)
		if why != rejNone || strings.ContainsAny(method+uri+proto, "\r\n ") {
			return
		}
		wire := method + " " + uri + " " + proto + "\r\n" + raw
		if !strings.HasSuffix(raw, "\n\n") && !strings.HasSuffix(raw, "\r\n\r\n") {
			return // the head has no end; nothing to compare
		}
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(wire)))
		if err != nil {
			return
		}
		var cl []byte
		te := false
		for _, h := range r.headers {
			switch strings.ToLower(string(h.k)) {
			case "content-length":
				cl = h.v
			case "transfer-encoding":
				te = true
			}
		}
		switch {
		case te:
			if len(req.TransferEncoding) == 0 || req.TransferEncoding[len(req.TransferEncoding)-1] != "chunked" {
				t.Fatalf("router: chunked; net/http: %v", req.TransferEncoding)
			}
		case cl != nil:
			if fmt.Sprint(req.ContentLength) != strings.TrimLeft(string(cl), "0") && !(req.ContentLength == 0 && len(bytes.Trim(cl, "0")) == 0) {
				t.Fatalf("router: Content-Length %q; net/http: %d", cl, req.ContentLength)
			}
		default:
			if req.ContentLength > 0 || len(req.TransferEncoding) > 0 {
				t.Fatalf("router: no body; net/http: CL %d TE %v", req.ContentLength, req.TransferEncoding)
			}
		}
	})
}

func BenchmarkCheckHead(b *testing.B) {
	raw := []byte("Host: a.test\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\nAccept: text/html,application/xhtml+xml\r\n" +
		"Accept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br\r\nCookie: session=0123456789abcdef\r\n" +
		"Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\n\r\n")
	method, uri, proto, host := []byte("GET"), []byte("/some/path?q=1"), []byte("HTTP/1.1"), []byte("a.test")
	r := &request{headers: make([]hdr, 0, 32)}
	b.ReportAllocs()
	for b.Loop() {
		r.uri, r.proto, r.host, r.headers = uri, proto, host, r.headers[:0]
		if checkHead(method, raw, r, 100) != rejNone {
			b.Fatal("rejected")
		}
	}
}
