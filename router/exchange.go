package router

import (
	"bufio"
	"context"
	"io"
	"net/http"
	"net/http/httputil"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// deadliner is what the core needs of the client side to renew inactivity
// deadlines while bodies stream: a net.Conn for HTTP/1.1, an
// http.ResponseController (one stream) for h2.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// exchange is one request as every front hands it to the forwarding core:
// the protocol-neutral request view plus the scratch buffers the core
// encodes into. A front fills req, bodySrc, bodyLen and client, calls
// forward, and writes what forward returns in its own protocol.
//
// Owned by one request at a time; recycled through exchangePool.
type exchange struct {
	req request

	// bodySrc is the client body; nil means no body. bodyLen is its length:
	// > 0 known (streamed), -1 unknown (buffered up to MaxBufferedBody to
	// learn the CONTENT_LENGTH WSGI apps read by).
	bodySrc io.Reader
	bodyLen int64
	// client renews the client's deadlines while bodies stream. May be nil.
	client deadliner
	// isHead: the response to a HEAD request has no body whatever it says.
	isHead bool
	// ctx ends with the client's interest in the response (an h2 stream
	// reset, a connection gone): the backend exchange is cut at once instead
	// of running to its end for nobody. A rapid-reset flood thus cannot keep
	// backends busy. context.Background() (never nil) for the fronts that
	// see a client leave only at their next write.
	ctx context.Context

	// upgrade: the client asked to switch protocols (HTTP/1.1 front); a 101
	// from the node then comes back as a tunnel (websocket.go).
	upgrade bool

	// consumed is set by forward when the client body was read to its end,
	// so the next request on the connection can be parsed safely.
	consumed bool

	// sink takes the node's interim (1xx) responses for the client
	// (response.go); nil drops them, as for HTTP/1.0 clients (RFC 9110
	// §15.2). rw is the h2 stream's writer, for h2Front's sink.
	sink interimSink
	rw   http.ResponseWriter
	// interims counts the interim responses the node sent, flags is what
	// its final head showed (response.go).
	interims uint8
	flags    headFlags
	// closeClient is set by forward when the node asked for the client's
	// connection to end after this response: a uwsgi app's
	// "Connection: close" (see forward).
	closeClient bool

	// obs: request id, timings and node for the access log (accesslog.go).
	obs obsInfo

	keyBuf  [16]byte // iphash: the client address
	path    []byte   // the decoded path, for mount points
	buf     []byte   // the request head (uwsgi packet or HTTP head, see wire), small bodies
	wire    wire     // what buf holds before the inline body (httpnode.go)
	headLen int      // length of that head in buf
	alt     []byte   // scratch for re-encoding the head of a mixed pool's other kind
	body    []byte   // a buffered body of unknown length
	spill   *os.File // a body of unknown length too large for body (spill.go)
	scratch []byte   // front-owned: bytes the request view points into (h2)
}

var exchangePool = sync.Pool{New: func() any {
	return &exchange{req: request{headers: make([]hdr, 0, 32)}, buf: make([]byte, 0, 8<<10), ctx: context.Background()}
}}

func getExchange() *exchange { return exchangePool.Get().(*exchange) }

// putExchange recycles x; buffers grown by an unusual request are dropped
// so one large request does not pin memory in the pool.
func putExchange(x *exchange) {
	x.req.reset()
	x.bodySrc, x.bodyLen, x.client, x.isHead, x.consumed, x.ctx = nil, 0, nil, false, false, context.Background()
	x.upgrade = false
	x.sink, x.rw, x.interims, x.flags, x.closeClient = nil, nil, 0, 0, false
	x.wire, x.headLen = wireNone, 0
	x.releaseSpill()
	x.obs = obsInfo{}
	x.buf = x.buf[:0]
	if cap(x.buf) > 64<<10 {
		x.buf = make([]byte, 0, 8<<10)
	}
	x.body = x.body[:0]
	if cap(x.body) > 1<<20 {
		x.body = nil
	}
	if cap(x.alt) > 64<<10 {
		x.alt = nil
	}
	x.path = x.path[:0]
	if cap(x.path) > 8<<10 {
		x.path = nil
	}
	x.scratch = x.scratch[:0]
	if cap(x.scratch) > 64<<10 {
		x.scratch = nil
	}
	exchangePool.Put(x)
}

// forward routes x by host, sends it to a node of the pool over uwsgi, and
// reads the final response head into head (response.go: interim responses
// before it went to x.sink; hop-by-hop headers are removed). It returns the
// pool's metrics (never nil) and, when the response has a body, the body
// stream, which the caller now owns and must Close. HEAD, 204, 304 and empty
// responses return a nil body; the backend is already released. A 101 (only
// when x.upgrade) returns a body marked upgrade, for the front to tunnel.
//
// On failure the error maps to the client's status through statusOf; the
// status has been counted and nothing is held. The caller writes the error
// page in its protocol.
func (rt *Router) forward(x *exchange, head *fasthttp.ResponseHeader) (*poolMetrics, *backendBody, error) {
	r := &x.req
	rt.observe(x)
	if len(r.host) > 0 && !validHost(r.host) {
		return rt.failed(rt.metrics.none, errBadHost)
	}
	var path []byte
	if rt.cfg.Pools.HasMounts() {
		raw, _ := splitURI(r.uri)
		x.path = appendDecodedPath(x.path[:0], raw)
		path = x.path
	}
	pool := rt.cfg.Pools.LookupPath(r.host, path)
	if pool == nil {
		return rt.failed(rt.metrics.none, errNoPool)
	}
	pm := rt.poolMetrics(x, pool)

	switch {
	case x.bodySrc == nil:
	case x.bodyLen > 0:
		if x.bodyLen > rt.cfg.MaxBodyBytes {
			return rt.failed(pm, errBodyTooLarge)
		}
		r.bodyLen = x.bodyLen
	default: // unknown length: buffer, bounded, spilling to disk (spill.go)
		n, err := rt.bufferBody(x)
		if err != nil {
			return rt.failed(pm, err)
		}
		r.bodyLen = n
		x.consumed = true
	}

	// The head for the kind of node the pool most likely gives; connect
	// re-encodes it if the node turns out to be of the other kind.
	x.wire = wireNone
	if err := x.encode(guessWire(pool)); err != nil {
		return rt.failed(pm, err)
	}
	packet := x.buf
	// Small bodies ride in the same write as the vars.
	inline := int64(0)
	if r.bodyLen > 0 && r.bodyLen <= bodyPrefetch {
		n := len(packet)
		packet = slices.Grow(packet, int(r.bodyLen))
		if x.bodySrc != nil {
			// Under the inactivity timeout: nothing else bounds an h2
			// stream's body read (bodyErr).
			rt.renewClientRead(x)
			m, rerr := io.ReadFull(x.bodySrc, packet[n:n+int(r.bodyLen)])
			if rerr != nil {
				return rt.failed(pm, bodyErr(rerr))
			}
			packet = packet[:n+m]
			x.consumed = true
		} else {
			packet = append(packet, x.body...)
		}
		inline = r.bodyLen
		x.buf = packet
	}

	pm.inflight.Inc()
	start := rt.now()
	node, conn, err := rt.connect(x.ctx, pool, x, rt.affinityKey(x, pool.Algo()))
	if err != nil {
		pm.inflight.Dec()
		switch err {
		case errClientGone, errVarsTooLarge, errShutdownCut:
		case errQueueFull, errQueueTimeout:
			pm.overloaded(err)
		default:
			pm.backendError(err)
		}
		return rt.failed(pm, err)
	}
	rt.observeConnect(x, node, start)
	if hc, ok := conn.(*httpConn); ok { // httpnode.go
		return rt.forwardHTTP(x, head, pm, node, hc, start, inline)
	}
	packet = x.buf // connect may have re-encoded the head for the node
	var stop func() bool
	if x.ctx.Done() != nil { // (AfterFunc would allocate even for Background)
		stop = context.AfterFunc(x.ctx, func() { conn.Close() })
	}
	var br *bufio.Reader
	fail := func(err error) (*poolMetrics, *backendBody, error) {
		if stop != nil && !stop() {
			err = errClientGone // the cut, not the backend, failed the exchange
		}
		rt.finish(conn, br, node, pm, start)
		if err != errClientBody && err != errClientGone {
			pm.backendError(err)
		}
		return rt.failed(pm, err)
	}

	sent := 0
	if s, ok := conn.(requestSender); ok && r.bodyLen == inline {
		// The whole request is in packet: write it and wait for the answer
		// in one step. The read deadline is set for the reads below.
		n, err := s.sendAwait(packet, rt.now().Add(rt.timeouts().Timeout))
		switch {
		case n < len(packet) && err != nil:
			return fail(errBackendWrite)
		case err != nil && isTimeout(err):
			return fail(errBackendTimeout)
		case err != nil:
			return fail(errBadResponse) // closed under the wait: the client left (fail says so) or the node
		}
		sent = n
	}
	if sent < len(packet) {
		if err := rt.writeFull(conn, packet[sent:]); err != nil {
			return fail(errBackendWrite)
		}
		if err := rt.sendRest(x, conn, inline); err != nil {
			return fail(err)
		}
		_ = conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	}

	br = readerPool.Get().(*bufio.Reader)
	br.Reset(conn)
	flags, err := rt.readHead(x, conn, br, head) // response.go
	if err != nil {
		return fail(err)
	}
	rt.observeHead(x, node, start, int64(len(packet))+r.bodyLen-inline)
	code := head.StatusCode()
	pm.count(code)
	if code == 101 { // asked for (readHead): websocket.go, the front makes it a tunnel
		head.ResetConnectionClose()
		b := backendBodyPool.Get().(*backendBody)
		*b = backendBody{rt: rt, conn: conn, br: br, src: br, limit: -1, node: node, pm: pm, start: start, stop: stop, upgrade: true}
		return pm, b, nil
	}
	// The node closing its connection is uwsgi framing, not a request to
	// close the client's; an app's own "Connection: close" is one, since a
	// uwsgi connection has no other hop it could mean. uWSGI's http router
	// honours it the same way (plugins/http/keepalive.c,
	// http_response_parse). The other hop-by-hop headers go.
	x.closeClient = flags&hfClose != 0
	head.ResetConnectionClose()
	if flags&hfHop != 0 {
		stripHopByHop(head)
	}

	cl := head.ContentLength()
	if x.isHead || code < 200 || code == 204 || code == 304 || cl == 0 {
		if stop != nil {
			stop()
		}
		rt.finish(conn, br, node, pm, start)
		return pm, nil, nil
	}
	b := backendBodyPool.Get().(*backendBody)
	*b = backendBody{rt: rt, conn: conn, br: br, src: br, limit: -1, client: x.client, node: node, pm: pm, start: start, stop: stop}
	switch {
	case cl > 0:
		b.limit = int64(cl)
	case cl == -1: // chunked from the backend: de-chunk; the front re-frames
		b.src = httputil.NewChunkedReader(br)
	}
	return pm, b, nil
}

// requestSender is a node connection that writes a whole request and waits
// for the answer in one step, skipping the read that would find the socket
// still empty (dial_linux.go's backendConn).
type requestSender interface {
	// sendAwait writes p, then waits until the answer can be read or the
	// deadline, which also holds for the reads that follow. If n < len(p),
	// err is the write's (nil: write the rest yourself); else the wait's.
	sendAwait(p []byte, deadline time.Time) (n int, err error)
}

// failed counts err's status for pm and returns it in forward's shape.
func (rt *Router) failed(pm *poolMetrics, err error) (*poolMetrics, *backendBody, error) {
	pm.count(statusOf(err))
	return pm, nil, err
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

// readAllLimited reads x's body into dst up to limit bytes, each read
// under the inactivity timeout; more is errBodyTooLarge, a read error
// bodyErr's.
func (rt *Router) readAllLimited(x *exchange, dst []byte, limit int) ([]byte, error) {
	src := x.bodySrc
	if src == nil {
		return dst, nil
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		rt.renewClientRead(x)
		n, err := src.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, errBodyTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, bodyErr(err)
		}
	}
}

// renewClientRead gives the client's next body read the inactivity
// timeout. The HTTP/1.1 connection has one from fasthttp already; an h2
// stream has none (x/net bounds stream reads only by http.Server's
// ReadTimeout, a total), so a stream that declared a body and never sent
// it held its handler for as long as the connection lived.
func (rt *Router) renewClientRead(x *exchange) {
	if x.client != nil {
		_ = x.client.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	}
}

// bodyErr maps a failed read of the client body before any node was
// picked: a stall past the timeout is errClientTimeout (408), anything
// else errClientBody (400).
func bodyErr(err error) error {
	if isTimeout(err) {
		return errClientTimeout
	}
	return errClientBody
}
