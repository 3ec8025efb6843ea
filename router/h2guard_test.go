package router

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// chunkConn is a net.Conn whose reads return src in chunks of random size.
type chunkConn struct {
	net.Conn // nil: only Read is used
	src      []byte
	rng      *rand.Rand
}

func (c *chunkConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

func (c *chunkConn) Read(p []byte) (int, error) {
	if len(c.src) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(c.src), 1+c.rng.IntN(64))
	copy(p, c.src[:n])
	c.src = c.src[n:]
	return n, nil
}

// clientFrames is a client's side of a connection: the preface, then what
// write puts on the framer.
func clientFrames(t testing.TB, write func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer)) []byte {
	t.Helper()
	var out, hb bytes.Buffer
	out.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&out, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	write(fr, hpack.NewEncoder(&hb), &hb)
	return out.Bytes()
}

func writePair(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer, id uint32) {
	hb.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "a.test"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	_ = fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndStream: true, EndHeaders: true})
	_ = fr.WriteRSTStream(id, http2.ErrCodeCancel)
}

func testGuardRouter(t testing.TB, now func() time.Time) *Router {
	t.Helper()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	rt, err := New(Config{Pools: table, Now: now})
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// TestH2GuardPassesBytesAndFindsResets: whatever the read sizes, the guard
// hands x/net exactly the connection's bytes and knows where each
// RST_STREAM ends.
func TestH2GuardPassesBytesAndFindsResets(t *testing.T) {
	var ends []int64
	src := clientFrames(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		_ = fr.WriteData(1, false, bytes.Repeat([]byte("x"), 16000))
		for id := uint32(3); id < 3+2*50; id += 2 {
			writePair(fr, enc, hb, id)
		}
	})
	// Where the RST_STREAMs end, by parsing the same bytes.
	fr := http2.NewFramer(nil, bytes.NewReader(src[len(http2.ClientPreface):]))
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	off := int64(len(http2.ClientPreface))
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			break
		}
		off += 9 + int64(f.Header().Length)
		if _, ok := f.(*http2.RSTStreamFrame); ok {
			ends = append(ends, off)
		}
	}
	if len(ends) != 50 {
		t.Fatalf("reference parse found %d RST_STREAM frames; want 50", len(ends))
	}
	fixed := time.Unix(1e9, 0)
	rt := testGuardRouter(t, func() time.Time { return fixed })
	for seed := uint64(0); seed < 20; seed++ {
		_, g := newH2Guard(rt, &chunkConn{src: src, rng: rand.New(rand.NewPCG(seed, 1))})
		var got bytes.Buffer
		p := make([]byte, 9)
		for {
			n, err := g.Read(p[:1+int(seed)%9])
			got.Write(p[:n])
			if err != nil {
				break
			}
		}
		if !bytes.Equal(got.Bytes(), src) {
			t.Fatalf("seed %d: the guard delivered %d bytes that differ from the %d read", seed, got.Len(), len(src))
		}
		if g.rstEnd != ends[len(ends)-1] || g.delivered != int64(len(src)) {
			t.Fatalf("seed %d: rstEnd %d, delivered %d; want %d, %d", seed, g.rstEnd, g.delivered, ends[len(ends)-1], len(src))
		}
		if g.resets.tokens != h2ResetBurst-50 {
			t.Fatalf("seed %d: %v reset tokens left; want %d", seed, g.resets.tokens, h2ResetBurst-50)
		}
		g.release()
	}
}

