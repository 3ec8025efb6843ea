package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"net/http/httputil"
	"slices"
	"strconv"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/valyala/fasthttp"
)

// HTTP/1.1 nodes ("http://ip:port", balancer.NetHTTP). They get the request
// as HTTP/1.1 instead of a uwsgi packet, over keep-alive connections kept
// per node between requests (balancer/idle.go):
//
//   - request: the client's method and target, HTTP/1.1 (HTTP/1.0 for an
//     HTTP/1.0 client), Host = the client's host, the client's headers minus
//     hop-by-hop ones (Connection and what it names, Keep-Alive,
//     Proxy-Connection, TE, Trailer, Transfer-Encoding, Upgrade unless the
//     request upgrades, Expect: the router already answered it) and minus
//     what the router sets: Content-Length (the body always has a known
//     length by now), X-Forwarded-For/-Proto/-Host (the client's kept and
//     appended to only from a trusted proxy, as for uwsgi nodes);
//     X-Request-Id as for uwsgi nodes;
//   - reuse: a connection goes back to its node only when the response was
//     read to its exact end (Content-Length reached, or the chunked
//     terminator and trailers read, or a response without body), the node
//     did not say "Connection: close", and the request was neither
//     HTTP/1.0 nor an upgrade. Responses ended by close are read to EOF;
//   - stale connections: an idle connection is checked before reuse (a
//     node that closed it, or sent something unasked, loses it); one that
//     still fails before the first response byte is retried once on a fresh
//     connection, when the request can be sent again (its body was in
//     memory or spilled to a file, not streamed from the client). That is
//     the keep-alive race every proxy has; the client never sees it.

const (
	// httpIdlePerNode bounds the idle keep-alive connections kept per node.
	httpIdlePerNode = 32
	// httpIdleTimeout is how long an idle connection is kept (or
	// Config.Timeout, if shorter). Servers close idle connections on
	// their own schedule; the check before reuse and the retry cover a
	// node that closes first.
	httpIdleTimeout = 60 * time.Second
)

// wire is what x.buf holds before the inline body bytes.
type wire uint8

const (
	wireNone  wire = iota
	wireUwsgi      // a uwsgi packet from appendVars; modifiers set per node
	wireHTTP       // an HTTP/1.1 request head from appendHTTPRequest
	wireRaw        // a uwsgi packet relayed verbatim (uwsgi front): no http node can take it
)

// encode writes the request head of kind w into x.buf, followed by the
// first inline bytes of the body if x.buf already held them after a head of
// another kind (re-encoding for a node of the other kind).
func (x *exchange) encode(w wire) error {
	if x.wire == w {
		return nil
	}
	var body []byte
	if x.wire != wireNone {
		body = x.buf[x.headLen:]
	}
	// The new head is built in x.alt, then body and head are put in place;
	// only mixed pools that switch kinds between attempts pay this.
	start := 0
	if body == nil {
		start = -1
	}
	var head []byte
	var err error
	dst := x.buf[:0]
	if start >= 0 {
		dst = x.alt[:0]
	}
	switch w {
	case wireUwsgi:
		head, err = appendVars(dst, &x.req, 0, 0)
	case wireHTTP:
		head = appendHTTPRequest(dst, &x.req, x.upgrade)
	}
	if err != nil {
		return err
	}
	if start < 0 {
		x.buf, x.wire, x.headLen = head, w, len(head)
		return nil
	}
	x.alt = head
	n := len(body)
	need := len(head) + n
	buf := slices.Grow(x.buf, max(0, need-len(x.buf)))[:max(need, len(x.buf))] // keeps the body bytes
	copy(buf[len(head):], buf[x.headLen:x.headLen+n])                          // memmove: body may overlap its new place
	buf = buf[:need]
	copy(buf, head)
	x.buf, x.wire, x.headLen = buf, w, len(head)
	return nil
}

