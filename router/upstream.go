package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/valyala/fasthttp"
)

// upstream is the protocol the router speaks on one node connection, once
// it is connected: how the request goes out and what the answer's head
// means. One implementation per kind of node, chosen by the request head
// connect fitted to the node (x.wire); proxy (forward.go) drives them all
// the same way. Caddy's reverseproxy has the same seam, where FastCGI is just
// another Transport.
//
//   - uwsgiUpstream (upstream_uwsgi.go): a uwsgi packet to a uwsgi node, one
//     request per connection, the response raw HTTP ended by the node's close;
//   - httpUpstream (upstream_http.go): HTTP/1.1 to an http:// node, over a
//     keep-alive connection it may take from and give back to the node;
//   - rawUpstream (upstream_raw.go): the uwsgi front's packet, passed through
//     verbatim, and the node's response bytes relayed as they come.
//
// Implementations are stateless: the connection is the exchange's nodeCall
// (x.call), which they may replace (httpUpstream's stale retry).
type upstream interface {
	// roundTrip sends x's request (x.buf, then the rest of the body) on
	// x.call's connection and reads the response head into head; interim
	// responses before it are relayed (response.go). It returns what the
	// raw head showed. Errors map through statusOf; proxy releases the
	// call then.
	roundTrip(x *exchange, head *fasthttp.ResponseHeader) (headFlags, error)
	// response applies the node kind's rules to the final head and hands
	// back the body stream for the front, x.call moving into it, or nil
	// when the response has no body (the call is released then).
	response(x *exchange, head *fasthttp.ResponseHeader, f headFlags) *backendBody
}

var (
	_ upstream = uwsgiUpstream{}
	_ upstream = httpUpstream{}
	_ upstream = rawUpstream{}
)

// upstream returns the upstream for what x.buf holds, which connect made
// fit the node (x.fit).
func (x *exchange) upstream() upstream {
	switch x.wire {
	case wireHTTP:
		return httpUpstream{}
	case wireRaw:
		return rawUpstream{}
	}
	return uwsgiUpstream{}
}

// nodeCall is an exchange's use of one node, from the connect to the
// release: the node held in flight, its connection (tracked for drains and
// the shutdown deadline: track in shutdown.go) and the reader over it, and the
// hook that closes the connection when the client leaves. Owned by the
// exchange (x.call) until the response body is handed to the front, then by
// that backendBody.
type nodeCall struct {
	rt    *Router
	pm    *poolMetrics
	node  *balancer.Node
	conn  net.Conn // nil once a failed redial lost it
	br    *bufio.Reader
	start time.Time   // the first connect attempt
	stop  func() bool // unhooks the client-abort cut; nil when none
}

// open starts the call on conn, which connect returned for node.
func (c *nodeCall) open(rt *Router, pm *poolMetrics, node *balancer.Node, conn net.Conn, start time.Time, ctx context.Context) {
	*c = nodeCall{rt: rt, pm: pm, node: node, conn: conn, start: start}
	c.br = readerPool.Get().(*bufio.Reader)
	c.br.Reset(conn)
	c.watch(ctx)
}

// watch closes c's connection once ctx ends (an h2 stream reset: the
// exchange is cut at once instead of running to its end for nobody).
func (c *nodeCall) watch(ctx context.Context) {
	if ctx.Done() == nil { // Background: AfterFunc would allocate for nothing
		return
	}
	conn := c.conn
	c.stop = context.AfterFunc(ctx, func() { conn.Close() })
}

// unwatch removes the client-abort hook; true when it had already fired,
// that is when the client's leaving closed the connection.
func (c *nodeCall) unwatch() (cut bool) {
	if c.stop == nil {
		return false
	}
	cut = !c.stop()
	c.stop = nil
	return cut
}

// fail ends the call on err, counts it and returns it in forward's shape:
// errClientGone when the client's leaving, not the node, failed it.
func (c *nodeCall) fail(err error) (*poolMetrics, *backendBody, error) {
	if c.unwatch() {
		err = errClientGone
	}
	pm, rt := c.pm, c.rt
	if err == errClientBody && c.conn != nil {
		abortConn(c.conn)
	}
	c.release()
	if err != errClientBody && err != errClientGone {
		pm.backendError(err)
	}
	return rt.failed(pm, err) // c is zero now
}

// abortConn makes closing conn reset it rather than end it with a FIN,
// so that a node whose request body the client cut short sees the request
// aborted: after a FIN, a short body and the end of a complete request
// look alike to a node that does not count (HTTP/1.1 nodes reading by
// Content-Length do, but a reset is unambiguous). uwsgi connections reset
// on close anyway (dial_linux.go); unix sockets have no reset.
func abortConn(conn net.Conn) {
	hc, ok := conn.(*httpConn)
	if !ok {
		return
	}
	hc.keep = false
	if tc, ok := hc.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
}

// abandon ends a call whose connection never connected (errLateConnect):
// the connection is closed and the node released, and nothing is counted,
// since the request goes on to another node (proxy). c is zero after.
func (c *nodeCall) abandon() {
	c.unwatch()
	c.rt.untrack(c.node, c.conn)
	c.conn.Close()
	c.br.Reset(nil)
	readerPool.Put(c.br)
	c.node.Done()
	*c = nodeCall{}
}

