package router

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/textproto"
	"strings"
	"sync/atomic"
	"time"

	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/fastrouter/fastrouter/internal/h2srv"
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// streamFront is the request side of the h2 and h3 fronts: a net/http
// handler that forwards one request stream through the same core as the
// HTTP/1.1 front. internal/h2srv (h2Front) and quic-go's http3 (h3.go)
// each call ServeHTTP once per stream. Immutable after creation but for
// dateCache.
type streamFront struct {
	rt          *Router
	serverPort  []byte
	scheme      string
	clientCerts bool
	// altSvc, when not nil, is the Alt-Svc field every response carries:
	// the listener's address also serves HTTP/3 (h3.go).
	altSvc []string
	// admit, when not nil, is the front's own check of a request, once its
	// view is read and before it is routed; its error is answered through
	// statusOf (h3.go: 0-RTT).
	admit func(req *http.Request, x *exchange) error
	// dateCache is the Date field of this second (date), the one field
	// that changes after creation.
	dateCache atomic.Pointer[dateValue]
}

// h2Front serves HTTP/2 connections (TLS with ALPN h2, or h2c with prior
// knowledge) with the router's own HTTP/2 server (internal/h2srv); each
// stream goes to the streamFront. Immutable after creation. Its
// connections are in their listener's splitting set for their whole life
// (serve.go): that is what the shutdown deadline closes.
type h2Front struct {
	*streamFront
	conns prometheus.Gauge
	// srv serves the connections the router has accepted, through its TLS
	// handshake or h2c sniff and PROXY header, wrapped in the h2 guard
	// (h2guard.go), with a context per connection.
	srv *h2srv.Server
}

// h2MaxConcurrentStreams bounds the streams one client connection may have
// open; the h2 guard's reset budget is sized from it.
const h2MaxConcurrentStreams = 250

// h2MaxFrameSize is the largest frame payload the router reads: the
// protocol's initial value (RFC 9113 §4.2).
const h2MaxFrameSize = 16 << 10

func newH2Front(rt *Router, t *Timeouts, sf *streamFront, conns prometheus.Gauge) *h2Front {
	f := &h2Front{streamFront: sf, conns: conns}
	f.srv = h2srv.New(h2srv.Config{
		MaxConcurrentStreams: h2MaxConcurrentStreams,
		// The initial SETTINGS_MAX_FRAME_SIZE (RFC 9113 §6.5.2): a client
		// that ignores our SETTINGS (or has not read them yet) may assume
		// no more, and a larger frame is then a FRAME_SIZE_ERROR it can
		// rely on (§4.2; h2spec 4.2/1 and 4.2/3, docs/tls.md). Requests
		// are small frames; upload bodies only need more of them.
		MaxReadFrameSize:  h2MaxFrameSize,
		MaxHeaderListSize: uint32(rt.cfg.MaxHeaderBytes),
		// Flow control windows: what one client can make us buffer.
		StreamWindow: 256 << 10,
		ConnWindow:   1 << 20,
		IdleTimeout:  t.Timeout,
		// A response that waits this long for the client's window is
		// reset, and a socket write that makes no progress for this long
		// ends the connection: a client that stops reading pins no
		// buffers.
		WriteTimeout: t.Timeout,
		CountError:   func(name string) { rt.h2Errors.WithLabelValues(name).Inc() },
		OnPanic: func(v any, stack []byte) {
			rt.log.Error("h2 stream handler panicked", "panic", v, "stack", string(stack))
		},
	}, sf)
	return f
}

// serveConn serves one HTTP/2 connection until it ends. The server reads
// it through an h2Guard (h2guard.go), which its streams find in their
// requests' context.
func (f *h2Front) serveConn(c net.Conn) {
	f.conns.Inc()
	gc, g := newH2Guard(f.rt, c)
	defer func() {
		f.conns.Dec()
		c.Close()
		g.release()
	}()
	ctx := context.WithValue(context.Background(), h2GuardKey{}, g)
	f.srv.ServeConn(ctx, gc)
}

