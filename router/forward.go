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
)

// maxAttempts bounds how many nodes one request tries before giving up
// (uWSGI tries 3). Only connect failures are retried: nothing has been sent.
const maxAttempts = 4

// connect picks a node of pool and dials it, retrying on other nodes when a
// connect fails. x.buf is the encoded request; it is made to fit the chosen
// node (x.fit: head kind, modifiers). An http node's connection may be an idle
// keep-alive one. The returned node is held in flight; the caller must call
// node.Done.
//
// Errors: errNoNode when the pool had nothing usable to begin with,
// errConnectTimeout or errAllFailed when every tried node failed (errSelfLoop
// when the last one tried was the router itself, loop.go),
// errQueueFull or errQueueTimeout when every node is at the pool's in-flight
// cap and the request could not wait (balancer.Policy), errRawToHTTP when
// only http nodes could take a verbatim uwsgi packet (uwsgi front).
//
// key is the affinity key of iphash and hash pools (nil otherwise).
//
// ctx, when not nil, is the client's interest in the request (h2 streams):
// once it ends no new connect is attempted, a connect in progress is
// abandoned, and neither counts against the node (errClientGone).
func (rt *Router) connect(ctx context.Context, pool *balancer.Pool, x *exchange, key []byte) (*balancer.Node, net.Conn, error) {
	var triedBuf [maxAttempts]*balancer.Node
	tried := triedBuf[:0]
	err := errNoNode
	for len(tried) < maxAttempts {
		if ctx != nil && ctx.Err() != nil {
			return nil, nil, errClientGone
		}
		now := rt.now()
		var done <-chan struct{} = rt.cutCh // a wait for a node ends at the shutdown deadline (cut.go)
		if ctx != nil {
			done = ctx.Done() // an h2 stream's ends then too: its connection is closed
		}
		n, perr := pool.Acquire(now.UnixNano(), tried, key, done)
		switch perr {
		case nil:
		case balancer.ErrQueueFull, balancer.ErrQueueTimeout:
			return nil, nil, overload(perr)
		case balancer.ErrCanceled:
			if ctx == nil {
				return nil, nil, errShutdownCut
			}
			return nil, nil, errClientGone
		default: // nothing usable (left): what failed so far decides
			return nil, nil, err
		}
		if ferr := x.fit(n); ferr != nil {
			n.Done()
			if ferr != errRawToHTTP {
				return nil, nil, ferr
			}
			tried = append(tried, n) // not the node's fault: no failure counted
			if err == errNoNode {
				err = errRawToHTTP
			}
			continue
		}
		if rt.isSelf(n) {
			// Never dialled: a loop (loop.go). Failed like a refused
			// connect, so the node backs off and the next one is tried.
			n.Done()
			n.ReportFailure(now)
			tried = append(tried, n)
			rt.observeTried(x, n)
			err = errSelfLoop
			rt.log.Warn("node is the router itself: not forwarding (loop)", "pool", pool.Key, "node", n.Address)
			continue
		}
		c, derr := rt.dial(ctx, n)
		if derr == nil {
			if n.ReportSuccess() { // WARN like its failure: a log read at warn level pairs them
				rt.log.Warn("node recovered", "pool", pool.Key, "node", n.Address, "reason", "connect")
			}
			// A drain or the shutdown deadline may need to cut it.
			if !rt.track(n, c) {
				c.Close()
				n.Done()
				return nil, nil, errShutdownCut
			}
			return n, c, nil
		}
		n.Done()
		if ctx != nil && ctx.Err() != nil {
			return nil, nil, errClientGone // the client left, not the node
		}
		if n.ReportFailure(now) {
			rt.log.Warn("node failed", "pool", pool.Key, "node", n.Address, "reason", "connect", "err", derr)
		}
		tried = append(tried, n)
		rt.observeTried(x, n)
		if isTimeout(derr) {
			err = errConnectTimeout
		} else {
			err = errAllFailed
		}
		rt.log.Debug("backend connect failed", "pool", pool.Key, "node", n.Address, "err", derr)
	}
	return nil, nil, err
}

// overload maps the balancer's queue verdicts to the router's errors.
func overload(err error) error {
	if err == balancer.ErrQueueFull {
		return errQueueFull
	}
	return errQueueTimeout
}

