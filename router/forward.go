package router

import (
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/valyala/fasthttp"
)

// The request path, as every front takes it (file by file):
//
//	front      h1.go, h2.go (h3.go's streams too), uwsgifront.go: fill the exchange (exchange.go)
//	route      forward.go: host (and path, for mount points) → pool
//	body       clientbody.go, spill.go: length known, small body inline
//	head       encode.go: the head for the node kind (uwsgi vars, HTTP/1.1)
//	pick       connect.go: node from the pool, dial, retry on another
//	round trip upstream_*.go: send, read the response head (response.go)
//	relay      relay.go: the body stream the front writes; tunnel.go for 101
//
// forward does route → body → head and hands over to proxy, which does pick
// → round trip → relay once for every kind of node behind one seam, the
// upstream interface (upstream.go). The uwsgi front routes on its own key
// and passes the packet through, so it calls proxy directly.

// forward routes x by host, sends it to a node of the pool, and reads the
// final response head into head (response.go: interim responses before it
// went to x.sink; hop-by-hop headers are removed). It returns the pool's
// metrics (never nil) and, when the response has a body, the body stream,
// which the caller now owns and must Close. HEAD, 204, 304 and empty
// responses return a nil body; the backend is already released. A 101 (only
// when x.upgrade) returns a body marked upgrade, for the front to tunnel.
//
// On failure the error maps to the client's status through statusOf; the
// status has been counted and nothing is held. The caller writes the error
// page in its protocol.
func (rt *Router) forward(x *exchange, head *fasthttp.ResponseHeader) (*poolMetrics, *backendBody, error) {
	rt.observe(x)
	pool, err := rt.route(x)
	if err != nil {
		return rt.failed(rt.metrics.none, err)
	}
	pm := rt.poolMetrics(x, pool)
	if err := rt.readyBody(x); err != nil { // clientbody.go
		return rt.failed(pm, err)
	}
	// The head for the kind of node the pool most likely gives; connect
	// re-encodes it if the node turns out to be of the other kind.
	x.wire = wireNone
	if err := x.encode(guessWire(pool)); err != nil {
		return rt.failed(pm, err)
	}
	if err := rt.inlineBody(x); err != nil {
		return rt.failed(pm, err)
	}
	return rt.proxy(x, pool, pm, head)
}

// route finds x's pool: by host, and by the decoded path when the table
// has mount points. errBadHost: a host that is not one; errNoPool: no pool.
func (rt *Router) route(x *exchange) (*balancer.Pool, error) {
	r := &x.req
	if len(r.Host) > 0 && !strict.ValidHost(r.Host) {
		return nil, errBadHost
	}
	var path []byte
	if rt.cfg.Pools.HasMounts() {
		raw, _ := uwsgi.SplitURI(r.URI)
		x.path = uwsgi.AppendDecodedPath(x.path[:0], raw)
		path = x.path
	}
	pool := rt.cfg.Pools.LookupPath(r.Host, path)
	if pool == nil {
		return nil, errNoPool
	}
	return pool, nil
}

// proxy sends x, whose head x.buf holds, to a node of pool and reads the
// answer: pick a node and connect, retrying on others (connect.go), one
// round trip in the node's protocol (upstream.go), and the body stream the
// front relays. It follows forward's contract, with pm as pool's metrics.
func (rt *Router) proxy(x *exchange, pool *balancer.Pool, pm *poolMetrics, head *fasthttp.ResponseHeader) (*poolMetrics, *backendBody, error) {
	pm.inflight.Inc()
	start := rt.now()
	key := rt.affinityKey(x, pool.Algo())
	var at attempts
	at.init()
	at.start = start
	for {
		node, conn, err := rt.connect(x.ctx, pool, pm, x, key, &at)
		if err != nil {
			pm.inflight.Dec()
			pm.connectError(err)
			return rt.failed(pm, err)
		}
		rt.observeConnect(x, node, start)
		x.call.open(rt, pm, node, conn, start, x.ctx)
		up := x.upstream() // connect fitted x.wire to the node
		f, err := up.roundTrip(x, head)
		if err == errLateConnect {
			// A lazy dial's handshake failed (upstream_uwsgi.go): nothing
			// was sent, so it is a failed connect, and another node may
			// take the request.
			cause := x.lateErr
			x.lateErr = nil
			x.call.abandon()
			rt.unobserveConnect(x)
			if err := rt.connectFailed(x.ctx, pool, pm, x, node, cause, rt.now(), &at); err != nil {
				pm.inflight.Dec()
				return rt.failed(pm, err)
			}
			continue
		}
		if err == errNodeClosedEarly && x.retryable() {
			if cut := rt.closedBeforeAnswer(x, pool, node, &at); cut {
				return x.call.fail(errClientGone)
			}
			continue
		}
		if err != nil {
			if err != errClientGone && err != errClientBody && x.ctx.Err() == nil { // the node's failure, not the client's leaving
				rt.observeLatency(pool, node, &at, true, rt.now())
			}
			return x.call.fail(err)
		}
		// The one reading of the clock for the response head: latency,
		// access log, and the client's write deadline (x.headAt, h1.go).
		x.headAt = rt.now()
		rt.observeLatency(pool, node, &at, head.StatusCode() >= 500, x.headAt)
		rt.observeHead(x, node, start, int64(len(x.buf))+x.req.BodyLen-x.inline)
		pm.count(head.StatusCode())
		return pm, up.response(x, head, f), nil
	}
}

