package strict

import (
	"strings"
	"testing"
)

func TestCheckPseudo(t *testing.T) {
	long := "/" + strings.Repeat("a", MaxRequestLine)
	for _, tc := range []struct {
		name, method, path string
		want               Reject
	}{
		{"GET /", "GET", "/", None},
		{"query", "GET", "/a/b?c=d&e", None},
		{"non-ASCII byte", "GET", "/caf\xc3\xa9", None},
		{"extension method", "PURGE", "/x", None},
		{"OPTIONS *", "OPTIONS", "*", None},
		{"double slash", "GET", "//x", None},

		{"request line in the method", "GET /admin HTTP/1.1", "/x", RequestLine},
		{"space in the method", "G T", "/", RequestLine},
		{"HTAB in the method", "G\tT", "/", RequestLine},
		{"non-token method", "GE(T", "/", RequestLine},
		{"empty method", "", "/", RequestLine},
		{"request line in the path", "GET", "/x HTTP/1.1", RequestLine},
		{"space in the path", "GET", "/a b", RequestLine},
		{"HTAB in the path", "GET", "/a\tb", RequestLine},
		{"NUL in the path", "GET", "/a\x00", RequestLine},
		{"DEL in the path", "GET", "/a\x7f", RequestLine},
		{"fragment", "GET", "/a#f", RequestLine},
		{"* for GET", "GET", "*", RequestLine},
		{"empty path", "GET", "", RequestLine},
		{"absolute-form", "GET", "http://b.test/", RequestLine},
		{"relative path", "GET", "a/b", RequestLine},
		{"CONNECT", "CONNECT", "", Connect},
		{"CONNECT with an authority", "CONNECT", "a.test:443", Connect},
		{"overlong target", "GET", long, TargetLong},
	} {
		if got := CheckPseudo([]byte(tc.method), []byte(tc.path)); got != tc.want {
			t.Errorf("%s: CheckPseudo(%q, %.40q) = %s; want %s", tc.name, tc.method, tc.path, Names[got], Names[tc.want])
		}
	}
}

func TestFieldCheck(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields [][2]string
		max    int
		want   Reject
	}{
		{"plain", [][2]string{{"Accept", "*/*"}, {"X-A", "a\tb"}, {"Cookie", "a=b; c=d"}}, 10, None},
		{"obs-text", [][2]string{{"X-A", "caf\xc3\xa9"}}, 10, None},
		{"empty value", [][2]string{{"X-A", ""}}, 10, None},
		{"content-length", [][2]string{{"Content-Length", "12"}}, 10, None},
		{"te trailers", [][2]string{{"Te", "trailers"}}, 10, None},

		{"leading space", [][2]string{{"X-A", " v"}}, 10, HeaderValue},
		{"leading HTAB", [][2]string{{"X-A", "\tv"}}, 10, HeaderValue},
		{"trailing space", [][2]string{{"X-A", "v "}}, 10, HeaderValue},
		{"only a space", [][2]string{{"X-A", " "}}, 10, HeaderValue},
		{"NUL", [][2]string{{"X-A", "a\x00b"}}, 10, HeaderValue},
		{"CR", [][2]string{{"X-A", "a\rb"}}, 10, HeaderValue},
		{"LF", [][2]string{{"X-A", "a\nb"}}, 10, HeaderValue},
		{"DEL", [][2]string{{"X-A", "a\x7f"}}, 10, HeaderValue},
		{"empty name", [][2]string{{"", "v"}}, 10, HeaderName},
		{"space in a name", [][2]string{{"X A", "v"}}, 10, HeaderName},
		{"colon in a name", [][2]string{{":path", "/"}}, 10, HeaderName},
		{"two content-lengths", [][2]string{{"Content-Length", "1"}, {"content-length", "1"}}, 10, ContentLength},
		{"signed content-length", [][2]string{{"Content-Length", "+1"}}, 10, ContentLength},
		{"listed content-length", [][2]string{{"Content-Length", "1,1"}}, 10, ContentLength},
		{"empty content-length", [][2]string{{"Content-Length", ""}}, 10, ContentLength},
		{"connection", [][2]string{{"Connection", "close"}}, 10, ConnHeader},
		{"keep-alive", [][2]string{{"Keep-Alive", "1"}}, 10, ConnHeader},
		{"proxy-connection", [][2]string{{"Proxy-Connection", "x"}}, 10, ConnHeader},
		{"transfer-encoding", [][2]string{{"Transfer-Encoding", "chunked"}}, 10, ConnHeader},
		{"upgrade", [][2]string{{"Upgrade", "websocket"}}, 10, ConnHeader},
		{"te gzip", [][2]string{{"Te", "gzip"}}, 10, ConnHeader},
		{"too many", [][2]string{{"A", "1"}, {"B", "2"}, {"C", "3"}}, 2, HeaderCount},
	} {
		var fc FieldCheck
		got := None
		for _, f := range tc.fields {
			if got = fc.Field([]byte(f[0]), []byte(f[1]), tc.max); got != None {
				break
			}
		}
		if got != tc.want {
			t.Errorf("%s: %s; want %s", tc.name, Names[got], Names[tc.want])
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
		got := CheckPseudo([]byte(method), []byte(path))
		if strings.Contains(path, "://") && !strings.HasPrefix(path, "/") {
			if got == None {
				t.Fatalf("CheckPseudo(%q, %q) accepts a target that is not origin-form", method, path)
			}
			return
		}
		r := &Head{URI: []byte(path), Proto: []byte("HTTP/1.1"), Host: []byte("a"), Fields: make([]Field, 0, 2)}
		want := CheckHead([]byte(method), []byte("Host: a\r\n\r\n"), r, 10)
		if got != want {
			t.Fatalf("CheckPseudo(%q, %q) = %s; checkHead on the same request line = %s", method, path, Names[got], Names[want])
		}
	})
}

// FuzzFieldCheck: a field FieldCheck accepts is one the HTTP/1.1 checks
// accept as a header line, with the same value (no whitespace to trim).
func FuzzFieldCheck(f *testing.F) {
	for _, s := range [][2]string{{"X-A", "v"}, {"X-A", " v"}, {"Content-Length", "12"}, {"Te", "trailers"}, {"A B", "\x00"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, name, value string) {
		var fc FieldCheck
		if fc.Field([]byte(name), []byte(value), 10) != None {
			return
		}
		if strings.ContainsAny(value, "\r\n") {
			t.Fatalf("field(%q, %q) accepts a line break", name, value)
		}
		r := &Head{URI: []byte("/"), Proto: []byte("HTTP/1.1"), Host: []byte("a"), Fields: make([]Field, 0, 4)}
		raw := "Host: a\r\n" + name + ": " + value + "\r\n\r\n"
		if why := CheckHead([]byte("GET"), []byte(raw), r, 10); why != None {
			if why == Host && strings.EqualFold(name, "host") {
				return // a second Host: HTTP/2 keeps Host apart (x/net/http2 checks it against :authority)
			}
			t.Fatalf("field(%q, %q) accepted; checkHead refuses the line: %s", name, value, Names[why])
		}
		if got := string(r.Fields[1].Value); got != value {
			t.Fatalf("field(%q, %q) accepted; HTTP/1.1 reads the value as %q", name, value, got)
		}
	})
}
