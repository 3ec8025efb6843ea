package router

import (
	"strings"
	"testing"
)

func TestCheckPseudo(t *testing.T) {
	long := "/" + strings.Repeat("a", maxRequestLine)
	for _, tc := range []struct {
		name, method, path string
		want               headReject
	}{
		{"GET /", "GET", "/", rejNone},
		{"query", "GET", "/a/b?c=d&e", rejNone},
		{"non-ASCII byte", "GET", "/caf\xc3\xa9", rejNone},
		{"extension method", "PURGE", "/x", rejNone},
		{"OPTIONS *", "OPTIONS", "*", rejNone},
		{"double slash", "GET", "//x", rejNone},

		{"request line in the method", "GET /admin HTTP/1.1", "/x", rejRequestLine},
		{"space in the method", "G T", "/", rejRequestLine},
		{"HTAB in the method", "G\tT", "/", rejRequestLine},
		{"non-token method", "GE(T", "/", rejRequestLine},
		{"empty method", "", "/", rejRequestLine},
		{"request line in the path", "GET", "/x HTTP/1.1", rejRequestLine},
		{"space in the path", "GET", "/a b", rejRequestLine},
		{"HTAB in the path", "GET", "/a\tb", rejRequestLine},
		{"NUL in the path", "GET", "/a\x00", rejRequestLine},
		{"DEL in the path", "GET", "/a\x7f", rejRequestLine},
		{"fragment", "GET", "/a#f", rejRequestLine},
		{"* for GET", "GET", "*", rejRequestLine},
		{"empty path", "GET", "", rejRequestLine},
		{"absolute-form", "GET", "http://b.test/", rejRequestLine},
		{"relative path", "GET", "a/b", rejRequestLine},
		{"CONNECT", "CONNECT", "", rejConnect},
		{"CONNECT with an authority", "CONNECT", "a.test:443", rejConnect},
		{"overlong target", "GET", long, rejTargetLong},
	} {
		if got := checkPseudo([]byte(tc.method), []byte(tc.path)); got != tc.want {
			t.Errorf("%s: checkPseudo(%q, %.40q) = %s; want %s", tc.name, tc.method, tc.path, headRejectNames[got], headRejectNames[tc.want])
		}
	}
}

func TestFieldCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields [][2]string
		max    int
		want   headReject
	}{
		{"plain", [][2]string{{"Accept", "*/*"}, {"X-A", "a\tb"}, {"Cookie", "a=b; c=d"}}, 10, rejNone},
		{"obs-text", [][2]string{{"X-A", "caf\xc3\xa9"}}, 10, rejNone},
		{"empty value", [][2]string{{"X-A", ""}}, 10, rejNone},
		{"content-length", [][2]string{{"Content-Length", "12"}}, 10, rejNone},
		{"te trailers", [][2]string{{"Te", "trailers"}}, 10, rejNone},

		{"leading space", [][2]string{{"X-A", " v"}}, 10, rejHeaderValue},
		{"leading HTAB", [][2]string{{"X-A", "\tv"}}, 10, rejHeaderValue},
		{"trailing space", [][2]string{{"X-A", "v "}}, 10, rejHeaderValue},
		{"only a space", [][2]string{{"X-A", " "}}, 10, rejHeaderValue},
		{"NUL", [][2]string{{"X-A", "a\x00b"}}, 10, rejHeaderValue},
		{"CR", [][2]string{{"X-A", "a\rb"}}, 10, rejHeaderValue},
		{"LF", [][2]string{{"X-A", "a\nb"}}, 10, rejHeaderValue},
		{"DEL", [][2]string{{"X-A", "a\x7f"}}, 10, rejHeaderValue},
		{"empty name", [][2]string{{"", "v"}}, 10, rejHeaderName},
		{"space in a name", [][2]string{{"X A", "v"}}, 10, rejHeaderName},
		{"colon in a name", [][2]string{{":path", "/"}}, 10, rejHeaderName},
		{"two content-lengths", [][2]string{{"Content-Length", "1"}, {"content-length", "1"}}, 10, rejContentLength},
		{"signed content-length", [][2]string{{"Content-Length", "+1"}}, 10, rejContentLength},
		{"listed content-length", [][2]string{{"Content-Length", "1,1"}}, 10, rejContentLength},
		{"empty content-length", [][2]string{{"Content-Length", ""}}, 10, rejContentLength},
		{"connection", [][2]string{{"Connection", "close"}}, 10, rejConnHeader},
		{"keep-alive", [][2]string{{"Keep-Alive", "1"}}, 10, rejConnHeader},
		{"proxy-connection", [][2]string{{"Proxy-Connection", "x"}}, 10, rejConnHeader},
		{"transfer-encoding", [][2]string{{"Transfer-Encoding", "chunked"}}, 10, rejConnHeader},
		{"upgrade", [][2]string{{"Upgrade", "websocket"}}, 10, rejConnHeader},
		{"te gzip", [][2]string{{"Te", "gzip"}}, 10, rejConnHeader},
		{"too many", [][2]string{{"A", "1"}, {"B", "2"}, {"C", "3"}}, 2, rejHeaderCount},
	} {
		var fc fieldCheck
		got := rejNone
		for _, f := range tc.fields {
			if got = fc.field([]byte(f[0]), []byte(f[1]), tc.max); got != rejNone {
				break
			}
		}
		if got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, headRejectNames[got], headRejectNames[tc.want])
		}
	}
}