// observeLatency gives a sed pool's node the time from its pick (at.picked)
// to now, the response head or the failure (balancer.Node.ObserveLatency).
func (rt *Router) observeLatency(pool *balancer.Pool, node *balancer.Node, at *attempts, failed bool, now time.Time) {
	if !pool.MeasuresLatency() {
		return
	}
	ns := now.UnixNano()
	node.ObserveLatency(ns, ns-at.picked, failed)
}

// retryable reports whether x may go to another node after its node closed
// the connection without answering (errNodeClosedEarly): the method is
// idempotent (RFC 9110 §9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE;
// nginx's proxy_next_upstream and HAProxy's retry-on take the same view:
// POST and PATCH are not), its body, if any, can be sent
// again whole (replayable: the router holds all of it), and it is not a
// protocol switch. readHead has made sure no interim response went to the
// client. A stall (errBackendTimeout) is never retried: the node may still
// be working on it. Other methods go to another node only when the node
// surely never got them: a failed connect (connect.go).
func (x *exchange) retryable() bool {
	if !x.replayable() || x.upgrade || x.mustSwitch {
		return false
	}
	switch string(x.req.Method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// closedBeforeAnswer ends x's call to node, which closed or reset the
// connection before any byte of an answer: it is counted in
// fastrouter_backend_errors_total{reason="closed"}, and at records it so
// that connect picks another node within the same budget. The node is not
// failed: a worker that crashed on one request (or a harakiri) says
// nothing of the next, and a node that is really gone fails its next
// connect, which does fail it. A one-node pool keeps serving. It reports cut when it was the client's leaving that closed the
// connection; the call is then still open for the caller to fail.
func (rt *Router) closedBeforeAnswer(x *exchange, pool *balancer.Pool, node *balancer.Node, at *attempts) (cut bool) {
	c := &x.call
	if c.unwatch() || x.ctx.Err() != nil {
		return true
	}
	rt.noteClosedEarly(x, c.pm, pool, node, at)
	c.abandon() // closes, releases the node; the request stays in flight
	return false
}

// noteClosedEarly counts and records that node closed x's connection
// before answering, for the caller to release it and pick another
// (closedBeforeAnswer; the HTTP/1.1 event loop, h1loop_linux.go).
func (rt *Router) noteClosedEarly(x *exchange, pm *poolMetrics, pool *balancer.Pool, node *balancer.Node, at *attempts) {
	pm.backendError(errNodeClosedEarly)
	rt.observeLatency(pool, node, at, true, rt.now())
	at.add(node)
	at.err = errNodeClosedEarly
	rt.unobserveConnect(x)
	rt.observeTried(x, node)
	rt.log.Debug("backend closed before answering: trying another node", "pool", pool.Key, "node", node.Address)
}

// failed counts err's status for pm (and a refused body's reason) and
// returns it in forward's shape.
func (rt *Router) failed(pm *poolMetrics, err error) (*poolMetrics, *backendBody, error) {
	pm.count(statusOf(err))
	rt.countBodyReject(err) // strict.go
	return pm, nil, err
}

// connectError counts err, which ended a request before a node held it
// (connect's errors), where it belongs: the overload counters, or
// backend_errors_total unless its attempts counted it already.
func (pm *poolMetrics) connectError(err error) {
	switch err {
	case errClientGone, errVarsTooLarge, errShutdownCut:
	case errQueueFull, errQueueTimeout:
		pm.overloaded(err)
	case errNodeClosedEarly: // counted by closedBeforeAnswer
	case errAllFailed, errConnectTimeout, errSelfLoop: // counted per attempt (connect)
	default:
		pm.backendError(err)
	}
}
