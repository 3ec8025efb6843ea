//go:build !race

package strict

import "testing"

// The strict checks run on every HTTP/1.1 request: they allocate nothing,
// absolute-form included.
func TestCheckHeadAllocatesNothing(t *testing.T) {
	raw := []byte("Host: a.test\r\nUser-Agent: curl/8\r\nAccept: */*\r\nContent-Length: 12\r\nX-Forwarded-For: 10.0.0.1\r\nCookie: a=b\r\n\r\n")
	method := []byte("POST")
	for _, uri := range []string{"/some/path?q=1", "http://b.test/p?q", "http://b.test?q"} {
		r := &Head{Fields: make([]Field, 0, 32)}
		u, proto, host := []byte(uri), []byte("HTTP/1.1"), []byte("a.test")
		n := testing.AllocsPerRun(1000, func() {
			r.URI, r.Proto, r.Host, r.Fields, r.Scratch = u, proto, host, r.Fields[:0], r.Scratch[:0]
			if why := CheckHead(method, raw, r, 100); why != None {
				t.Fatal(Names[why])
			}
		})
		if n != 0 {
			t.Fatalf("CheckHead(%s): %v allocs/op; want 0", uri, n)
		}
	}
}

// The HTTP/2 checks run on every h2 request: they allocate nothing either.
func TestCheckPseudoAndFieldsAllocateNothing(t *testing.T) {
	method, path := []byte("POST"), []byte("/some/path?q=1")
	fields := [][2][]byte{{[]byte("User-Agent"), []byte("curl/8")}, {[]byte("Content-Length"), []byte("12")}, {[]byte("Te"), []byte("trailers")}}
	n := testing.AllocsPerRun(1000, func() {
		if why := CheckPseudo(method, path); why != None {
			t.Fatal(Names[why])
		}
		var fc FieldCheck
		for _, f := range fields {
			if why := fc.Field(f[0], f[1], 100); why != None {
				t.Fatal(Names[why])
			}
		}
	})
	if n != 0 {
		t.Fatalf("checkPseudo and FieldCheck: %v allocs/op; want 0", n)
	}
}
