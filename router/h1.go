package router

import (
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/strict"
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
	// clientCerts: the listener asks for client certificates; their subject
	// goes to the node as HTTPS_DN.
	clientCerts bool
	// tunnels is the listener's set of upgraded connections (tunnel.go).
	tunnels *connSet
	// altSvc, when not nil, is the Alt-Svc field every response carries:
	// the listener's address also serves HTTP/3 (h3.go).
	altSvc []byte
}

// bodyPrefetch is how much of a request body fasthttp reads before the
// handler runs; the rest streams. Small bodies thus go out in the same write
// as the vars.
const bodyPrefetch = 16 << 10

// server builds the fasthttp server for one generation of a listener (see
// frontGen), with the timeouts t. ended is called when a connection it got
// from Serve (one that cannot park: pushH1) ends, closed or hijacked.
func (f *h1Front) server(t *Timeouts, ended func()) *fasthttp.Server {
	rt := f.rt
	return &fasthttp.Server{
		Handler:      f.handle,
		ErrorHandler: f.handleError,
		// Expect: 100-continue (spill.go).
		ExpectHandler: f.expect,
		// The head must fit the read buffer; a larger one is ErrSmallBuffer → 431.
		ReadBufferSize: rt.cfg.MaxHeaderBytes,
		// ReadTimeout covers the request head (first byte to end of headers);
		// HeaderReceived then extends the deadline for the body, which the
		// core renews on every read.
		ReadTimeout: t.Header,
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			// refuseDeclaredBody: spill.go; takeChunked: clientbody.go.
			f.refuseDeclaredBody(h)
			return f.takeChunked(h, fasthttp.RequestConfig{ReadTimeout: t.Timeout})
		},
		IdleTimeout:                   t.Timeout,
		StreamRequestBody:             true,
		MaxRequestBodySize:            bodyPrefetch,
		DisablePreParseMultipartForm:  true,
		DisableHeaderNamesNormalizing: true,
		NoDefaultServerHeader:         true,
		NoDefaultContentType:          true,
		SecureErrorLogMessage:         true,
		CloseOnShutdown:               true,
		// A connection that cannot park (not on Linux) holds no write
		// buffer while idle. Without it fasthttp would also hold a
		// pipelined response until the next one is done.
		ReduceMemoryUsage: true,
		Logger:            fasthttpLogger{rt},
		ConnState: func(c net.Conn, s fasthttp.ConnState) {
			pc := parkOf(c)
			switch s {
			case fasthttp.StateNew: // from Serve only; admitH1 counts its own
				f.connOpened()
			case fasthttp.StateClosed:
				if pc == nil {
					ended()
				} else if pc.closed() {
					return // parked: still open (park.go)
				}
				f.connClosed()
			case fasthttp.StateHijacked:
				if pc == nil {
					ended()
				} else {
					pc.l.untrack(pc)
				}
				// Still open, and counted in conns, until the hijack
				// handler is done with it (hijack).
				f.rt.h1Open.Add(-1)
			}
		},
	}
}

// connOpened counts an HTTP/1.1 connection open.
func (f *h1Front) connOpened() {
	f.conns.Inc()
	f.rt.h1Open.Add(1)
}

// connClosed stops counting an HTTP/1.1 connection that has closed.
func (f *h1Front) connClosed() {
	f.conns.Dec()
	f.rt.h1Open.Add(-1)
}

// hijack takes the connection of ctx over for h once the handler returns
// (fasthttp's Hijack, with no response of fasthttp's own): a tunnel
// (tunnel.go) or an HTTP/1.0 body streamed until close. The connection
// stays counted open in conns until h returns and fasthttp closes it. It
// leaves Router.h1Open at once (ConnState StateHijacked): that counts the
// connections Shutdown's keep-alive grace waits for, and a hijacked one
// ends by its owner's rules (tunnel.go), not after a response.
func (f *h1Front) hijack(ctx *fasthttp.RequestCtx, h func(net.Conn)) {
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) {
		defer f.conns.Dec()
		h(c)
	})
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
	case errors.Is(err, io.ErrUnexpectedEOF):
		// The body fasthttp reads ahead (up to 8 KiB) ended before its
		// Content-Length: nothing of the request reached a node.
		f.rt.countBodyReject(errClientBody)
	}
	writeError(ctx, code)
	ctx.SetConnectionClose()
	f.rt.metrics.none.count(code)
	f.rt.logUnparsed(ctx, code)
}

