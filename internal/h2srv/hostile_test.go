package h2srv

import (
	"net/http"
	"sync"
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

// errorCounts collects what a Server reports through CountError.
type errorCounts struct {
	mu sync.Mutex
	n  map[string]int
}

func (e *errorCounts) count(name string) {
	e.mu.Lock()
	if e.n == nil {
		e.n = make(map[string]int)
	}
	e.n[name]++
	e.mu.Unlock()
}

func (e *errorCounts) get(name string) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.n[name]
}

// wantReset fails unless stream id ends with RST_STREAM code.
func (cl *client) wantReset(what string, id uint32, code http2.ErrCode) {
	cl.t.Helper()
	if _, _, rst := cl.response(id); rst == nil || *rst != code {
		cl.t.Errorf("%s: reset %v; want %v", what, rst, code)
	}
}

// wantOK fails unless stream id gets a whole response, and no frame of
// stream quiet comes first.
func (cl *client) wantOK(what string, id, quiet uint32) {
	cl.t.Helper()
	for {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			cl.t.Fatalf("%s: %v", what, err)
		}
		switch {
		case f.Header().StreamID == quiet && quiet != 0:
			cl.t.Errorf("%s: %v on stream %d; want nothing", what, f, quiet)
		case f.Header().StreamID == id:
			switch f := f.(type) {
			case *http2.RSTStreamFrame:
				cl.t.Fatalf("%s: stream %d reset %v", what, id, f.ErrCode)
			case *http2.MetaHeadersFrame:
				if f.StreamEnded() {
					return
				}
			case *http2.DataFrame:
				if f.StreamEnded() {
					return
				}
			}
		case f.Header().Type == http2.FrameGoAway:
			cl.t.Fatalf("%s: %v", what, f)
		}
	}
}

// TestServeWindowUpdateRules: a window past 2^31-1 is a FLOW_CONTROL_ERROR
// of the connection (GOAWAY) or of the stream (RST_STREAM), RFC 9113
// §6.9.1; an increment of 0 a PROTOCOL_ERROR, of the stream or of the
// connection (§6.9), and of the connection on an idle stream (§5.1).
//
// The handler that keeps a stream open waits for its request's context,
// which the reset ends. One that waited for a channel the test closes in a
// cleanup registered before serve's would hang the test, not the server:
// serve's cleanup runs first and waits for ServeConn, which returns once
// every handler has.
func TestServeWindowUpdateRules(t *testing.T) {
	var errs errorCounts
	_, addr := serve(t, Config{CountError: errs.count}, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/wait" {
			<-r.Context().Done()
		}
	})

	cl := dial(t, addr)
	if err := cl.fr.WriteWindowUpdate(0, maxWindow); err != nil {
		t.Fatal(err)
	}
	cl.wantGoAway("connection window 65535 + 2^31-1", http2.ErrCodeFlowControl)

	cl = dial(t, addr)
	cl.fr.AllowIllegalWrites = true
	cl.get(1, "/wait")
	_ = cl.fr.WriteWindowUpdate(1, maxWindow)
	cl.wantReset("stream window 65535 + 2^31-1", 1, http2.ErrCodeFlowControl)
	cl.get(3, "/wait")
	_ = cl.fr.WriteWindowUpdate(3, maxWindow-initialWindow) // exactly 2^31-1: allowed
	cl.get(5, "/")
	cl.wantOK("after a stream window of 2^31-1", 5, 3)
	_ = cl.fr.WriteWindowUpdate(3, 1)
	cl.wantReset("stream window 2^31", 3, http2.ErrCodeFlowControl)
	_ = cl.fr.WriteWindowUpdate(0, maxWindow-initialWindow) // the connection's: exactly 2^31-1
	cl.get(7, "/wait")
	_ = cl.fr.WriteWindowUpdate(7, 0)
	cl.wantReset("stream increment 0", 7, http2.ErrCodeProtocol)
	cl.get(9, "/")
	cl.wantOK("after a stream increment 0", 9, 0)
	_ = cl.fr.WriteWindowUpdate(0, 0)
	cl.wantGoAway("connection increment 0", http2.ErrCodeProtocol)

	cl = dial(t, addr)
	cl.fr.AllowIllegalWrites = true
	_ = cl.fr.WriteWindowUpdate(11, 0)
	cl.wantGoAway("increment 0 on an idle stream", http2.ErrCodeProtocol)

	cl = dial(t, addr)
	_ = cl.fr.WriteWindowUpdate(13, 100)
	cl.wantGoAway("WINDOW_UPDATE on an idle stream", http2.ErrCodeProtocol)

	for name, want := range map[string]int{"conn_window_overflow": 1, "stream_window_overflow": 2,
		"stream_PROTOCOL_ERROR": 1, "conn_PROTOCOL_ERROR": 1, "conn_window_update_idle": 1, "conn_stream_error_idle": 1} {
		if got := errs.get(name); got != want {
			t.Errorf("CountError(%q): %d; want %d", name, got, want)
		}
	}
}
