package h2srv

import (
	"net/http"
	"testing"

	"golang.org/x/net/http2"
)

// wantGoAway fails unless the connection ends with a GOAWAY of code.
func (cl *client) wantGoAway(what string, code http2.ErrCode) {
	cl.t.Helper()
	if ga := cl.goAway(); ga == nil || ga.ErrCode != code {
		cl.t.Errorf("%s: GOAWAY %v; want %v", what, ga, code)
	}
}

// TestServeStreamIDRules: RFC 9113 §5.1 and §5.1.1.
func TestServeStreamIDRules(t *testing.T) {
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {})
	hdr := []string{":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", "/"}

	cl := dial(t, addr)
	cl.fr.AllowIllegalWrites = true
	cl.headers(0, true, hdr...)
	cl.wantGoAway("HEADERS on stream 0", http2.ErrCodeProtocol)

	cl = dial(t, addr)
	cl.headers(2, true, hdr...)
	cl.wantGoAway("even stream ID", http2.ErrCodeProtocol)

	cl = dial(t, addr)
	cl.get(5, "/")
	if _, _, rst := cl.response(5); rst != nil {
		t.Fatalf("stream 5 reset %v", rst)
	}
	cl.get(3, "/")
	cl.wantGoAway("stream ID down", http2.ErrCodeProtocol)

	cl = dial(t, addr)
	_ = cl.fr.WriteData(7, true, []byte("x"))
	cl.wantGoAway("DATA on idle stream", http2.ErrCodeProtocol)
}
