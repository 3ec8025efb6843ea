package strict

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// head runs checkHead on a request line's parts and a header block.
func head(method, uri, proto, raw string) (*Head, Reject) {
	r := &Head{URI: []byte(uri), Proto: []byte(proto), Fields: make([]Field, 0, 8)}
	for _, line := range strings.Split(raw, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "host") && r.Host == nil {
			r.Host = []byte(strings.TrimSpace(v)) // what fasthttp's Host() gives
		}
	}
	why := CheckHead([]byte(method), []byte(raw), r, 5)
	return r, why
}

func TestCheckHead(t *testing.T) {
	const ok = None
	long := "/" + strings.Repeat("a", MaxRequestLine)
	for _, tc := range []struct {
		name, method, uri, proto, raw string
		want                          Reject
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

		{"obs-fold", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: 1\r\n folded\r\n\r\n", ObsFold},
		{"whitespace before the first header", "GET", "/", "HTTP/1.1", " Host: a\r\n\r\n", ObsFold},
		{"space before colon", "GET", "/", "HTTP/1.1", "Host : a\r\n\r\n", HeaderName},
		{"tab before colon", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A\t: 1\r\n\r\n", HeaderName},
		{"space in a name", "GET", "/", "HTTP/1.1", "Host: a\r\nX A: 1\r\n\r\n", HeaderName},
		{"empty name", "GET", "/", "HTTP/1.1", "Host: a\r\n: 1\r\n\r\n", HeaderName},
		{"no colon", "GET", "/", "HTTP/1.1", "Host: a\r\nnocolon\r\n\r\n", HeaderName},
		{"NUL in a name", "GET", "/", "HTTP/1.1", "Host: a\r\nX\x00A: 1\r\n\r\n", HeaderName},
		{"non-token name byte", "GET", "/", "HTTP/1.1", "Host: a\r\nX(A): 1\r\n\r\n", HeaderName},
		{"NUL in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: a\x00b\r\n\r\n", HeaderValue},
		{"bare CR in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: a\rb\r\n\r\n", HeaderValue},
		{"CTL in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: \x01\r\n\r\n", HeaderValue},
		{"DEL in a value", "GET", "/", "HTTP/1.1", "Host: a\r\nX-A: \x7f\r\n\r\n", HeaderValue},
		{"too many headers", "GET", "/", "HTTP/1.1", "Host: a\r\nA: 1\r\nB: 1\r\nC: 1\r\nD: 1\r\nE: 1\r\n\r\n", HeaderCount},
		{"two Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n", ContentLength},
		{"listed Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 1, 1\r\n\r\n", ContentLength},
		{"signed Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: +1\r\n\r\n", ContentLength},
		{"negative Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: -1\r\n\r\n", ContentLength},
		{"hex Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 0x10\r\n\r\n", ContentLength},
		{"empty Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length:\r\n\r\n", ContentLength},
		{"huge Content-Length", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 9999999999999999999\r\n\r\n", ContentLength},
		{"chunked not last", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", TransferEnc},
		{"chunked twice", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked, chunked\r\n\r\n", TransferEnc},
		{"two TE lines", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n", TransferEnc},
		{"TE without chunked", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip\r\n\r\n", TransferEnc},
		{"empty TE", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: \r\n\r\n", TransferEnc},
		{"chunked with a parameter", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked;x=1\r\n\r\n", TransferEnc},
		{"TE on HTTP/1.0", "POST", "/", "HTTP/1.0", "Transfer-Encoding: chunked\r\n\r\n", TransferEnc},
		{"gzip then chunked", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", TECoding},
		{"CL and TE", "POST", "/", "HTTP/1.1", "Host: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", CLAndTE},
		{"TE and CL", "POST", "/", "HTTP/1.1", "Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", CLAndTE},
		{"no Host on 1.1", "GET", "/", "HTTP/1.1", "X-A: 1\r\n\r\n", Host},
		{"empty Host on 1.1", "GET", "/", "HTTP/1.1", "Host: \r\n\r\n", Host},
		{"two Host", "GET", "/", "HTTP/1.1", "Host: a\r\nhost: a\r\n\r\n", Host},
		{"two Host on 1.0", "GET", "/", "HTTP/1.0", "Host: a\r\nHost: b\r\n\r\n", Host},
		{"absolute form, other scheme", "GET", "ftp://a.test/", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"absolute form with userinfo", "GET", "http://u:p@a.test/", "HTTP/1.1", "Host: a\r\n\r\n", Host},
		{"absolute form, empty authority", "GET", "http:///x", "HTTP/1.1", "Host: a\r\n\r\n", Host},
		{"absolute form, bad authority", "GET", "http://a b/x", "HTTP/1.1", "Host: a\r\n\r\n", Host},
		{"HTTP/1.2", "GET", "/", "HTTP/1.2", "Host: a\r\n\r\n", Version},
		{"HTTP/2.0 over HTTP/1", "GET", "/", "HTTP/2.0", "Host: a\r\n\r\n", Version},
		{"HTTP/0.9", "GET", "/", "HTTP/0.9", "Host: a\r\n\r\n", Version},
		{"CONNECT", "CONNECT", "a.test:443", "HTTP/1.1", "Host: a.test:443\r\n\r\n", Connect},
		{"non-token method", "G(T", "/", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"relative target", "GET", "a/b", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"* without OPTIONS", "GET", "*", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"fragment in the target", "GET", "/a#b", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"NUL in the target", "GET", "/a\x00", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"DEL in the target", "GET", "/a\x7f", "HTTP/1.1", "Host: a\r\n\r\n", RequestLine},
		{"request line too long", "GET", long, "HTTP/1.1", "Host: a\r\n\r\n", TargetLong},
	} {
		if _, got := head(tc.method, tc.uri, tc.proto, tc.raw); got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, Names[got], Names[tc.want])
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
		if why != None {
			t.Fatalf("%s: %s", tc.uri, Names[why])
		}
		if string(r.Host) != tc.host || string(r.URI) != tc.rest || len(r.Fields) != tc.headers {
			t.Errorf("%s: host %q uri %q %d headers; want %q %q %d", tc.uri, r.Host, r.URI, len(r.Fields), tc.host, tc.rest, tc.headers)
		}
		for _, h := range r.Fields {
			if strings.EqualFold(string(h.Name), "host") && string(h.Value) != tc.host {
				t.Errorf("%s: Host header sent as %q; want %q", tc.uri, h.Value, tc.host)
			}
		}
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
		if why != None || strings.ContainsAny(method+uri+proto, "\r\n ") {
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
		for _, h := range r.Fields {
			switch strings.ToLower(string(h.Name)) {
			case "content-length":
				cl = h.Value
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
	r := &Head{Fields: make([]Field, 0, 32)}
	b.ReportAllocs()
	for b.Loop() {
		r.URI, r.Proto, r.Host, r.Fields, r.Scratch = uri, proto, host, r.Fields[:0], r.Scratch[:0]
		if CheckHead(method, raw, r, 100) != None {
			b.Fatal("rejected")
		}
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"example.com": true, "example.com:8080": true, "[::1]:80": true, "[::1]": true, "10.0.0.1": true,
		"": false, "a/b": false, "a b": false, "a@b": false, "example.com:x": false, "example.com:99999": false,
	} {
		if got := ValidHost([]byte(h)); got != want {
			t.Errorf("ValidHost(%q) = %v; want %v", h, got, want)
		}
	}
}
