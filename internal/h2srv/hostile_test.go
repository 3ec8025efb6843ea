package h2srv

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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

// TestServeContinuationFlood: a header block that does not end is cut
// once its frames pass twice MaxHeaderListSize (each frame counted as at
// least blockFrameMin bytes): GOAWAY ENHANCE_YOUR_CALM, whether the
// CONTINUATION frames carry fragments that decode to nothing (HPACK table
// size updates, RFC 7541 §6.3) or nothing at all. A block split into many
// small frames within that is served.
func TestServeContinuationFlood(t *testing.T) {
	var errs errorCounts
	const limit = 16 << 10
	_, addr := serve(t, Config{MaxHeaderListSize: limit, CountError: errs.count}, func(w http.ResponseWriter, r *http.Request) {})
	hdr := []string{":method", "GET", ":scheme", "http", ":authority", "a.test", ":path", "/"}
	for _, tc := range []struct {
		name string
		frag []byte
	}{
		{"table size updates", bytes.Repeat([]byte{0x20}, 16000)},
		{"empty", nil},
	} {
		cl := dial(t, addr)
		cl.hb.Reset()
		for i := 0; i < len(hdr); i += 2 {
			_ = cl.enc.WriteField(hpack.HeaderField{Name: hdr[i], Value: hdr[i+1]})
		}
		first := cl.hb.Bytes()
		if tc.frag != nil {
			first = tc.frag // size updates are allowed only before the first field
		}
		if err := cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndStream: true}); err != nil {
			t.Fatal(err)
		}
		ga := make(chan *http2.GoAwayFrame, 1)
		go func() { ga <- cl.goAway() }()
		var got *http2.GoAwayFrame
		sent, frames := 0, 0
	flood:
		for ; frames < 1<<20 && sent < 64<<20; frames++ {
			select {
			case got = <-ga:
				break flood
			default:
			}
			if err := cl.fr.WriteContinuation(1, false, tc.frag); err != nil {
				break // the server closed
			}
			sent += 9 + len(tc.frag)
		}
		if got == nil {
			select {
			case got = <-ga:
			case <-time.After(5 * time.Second):
			}
		}
		if got == nil || got.ErrCode != http2.ErrCodeEnhanceYourCalm {
			t.Errorf("CONTINUATION flood, %s: %s after %d frames, %d bytes; want GOAWAY ENHANCE_YOUR_CALM", tc.name, goAwayCode(got), frames, sent)
		}
		cl.c.Close()
	}
	if n := errs.get("conn_header_block_too_long"); n != 2 {
		t.Errorf("CountError(conn_header_block_too_long): %d; want 2", n)
	}

	// 8 KiB of fields in 40 frames: within the budget.
	cl := dial(t, addr)
	cl.hb.Reset()
	for i := 0; i < len(hdr); i += 2 {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: hdr[i], Value: hdr[i+1]})
	}
	for i := 0; i < 40; i++ {
		_ = cl.enc.WriteField(hpack.HeaderField{Name: "x-f" + strconv.Itoa(i), Value: strings.Repeat("v", 200)})
	}
	block := cl.hb.Bytes()
	step := len(block)/40 + 1
	_ = cl.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block[:step], EndStream: true})
	for block = block[step:]; len(block) > 0; {
		frag := block[:min(step, len(block))]
		block = block[len(frag):]
		_ = cl.fr.WriteContinuation(1, len(block) == 0, frag)
	}
	cl.wantOK("a block in 40 frames", 1, 0)
}

func goAwayCode(ga *http2.GoAwayFrame) string {
	if ga == nil {
		return "no GOAWAY"
	}
	return "GOAWAY " + ga.ErrCode.String()
}

// live is the count of goroutines but the Server's idle workers, which
// stay for workerIdle after their stream.
func live(s *Server) int { return runtime.NumGoroutine() - int(s.workers.n.Load()) }

// served is the count of connections s is serving, and the most output
// one of them has queued.
func served(s *Server) (conns, queued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.mu.Lock()
		queued = max(queued, len(c.out))
		c.mu.Unlock()
	}
	return len(s.conns), queued
}

// watch samples s every few milliseconds until it serves no connection
// or d passes; it returns how long that took and the most output queued.
func watch(t *testing.T, s *Server, d time.Duration) (took time.Duration, peak int) {
	t.Helper()
	start := time.Now()
	for time.Since(start) < d {
		n, q := served(s)
		peak = max(peak, q)
		if n == 0 && time.Since(start) > 0 {
			return time.Since(start), peak
		}
		time.Sleep(2 * time.Millisecond)
	}
	buf := make([]byte, 1<<20)
	t.Errorf("the server still serves a connection after %v:\n%s", d, buf[:runtime.Stack(buf, true)])
	return time.Since(start), peak
}

// settle waits, at most d, for the goroutines (idle workers aside) to be
// back to base.
func settle(t *testing.T, s *Server, base int, d time.Duration, what string) {
	t.Helper()
	deadline := time.Now().Add(d)
	for live(s) > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Errorf("%s: %d goroutines after %v; want %d:\n%s", what, live(s), d, base, buf[:runtime.Stack(buf, true)])
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// opened waits until s serves n connections.
func opened(t *testing.T, s *Server, n int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if c, _ := served(s); c == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server does not serve %d connections", n)
		}
	}
}