// end releases the call when the response has no body left to read. A
// connection the client's leaving closed is not reused.
func (c *nodeCall) end() {
	if c.unwatch() {
		notReusable(c.conn)
	}
	c.release()
}

// release ends a forwarded request: closes the node connection (uwsgi
// nodes close after every response anyway; an http node's may go back to
// its idle list, keepOrClose), releases the node and the reader, and
// records metrics. c is zero after. It returns its reading of the clock,
// the end of the exchange, for the access log.
func (c *nodeCall) release() (end time.Time) {
	rt := c.rt
	end = rt.now()
	if c.conn != nil {
		rt.untrack(c.node, c.conn)
		rt.keepOrClose(c.conn, c.br, c.node, end)
	}
	if c.br != nil {
		c.br.Reset(nil)
		readerPool.Put(c.br)
	}
	c.node.Done()
	c.pm.inflight.Dec()
	c.pm.duration.Observe(end.Sub(c.start).Seconds())
	*c = nodeCall{}
	return end
}

// writeFull writes b to c under the inactivity deadline.
func (rt *Router) writeFull(c net.Conn, b []byte) error {
	if err := c.SetWriteDeadline(rt.now().Add(rt.timeouts().Timeout)); err != nil {
		return err
	}
	_, err := c.Write(b)
	return err
}

// copyBody streams exactly n bytes of body to the backend with inactivity
// deadlines on both sides. A short client body is errClientBody, a backend
// write failure errBackendWrite, a stall errBackendTimeout.
func (rt *Router) copyBody(dst net.Conn, src io.Reader, client deadliner, n int64, buf []byte) error {
	for n > 0 {
		chunk := buf
		if int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		if client != nil {
			_ = client.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
		}
		r, err := io.ReadFull(src, chunk)
		if r > 0 {
			if werr := rt.writeFull(dst, chunk[:r]); werr != nil {
				if isTimeout(werr) {
					return errBackendTimeout
				}
				return errBackendWrite
			}
			n -= int64(r)
		}
		if err != nil && n > 0 {
			return errClientBody
		}
	}
	return nil
}

// earlyAnswerWait bounds the look for a node's early answer (earlyAnswer):
// it is already in the socket when the node answered before it stopped
// reading.
const earlyAnswerWait = 250 * time.Millisecond

// earlyAnswer runs when sending x's request to its node failed with err:
// the node stopped reading it (errBackendWrite: it closed or reset the
// connection; errBackendTimeout: it stalled) perhaps because it had
// already answered, as an app refusing an upload (413, 401) without
// reading it does. RFC 9112 §9.6 lets a server answer and close before the
// request is complete, and lets a client that sees the answer stop
// sending. So when a whole response head is readable now, it is the
// answer, relayed like any other: the connection is not reused and the
// client's, whose body was not all read, is closed after it (the front
// does, x.consumed). Otherwise err stands. A 408 on a reused keep-alive
// connection is the node's word about the idle connection, not about this
// request: err stands.
func (rt *Router) earlyAnswer(x *exchange, head *fasthttp.ResponseHeader, err error) (headFlags, error) {
	c := &x.call
	if (err != errBackendWrite && err != errBackendTimeout) || c.conn == nil {
		return 0, err
	}
	if c.br.Buffered() == 0 {
		c.br.Reset(c.conn)
	}
	_ = c.conn.SetReadDeadline(rt.now().Add(earlyAnswerWait))
	if _, perr := c.br.Peek(1); perr != nil {
		return 0, err
	}
	_ = c.conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	f, herr := rt.readHead(x, c.conn, c.br, head) // response.go
	if herr != nil {
		return 0, err
	}
	if hc, ok := c.conn.(*httpConn); ok && hc.reused && head.StatusCode() == 408 {
		return 0, err
	}
	notReusable(c.conn)
	x.closeClient = true
	return f | hfClose, nil
}

// sendRest streams the part of x's body that did not ride inline with the
// head (its first x.inline bytes did) and marks the client body consumed.
// A buffered body is read from the same place at every send, so a request
// can go again whole (replayable). Errors are copyBody's, and errSpill.
func (rt *Router) sendRest(x *exchange, conn net.Conn) error {
	rest := x.req.BodyLen - x.inline
	if rest <= 0 {
		return nil
	}
	src := x.bodySrc
	switch {
	case src == nil: // buffered in memory (spill.go)
		src = bytes.NewReader(x.body[x.inline:])
	case x.spilled():
		if _, err := x.spill.Seek(x.inline, io.SeekStart); err != nil {
			return errSpill
		}
	}
	cb := bufPool.Get().(*[]byte)
	err := rt.copyBody(conn, src, x.client, rest, *cb)
	bufPool.Put(cb)
	if err == nil {
		x.consumed = true
	}
	return err
}

// bufPool recycles 32 KiB copy buffers and vars buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// readerPool recycles bufio.Readers over backend connections.
var readerPool = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 16<<10) }}
