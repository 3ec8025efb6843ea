package router

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens a stream and resets
// it at once, over and over. Every HEADERS frame starts a handler; a
// concurrency limit never stops this, since each reset handler ends at
// once. Without a guard 20,000 pairs in 2 s on one connection went
// through, and the handlers that ran before the server had processed their stream's
// RST_STREAM picked a node and dialled it.
//
// h2Guard sits between the client connection and the h2 server's framer
// (internal/h2srv), the only reader of the connection, and reads the frame headers passing by
// (it never changes a byte). It does two things:
//
//   - Budgets: each RST_STREAM from the client spends a token of a bucket
//     that holds h2ResetBurst and refills at h2ResetRate per second; each
//     frame that carries nothing (see idleFrame: PING, SETTINGS, PRIORITY,
//     empty DATA or CONTINUATION, small WINDOW_UPDATE, unknown types) one
//     of another, of h2IdleBurst and h2IdleRate. The server bounds such
//     frames only by what it must queue in reply, and not at all when they
//     need no reply or the client reads the replies: unguarded, 2 million
//     empty DATA frames cost 2.5 s of router CPU in 5 s, 1.4 million
//     padding-only DATA or WINDOW_UPDATE +1 frames 1.4-1.6 s, and empty
//     CONTINUATION frames kept a header block open without end. When a
//     bucket is empty the connection is flooding: Read returns
//     http2.ConnectionError(ErrCodeEnhanceYourCalm), which the Framer
//     passes on and the server answers with GOAWAY ENHANCE_YOUR_CALM
//     before it closes the connection (internal/h2srv conn.readLoop).
//   - Already reset: the guard reads ahead (one socket read fills a 16 KiB
//     buffer, so a HEADERS frame and the RST_STREAM sent right behind it
//     arrive together) and records where the last RST_STREAM received
//     ends. The server reads the next frame only after it has processed
//     the previous one (one goroutine reads and processes), and processing
//     a RST_STREAM cancels the stream's context. So once the server has
//     read past a RST_STREAM, the stream it reset is cancelled. Before
//     picking a node a handler waits (awaitResets) until it has read past
//     every
//     RST_STREAM the router had received when the handler started; its own
//     reset, if already received, has then cancelled its context, and
//     connect refuses a cancelled request before picking (errClientGone).
//     The wait is for frames already in memory: microseconds, except
//     during a flood.
//
// Read is called by the server's reading goroutine only; Close by anyone.
type h2Guard struct {
	net.Conn
	rt  *Router
	buf []byte // look-ahead; buf[r:w] is read from the socket, not yet delivered

	// Owned by the reading goroutine.
	r, w    int
	preface int     // bytes of the client preface still to pass
	hdr     [9]byte // the frame header being read
	hn      int     // bytes of hdr read
	skip    int     // payload bytes of the current frame still to pass
	typ     http2.FrameType
	flags   http2.Flags
	length  int     // of the current frame
	peek    [4]byte // its first payload bytes, when they decide (peekLen)
	pn      int     // bytes of peek read
	pwant   int     // bytes of peek wanted; 0: none
	pos     int64   // bytes of the connection scanned so far
	resets  bucket  // RST_STREAM budget
	idle    bucket  // budget of frames that carry nothing
	flood   bool    // a budget ran out: Read returns errFlood from now on

	// remote is the client's address as the server gives it every
	// stream (Request.RemoteAddr, from this connection's RemoteAddr),
	// parsed once for the connection's streams (h2.go: readRequest);
	// invalid when it is no IP address and port.
	remote netip.AddrPort

	mu        sync.Mutex
	rstEnd    int64         // guarded by mu: connection offset just past the last RST_STREAM received
	delivered int64         // guarded by mu: bytes handed to the server, as of its latest Read call
	done      bool          // guarded by mu: flooding or read failed; no wait will end well
	wake      chan struct{} // guarded by mu: closed when delivered moves or done is set; nil when nobody waits
}

const (
	// h2ResetBurst and h2ResetRate are the per-connection RST_STREAM
	// budget. A browser leaving a page resets at most the streams it has
	// open (h2MaxConcurrentStreams); twice that, then 100 a second
	// sustained, leaves room for clients that cancel a lot (gRPC
	// deadlines) while a flood is cut after ~500 resets.
	h2ResetBurst = 2 * h2MaxConcurrentStreams
	h2ResetRate  = 100
	// h2IdleBurst and h2IdleRate are the budget of frames that carry
	// nothing. Clients send a few at the start (SETTINGS, PRIORITY trees)
	// and a PING now and then (gRPC keepalives); a flood is cut after
	// ~1000.
	h2IdleBurst = 1000
	h2IdleRate  = 100
	// h2LookAhead is the guard's read buffer.
	h2LookAhead = 16 << 10
)