// TestH2GuardResetBudget: h2ResetBurst resets pass at once, the next one
// makes Read fail with ENHANCE_YOUR_CALM (counted), and the budget refills
// at h2ResetRate a second.
func TestH2GuardResetBudget(t *testing.T) {
	var clock atomic.Int64
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	rt := testGuardRouter(t, now)
	read := func(g *h2Guard) error {
		p := make([]byte, 4096)
		for {
			if _, err := g.Read(p); err != nil {
				return err
			}
		}
	}
	pairs := func(n int) []byte {
		return clientFrames(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
			for i := 0; i < n; i++ {
				writePair(fr, enc, hb, uint32(2*i+1))
			}
		})
	}
	_, g := newH2Guard(rt, &chunkConn{src: pairs(h2ResetBurst), rng: rand.New(rand.NewPCG(1, 2))})
	if err := read(g); err != io.EOF {
		t.Fatalf("%d resets: %v; want them all read (EOF)", h2ResetBurst, err)
	}
	_, g = newH2Guard(rt, &chunkConn{src: pairs(h2ResetBurst + 1), rng: rand.New(rand.NewPCG(1, 2))})
	err := read(g)
	var ce http2.ConnectionError
	if !errors.As(err, &ce) || http2.ErrCode(ce) != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("%d resets: %v; want ConnectionError(ENHANCE_YOUR_CALM)", h2ResetBurst+1, err)
	}
	if v := testutil.ToFloat64(rt.h2Errors.WithLabelValues("rapid_reset")); v != 1 {
		t.Fatalf(`fastrouter_http2_errors_total{type="rapid_reset"} = %v; want 1`, v)
	}
	if g.awaitResets(context.Background()) {
		t.Fatal("awaitResets on a flooding connection: true; want false")
	}
	// Spent, then a second later h2ResetRate more pass.
	_, g = newH2Guard(rt, &chunkConn{src: pairs(h2ResetBurst), rng: rand.New(rand.NewPCG(1, 2))})
	_ = read(g)
	clock.Add(int64(time.Second))
	g.Conn = &chunkConn{src: pairs(h2ResetRate)[len(http2.ClientPreface)+9:], rng: rand.New(rand.NewPCG(3, 4))}
	g.r, g.w = 0, 0
	if err := read(g); err != io.EOF {
		t.Fatalf("%d more resets a second later: %v; want them read", h2ResetRate, err)
	}
	if g.resets.tokens >= 1 {
		t.Fatalf("%v tokens left; want the refill spent", g.resets.tokens)
	}
}

// TestH2GuardAwaitResets: a handler waits while a received RST_STREAM has
// not been handed to x/net and read past, and goes on once it has.
func TestH2GuardAwaitResets(t *testing.T) {
	rt := testGuardRouter(t, time.Now)
	src := clientFrames(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) { writePair(fr, enc, hb, 1) })
	_, g := newH2Guard(rt, &chunkConn{src: src, rng: rand.New(rand.NewPCG(5, 6))})
	// Read until the guard has seen the RST_STREAM but not delivered it all.
	p := make([]byte, 1)
	for g.rstEnd == 0 {
		if _, err := g.Read(p); err != nil {
			t.Fatal(err)
		}
	}
	done := make(chan bool)
	go func() { done <- g.awaitResets(context.Background()) }()
	select {
	case <-done:
		t.Fatal("awaitResets returned before x/net read past the RST_STREAM")
	case <-time.After(50 * time.Millisecond):
	}
	for {
		if _, err := g.Read(p); err != nil {
			break
		}
	}
	select {
	case ok := <-done:
		if ok {
			t.Fatal("awaitResets after EOF: true; want false (the connection is gone)")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("awaitResets did not return once the RST_STREAM was read past")
	}

	// Reading past it, with the connection still open: true.
	_, g = newH2Guard(rt, &chunkConn{src: append(src, src[len(http2.ClientPreface):]...), rng: rand.New(rand.NewPCG(5, 6))})
	for g.delivered < int64(len(src)) {
		if _, err := g.Read(p); err != nil {
			t.Fatal(err)
		}
	}
	if !g.awaitResets(context.Background()) {
		t.Fatal("awaitResets with every reset read past: false")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if g.awaitResets(ctx) {
		t.Fatal("awaitResets with its stream reset: true")
	}
}

// TestH2RapidResetUnit: 5000 HEADERS+RST_STREAM pairs on one h2c
// connection to a Router: GOAWAY ENHANCE_YOUR_CALM, and no stream whose
// reset arrived with it dials the node. Before the guard, x/net took every
// pair and thousands of handlers dialled.
func TestH2RapidResetUnit(t *testing.T) {
	node := uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), uwsgitest.Deadline(5*time.Second))
	r := startRouter(t, Config{})
	r.table.AddStatic("a.test", node.Addr(), 1)
	src := clientFrames(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for i := 0; i < 5000; i++ {
			writePair(fr, enc, hb, uint32(2*i+1))
		}
	})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	go func() { _, _ = c.Write(src) }()
	fr := http2.NewFramer(nil, bufio.NewReader(c))
	var goaway *http2.GoAwayFrame
	for goaway == nil {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("reading the server's frames: %v before any GOAWAY", err)
		}
		goaway, _ = f.(*http2.GoAwayFrame)
	}
	if goaway.ErrCode != http2.ErrCodeEnhanceYourCalm {
		t.Fatalf("GOAWAY %v; want ENHANCE_YOUR_CALM", goaway.ErrCode)
	}
	// Handlers already started finish at once: their streams are reset.
	time.Sleep(200 * time.Millisecond)
	if n := node.Accepted(); n > 0 {
		t.Errorf("%d reset streams dialled the node; want none (last stream %d)", n, goaway.LastStreamID)
	}
}

