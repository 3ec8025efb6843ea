package router

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"net/http/httputil"
	"slices"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// h1Front adapts one fasthttp listener to the forwarding core. Immutable
// after creation.
type h1Front struct {
	rt         *Router
	serverPort []byte
	scheme     string
	conns      prometheus.Gauge
}

// bodyPrefetch is how much of a request body fasthttp reads before the
// handler runs; the rest streams. Small bodies thus go out in the same write
// as the vars.
const bodyPrefetch = 16 << 10

func (f *h1Front) server() *fasthttp.Server {
	rt := f.rt
	return &fasthttp.Server{
		Handler:      f.handle,
		ErrorHandler: f.handleError,
		// The head must fit the read buffer; a larger one is ErrSmallBuffer → 431.
		ReadBufferSize: rt.cfg.MaxHeaderBytes,
		// ReadTimeout covers the request head (first byte to end of headers);
		// HeaderReceived then extends the deadline for the body, which the
		// core renews on every read.
		ReadTimeout: rt.cfg.HeaderTimeout,
		HeaderReceived: func(*fasthttp.RequestHeader) fasthttp.RequestConfig {
			return fasthttp.RequestConfig{ReadTimeout: rt.cfg.Timeout}
		},
		IdleTimeout:                   rt.cfg.Timeout,
		StreamRequestBody:             true,
		MaxRequestBodySize:            bodyPrefetch,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		SecureErrorLogMessage:         true,
		CloseOnShutdown:               true,
		// Idle keep-alive connections hold no buffers.
		ReduceMemoryUsage: true,
		Logger:            fasthttpLogger{rt},
		ConnState: func(_ net.Conn, s fasthttp.ConnState) {
			switch s {
			case fasthttp.StateNew:
				f.conns.Inc()
			case fasthttp.StateClosed, fasthttp.StateHijacked:
				f.conns.Dec()
			}
		},
	}
}

// fasthttpLogger routes fasthttp's own messages (connection-level errors) to
// debug: they are per-connection noise from clients.
type fasthttpLogger struct{ rt *Router }

func (l fasthttpLogger) Printf(format string, args ...any) {
	l.rt.log.Debug("http front", "msg", format, "args", args)
}

// handleError answers requests fasthttp could not parse.
func (f *h1Front) handleError(ctx *fasthttp.RequestCtx, err error) {
	code := 400
	var small *fasthttp.ErrSmallBuffer
	switch {
	case errors.As(err, &small):
		code = 431
	case errors.Is(err, fasthttp.ErrBodyTooLarge):
		code = 413
	case isTimeout(err):
		code = 408
	}
	writeError(ctx, code)
	ctx.SetConnectionClose()
	f.rt.metrics.none.count(code)
}

// h1State is per-request scratch, recycled across requests.
type h1State struct {
	req  request
	buf  []byte // vars packet, then small bodies
	body []byte // a buffered chunked body
}

var h1StatePool = sync.Pool{New: func() any {
	return &h1State{req: request{headers: make([]hdr, 0, 32)}, buf: make([]byte, 0, 8<<10)}
}}