// startShutdown sends GOAWAY on every connection; each closes once its
// streams finish.
func (f *h2Front) startShutdown() { f.srv.Shutdown() }

// hopByHop reports response headers that must not cross into HTTP/2
// (RFC 9113 §8.2.2).
func hopByHop(k []byte) bool {
	return ascii.EqualFold(k, "connection") || ascii.EqualFold(k, "keep-alive") ||
		ascii.EqualFold(k, "transfer-encoding") || ascii.EqualFold(k, "upgrade") ||
		ascii.EqualFold(k, "proxy-connection") || ascii.EqualFold(k, "content-length")
}

var hostKey = []byte("Host")

// ServeHTTP forwards one stream.
func (f *streamFront) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	rt := f.rt
	if f.altSvc != nil {
		w.Header()["Alt-Svc"] = f.altSvc // error pages too
	}
	x := getExchange()
	defer putExchange(x)
	head := responseHeaderPool.Get().(*fasthttp.ResponseHeader)
	// Reset (below) clears these: set them for every use. Without
	// NoDefaultContentType, fasthttp would invent a Content-Type for a
	// response that has none.
	head.DisableNormalizing()
	head.SetNoDefaultContentType(true)
	defer func() {
		head.Reset()
		responseHeaderPool.Put(head)
	}()

	protocol := extendedConnect(req) // extconnect.go
	if !f.readRequest(w, req, x, protocol != "") {
		return
	}
	if f.admit != nil {
		if err := f.admit(req, x); err != nil {
			f.fail(w, x, rt.metrics.none, err)
			return
		}
	}
	// A stream whose reset the router has already received picks no node
	// (h2guard.go); it is counted as abandoned, before routing.
	if g := guardOf(x.ctx); g != nil && !g.awaitResets(x.ctx) {
		rt.metrics.none.count(statusOf(errClientGone))
		rt.logResponse(x, nil, errClientGone, nil)
		return
	}
	if protocol != "" {
		f.serveExtendedConnect(w, req.Body, x, protocol, head)
		return
	}

	pm, b, err := rt.forward(x, head)
	rt.logResponse(x, b, err, head)
	if err == errClientGone {
		return
	}
	if err != nil {
		f.writeError(w, statusOf(err))
		return
	}
	f.writeHead(w, x, head, b != nil)
	if b == nil {
		return
	}
	defer b.Close()
	f.writeBody(w, x, b, pm, head.ContentLength() <= 0)
}

// readRequest fills x's request view from the stream's request, copied
// into x's scratch, under the strict rules of the HTTP/1.1 front on the
// pseudo-headers and fields (strict.go): what they refuse never reaches a
// node. A refused request is answered here, and false returned. An
// extended CONNECT (ext) is checked as the GET it becomes (extconnect.go).
func (f *streamFront) readRequest(w http.ResponseWriter, req *http.Request, x *exchange, ext bool) bool {
	rt := f.rt
	r := &x.req
	r.Method = x.copyString(req.Method)
	if ext {
		r.Method = getMethod
	}
	// An extended CONNECT's RequestURI is its :path in both internal/h2srv
	// and quic-go's http3; quic-go's Proto is its :protocol then.
	r.URI = x.copyString(req.RequestURI)
	r.Proto = x.copyString(req.Proto)
	if ext && req.ProtoMajor == 3 {
		r.Proto = x.copyString(h3Proto)
	}
	r.Host = x.copyString(req.Host)
	r.Scheme = f.scheme
	r.ServerPort = f.serverPort
	if g := guardOf(req.Context()); g != nil && g.remote.IsValid() {
		r.Remote = g.remote // req.RemoteAddr, parsed once per connection
	} else if ap, err := netip.ParseAddrPort(req.RemoteAddr); err == nil {
		r.Remote = ap
	}
	r.Trusted = rt.trusted(r.Remote.Addr())
	if f.clientCerts && req.TLS != nil {
		r.ClientDN = appendPeerDN(x, *req.TLS)
	}
	// net/http moves Host (or :authority) out of the header map; apps
	// expect it as HTTP_HOST.
	if len(r.Host) > 0 {
		r.Headers = append(r.Headers, hdr{hostKey, r.Host})
	}
	if why := strict.CheckPseudo(r.Method, r.URI); why != strict.None {
		f.reject(w, x, why)
		return false
	}
	if why := f.readFields(req.Header, x); why != strict.None {
		f.reject(w, x, why)
		return false
	}
	// An h2 request without :authority and Host has no routing key.
	if len(r.Host) == 0 {
		f.fail(w, x, rt.metrics.none, errBadHost)
		return false
	}
	if req.Body != nil && req.Body != http.NoBody && req.ContentLength != 0 {
		x.bodySrc, x.bodyLen = req.Body, req.ContentLength
		if x.bodyLen < 0 {
			x.bodyLen = -1
		}
	}
	x.rc = *http.NewResponseController(w)
	x.client = &x.rc
	x.sink, x.rw = f, w
	x.isHead = req.Method == http.MethodHead
	x.ctx = req.Context()
	return true
}