// FuzzH2Guard: the guard's view of a connection (where the last
// RST_STREAM ends, the budget, a flood) does not depend on how the bytes
// arrive, and it hands x/net exactly the bytes read, up to a flood.
func FuzzH2Guard(f *testing.F) {
	f.Add([]byte{}, uint64(1))
	f.Add(clientFrames(f, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) { writePair(fr, enc, hb, 1) })[len(http2.ClientPreface):], uint64(2))
	f.Add(clientFrames(f, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for i := 0; i < h2ResetBurst+2; i++ {
			_ = fr.WriteRSTStream(uint32(2*i+1), http2.ErrCodeCancel)
		}
	})[len(http2.ClientPreface):], uint64(3))
	f.Add(clientFrames(f, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
		for i := 0; i < h2IdleBurst+2; i++ {
			_ = fr.WritePing(false, [8]byte{})
			_ = fr.WriteWindowUpdate(0, uint32(i))
			_ = fr.WriteDataPadded(1, i%2 == 0, nil, []byte{0})
		}
	})[len(http2.ClientPreface):], uint64(4))
	fixed := time.Unix(1e9, 0)
	rt := testGuardRouter(f, func() time.Time { return fixed })
	f.Fuzz(func(t *testing.T, frames []byte, seed uint64) {
		src := append([]byte(http2.ClientPreface), frames...)
		run := func(conn net.Conn, readSize int) (*h2Guard, []byte, error) {
			_, g := newH2Guard(rt, conn)
			defer g.release()
			var got bytes.Buffer
			p := make([]byte, readSize)
			for {
				n, err := g.Read(p)
				got.Write(p[:n])
				if err != nil {
					return g, got.Bytes(), err
				}
			}
		}
		whole, wb, werr := run(&chunkConn{src: src, rng: rand.New(rand.NewPCG(0, 0))}, len(src)+1)
		chunked, cb, cerr := run(&chunkConn{src: src, rng: rand.New(rand.NewPCG(seed, seed))}, 1+int(seed%17))
		if (werr == io.EOF) != (cerr == io.EOF) || whole.rstEnd != chunked.rstEnd || whole.resets.tokens != chunked.resets.tokens || whole.idle.tokens != chunked.idle.tokens || whole.flood != chunked.flood {
			t.Fatalf("read whole: %v rstEnd %d tokens %v; in chunks: %v rstEnd %d tokens %v", werr, whole.rstEnd, whole.resets.tokens, cerr, chunked.rstEnd, chunked.resets.tokens)
		}
		if werr == io.EOF && (!bytes.Equal(wb, src) || !bytes.Equal(cb, src)) {
			t.Fatalf("delivered %d and %d bytes of %d, not the same", len(wb), len(cb), len(src))
		}
	})
}