// FuzzCheckPseudo: on any target an h2 :path may hold (origin-form, "*",
// anything not absolute-form), checkPseudo decides exactly as checkHead
// does on the HTTP/1.1 request line the same method and target make: the
// two fronts refuse the same request lines for the same reasons.
func FuzzCheckPseudo(f *testing.F) {
	for _, s := range [][2]string{{"GET", "/"}, {"OPTIONS", "*"}, {"GET /a HTTP/1.1", "/"}, {"GET", "/x y"},
		{"CONNECT", "a:443"}, {"GET", "/#f"}, {"PO\x00ST", "/\x7f"}, {"", ""}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, method, path string) {
		got := checkPseudo([]byte(method), []byte(path))
		if strings.Contains(path, "://") && !strings.HasPrefix(path, "/") {
			if got == rejNone {
				t.Fatalf("checkPseudo(%q, %q) accepts a target that is not origin-form", method, path)
			}
			return
		}
		r := &request{uri: []byte(path), proto: []byte("HTTP/1.1"), host: []byte("a"), headers: make([]hdr, 0, 2)}
		want := checkHead([]byte(method), []byte("Host: a\r\n\r\n"), r, 10)
		if got != want {
			t.Fatalf("checkPseudo(%q, %q) = %s; checkHead on the same request line = %s", method, path, headRejectNames[got], headRejectNames[want])
		}
	})
}

// FuzzFieldCheck: a field fieldCheck accepts is one the HTTP/1.1 checks
// accept as a header line, with the same value (no whitespace to trim).
func FuzzFieldCheck(f *testing.F) {
	for _, s := range [][2]string{{"X-A", "v"}, {"X-A", " v"}, {"Content-Length", "12"}, {"Te", "trailers"}, {"A B", "\x00"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		var fc fieldCheck
		if fc.field([]byte(name), []byte(value), 10) != rejNone {
			return
		}
		if strings.ContainsAny(value, "\r\n") {
			t.Fatalf("field(%q, %q) accepts a line break", name, value)
		}
		r := &request{uri: []byte("/"), proto: []byte("HTTP/1.1"), host: []byte("a"), headers: make([]hdr, 0, 4)}
		raw := "Host: a\r\n" + name + ": " + value + "\r\n\r\n"
		if why := checkHead([]byte("GET"), []byte(raw), r, 10); why != rejNone {
			if why == rejHost && strings.EqualFold(name, "host") {
				return // a second Host: HTTP/2 keeps Host apart (x/net/http2 checks it against :authority)
			}
			t.Fatalf("field(%q, %q) accepted; checkHead refuses the line: %s", name, value, headRejectNames[why])
		}
		if got := string(r.headers[1].v); got != value {
			t.Fatalf("field(%q, %q) accepted; HTTP/1.1 reads the value as %q", name, value, got)
		}
	})
}