// errFlood is what the guard's Read returns once the connection floods:
// the server sends GOAWAY with its code and closes.
var errFlood error = http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)

var lookAheadPool = sync.Pool{New: func() any { b := make([]byte, h2LookAhead); return &b }}

// newH2Guard wraps c, an HTTP/2 connection whose client preface has not
// been read yet. A TLS connection keeps its ConnectionState, which the
// server needs (it checks the TLS version and fills Request.TLS); a clear-text one
// must not have one.
func newH2Guard(rt *Router, c net.Conn) (net.Conn, *h2Guard) {
	now := rt.now()
	g := &h2Guard{Conn: c, rt: rt, buf: *lookAheadPool.Get().(*[]byte), preface: len(h2Preface),
		resets: bucket{tokens: h2ResetBurst, last: now}, idle: bucket{tokens: h2IdleBurst, last: now}}
	if c.RemoteAddr() != nil {
		g.remote, _ = netip.ParseAddrPort(c.RemoteAddr().String())
	}
	if tc, ok := c.(connectionStater); ok {
		return &h2GuardTLS{h2Guard: g, cs: tc}, g
	}
	return g, g
}

type connectionStater interface {
	ConnectionState() tls.ConnectionState
}

// h2GuardTLS is an h2Guard over TLS.
type h2GuardTLS struct {
	*h2Guard
	cs connectionStater
}

func (g *h2GuardTLS) ConnectionState() tls.ConnectionState { return g.cs.ConnectionState() }

// release returns the look-ahead buffer; the connection has been served.
func (g *h2Guard) release() {
	if b := g.buf; b != nil {
		g.buf = nil
		lookAheadPool.Put(&b)
	}
}

func (g *h2Guard) Read(p []byte) (int, error) {
	g.mu.Lock()
	g.delivered = g.pos - int64(g.w-g.r)
	g.wakeLocked()
	g.mu.Unlock()
	if g.flood {
		return 0, errFlood
	}
	if g.r == g.w {
		n, err := g.Conn.Read(g.buf)
		if n == 0 && err == nil {
			err = io.ErrNoProgress // never from a net.Conn; never spin on it
		}
		if n == 0 {
			if err != nil {
				g.stop()
			}
			return 0, err
		}
		g.r, g.w = 0, n
		if why := g.scan(g.buf[:n]); why != "" {
			g.flood = true
			g.stop()
			g.rt.h2Errors.WithLabelValues(why).Inc()
			g.rt.log.Debug("h2 flood: GOAWAY", "flood", why, "remote", g.RemoteAddr())
			return 0, errFlood
		}
	}
	n := copy(p, g.buf[g.r:g.w])
	g.r += n
	return n, nil
}

// scan follows the frames in b, the next bytes of the connection, and
// spends the budgets. It returns the fastrouter_http2_errors_total type of
// the flood when one ran out, else "".
func (g *h2Guard) scan(b []byte) string {
	for len(b) > 0 {
		var n int
		switch {
		case g.preface > 0:
			n = min(g.preface, len(b))
			g.preface -= n
		case g.pwant > 0:
			n = copy(g.peek[g.pn:g.pwant], b)
			g.pn += n
			g.skip -= n
		case g.skip > 0:
			n = min(g.skip, len(b))
			g.skip -= n
		default:
			n = copy(g.hdr[g.hn:], b)
			g.hn += n
		}
		b = b[n:]
		g.pos += int64(n)
		var why string
		switch {
		case g.pwant > 0 && g.pn == g.pwant:
			g.pwant = 0
			why = g.frame()
		case g.hn == len(g.hdr):
			// A whole frame header (RFC 9113 §4.1): 24-bit length, type,
			// flags, stream id.
			g.hn = 0
			g.length = int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
			g.skip = g.length
			g.typ, g.flags = http2.FrameType(g.hdr[3]), http2.Flags(g.hdr[4])
			if g.pwant, g.pn = peekLen(g.typ, g.flags, g.length), 0; g.pwant == 0 {
				why = g.frame()
			}
		}
		if why != "" {
			return why
		}
	}
	return ""
}

// frame accounts for the current frame, whose header (and peekLen first
// payload bytes) have been read.
func (g *h2Guard) frame() string {
	switch {
	case g.typ == http2.FrameRSTStream:
		if !g.resets.take(g.rt.now(), h2ResetBurst, h2ResetRate) {
			return "rapid_reset"
		}
		g.mu.Lock()
		g.rstEnd = g.pos + int64(g.skip)
		g.mu.Unlock()
	case idleFrame(g.typ, g.flags, g.length, g.peek):
		if !g.idle.take(g.rt.now(), h2IdleBurst, h2IdleRate) {
			return "frame_flood"
		}
	}
	return ""
}