func TestIdleFrame(t *testing.T) {
	inc := func(v uint32) [4]byte { return [4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)} }
	for _, tc := range []struct {
		name   string
		typ    http2.FrameType
		flags  http2.Flags
		length int
		peek   [4]byte
		want   bool
	}{
		{"PING", http2.FramePing, 0, 8, [4]byte{}, true},
		{"PING ack", http2.FramePing, http2.FlagPingAck, 8, [4]byte{}, false},
		{"SETTINGS", http2.FrameSettings, 0, 6, [4]byte{}, true},
		{"SETTINGS ack", http2.FrameSettings, http2.FlagSettingsAck, 0, [4]byte{}, false},
		{"PRIORITY", http2.FramePriority, 0, 5, [4]byte{}, true},
		{"empty DATA", http2.FrameData, 0, 0, [4]byte{}, true},
		{"empty DATA ending the stream", http2.FrameData, http2.FlagDataEndStream, 0, [4]byte{}, false},
		{"DATA", http2.FrameData, 0, 1, [4]byte{}, false},
		{"padding-only DATA", http2.FrameData, http2.FlagDataPadded, 5, [4]byte{4}, true},
		{"padded DATA with data", http2.FrameData, http2.FlagDataPadded, 5, [4]byte{3}, false},
		{"empty CONTINUATION", http2.FrameContinuation, 0, 0, [4]byte{}, true},
		{"empty last CONTINUATION", http2.FrameContinuation, http2.FlagContinuationEndHeaders, 0, [4]byte{}, false},
		{"CONTINUATION", http2.FrameContinuation, 0, 10, [4]byte{}, false},
		{"WINDOW_UPDATE +1", http2.FrameWindowUpdate, 0, 4, inc(1), true},
		{"WINDOW_UPDATE +4095, reserved bit set", http2.FrameWindowUpdate, 0, 4, inc(1<<31 | 4095), true},
		{"WINDOW_UPDATE +4096", http2.FrameWindowUpdate, 0, 4, inc(4096), false},
		{"HEADERS", http2.FrameHeaders, 0, 0, [4]byte{}, false},
		{"RST_STREAM", http2.FrameRSTStream, 0, 4, [4]byte{}, false},
		{"GOAWAY", http2.FrameGoAway, 0, 8, [4]byte{}, false},
		{"extension type", 0xfa, 0, 0, [4]byte{}, true},
	} {
		if got := idleFrame(tc.typ, tc.flags, tc.length, tc.peek); got != tc.want {
			t.Errorf("%s: idleFrame = %v; want %v", tc.name, got, tc.want)
		}
	}
}

// TestH2GuardFrameFlood: h2IdleBurst frames that carry nothing pass, the
// next ends the connection (ENHANCE_YOUR_CALM, counted as frame_flood).
func TestH2GuardFrameFlood(t *testing.T) {
	fixed := time.Unix(1e9, 0)
	rt := testGuardRouter(t, func() time.Time { return fixed })
	for _, n := range []int{h2IdleBurst - 1, h2IdleBurst} { // SETTINGS is one of them
		src := clientFrames(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) {
			for i := 0; i < n; i++ {
				_ = fr.WriteDataPadded(1, false, nil, []byte{0, 0})
			}
		})
		_, g := newH2Guard(rt, &chunkConn{src: src, rng: rand.New(rand.NewPCG(uint64(n), 7))})
		var err error
		for p := make([]byte, 100); err == nil; {
			_, err = g.Read(p)
		}
		if flood := err != io.EOF; flood != (n == h2IdleBurst) {
			t.Errorf("%d padding-only DATA frames after SETTINGS: %v", n, err)
		}
	}
	if v := testutil.ToFloat64(rt.h2Errors.WithLabelValues("frame_flood")); v != 1 {
		t.Errorf(`fastrouter_http2_errors_total{type="frame_flood"} = %v; want 1`, v)
	}
}

// TestH2GuardPartialReset: a RST_STREAM whose payload has not arrived is
// not received yet: a handler does not wait for bytes the client may
// never send.
func TestH2GuardPartialReset(t *testing.T) {
	rt := testGuardRouter(t, time.Now)
	src := clientFrames(t, func(fr *http2.Framer, enc *hpack.Encoder, hb *bytes.Buffer) { writePair(fr, enc, hb, 1) })
	sent := src[:len(src)-2] // the RST_STREAM short of 2 bytes, then silence
	client, server := net.Pipe()
	defer client.Close()
	go func() { _, _ = client.Write(sent) }()
	_, g := newH2Guard(rt, server)
	readerDone := make(chan struct{})
	go func() {
		defer close(readerDone)
		p := make([]byte, 9)
		for {
			if _, err := g.Read(p); err != nil {
				return
			}
		}
	}()
	defer func() {
		server.Close()
		<-readerDone
		g.release()
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		d := g.delivered
		g.mu.Unlock()
		if d == int64(len(sent)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("delivered %d of %d bytes", d, len(sent))
		}
		time.Sleep(time.Millisecond)
	}
	done := make(chan bool, 1)
	go func() { done <- g.awaitResets(context.Background()) }()
	select {
	case ok := <-done:
		if !ok {
			t.Fatal("awaitResets: false; want true (nothing received to wait for)")
		}
	case <-time.After(2 * time.Second):
		t.Fatal("awaitResets waits for a RST_STREAM that has not arrived whole")
	}
}