// readFields checks the regular fields of a request (strict.FieldCheck) and adds
// them to x's headers; net/http keeps Host apart, and Content-Type goes
// out as CONTENT_TYPE.
func (f *streamFront) readFields(h http.Header, x *exchange) strict.Reject {
	r := &x.req
	var fc strict.FieldCheck
	for k, vs := range h {
		kb := x.copyString(k)
		for _, v := range vs {
			vb := x.copyString(v)
			if why := fc.Field(kb, vb, f.rt.cfg.MaxHeaderCount); why != strict.None {
				return why
			}
			if ascii.EqualFold(kb, "content-type") && r.ContentType == nil {
				r.ContentType = vb
				continue
			}
			r.Headers = append(r.Headers, hdr{kb, vb})
		}
	}
	return strict.None
}

// copyString copies s into x's scratch, which the request view then points
// into. Growing scratch leaves earlier slices valid.
func (x *exchange) copyString(s string) []byte {
	n := len(x.scratch)
	x.scratch = append(x.scratch, s...)
	return x.scratch[n:len(x.scratch):len(x.scratch)]
}

// writeHead writes the final response head on the stream: the node's
// headers but the hop-by-hop ones, and its Content-Length when a body of
// that length follows (or for HEAD). Their names and values are copied
// into one string and the map's value slices cut from one array: two
// allocations for the whole head, however many fields (a string and a
// slice per field otherwise). The names stay as the node spelled them
// where that is canonical; Header.Add canonicalises the others.
func (f *streamFront) writeHead(w http.ResponseWriter, x *exchange, head *fasthttp.ResponseHeader, body bool) {
	cl := head.ContentLength() > 0 && (body || x.isHead)
	keep := func(k []byte) bool {
		return !hopByHop(k) || cl && ascii.EqualFold(k, "content-length")
	}
	n, size := 0, 0
	for k, v := range head.All() {
		if keep(k) {
			n++
			size += len(k) + len(v)
		}
	}
	// One string for all: a Builder grown to size never moves its bytes,
	// so what String returns as it fills stays valid and unchanged.
	var sb strings.Builder
	sb.Grow(size)
	vals := make([]string, n)
	hdrs := w.Header()
	i := 0
	for k, v := range head.All() {
		if !keep(k) {
			continue
		}
		sb.Write(k)
		key := sb.String()[sb.Len()-len(k):]
		sb.Write(v)
		vals[i] = sb.String()[sb.Len()-len(v):]
		if ck := textproto.CanonicalMIMEHeaderKey(key); hdrs[ck] == nil {
			hdrs[ck] = vals[i : i+1 : i+1]
		} else {
			hdrs[ck] = append(hdrs[ck], vals[i])
		}
		i++
	}
	if f.altSvc != nil {
		hdrs["Alt-Svc"] = f.altSvc // ours, not the node's: the router is the origin's front
	}
	if len(head.ContentType()) == 0 {
		hdrs["Content-Type"] = nil // net/http's way to say: do not sniff one
	}
	if _, ok := hdrs["Date"]; !ok {
		hdrs["Date"] = f.date()
	}
	w.WriteHeader(head.StatusCode())
}