// dialNet dials n with net.Dialer: the portable path (dial_other.go) and
// the one for what dial_linux.go does not handle.
func (rt *Router) dialNet(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	network := "tcp"
	if n.Endpoint.Network == balancer.NetUnix {
		network = "unix"
	}
	// KeepAlive -1: a connection that lives for one request needs no probes.
	d := net.Dialer{Timeout: rt.timeouts().Connect, KeepAlive: -1}
	if ctx == nil {
		ctx = context.Background()
	}
	return d.DialContext(ctx, network, n.Endpoint.Dial)
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

// sendRest streams the part of x's body that did not ride inline with the
// head (its first inline bytes did) and marks the client body consumed.
// Errors are copyBody's.
func (rt *Router) sendRest(x *exchange, conn net.Conn, inline int64) error {
	rest := x.req.bodyLen - inline
	if rest <= 0 {
		return nil
	}
	var src io.Reader = bytes.NewReader(x.body[inline:])
	if x.bodySrc != nil {
		src = x.bodySrc
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

// backendBody streams a backend response body to the client. It is the
// body stream handed to the front and is closed by it when the response is
// written (or abandoned). Every Read renews the inactivity deadlines of the
// backend read and the client write, so a large download never hits a total
// deadline, but a stalled peer is cut after Config.Timeout.
//
// Owned by one request at a time; recycled through backendBodyPool.
type backendBody struct {
	rt     *Router
	conn   net.Conn
	br     *bufio.Reader
	src    io.Reader // br, limited or de-chunked
	limit  int64     // bytes left when the length is known, else -1
	client deadliner
	node   *balancer.Node
	pm     *poolMetrics
	start  time.Time
	stop   func() bool // unhooks the client-abort cut; nil when none
	// upgrade: the node answered 101 to an upgrade request; the front
	// tunnels conn (websocket.go) instead of reading a body.
	upgrade bool
	closed  bool
	eof     bool          // src returned io.EOF (httpnode.go: a chunked body's end)
	n       int64         // body bytes read so far
	rec     *accessRecord // access-log line to finish at Close; nil when none
}

var backendBodyPool = sync.Pool{New: func() any { return new(backendBody) }}

func (b *backendBody) Read(p []byte) (int, error) {
	if b.limit == 0 {
		return 0, io.EOF
	}
	if b.limit > 0 && int64(len(p)) > b.limit {
		p = p[:b.limit]
	}
	now := b.rt.now()
	d := b.rt.timeouts().Timeout
	_ = b.conn.SetReadDeadline(now.Add(d))
	if b.client != nil {
		_ = b.client.SetWriteDeadline(now.Add(d))
	}
	n, err := b.src.Read(p)
	b.eof = err == io.EOF
	b.n += int64(n)
	if b.limit > 0 {
		b.limit -= int64(n)
		if b.limit == 0 && err == nil {
			err = io.EOF
		}
		if err == io.EOF && b.limit > 0 {
			err = io.ErrUnexpectedEOF // backend closed before Content-Length
		}
	}
	return n, err
}

// WriteTo copies the rest of the body to w in bufPool's 32 KiB chunks. It
// is the copy fasthttp makes for a body of known length (its copyZeroAlloc
// prefers an io.WriterTo), and io.CopyBuffer's: without it fasthttp copies
// through its own 4 KiB buffer, so a 64 KiB response left in 16 writes.
// Errors are Read's and w's, as io.Copy would return them.
func (b *backendBody) WriteTo(w io.Writer) (int64, error) {
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	var total int64
	for {
		n, err := b.Read(*cb)
		if n > 0 {
			m, werr := w.Write((*cb)[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Close releases the backend connection and the node and records the
// request's duration. Safe to call more than once.
func (b *backendBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.stop != nil && !b.stop() {
		b.eof, b.limit = false, -1 // cut by the client's leaving: the connection is closed
	}
	b.settleHTTP() // httpnode.go: may its connection be reused?
	b.node.AddTraffic(0, uint64(b.n))
	b.rt.finish(b.conn, b.br, b.node, b.pm, b.start)
	if b.rec != nil {
		b.rt.finishAccess(b.rec, b.n)
	}
	*b = backendBody{}
	backendBodyPool.Put(b)
	return nil
}

// finish ends a forwarded request: closes the backend connection (uwsgi
// backends close after every response anyway; an http node's may go back to
// its idle list), releases the node and the reader, and records metrics.
func (rt *Router) finish(conn net.Conn, br *bufio.Reader, node *balancer.Node, pm *poolMetrics, start time.Time) {
	if conn != nil {
		if node != nil {
			rt.untrack(node, conn)
		}
		rt.keepOrClose(conn, br, node)
	}
	if br != nil {
		br.Reset(nil)
		readerPool.Put(br)
	}
	if node != nil {
		node.Done()
	}
	if pm != nil {
		pm.inflight.Dec()
		pm.duration.Observe(rt.now().Sub(start).Seconds())
	}
}