// peekLen is how many payload bytes must be read before the frame is
// accounted for: a padded DATA frame's pad length and a WINDOW_UPDATE's
// increment decide whether it carries anything; a RST_STREAM counts once
// whole. 0 for the rest, and for frames of the wrong size (the Framer
// refuses those).
func peekLen(typ http2.FrameType, flags http2.Flags, length int) int {
	switch {
	case typ == http2.FrameData && flags&http2.FlagDataPadded != 0 && length >= 1:
		return 1
	case typ == http2.FrameWindowUpdate && length == 4:
		return 4
	case typ == http2.FrameRSTStream && length == 4:
		// Not for its content: a reset is "received" once it is whole,
		// which is when the server can process it; awaitResets must not wait
		// for bytes that have not arrived.
		return 4
	}
	return 0
}

// h2MinWindowIncrement: a WINDOW_UPDATE that grants less credit counts as
// a frame that carries nothing. Clients grant credit by the half window
// or by at least 4 KiB (x/net's transport); a flood of larger increments
// overflows the 2^31-1 window after at most 2^19 frames, which the server
// answers with FLOW_CONTROL_ERROR.
const h2MinWindowIncrement = 4 << 10

// idleFrame reports a frame that asks for work and carries nothing a
// request needs: a PING or SETTINGS (not an ACK), a PRIORITY (RFC 9113
// §5.3.2 deprecates them; the server ignores them), DATA
// without data (padding only, peek[0] its pad length) that does not end
// its stream, CONTINUATION without a fragment that does not end its block,
// a WINDOW_UPDATE of less than h2MinWindowIncrement (peek holds it), and
// frame types the server ignores (RFC 9113 §5.5). RFC 9113 §10.5 names these
// floods.
func idleFrame(typ http2.FrameType, flags http2.Flags, length int, peek [4]byte) bool {
	switch typ {
	case http2.FramePing, http2.FrameSettings:
		return flags&http2.FlagPingAck == 0 // FlagSettingsAck is the same bit
	case http2.FramePriority:
		return true
	case http2.FrameData:
		data := length
		if flags&http2.FlagDataPadded != 0 && length >= 1 {
			data = length - 1 - int(peek[0])
		}
		return data <= 0 && flags&http2.FlagDataEndStream == 0
	case http2.FrameContinuation:
		return length == 0 && flags&http2.FlagContinuationEndHeaders == 0
	case http2.FrameWindowUpdate:
		inc := (uint32(peek[0])<<24 | uint32(peek[1])<<16 | uint32(peek[2])<<8 | uint32(peek[3])) & (1<<31 - 1)
		return length == 4 && inc < h2MinWindowIncrement
	case http2.FrameHeaders, http2.FrameRSTStream, http2.FramePushPromise, http2.FrameGoAway:
		return false
	}
	return true // an extension frame type
}

// bucket is a token bucket; owned by the guard's reading goroutine.
type bucket struct {
	tokens float64   // left
	last   time.Time // when tokens was last refilled
}

// take spends a token, refilling first at rate per second up to burst;
// false when none is left.
func (b *bucket) take(now time.Time, burst, rate float64) bool {
	b.tokens = min(burst, b.tokens+now.Sub(b.last).Seconds()*rate)
	b.last = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// stop ends every wait: nothing more will be read.
func (g *h2Guard) stop() {
	g.mu.Lock()
	g.done = true
	g.wakeLocked()
	g.mu.Unlock()
}

func (g *h2Guard) wakeLocked() {
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
}

// awaitResets waits until the server has processed every RST_STREAM received so
// far (see h2Guard), or ctx ends. It reports false when the request should
// not go on: ctx ended (the stream was reset), or the connection floods or
// failed and is being closed.
func (g *h2Guard) awaitResets(ctx context.Context) bool {
	g.mu.Lock()
	target := g.rstEnd
	for g.delivered < target && !g.done {
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		g.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return false
		}
		g.mu.Lock()
	}
	done := g.done
	g.mu.Unlock()
	return !done && ctx.Err() == nil
}

// h2GuardKey is the context key under which a connection's h2Guard is
// found from its streams' requests.
type h2GuardKey struct{}

// guardOf returns the h2Guard of the connection a request came on, or nil.
func guardOf(ctx context.Context) *h2Guard {
	g, _ := ctx.Value(h2GuardKey{}).(*h2Guard)
	return g
}

// newH2Metrics registers fastrouter_http2_errors_total{type}: the errors
// the h2 server answers, by the fixed names it reports through
// h2srv.Config.CountError ("conn_…" for a GOAWAY, "stream_…" for a
// reset), and the guard's "rapid_reset" and "frame_flood".
func newH2Metrics(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_http2_errors_total",
		Help: "HTTP/2 connection and stream errors the router answered, by type (conn_* a connection error, stream_* a stream reset, rapid_reset and frame_flood a connection closed by the flood budgets).",
	}, []string{"type"})
	return vec, reg.Register(vec)
}
