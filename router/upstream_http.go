package router

import (
	"bufio"
	"context"
	"io"
	"net"
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
	c, err := d.DialContext(ctx, "tcp", n.Endpoint.Dial)
	if err != nil {
		return nil, err
	}
	hc := &httpConn{Conn: c}
	hc.alive.init(c)
	return hc, nil
}

// recycler is a node connection whose socket outlives it (dial_linux.go's
// backendConn): recycle ends the exchange's use of it, keeping the socket
// for another connection when it can.
type recycler interface{ recycle(now time.Time) }

// keepOrClose ends the use of a backend connection by one request: an http
// connection whose exchange ended cleanly goes back to its node's idle
// list, anything else is closed. br is the response reader (nil when none
// was used); bytes it holds beyond the response make the connection unusable.
// now is the end of the exchange (its idle time starts there).
func (rt *Router) keepOrClose(conn net.Conn, br *bufio.Reader, node *balancer.Node, now time.Time) {
	if r, ok := conn.(recycler); ok { // a uwsgi node's socket goes back to its pool
		r.recycle(now)
		return
	}
	hc, ok := conn.(*httpConn)
	if !ok || !hc.keep || node == nil || br == nil || br.Buffered() > 0 {
		conn.Close()
		return
	}
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

// httpUpstream speaks HTTP/1.1 to an http:// node (rules above), on a
// connection dialHTTP may have taken from the node's idle list.
type httpUpstream struct{}

// roundTrip sends the request and reads the response head, once more on a
// fresh connection if a reused one turns out stale.
func (httpUpstream) roundTrip(x *exchange, head *fasthttp.ResponseHeader) (headFlags, error) {
	rt := x.call.rt
	hc := x.call.conn.(*httpConn)
	f, stale, err := rt.sendHTTP(x, head)
	if err == nil {
		return f, nil
	}
	if !stale || !hc.reused || !x.replayable() || x.ctx.Err() != nil {
		return rt.earlyAnswer(x, head, err) // upstream.go
	}
	// The keep-alive race: the node closed this idle connection as we sent
	// on it. Once more, on a connection of its own.
	if err := x.call.redialHTTP(x.ctx); err != nil {
		return 0, err
	}
	if f, _, err = rt.sendHTTP(x, head); err != nil {
		return rt.earlyAnswer(x, head, err)
	}
	return f, nil
}

// redialHTTP replaces c's stale keep-alive connection with a fresh one to
// the same node. Errors: errClientGone (the client left meanwhile),
// errAllFailed (the dial failed: the node is marked failed),
// errShutdownCut.
func (c *nodeCall) redialHTTP(ctx context.Context) error {
	if c.unwatch() {
		return errClientGone
	}
	rt := c.rt
	rt.untrack(c.node, c.conn)
	c.conn.Close()
	c.br.Reset(nil)
	conn, err := rt.dialHTTPFresh(ctx, c.node)
	if err != nil {
		c.conn = nil
		if ctx.Err() == nil && c.node.ReportFailure(rt.now()) {
			rt.log.Warn("node failed", "pool", c.pm.key, "node", c.node.Address, "reason", "connect", "err", err)
		}
		return errAllFailed
	}
	c.conn = conn
	if !rt.track(c.node, conn) {
		conn.Close()
		c.conn = nil
		return errShutdownCut
	}
	c.watch(ctx)
	return nil
}

// response decides whether the connection may serve another request, then
// hands back the body as relay does.
func (httpUpstream) response(x *exchange, head *fasthttp.ResponseHeader, f headFlags) *backendBody {
	code := head.StatusCode()
	if code == 101 { // asked for (readHead): the switch the client asked for keeps its headers
		return upgradeBody(x, head)
	}
	hc := x.call.conn.(*httpConn)
	// The node's connection is not the client's: its Connection and
	// Keep-Alive headers describe the hop to the node, and its
	// "Connection: close" ends that hop only, as nginx and HAProxy take it.
	// A HEAD answer is never reused: servers such as uWSGI's
	// --http11-socket send the body anyway, whenever the app produces it,
	// and no check can tell when it is over. Other answers without a body
	// by rule are checked before reuse (keepOrClose, dialHTTP).
	hc.keep = !x.upgrade && !x.isHead && string(x.req.Proto) != "HTTP/1.0" && !head.ConnectionClose() &&
		f&(hfClose|hfFaulty) == 0
	hc.suspect = code == 204 || code == 304 || x.interims > 0
	b := relay(x, head, f)
	if b != nil && b.untilClose() {
		hc.keep = false // ended by close: never reused
	}
	return b
}

// notReusable marks an http node's connection for closing when its
// exchange ends (keepOrClose); other connections are closed anyway.
func notReusable(conn net.Conn) {
	if hc, ok := conn.(*httpConn); ok {
		hc.keep = false
	}
}

// sendHTTP writes the request (head and inline body, then the rest of the
// body) on x.call's connection and reads the response head. stale reports
// a failure before any response byte arrived that is not a timeout: the
// mark of a connection the node had already closed.
func (rt *Router) sendHTTP(x *exchange, head *fasthttp.ResponseHeader) (_ headFlags, stale bool, _ error) {
	c := &x.call
	if err := rt.writeFull(c.conn, x.buf); err != nil {
		return 0, !isTimeout(err), errBackendWrite
	}
	if err := rt.sendRest(x, c.conn); err != nil {
		return 0, err == errBackendWrite, err
	}
	c.br.Reset(c.conn)
	_ = c.conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	if _, err := c.br.Peek(1); err != nil {
		if isTimeout(err) {
			return 0, false, errBackendTimeout
		}
		if closedEarly(err) {
			return 0, true, errNodeClosedEarly // proxy may try another node
		}
		return 0, true, errBadResponse
	}
	f, err := rt.readHead(x, c.conn, c.br, head) // response.go
	return f, false, err
}