// handle serves one request (fasthttp.Server.Handler): the request view,
// forward, the response.
func (f *h1Front) handle(ctx *fasthttp.RequestCtx) {
	rt := f.rt
	// Deferred first so it runs last, after anything that resets the
	// response: while the router drains, each response ends its connection.
	defer func() {
		if rt.draining.Load() {
			ctx.SetConnectionClose()
		}
		if f.altSvc != nil {
			ctx.Response.Header.SetBytesKV(altSvcKey, f.altSvc)
		}
		// At a request boundary the connection may park if it then idles
		// (park.go). A hijacked one is the tunnel's now.
		if pc := parkOf(ctx.Conn()); pc != nil && !ctx.Hijacked() {
			pc.arm()
		}
	}()
	defer func() {
		if p := recover(); p != nil {
			rt.log.Error("panic serving request", "panic", p, "uri", string(ctx.RequestURI()))
			ctx.Response.Reset()
			writeError(ctx, 500)
			ctx.SetConnectionClose()
		}
	}()
	x := getExchange()
	defer putExchange(x)

	// Arm the client write deadline when the handler returns and fasthttp
	// starts writing: a deadline left by a previous response must not fire on
	// this one, and one armed now could expire while a slow backend thinks.
	// Body streams renew it on every read.
	// The response head's arrival (x.headAt) was microseconds ago: it
	// stands for now.
	defer func() {
		if c := ctx.Conn(); c != nil {
			now := x.headAt
			if now.IsZero() {
				now = rt.now()
			}
			_ = renewWrite(c, now.Add(rt.timeouts().Timeout), now)
		}
	}()
	if f.scheme == "http" && rt.answerChallenge(ctx) { // acme.go
		return
	}

	if why := f.readRequest(ctx, x); why != strict.None {
		f.rejectHead(ctx, why) // strict.go
		return
	}
	_, b, err := rt.forward(x, &ctx.Response.Header)
	rt.logResponse(x, b, err, &ctx.Response.Header)
	f.respond(ctx, x, b, err)
}

// readRequest fills x's request view from fasthttp's parsed head, checks
// the raw head under the strict rules (strict.go), and takes the body
// stream and what the core must know of the connection.
func (f *h1Front) readRequest(ctx *fasthttp.RequestCtx, x *exchange) strict.Reject {
	rt := f.rt
	h := &ctx.Request.Header
	var remote netip.AddrPort
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		remote = ta.AddrPort()
	}
	if f.clientCerts {
		x.req.ClientDN = clientDN(ctx.Conn(), x)
	}
	if why := f.fillRequest(x, h, remote); why != strict.None {
		return why
	}
	switch cl := h.ContentLength(); {
	case cl == rawChunked: // takeChunked: the router de-chunks (clientbody.go)
		x.chunks.Reset(ctx.RequestBodyStream(), rt.cfg.MaxBodyBytes, rt.cfg.MaxHeaderBytes)
		x.bodySrc, x.bodyLen = &x.chunks, -1
	case cl > 0:
		x.bodySrc, x.bodyLen = ctx.RequestBodyStream(), int64(cl)
	}
	if c := ctx.Conn(); c != nil {
		x.client = c
	}
	x.consumed = x.bodySrc == nil
	if h.IsHTTP11() {
		x.sink = f // an HTTP/1.0 client never gets an interim response
	}
	return strict.None
}

// fillRequest fills x's request view from the parsed head h of a request
// from remote and checks the raw head under the strict rules (strict.go):
// what readRequest and the HTTP/1.1 event loop (h1loop_linux.go) share.
// The body and the client are the caller's.
func (f *h1Front) fillRequest(x *exchange, h *fasthttp.RequestHeader, remote netip.AddrPort) strict.Reject {
	rt := f.rt
	r := &x.req
	r.Method = h.Method()
	r.URI = h.RequestURI()
	r.Proto = h.Protocol()
	r.Host = h.Host()
	r.Scheme = f.scheme
	r.ServerPort = f.serverPort
	r.Remote = remote
	r.Trusted = rt.trusted(remote.Addr())
	r.ContentType = h.ContentType()
	x.isHead = h.IsHead()
	x.upgrade = isUpgrade(h)
	return parseHead(h, x, rt.cfg.MaxHeaderCount)
}