// TestServeClientNeverReads: a client that opens streams with large
// responses, and windows to take them whole, and then reads nothing,
// makes the server queue at most outMax (and a write) of response data;
// the writer's socket write fails once WriteTimeout passes without
// progress, which ends the connection, and the goroutines return.
func TestServeClientNeverReads(t *testing.T) {
	const wt = 300 * time.Millisecond
	s, addr := serve(t, Config{WriteTimeout: wt}, func(w http.ResponseWriter, r *http.Request) {
		chunk := make([]byte, 16<<10)
		for i := 0; i < 256; i++ { // 4 MiB
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	base := live(s)
	cl := dial(t, addr, http2.Setting{ID: http2.SettingInitialWindowSize, Val: maxWindow})
	_ = cl.fr.WriteWindowUpdate(0, maxWindow-initialWindow)
	for i := 0; i < 8; i++ {
		cl.get(uint32(2*i+1), "/")
	}
	opened(t, s, 1)
	took, peak := watch(t, s, 10*time.Second)
	t.Logf("connection ended after %v; at most %d bytes queued", took, peak)
	if took > wt+linger+time.Second {
		t.Errorf("the connection of a client that reads nothing lasted %v; want about WriteTimeout (%v)", took, wt)
	}
	if peak > outMax+64<<10 {
		t.Errorf("%d bytes queued for a client that reads nothing; want at most %d", peak, outMax+64<<10)
	}
	settle(t, s, base, 5*time.Second, "after the connection ended")
}

// TestConnWriteTimeout: a socket write nobody reads fails once
// WriteTimeout passes without progress; one the client reads slowly, a
// byte at a time, goes on as long as each byte comes within it.
func TestConnWriteTimeout(t *testing.T) {
	server, client := net.Pipe()
	defer client.Close()
	const wt = 200 * time.Millisecond
	c := &conn{srv: &Server{cfg: Config{WriteTimeout: wt}}, nc: server}
	// Without a deadline the first write would block for ever: end it.
	cut := time.AfterFunc(5*time.Second, func() { server.Close() })
	defer cut.Stop()

	start := time.Now()
	if err := c.write([]byte("stalled")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write nobody reads: %v; want a timeout", err)
	}
	if d := time.Since(start); d < wt*3/4 {
		t.Fatalf("write nobody reads failed after %s; want at least ¾ of %s", d, wt)
	}

	go func() {
		b := make([]byte, 1)
		for {
			time.Sleep(wt / 4)
			if _, err := client.Read(b); err != nil {
				return
			}
		}
	}()
	if err := c.write([]byte("slow but steady")); err != nil {
		t.Fatalf("write read a byte at a time: %v; want nil", err)
	}
}

// TestServeBodyReadAfterReset: once the client resets a stream, the
// handler's body Read fails at once: a Read waiting for data wakes, a
// later one does not return data that came before the reset.
func TestServeBodyReadAfterReset(t *testing.T) {
	type result struct {
		n   int
		err error
	}
	got := make(chan result, 1)
	started := make(chan struct{}, 1)
	_, addr := serve(t, Config{}, func(w http.ResponseWriter, r *http.Request) {
		b := make([]byte, 3)
		if _, err := io.ReadFull(r.Body, b); err != nil {
			got <- result{0, err}
			return
		}
		started <- struct{}{}
		if r.URL.Path == "/after" {
			<-r.Context().Done()
		}
		n, err := r.Body.Read(b)
		got <- result{n, err}
	})
	cl := dial(t, addr)
	for i, path := range []string{"/waiting", "/after"} {
		id := uint32(2*i + 1)
		cl.headers(id, false, ":method", "POST", ":scheme", "http", ":authority", "a.test", ":path", path)
		_ = cl.fr.WriteData(id, false, []byte("abc"))
		select {
		case <-started:
		case r := <-got:
			t.Fatalf("%s: the first read: %v", path, r.err)
		case <-time.After(5 * time.Second):
			t.Fatalf("%s: the handler did not read the first DATA", path)
		}
		if path == "/after" {
			_ = cl.fr.WriteData(id, false, []byte("def")) // buffered when the reset comes
		} else {
			time.Sleep(50 * time.Millisecond) // the Read waits
		}
		_ = cl.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		select {
		case r := <-got:
			if r.err == nil || r.n > 0 {
				t.Errorf("%s: Read after the reset: %d, %v; want 0 and an error", path, r.n, r.err)
			}
		case <-time.After(2 * time.Second):
			t.Fatalf("%s: Read did not return within 2 s of the reset", path)
		}
	}
}

// flood is a client that sends one frame over and over and reads
// nothing.
type flood struct {
	name  string
	setup func(cl *client) // before the flood, reading what it needs
	frame func(fr *http2.Framer) error
}

// run sends f's frames, buffered, until a write fails (the server
// closed) or 10 million are out.
func (f flood) run(cl *client) (frames int, err error) {
	bw := bufio.NewWriterSize(cl.c, 64<<10)
	fr := http2.NewFramer(bw, nil)
	fr.AllowIllegalWrites = true
	for ; frames < 10<<20; frames++ {
		if err = f.frame(fr); err == nil && frames%4096 == 4095 {
			err = bw.Flush()
		}
		if err != nil {
			return frames, err
		}
	}
	return frames, nil
}

// TestServeControlFloods: a client that reads nothing while it sends
// frames the reader must answer (SETTINGS and PING acknowledgements,
// RST_STREAM for frames on closed streams) makes the server queue at most
// outCtrlMax and a frame's answer: then GOAWAY ENHANCE_YOUR_CALM, counted
// as conn_control_backlog, and the connection closes (or WriteTimeout
// closes it first); the goroutines return. (Frames that need no answer, such as PRIORITY, RST_STREAM and
// empty DATA on an open stream, queue nothing; the router's flood guard
// bounds them by count.)
func TestServeControlFloods(t *testing.T) {
	var errs errorCounts
	// WriteTimeout and IdleTimeout end a connection whose flood the
	// backlog does not catch: with the client's receive buffer full, TCP
	// drops the segments that carry the server's acknowledgements of its
	// data, so the client's sending may stall too.
	s, addr := serve(t, Config{WriteTimeout: 3 * time.Second, IdleTimeout: 5 * time.Second, CountError: errs.count},
		func(w http.ResponseWriter, r *http.Request) {})
	closed := func(cl *client) {
		cl.get(1, "/")
		cl.wantOK("stream 1", 1, 0)
	}
	floods := []flood{
		{"SETTINGS", nil, func(fr *http2.Framer) error { return fr.WriteSettings() }},
		{"PING", nil, func(fr *http2.Framer) error { return fr.WritePing(false, [8]byte{}) }},
		{"empty DATA with END_STREAM on a closed stream", closed, func(fr *http2.Framer) error { return fr.WriteData(1, true, nil) }},
		{"WINDOW_UPDATE 0 on a closed stream", closed, func(fr *http2.Framer) error { return fr.WriteWindowUpdate(1, 0) }},
		{"PRIORITY on itself", closed, func(fr *http2.Framer) error {
			return fr.WritePriority(1, http2.PriorityParam{StreamDep: 1, Weight: 1})
		}},
	}
	// All at once, each on its connection: the server serves them as it
	// would, and the test takes the time of one.
	base := live(s)
	clients := make([]*client, len(floods))
	for i, f := range floods {
		clients[i] = dial(t, addr)
		if f.setup != nil {
			f.setup(clients[i])
		}
	}
	opened(t, s, len(floods))
	var wg sync.WaitGroup
	for i, f := range floods {
		wg.Go(func() {
			frames, err := f.run(clients[i])
			t.Logf("%s flood: %d frames sent, then %v", f.name, frames, err)
		})
	}
	took, peak := watch(t, s, 15*time.Second)
	for _, cl := range clients {
		cl.c.Close()
	}
	waitFor(t, &wg, 5*time.Second, "the flooding clients")
	t.Logf("connections ended after %v, at most %d bytes queued on one; %d of %d ended by the backlog",
		took.Round(time.Millisecond), peak, errs.get("conn_control_backlog"), len(floods))
	if peak > outCtrlMax+64<<10 {
		t.Errorf("%d bytes queued; want at most %d", peak, outCtrlMax+64<<10)
	}
	settle(t, s, base, 5*time.Second, "after the floods")
}

// TestServeRapidReset: HEADERS and RST_STREAM pairs (CVE-2023-44487) run
// no more handlers at once than MaxConcurrentStreams: a stream the client
// reset counts until its handler returns, even one that does not watch
// its context; the streams beyond are refused. (The router's guard also
// budgets the resets, router/h2guard.go.)
func TestServeRapidReset(t *testing.T) {
	var errs errorCounts
	var mu sync.Mutex
	running, most := 0, 0
	_, addr := serve(t, Config{MaxConcurrentStreams: 10, CountError: errs.count}, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		running++
		most = max(most, running)
		mu.Unlock()
		time.Sleep(20 * time.Millisecond) // a node being dialled, the reset unseen
		mu.Lock()
		running--
		mu.Unlock()
	})
	cl := dial(t, addr)
	bw := bufio.NewWriter(cl.c)
	fr := http2.NewFramer(bw, nil)
	const pairs = 2000
	for i := range pairs {
		id := uint32(2*i + 1)
		cl.hb.Reset()
		for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/"}} {
			_ = cl.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: cl.hb.Bytes(), EndStream: true, EndHeaders: true})
		_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
	}
	// The PING's ack comes once every pair before it was processed.
	_ = fr.WritePing(false, [8]byte{7})
	if err := bw.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := cl.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if most > 10 {
		t.Errorf("%d handlers at once; want at most MaxConcurrentStreams (10)", most)
	}
	if errs.get("stream_over_max_streams") == 0 {
		t.Error("no stream refused; want those beyond the 10 running")
	}
	t.Logf("%d pairs: at most %d handlers at once, %d streams refused", pairs, most, errs.get("stream_over_max_streams"))
}
