package router

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/http2"
)

// HTTP/2 rapid reset (CVE-2023-44487): a client opens a stream and resets
// it at once, over and over. Every HEADERS frame makes x/net/http2 start a
// handler; its own guard only closes a connection when more than
// 4×MaxConcurrentStreams handlers are waiting to start, which never happens
// when each reset handler ends at once. So 20,000 pairs in 2 s on one
// connection went through, and the handlers that ran before x/net had
// processed their stream's RST_STREAM picked a node and dialled it.
//
// h2Guard sits between the client connection and x/net/http2's framer, the
// only reader of the connection, and reads the frame headers passing by
// (it never changes a byte). It does two things:
//
//   - Budget: each RST_STREAM from the client spends a token of a bucket
//     that holds h2ResetBurst and refills at h2ResetRate per second. When
//     the bucket is empty the connection is flooding: Read returns
//     http2.ConnectionError(ErrCodeEnhanceYourCalm), which x/net answers
//     with GOAWAY ENHANCE_YOUR_CALM and then closes the connection (its
//     processFrameFromReader treats a ConnectionError from the reader like
//     one from a frame: server.go, x/net v0.62).
//   - Already reset: the guard reads ahead (one socket read fills a 16 KiB
//     buffer, so a HEADERS frame and the RST_STREAM sent right behind it
//     arrive together) and records where the last RST_STREAM received
//     ends. x/net reads the next frame only after it has processed the
//     previous one (its readFrames waits on a gate), and processing a
//     RST_STREAM cancels the stream's context. So once x/net has read past
//     a RST_STREAM, the stream it reset is cancelled. Before picking a node
//     a handler waits (awaitResets) until x/net has read past every
//     RST_STREAM the router had received when the handler started; its own
//     reset, if already received, has then cancelled its context, and
//     connect refuses a cancelled request before picking (errClientGone).
//     The wait is for frames already in memory: microseconds, except
//     during a flood.
//
// Read is called by x/net's reading goroutine only; Close by anyone.
type h2Guard struct {
	net.Conn
	rt  *Router
	buf []byte // look-ahead; buf[r:w] is read from the socket, not yet delivered

	// Owned by the reading goroutine.
	r, w    int
	preface int       // bytes of the client preface still to pass
	hdr     [9]byte   // the frame header being read
	hn      int       // bytes of hdr read
	skip    int       // payload bytes of the current frame still to pass
	pos     int64     // bytes of the connection scanned so far
	tokens  float64   // reset budget left
	last    time.Time // when tokens was last refilled
	flood   bool      // the budget ran out: Read returns errFlood from now on

	mu        sync.Mutex
	rstEnd    int64         // guarded by mu: connection offset just past the last RST_STREAM received
	delivered int64         // guarded by mu: bytes handed to x/net, as of its latest Read call
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
	// h2LookAhead is the guard's read buffer.
	h2LookAhead = 16 << 10
)

// errFlood is what the guard's Read returns once the connection floods:
// x/net sends GOAWAY with its code and closes.
var errFlood error = http2.ConnectionError(http2.ErrCodeEnhanceYourCalm)

var lookAheadPool = sync.Pool{New: func() any { b := make([]byte, h2LookAhead); return &b }}

// newH2Guard wraps c, an HTTP/2 connection whose client preface has not
// been read yet. A TLS connection keeps its ConnectionState, which x/net
// needs (it checks the TLS version and fills Request.TLS); a clear-text one
// must not have one.
func newH2Guard(rt *Router, c net.Conn) (net.Conn, *h2Guard) {
	g := &h2Guard{Conn: c, rt: rt, buf: *lookAheadPool.Get().(*[]byte), preface: len(h2Preface),
		tokens: h2ResetBurst, last: rt.now()}
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
		if !g.scan(g.buf[:n]) {
			g.flood = true
			g.stop()
			g.rt.h2Errors.WithLabelValues("rapid_reset").Inc()
			g.rt.log.Debug("h2 rapid reset: GOAWAY", "remote", g.RemoteAddr())
			return 0, errFlood
		}
	}
	n := copy(p, g.buf[g.r:g.w])
	g.r += n
	return n, nil
}

// scan follows the frames in b, the next bytes of the connection, and
// spends the reset budget; false when it ran out.
func (g *h2Guard) scan(b []byte) bool {
	for len(b) > 0 {
		var n int
		switch {
		case g.preface > 0:
			n = min(g.preface, len(b))
			g.preface -= n
		case g.skip > 0:
			n = min(g.skip, len(b))
			g.skip -= n
		default:
			n = copy(g.hdr[g.hn:], b)
			g.hn += n
		}
		b = b[n:]
		g.pos += int64(n)
		if g.hn < len(g.hdr) {
			continue
		}
		// A whole frame header (RFC 9113 §4.1): 24-bit length, type, flags,
		// stream id.
		g.hn = 0
		g.skip = int(g.hdr[0])<<16 | int(g.hdr[1])<<8 | int(g.hdr[2])
		if http2.FrameType(g.hdr[3]) == http2.FrameRSTStream {
			if !g.spendReset() {
				return false
			}
			g.mu.Lock()
			g.rstEnd = g.pos + int64(g.skip)
			g.mu.Unlock()
		}
	}
	return true
}

// spendReset takes a token for one RST_STREAM; false when none is left.
func (g *h2Guard) spendReset() bool {
	now := g.rt.now()
	g.tokens = min(h2ResetBurst, g.tokens+now.Sub(g.last).Seconds()*h2ResetRate)
	g.last = now
	if g.tokens < 1 {
		return false
	}
	g.tokens--
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

// awaitResets waits until x/net has processed every RST_STREAM received so
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

// newH2Metrics registers fastrouter_http2_errors_total{type}: the protocol
// errors x/net/http2 reports through Server.CountError (its own names, a
// fixed set, e.g. "conn_PROTOCOL_ERROR_..." or "frame_data_stream_0") and
// the guard's "rapid_reset".
func newH2Metrics(reg prometheus.Registerer) (*prometheus.CounterVec, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_http2_errors_total",
		Help: "HTTP/2 connection and stream errors the router answered, by type (x/net/http2's names, and rapid_reset for a connection closed for resetting too many streams).",
	}, []string{"type"})
	return vec, reg.Register(vec)
}