// respond hands fasthttp what forward returned for x: an error page, a
// response without body, a tunnel (tunnel.go), or the body stream, framed
// for the client.
func (f *h1Front) respond(ctx *fasthttp.RequestCtx, x *exchange, b *backendBody, err error) {
	// A body left unread must never be parsed as the next request on this
	// connection (HTTP desync): unless the body was consumed to its end, the
	// response closes the connection. Deferred: writeError resets the
	// response, flag included.
	defer func(consumed bool) {
		if !consumed {
			ctx.SetConnectionClose()
		}
	}(x.consumed)
	if err != nil {
		code := statusOf(err)
		writeError(ctx, code)
		if code == 400 || code == 413 || code == 431 {
			ctx.SetConnectionClose() // the rest of the stream cannot be trusted
		}
		return
	}
	if x.closeClient {
		ctx.SetConnectionClose()
	}
	if b == nil {
		return
	}
	if b.upgrade {
		f.hijackUpgrade(ctx, b)
		return
	}
	// The head goes first when the body could still fail (partial.go).
	ctx.Response.ImmediateHeaderFlush = b.flushHeadFirst()
	// fasthttp reads the body as soon as the handler returns: the first
	// Read may take the head's reading of the clock (relay.go).
	b.fresh = x.headAt
	switch cl := ctx.Response.Header.ContentLength(); {
	case cl > 0:
		ctx.SetBodyStream(b, cl)
	case ctx.Request.Header.IsHTTP11(): // chunked or unknown until EOF: chunk it for the client
		ctx.SetBodyStream(b, -1)
	default: // HTTP/1.0 client: the body ends when we close the connection
		f.streamUntilClose(ctx, b)
	}
}

// streamUntilClose answers an HTTP/1.0 client, which cannot take chunked
// encoding, with an unframed body ended by closing the connection.
func (f *h1Front) streamUntilClose(ctx *fasthttp.RequestCtx, b *backendBody) {
	ctx.Response.Header.Del("Transfer-Encoding") // a chunked node body is de-chunked (b)
	ctx.Response.Header.SetContentLength(-2)     // no framing; sets Connection: close
	head := append([]byte(nil), ctx.Response.Header.Header()...)
	f.hijack(ctx, func(c net.Conn) {
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

// interim writes a node's interim response to the HTTP/1.1 client of x
// (response.go). It runs in the handler, before fasthttp writes anything for
// this request, and the connection's writer holds nothing then: with
// ReduceMemoryUsage fasthttp flushes every response (and its own
// 100 Continue) before the next request's handler runs.
func (f *h1Front) interim(x *exchange, head *fasthttp.ResponseHeader) error {
	c, ok := x.client.(net.Conn)
	if !ok {
		return nil
	}
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	p := appendInterim((*cb)[:0], head)
	_ = c.SetWriteDeadline(f.rt.now().Add(f.rt.timeouts().Timeout))
	if _, err := c.Write(p); err != nil {
		return errClientGone
	}
	return nil
}

func writeError(ctx *fasthttp.RequestCtx, code int) {
	ctx.Response.Reset()
	errorHeader(&ctx.Response.Header, code)
	ctx.SetBody(errorBodies[code])
}

// errorHeader sets the head of the error page for code (errorBodies), but
// its length: writeError and the HTTP/1.1 event loop share it.
func errorHeader(h *fasthttp.ResponseHeader, code int) {
	h.SetStatusCode(code)
	h.SetContentTypeBytes(textPlain)
	if code == 503 {
		h.SetBytesKV(retryAfter, one)
	}
}

var (
	textPlain  = []byte("text/plain; charset=utf-8")
	retryAfter = []byte("Retry-After")
	one        = []byte("1")
)