func (f *h1Front) handle(ctx *fasthttp.RequestCtx) {
	rt := f.rt
	defer func() {
		if p := recover(); p != nil {
			rt.log.Error("panic serving request", "panic", p, "uri", string(ctx.RequestURI()))
			ctx.Response.Reset()
			writeError(ctx, 500)
			ctx.SetConnectionClose()
		}
	}()
	st := h1StatePool.Get().(*h1State)
	defer func() {
		st.req.reset()
		if cap(st.buf) <= 64<<10 {
			st.buf = st.buf[:0]
		} else {
			st.buf = make([]byte, 0, 8<<10)
		}
		st.body = st.body[:0]
		if cap(st.body) > 1<<20 {
			st.body = nil
		}
		h1StatePool.Put(st)
	}()

	// Arm the client write deadline when the handler returns and fasthttp
	// starts writing: a deadline left by a previous response must not fire on
	// this one, and one armed now could expire while a slow backend thinks.
	// Body streams renew it on every read.
	defer func() {
		if c := ctx.Conn(); c != nil {
			_ = c.SetWriteDeadline(rt.now().Add(rt.cfg.Timeout))
		}
	}()

	r := &st.req
	h := &ctx.Request.Header

	// A body left unread must never be parsed as the next request on this
	// connection (HTTP desync): unless the body was consumed to its end, the
	// response closes the connection.
	bodyPending := h.ContentLength() > 0 || h.ContentLength() == -1
	defer func() {
		if bodyPending {
			ctx.SetConnectionClose()
		}
	}()
	r.method = h.Method()
	r.uri = h.RequestURI()
	r.proto = h.Protocol()
	r.host = h.Host()
	r.scheme = f.scheme
	r.serverPort = f.serverPort
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		r.remote = ta.AddrPort()
	}
	r.trusted = rt.trusted(r.remote.Addr())
	r.contentType = h.ContentType()

	var hasCL, hasTE bool
	var err error
	r.headers, hasCL, hasTE, err = parseRawHeaders(h.RawHeaders(), r.headers[:0], rt.cfg.MaxHeaderCount)
	switch {
	case err != nil:
		rt.fail(ctx, rt.metrics.none, err)
		return
	case hasCL && hasTE:
		rt.fail(ctx, rt.metrics.none, errAmbiguousBody)
		return
	case len(r.host) == 0 && h.IsHTTP11(), len(r.host) > 0 && !validHost(r.host):
		rt.fail(ctx, rt.metrics.none, errBadHost)
		return
	}

	pool := rt.cfg.Pools.Lookup(r.host)
	if pool == nil {
		rt.fail(ctx, rt.metrics.none, errNoPool)
		return
	}
	pm := rt.metrics.forPool(pool)

	// Body: a known length streams; a chunked body is buffered (bounded) so
	// the node gets the CONTENT_LENGTH a WSGI app reads by.
	var bodySrc io.Reader
	switch cl := h.ContentLength(); {
	case cl > 0:
		r.bodyLen = int64(cl)
		bodySrc = ctx.RequestBodyStream()
	case cl == -1:
		st.body, err = readAllLimited(ctx.RequestBodyStream(), st.body[:0], rt.cfg.MaxBufferedBody)
		if err != nil {
			rt.fail(ctx, pm, err)
			return
		}
		r.bodyLen = int64(len(st.body))
		bodyPending = false
	}

	st.buf, err = appendVars(st.buf[:0], r, 0, 0)
	if err != nil {
		rt.fail(ctx, pm, err)
		return
	}
	packet := st.buf
	// Small bodies ride in the same write as the vars.
	inline := int64(0)
	if r.bodyLen > 0 && r.bodyLen <= bodyPrefetch {
		if bodySrc != nil {
			n := len(packet)
			packet = slices.Grow(packet, int(r.bodyLen))
			m, rerr := io.ReadFull(bodySrc, packet[n:n+int(r.bodyLen)])
			if rerr != nil {
				rt.fail(ctx, pm, errClientBody)
				return
			}
			packet = packet[:n+m]
			bodyPending = false
		} else {
			packet = append(packet, st.body...)
		}
		inline = r.bodyLen
		st.buf = packet
	}

	pm.inflight.Inc()
	start := rt.now()
	node, conn, err := rt.connect(pool, packet)
	if err != nil {
		pm.inflight.Dec()
		pm.backendError(err)
		rt.fail(ctx, pm, err)
		return
	}
	ok := false
	var br *bufio.Reader
	defer func() {
		if !ok {
			rt.finish(conn, br, node, pm, start)
		}
	}()

	if err := rt.writeFull(conn, packet); err != nil {
		pm.backendError(errBackendWrite)
		rt.fail(ctx, pm, errBackendWrite)
		return
	}
	if rest := r.bodyLen - inline; rest > 0 {
		var src io.Reader = bytes.NewReader(st.body[inline:])
		if bodySrc != nil {
			src = bodySrc
		}
		cb := bufPool.Get().(*[]byte)
		err := rt.copyBody(conn, src, ctx.Conn(), rest, *cb)
		bufPool.Put(cb)
		if err == nil {
			bodyPending = false
		}
		if err != nil {
			if err != errClientBody {
				pm.backendError(err)
			}
			rt.fail(ctx, pm, err)
			return
		}
	}

	br = readerPool.Get().(*bufio.Reader)
	br.Reset(conn)
	_ = conn.SetReadDeadline(rt.now().Add(rt.cfg.Timeout))
	resp := &ctx.Response
	if err := resp.Header.Read(br); err != nil {
		resp.Reset()
		e := errBadResponse
		if isTimeout(err) {
			e = errBackendTimeout
		}
		pm.backendError(e)
		rt.fail(ctx, pm, e)
		return
	}
	// The backend closing its connection is uwsgi framing, not a request
	// to close the client's.
	resp.Header.ResetConnectionClose()
	code := resp.StatusCode()
	pm.count(code)

	cl := resp.Header.ContentLength()
	if ctx.IsHead() || code < 200 || code == 204 || code == 304 || cl == 0 {
		return // deferred finish releases everything
	}
	b := backendBodyPool.Get().(*backendBody)
	*b = backendBody{rt: rt, conn: conn, br: br, src: br, limit: -1, client: ctx.Conn(), node: node, pm: pm, start: start}
	ok = true
	switch {
	case cl > 0:
		b.limit = int64(cl)
		ctx.SetBodyStream(b, cl)
	case cl == -1: // chunked from the backend: de-chunk, the front re-chunks
		b.src = httputil.NewChunkedReader(br)
		ctx.SetBodyStream(b, -1)
	case h.IsHTTP11(): // length unknown until EOF: chunk it for the client
		ctx.SetBodyStream(b, -1)
	default: // HTTP/1.0 client: the body ends when we close the connection
		f.streamUntilClose(ctx, b)
	}
}