// date is the Date field of a response, as internal/h2srv and quic-go's
// http3 would add it (RFC 9110 §6.6.1), formatted once a second instead of
// once a response. Both copy the header map when the head is written, so
// streams can share the slice.
func (f *streamFront) date() []string {
	now := time.Now()
	if d := f.dateCache.Load(); d != nil && d.sec == now.Unix() {
		return d.v
	}
	d := &dateValue{sec: now.Unix(), v: []string{now.UTC().Format(http.TimeFormat)}}
	f.dateCache.Store(d)
	return d.v
}

// dateValue is a formatted Date field and the second it is of.
type dateValue struct {
	sec int64
	v   []string
}

// writeBody copies the node's body to the stream; a body of unknown length
// is flushed as it comes (the app may be streaming: SSE, long poll). A body
// cut short resets the stream, so the client cannot mistake it for a
// complete response.
func (f *streamFront) writeBody(w http.ResponseWriter, x *exchange, b *backendBody, pm *poolMetrics, flush bool) {
	rc := &x.rc
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	for {
		n, rerr := b.Read(*cb)
		if n > 0 {
			if _, werr := w.Write((*cb)[:n]); werr != nil {
				return // client gone; the stream is already reset
			}
			if flush {
				_ = rc.Flush()
			}
		}
		if rerr == io.EOF {
			return
		}
		if rerr != nil && x.ctx.Err() != nil {
			return // the client reset the stream; nobody to tell
		}
		if rerr != nil {
			if isTimeout(rerr) {
				pm.backendError(errBackendTimeout)
			} else {
				pm.backendError(errBadResponse)
			}
			panic(http.ErrAbortHandler)
		}
	}
}

// interim sends a node's interim response on x's stream (response.go) as
// a 1xx HEADERS frame. internal/h2srv sends the header map as it is at
// WriteHeader (the frame is queued before WriteHeader returns); the map is then
// emptied so the final response carries only its own headers.
func (f *streamFront) interim(x *exchange, head *fasthttp.ResponseHeader) error {
	h := x.rw.Header()
	for k, v := range head.All() {
		if !hopByHop(k) {
			h.Add(string(k), string(v))
		}
	}
	x.rw.WriteHeader(head.StatusCode())
	clear(h)
	if x.ctx.Err() != nil {
		return errClientGone
	}
	return nil
}

func (f *streamFront) fail(w http.ResponseWriter, x *exchange, pm *poolMetrics, err error) {
	code := statusOf(err)
	pm.count(code)
	f.writeError(w, code)
	f.rt.logResponse(x, nil, err, nil)
}

// reject answers a request the strict checks refused (strict.go) on its
// stream, and counts it as the HTTP/1.1 front does.
func (f *streamFront) reject(w http.ResponseWriter, x *exchange, why strict.Reject) {
	code := why.Status()
	body, ok := strictBodies[code]
	if !ok {
		body = errorBodies[code]
	}
	h := w.Header()
	h.Set("Content-Type", string(textPlain))
	if code == 405 {
		h.Set(string(allowHeader), string(allowedMethods))
	}
	w.WriteHeader(code)
	_, _ = w.Write(body)
	f.rt.metrics.none.count(code)
	f.rt.headRejects[why].Inc()
	f.rt.logAccess(x, code, nil, len(body))
}

func (f *streamFront) writeError(w http.ResponseWriter, code int) {
	h := w.Header()
	h.Set("Content-Type", string(textPlain))
	if code == 503 {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(code)
	_, _ = w.Write(errorBodies[code])
}