// guessWire is the head kind most likely needed for pool: its first node's.
// Pools are rarely mixed; when they are, encode fixes the guess.
func guessWire(pool *balancer.Pool) wire {
	if ns := pool.Nodes(); len(ns) > 0 && ns[0].Endpoint.Network == balancer.NetHTTP {
		return wireHTTP
	}
	return wireUwsgi
}

// fit readies x.buf for node n: the right head kind, the node's modifiers
// for uwsgi. errRawToHTTP: n is an http node and x a verbatim uwsgi packet.
func (x *exchange) fit(n *balancer.Node) error {
	isHTTP := n.Endpoint.Network == balancer.NetHTTP
	switch {
	case x.wire == wireRaw:
		if isHTTP {
			return errRawToHTTP
		}
	case isHTTP:
		return x.encode(wireHTTP)
	default:
		if err := x.encode(wireUwsgi); err != nil {
			return err
		}
	}
	x.buf[0], x.buf[3] = n.Modifier1, n.Modifier2
	return nil
}

// appendHTTPRequest encodes r as an HTTP/1.1 request head (rules above) into
// dst. upgrade keeps the Upgrade header and says "Connection: Upgrade". It
// allocates nothing when dst has room.
func appendHTTPRequest(dst []byte, r *request, upgrade bool) []byte {
	dst = append(dst, r.method...)
	dst = append(dst, ' ')
	dst = append(dst, r.uri...)
	if string(r.proto) == "HTTP/1.0" {
		dst = append(dst, " HTTP/1.0\r\nHost: "...)
	} else {
		dst = append(dst, " HTTP/1.1\r\nHost: "...)
	}
	dst = append(dst, r.host...)
	dst = append(dst, "\r\n"...)

	var conn bool // a Connection header may name more hop-by-hop headers
	for i := range r.headers {
		if asciiEqualFold(r.headers[i].k, "connection") {
			conn = true
			break
		}
	}
	var xff, xfp, xfh []byte // the trusted peer's X-Forwarded-*
	hadCL := false
	for i := range r.headers {
		h := &r.headers[i]
		switch headerClass(h.k) {
		case hcSkip: // '_' names, Proxy, Content-Type (below), Content-Length, Transfer-Encoding
			hadCL = hadCL || asciiEqualFold(h.k, "content-length")
			continue
		case hcXFF:
			if r.trusted && xff == nil {
				xff = h.v
			}
			continue
		case hcXFP:
			if r.trusted && xfp == nil {
				xfp = h.v
			}
			continue
		}
		if skipHTTPHeader(h.k, upgrade) || conn && connectionNames(r.headers, h.k) {
			continue
		}
		if asciiEqualFold(h.k, "x-forwarded-host") {
			if r.trusted && xfh == nil {
				xfh = h.v
			}
			continue
		}
		dst = append(dst, h.k...)
		dst = append(dst, ": "...)
		dst = append(dst, h.v...)
		dst = append(dst, "\r\n"...)
	}
	if len(r.contentType) > 0 {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, r.contentType...)
		dst = append(dst, "\r\n"...)
	}
	if r.bodyLen > 0 || hadCL {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, r.bodyLen, 10)
		dst = append(dst, "\r\n"...)
	}
	if upgrade {
		dst = append(dst, "Connection: Upgrade\r\n"...)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	dst = appendForwardedFor(dst, xff, r.remote.Addr())
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	if len(xfp) > 0 {
		dst = append(dst, xfp...)
	} else {
		dst = append(dst, r.scheme...)
	}
	dst = append(dst, "\r\nX-Forwarded-Host: "...)
	if len(xfh) > 0 {
		dst = append(dst, xfh...)
	} else {
		dst = append(dst, r.host...)
	}
	return append(dst, "\r\n\r\n"...)
}

// skipHTTPHeader reports the request headers an http node does not get
// from the client: hop-by-hop ones (RFC 9110 §7.6.1), Host (sent first),
// and Expect (the router handled 100-continue; the node must not answer a
// 100 the router would then have to skip).
func skipHTTPHeader(k []byte, upgrade bool) bool {
	switch len(k) {
	case 2:
		return asciiEqualFold(k, "te")
	case 4:
		return asciiEqualFold(k, "host")
	case 6:
		return asciiEqualFold(k, "expect")
	case 7:
		return asciiEqualFold(k, "trailer") || !upgrade && asciiEqualFold(k, "upgrade")
	case 10:
		return asciiEqualFold(k, "connection") || asciiEqualFold(k, "keep-alive")
	case 16:
		return asciiEqualFold(k, "proxy-connection")
	}
	return false
}