// streamUntilClose answers an HTTP/1.0 client, which cannot take chunked
// encoding, with an unframed body ended by closing the connection.
func (f *h1Front) streamUntilClose(ctx *fasthttp.RequestCtx, b *backendBody) {
	ctx.Response.Header.SetContentLength(-2) // no framing; sets Connection: close
	head := append([]byte(nil), ctx.Response.Header.Header()...)
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer b.Close()
		b.client = c
		if _, err := c.Write(head); err != nil {
			return
		}
		cb := bufPool.Get().(*[]byte)
		_, _ = io.CopyBuffer(c, b, *cb)
		bufPool.Put(cb)
	})
}

// fail writes the error page for err and counts it.
func (rt *Router) fail(ctx *fasthttp.RequestCtx, pm *poolMetrics, err error) {
	code := statusOf(err)
	writeError(ctx, code)
	if code == 400 || code == 413 || code == 431 {
		ctx.SetConnectionClose() // the rest of the stream cannot be trusted
	}
	pm.count(code)
}

// errorBodies are preformatted so error pages allocate nothing.
var errorBodies = map[int][]byte{
	400: []byte("400 Bad Request\n"),
	404: []byte("404 Not Found: no pool serves this host\n"),
	408: []byte("408 Request Timeout\n"),
	413: []byte("413 Content Too Large\n"),
	431: []byte("431 Request Header Fields Too Large\n"),
	500: []byte("500 Internal Server Error\n"),
	502: []byte("502 Bad Gateway\n"),
	503: []byte("503 Service Unavailable: no usable node\n"),
	504: []byte("504 Gateway Timeout\n"),
}

func writeError(ctx *fasthttp.RequestCtx, code int) {
	ctx.Response.Reset()
	ctx.SetStatusCode(code)
	ctx.Response.Header.SetContentTypeBytes(textPlain)
	if code == 503 {
		ctx.Response.Header.SetBytesKV(retryAfter, one)
	}
	ctx.SetBody(errorBodies[code])
}

var (
	textPlain  = []byte("text/plain; charset=utf-8")
	retryAfter = []byte("Retry-After")
	one        = []byte("1")
)

// readAllLimited reads src into dst up to limit bytes; more is
// errBodyTooLarge, a read error errClientBody.
func readAllLimited(src io.Reader, dst []byte, limit int) ([]byte, error) {
	if src == nil {
		return dst, nil
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		n, err := src.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, errBodyTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, errClientBody
		}
	}
}

// parseRawHeaders splits a raw header block into dst and reports whether
// Content-Length and Transfer-Encoding were present. obs-fold (a line
// starting with whitespace) and lines without a colon are errBadRequest;
// more than max headers is errVarsTooLarge (431).
func parseRawHeaders(raw []byte, dst []hdr, max int) (_ []hdr, hasCL, hasTE bool, _ error) {
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			return dst, false, false, errBadRequest
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 {
			return dst, false, false, errBadRequest
		}
		k, v := line[:c], trimOWS(line[c+1:])
		if len(dst) >= max {
			return dst, false, false, errVarsTooLarge
		}
		switch {
		case asciiEqualFold(k, "content-length"):
			hasCL = true
		case asciiEqualFold(k, "transfer-encoding"):
			hasTE = true
		}
		dst = append(dst, hdr{k, v})
	}
	return dst, hasCL, hasTE, nil
}

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}
