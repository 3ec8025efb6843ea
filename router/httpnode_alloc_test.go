//go:build !race && linux

package router

import (
	"net"
	"testing"
)

func TestAppendHTTPRequestAllocatesNothing(t *testing.T) {
	r := sampleRequest()
	r.Headers = append(r.Headers, hdr{[]byte("Connection"), []byte("keep-alive")}, hdr{[]byte("X-Forwarded-For"), []byte("203.0.113.9")})
	r.Trusted = true
	r.BodyLen = 10
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = appendHTTPRequest(buf[:0], r, false) }); n != 0 {
		t.Fatalf("appendHTTPRequest: %v allocs/op; want 0", n)
	}
	x := getExchange()
	defer putExchange(x)
	x.req = *r
	x.buf = append(x.buf[:0], make([]byte, 100)...)
	x.wire, x.headLen = wireUwsgi, 90
	_ = x.encode(wireHTTP)
	_ = x.encode(wireUwsgi)
	if n := testing.AllocsPerRun(100, func() { _ = x.encode(wireHTTP); _ = x.encode(wireUwsgi) }); n != 0 {
		t.Fatalf("re-encoding for the other node kind: %v allocs/op; want 0", n)
	}
}

func TestAliveCheckAllocatesNothing(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	var a aliveCheck
	a.init(c)
	if !a.ok() {
		t.Fatal("an open, quiet connection is not alive")
	}
	if n := testing.AllocsPerRun(100, func() { a.ok() }); n != 0 {
		t.Fatalf("aliveCheck.ok: %v allocs/op; want 0", n)
	}
	s.Close()
	waitFor(t, "the peer's close to be seen", func() bool { return !a.ok() })
}
