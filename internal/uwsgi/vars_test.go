package uwsgi

import (
	"net/netip"
	"strings"
	"testing"
)

func TestPathInfo(t *testing.T) {
	cases := []struct{ uri, want string }{
		{"/", "/"},
		{"/plain", "/plain"},
		{"//a///b/./c/../d%2Fe?x=1", "//a///b/d/e"},
		{"/a/..", "/"},
		{"/a/.", "/a/"},
		{"/%41%2e%2e/x", "/A../x"},
		{"/a+b%zz", "/a+b%zz"},
		{"/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"},
		{"/x%", "/x%"},
		{"/x#frag", "/x"},
		{"http://h.test/p/q?z", "/p/q"},
		{"http://h.test", ""},
		{"*", "*"},
	}
	for _, tc := range cases {
		path, _ := SplitURI([]byte(tc.uri))
		b := appendPathInfo(nil, path)
		k, v, _, err := NextVar(b, 0)
		if err != nil || string(k) != "PATH_INFO" {
			t.Fatalf("%q: bad record %q %v", tc.uri, k, err)
		}
		if string(v) != tc.want {
			t.Errorf("PATH_INFO(%q) = %q; want %q", tc.uri, v, tc.want)
		}
	}
}

// FuzzAppendVars: on any request line, host and headers (the strict checks
// aside), AppendVars either refuses with ErrTooLarge and leaves dst as it
// was, or writes one well-formed packet whose size field is right, whose
// var names are the fixed CGI ones or HTTP_ ones, and in which every
// client header without '_' and outside the router's own shows up as its
// HTTP_ name: client input never makes a var of another name.
func FuzzAppendVars(f *testing.F) {
	f.Add("GET", "/a%2e%2e/b?q=1", "shop.example.com:8080", "X-A", "1", "X_B", "2", true)
	f.Add("POST", "http://h/p", "", "Content-Length", "5", "Proxy", "x", false)
	f.Add("", "", "[::1]", "X-Forwarded-For", "10.0.0.1", "x-forwarded-proto", "https", true)
	fixed := map[string]bool{"REQUEST_METHOD": true, "REQUEST_URI": true, "PATH_INFO": true, "QUERY_STRING": true,
		"SERVER_PROTOCOL": true, "SCRIPT_NAME": true, "SERVER_NAME": true, "SERVER_PORT": true, "REMOTE_ADDR": true,
		"REMOTE_PORT": true, "REQUEST_SCHEME": true, "HTTPS": true, "HTTPS_DN": true, "CONTENT_LENGTH": true, "CONTENT_TYPE": true}
	f.Fuzz(func(t *testing.T, method, uri, host, k1, v1, k2, v2 string, trusted bool) {
		r := &Request{Method: []byte(method), URI: []byte(uri), Proto: []byte("HTTP/1.1"), Host: []byte(host),
			Scheme: "https", Remote: netip.MustParseAddrPort("192.0.2.7:51234"), ServerPort: []byte("443"),
			Trusted: trusted, Headers: []Field{{[]byte(k1), []byte(v1)}, {[]byte(k2), []byte(v2)}}}
		dst := []byte("prefix")
		out, err := AppendVars(dst, r, 5, 7)
		if err != nil {
			if err != ErrTooLarge || string(out) != "prefix" {
				t.Fatalf("AppendVars = %q, %v; want the prefix and ErrTooLarge", out, err)
			}
			return
		}
		pkt := out[len("prefix"):]
		h, err := ParseHeader(pkt)
		if err != nil || h.Modifier1 != 5 || h.Modifier2 != 7 || int(h.Size) != len(pkt)-HeaderLen {
			t.Fatalf("header %+v, %v for a %d-byte packet", h, err, len(pkt))
		}
		seen := map[string]bool{}
		for off, b := 0, pkt[HeaderLen:]; off < len(b); {
			k, _, next, err := NextVar(b, off)
			if err != nil {
				t.Fatalf("var at %d: %v", off, err)
			}
			if !fixed[string(k)] && !strings.HasPrefix(string(k), "HTTP_") {
				t.Fatalf("var %q from client input", k)
			}
			seen[string(k)] = true
			off = next
		}
		for _, k := range []string{k1, k2} {
			if k == "" || strings.Contains(k, "_") || ClassOf([]byte(k)) != ClassPass {
				continue
			}
			name := []byte("HTTP_")
			for _, c := range []byte(k) { // ASCII upper case, '-' → '_'
				switch {
				case 'a' <= c && c <= 'z':
					c -= 'a' - 'A'
				case c == '-':
					c = '_'
				}
				name = append(name, c)
			}
			if !seen[string(name)] {
				t.Fatalf("header %q did not become %s", k, name)
			}
		}
	})
}