// connectionNames reports whether a Connection header of hs lists name k
// (those headers are hop-by-hop too). "Connection: upgrade" names the
// Upgrade header, which an upgrade keeps: skipHTTPHeader decides it.
func connectionNames(hs []hdr, k []byte) bool {
	if asciiEqualFold(k, "upgrade") {
		return false
	}
	for i := range hs {
		if !asciiEqualFold(hs[i].k, "connection") {
			continue
		}
		for v := hs[i].v; len(v) > 0; {
			var tok []byte
			if j := bytes.IndexByte(v, ','); j >= 0 {
				tok, v = v[:j], v[j+1:]
			} else {
				tok, v = v, nil
			}
			if headerNameEqual(trimOWS(tok), k) {
				return true
			}
		}
	}
	return false
}

// httpConn is a connection to an http node. Owned by one request at a
// time; between requests it sits in its node's idle list.
type httpConn struct {
	net.Conn
	alive aliveCheck // httpconn_*.go
	// reused: taken from the idle list for the current request.
	reused bool
	// keep: the current exchange allows reuse so far (set when the head
	// is read, confirmed when the body ends); finish pools or closes.
	keep bool
	// suspect: the last response had no body by rule (204, 304) or came
	// after interim responses; bytes the node sends after it anyway would
	// be read as the next request's response (keepOrClose).
	suspect bool
	// settled: when a suspect connection may be reused; until: when it
	// expires from the idle list. Set when it goes idle.
	settled, until time.Time
}

// httpSettle is how long a suspect connection must stay quiet in the idle
// list before it is reused. A node that sends a body after a 204 or 304
// sends it right behind the head, or when its app produces it: within
// this time, a request would otherwise be sent on top of it.
const httpSettle = 50 * time.Millisecond

// maxSettling bounds the settling connections dialHTTP passes over (and
// puts back) while it looks for one to reuse.
const maxSettling = 4

// dialHTTP returns a connection to http node n: an idle one that has
// settled (httpSettle) and is still open and quiet, else a new one. Settling
// ones met on the way go back to the idle list as they were.
func (rt *Router) dialHTTP(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	now := rt.now()
	var settling [maxSettling]*httpConn
	ns := 0
	var got *httpConn
	for got == nil {
		c, _ := n.TakeIdle(now).(*httpConn)
		switch {
		case c == nil:
		case now.Before(c.settled) && ns < len(settling):
			settling[ns] = c
			ns++
			continue
		case !now.Before(c.settled) && c.alive.ok():
			got = c
			continue
		default:
			c.Conn.Close()
			continue
		}
		break
	}
	for i := ns - 1; i >= 0; i-- { // in their order: the last used on top
		if c := settling[i]; !n.PutIdle(c, c.until, httpIdlePerNode) {
			c.Conn.Close()
		}
	}
	if got != nil {
		got.reused, got.keep = true, false
		return got, nil
	}
	return rt.dialHTTPFresh(ctx, n)
}

func (rt *Router) dialHTTPFresh(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	d := net.Dialer{Timeout: rt.timeouts().Connect}
	if ctx == nil {
		ctx = context.Background()
	}
	c, err := d.DialContext(ctx, "tcp", n.Endpoint.Dial)
	if err != nil {
		return nil, err
	}
	hc := &httpConn{Conn: c}
	hc.alive.init(c)
	return hc, nil
}

