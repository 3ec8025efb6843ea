//go:build !race

package router

import "testing"

// The strict checks run on every HTTP/1.1 request: they allocate nothing,
// absolute-form included.
func TestCheckHeadAllocatesNothing(t *testing.T) {
	raw := []byte("Host: a.test\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Length: 12\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: a=b\r\n\r\n")
	method := []byte("POST")
	for _, uri := range []string{"/some/path?q=1", "http://b.test/p?q", "http://b.test?q"} {
		r := &request{headers: make([]hdr, 0, 32)}
		u, proto, host := []byte(uri), []byte("HTTP/1.1"), []byte("a.test")
		n := testing.AllocsPerRun(1000, func() {
			r.uri, r.proto, r.host, r.headers = u, proto, host, r.headers[:0]
			if why := checkHead(method, raw, r, 100); why != rejNone {
				t.Fatal(headRejectNames[why])
			}
		})
		if n != 0 {
			t.Fatalf("checkHead(%s): %v allocs/op; want 0", uri, n)
		}
	}
}

// The HTTP/2 checks run on every h2 request: they allocate nothing either.
func TestCheckPseudoAndFieldsAllocateNothing(t *testing.T) {
	method, path := []byte("POST"), []byte("/some/path?q=1")
	fields := [][2][]byte{{[]byte("User-Agent"), []byte("curl/8")}, {[]byte("Content-Length"), []byte("12")}, {[]byte("Te"), []byte("trailers")}}
	n := testing.AllocsPerRun(1000, func() {
		if why := checkPseudo(method, path); why != rejNone {
			t.Fatal(headRejectNames[why])
		}
		var fc fieldCheck
		for _, f := range fields {
			if why := fc.field(f[0], f[1], 100); why != rejNone {
				t.Fatal(headRejectNames[why])
			}
		}
	})
	if n != 0 {
		t.Fatalf("checkPseudo and fieldCheck: %v allocs/op; want 0", n)
	}
}