// keepOrClose ends the use of a backend connection by one request: an http
// connection whose exchange ended cleanly goes back to its node's idle
// list, anything else is closed. br is the response reader (nil when none
// was used); bytes it holds beyond the response make the connection unusable.
func (rt *Router) keepOrClose(conn net.Conn, br *bufio.Reader, node *balancer.Node) {
	hc, ok := conn.(*httpConn)
	if !ok || !hc.keep || node == nil || br == nil || br.Buffered() > 0 {
		conn.Close()
		return
	}
	now := rt.now()
	hc.settled = time.Time{}
	if hc.suspect {
		// Reused only when nothing more arrived now, nor in the settling
		// time (dialHTTP checks again then).
		if !hc.alive.ok() {
			conn.Close()
			return
		}
		hc.settled = now.Add(httpSettle)
	}
	hc.keep, hc.reused, hc.suspect = false, false, false
	hc.until = now.Add(min(httpIdleTimeout, rt.timeouts().Timeout))
	if !node.PutIdle(hc, hc.until, httpIdlePerNode) {
		conn.Close()
	}
}

// settleHTTP decides, when a response body is released, whether its http
// connection ended exactly at the body's end: a known length read in full,
// or a chunked body read to its last chunk, whose trailer section is then
// consumed here (bounded). Anything else closes the connection.
func (b *backendBody) settleHTTP() {
	hc, ok := b.conn.(*httpConn)
	if !ok || !hc.keep {
		return
	}
	switch {
	case b.limit == 0:
	case b.limit < 0 && b.src != io.Reader(b.br) && b.eof:
		hc.keep = skipTrailers(b.br)
	default: // cut short, or ended by close
		hc.keep = false
	}
}

// skipTrailers reads the trailer section after a chunked body's last chunk,
// up to its empty line, from what has already arrived or arrives within the
// inactivity deadline. It reports false when the section is malformed or
// longer than 4 KiB (the connection is then not reused).
func skipTrailers(br *bufio.Reader) bool {
	total := 0
	for {
		line, err := br.ReadSlice('\n')
		total += len(line)
		if err != nil || total > 4<<10 {
			return false
		}
		if len(line) <= 2 && (len(line) == 1 || line[0] == '\r') {
			return true
		}
	}
}

// forwardHTTP is forward's second half for an http node: send the request
// (once more on a fresh connection if a reused one turns out stale), read
// the response head into head, and hand back the body. It follows forward's
// contract; inline is how many body bytes x.buf carries after the head.
func (rt *Router) forwardHTTP(x *exchange, head *fasthttp.ResponseHeader, pm *poolMetrics, node *balancer.Node, hc *httpConn, start time.Time, inline int64) (*poolMetrics, *backendBody, error) {
	r := &x.req
	packet := x.buf
	var conn net.Conn = hc
	var stop func() bool
	watch := func() {
		if x.ctx != nil {
			c := conn
			stop = context.AfterFunc(x.ctx, func() { c.Close() })
		}
	}
	watch()
	br := readerPool.Get().(*bufio.Reader)
	fail := func(err error) (*poolMetrics, *backendBody, error) {
		if stop != nil && !stop() {
			err = errClientGone
		}
		rt.finish(conn, br, node, pm, start)
		if err != errClientBody && err != errClientGone {
			pm.backendError(err)
		}
		return rt.failed(pm, err)
	}
	// A request can go again when nothing of it came from the client
	// during the first attempt: its body is in memory (or it has none), or
	// spilled to a file that is read again from the start (spill.go).
	spilled := x.spill != nil && x.bodySrc == io.Reader(x.spill)
	replayable := r.bodyLen-inline == 0 || x.bodySrc == nil || spilled
	for attempt := 0; ; attempt++ {
		stale, err := rt.sendHTTP(x, conn, br, head, packet, inline)
		if err == nil {
			break
		}
		if !stale || attempt > 0 || !hc.reused || !replayable || x.ctx != nil && x.ctx.Err() != nil {
			return fail(err)
		}
		if spilled {
			if _, serr := x.spill.Seek(inline, io.SeekStart); serr != nil {
				return fail(errSpill)
			}
		}
		// The keep-alive race: the node closed this idle connection as we
		// sent on it. Once more, on a connection of its own.
		if stop != nil && !stop() {
			return fail(errClientGone)
		}
		stop = nil
		rt.untrack(node, conn)
		conn.Close()
		br.Reset(nil)
		c, derr := rt.dialHTTPFresh(x.ctx, node)
		if derr != nil {
			conn = nil
			if (x.ctx == nil || x.ctx.Err() == nil) && node.ReportFailure(rt.now()) {
				rt.log.Warn("node failed", "pool", x.obs.pool, "node", node.Address, "reason", "connect", "err", derr)
			}
			return fail(errAllFailed)
		}
		conn, hc = c, c.(*httpConn)
		if !rt.track(node, conn) {
			conn.Close()
			conn = nil
			return fail(errShutdownCut)
		}
		watch()
	}
	rt.observeHead(x, node, start, int64(len(packet))+r.bodyLen-inline)
	code := head.StatusCode()
	pm.count(code)
	if code == 101 { // asked for (readHead): the switch the client asked for keeps its headers
		head.ResetConnectionClose()
		b := backendBodyPool.Get().(*backendBody)
		*b = backendBody{rt: rt, conn: conn, br: br, src: br, limit: -1, node: node, pm: pm, start: start, stop: stop, upgrade: true}
		return pm, b, nil
	}
	// The node's connection is not the client's: its Connection and
	// Keep-Alive headers describe the hop to the node, and its
	// "Connection: close" ends that hop only, as nginx and HAProxy take it.
	// A HEAD answer is never reused: servers such as uWSGI's
	// --http11-socket send the body anyway, whenever the app produces it,
	// and no check can tell when it is over. Other answers without a body
	// by rule are checked before reuse (keepOrClose, dialHTTP).
	hc.keep = !x.upgrade && !x.isHead && string(r.proto) != "HTTP/1.0" && !head.ConnectionClose() &&
		x.flags&(hfClose|hfFaulty) == 0
	hc.suspect = code == 204 || code == 304 || x.interims > 0
	head.ResetConnectionClose()
	if x.flags&hfHop != 0 {
		stripHopByHop(head)
	}

	cl := head.ContentLength()
	if x.isHead || code < 200 || code == 204 || code == 304 || cl == 0 {
		if stop != nil && !stop() {
			hc.keep = false
		}
		rt.finish(conn, br, node, pm, start)
		return pm, nil, nil
	}
	b := backendBodyPool.Get().(*backendBody)
	*b = backendBody{rt: rt, conn: conn, br: br, src: br, limit: -1, client: x.client, node: node, pm: pm, start: start, stop: stop}
	switch {
	case cl > 0:
		b.limit = int64(cl)
	case cl == -1:
		b.src = httputil.NewChunkedReader(br)
	default: // ended by close: never reused
		hc.keep = false
	}
	return pm, b, nil
}

// sendHTTP writes the request (head and inline body, then the rest of the
// body) and reads the response head. stale reports a failure before any
// response byte arrived that is not a timeout: the mark of a connection the
// node had already closed.
func (rt *Router) sendHTTP(x *exchange, conn net.Conn, br *bufio.Reader, head *fasthttp.ResponseHeader, packet []byte, inline int64) (stale bool, _ error) {
	if err := rt.writeFull(conn, packet); err != nil {
		return !isTimeout(err), errBackendWrite
	}
	if err := rt.sendRest(x, conn, inline); err != nil {
		return err == errBackendWrite, err
	}
	br.Reset(conn)
	_ = conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	if _, err := br.Peek(1); err != nil {
		if isTimeout(err) {
			return false, errBackendTimeout
		}
		return true, errBadResponse
	}
	f, err := rt.readHead(x, conn, br, head) // response.go
	x.flags = f
	return false, err
}

// hasToken reports whether the comma-separated list v holds tok (ASCII
// case-insensitive).
func hasToken(v []byte, tok string) bool {
	for len(v) > 0 {
		var t []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			t, v = v[:i], v[i+1:]
		} else {
			t, v = v, nil
		}
		if asciiEqualFold(trimOWS(t), tok) {
			return true
		}
	}
	return false
}
