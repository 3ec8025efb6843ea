package router

import (
	"context"
	"net"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// maxAttempts bounds how many nodes one request tries before giving up
// (uWSGI tries 3). Connect failures are retried (nothing has been sent), and
// so is an idempotent request whose body, if any, the router holds whole
// and whose node closed the connection before answering (forward.go,
// retryable).
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
// key is the affinity key of iphash and hash pools (nil otherwise). at
// holds the nodes tried so far and carries over to a later call for the
// same request (a lazy dial whose handshake failed, proxy).
//
// ctx is the client's interest in the request (h2 streams; fronts without
// one pass context.Background()): once it ends no new connect is attempted,
// a connect in progress is abandoned, and neither counts against the node
// (errClientGone).
func (rt *Router) connect(ctx context.Context, pool *balancer.Pool, pm *poolMetrics, x *exchange, key []byte, at *attempts) (*balancer.Node, net.Conn, error) {
	for at.n < maxAttempts {
		n, now, err := rt.pickNode(ctx, pool, pm, x, key, at)
		if err != nil {
			return nil, nil, err
		}
		if n == nil {
			continue // passed over (not the node's fault, or a loop): the next one
		}
		// A healthy uwsgi node whose request goes in one write is dialled
		// lazily: the write tells whether the handshake finished
		// (upstream_uwsgi.go), which saves the system call that asks.
		lazy := x.wire == wireUwsgi && x.req.BodyLen == x.inline && !n.Failing()
		c, derr := rt.dialNode(ctx, n, lazy)
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
		if err := rt.connectFailed(ctx, pool, pm, x, n, derr, now, at); err != nil {
			return nil, nil, err
		}
	}
	return nil, nil, at.err
}

// pickNode is one attempt's pick for connect: a node of pool that x fits
// (x.fit), held in flight, and the attempt's reading of the clock. A nil
// node with a nil error means the one picked was passed over (at records
// it) and the caller picks again; an error ends the request (connect's
// errors). It may wait in the pool's queue (balancer.Pool.Acquire).
func (rt *Router) pickNode(ctx context.Context, pool *balancer.Pool, pm *poolMetrics, x *exchange, key []byte, at *attempts) (*balancer.Node, time.Time, error) {
	if ctx.Err() != nil {
		return nil, time.Time{}, errClientGone
	}
	now := at.clock(rt)
	done := ctx.Done() // an h2 stream's wait for a node ends with it (at the shutdown deadline too: its connection is closed)
	if done == nil {
		done = rt.cutCh // the others' at the shutdown deadline (shutdown.go)
	}
	n, perr := pool.Acquire(now.UnixNano(), at.tried(), key, done)
	n, err := rt.acquired(ctx, pool, pm, x, n, perr, now, at)
	return n, now, err
}

// acquired goes on from Acquire's answer (n, perr) as pickNode says: for
// pickNode, and for the HTTP/1.1 event loop (h1loop_linux.go), which
// acquires without blocking (TryAcquire) and, when the request would wait,
// waits in a goroutine of its own. ctx is the request's (ErrCanceled: the
// shutdown deadline unless ctx has ended).
func (rt *Router) acquired(ctx context.Context, pool *balancer.Pool, pm *poolMetrics, x *exchange, n *balancer.Node, perr error, now time.Time, at *attempts) (*balancer.Node, error) {
	switch perr {
	case nil:
	case balancer.ErrQueueFull, balancer.ErrQueueTimeout:
		return nil, overload(perr)
	case balancer.ErrCanceled:
		if ctx.Err() == nil { // not the client: the shutdown deadline
			return nil, errShutdownCut
		}
		return nil, errClientGone
	default: // nothing usable (left): what failed so far decides
		return nil, at.err
	}
	if pool.MeasuresLatency() {
		// sed times pick → response head (balancer/latency.go): from
		// here, after any wait in the pool's queue, which is not the
		// node's doing.
		at.picked = rt.now().UnixNano()
	}
	if ferr := x.fit(n); ferr != nil {
		n.Done()
		if ferr != errRawToHTTP {
			return nil, ferr
		}
		at.add(n) // not the node's fault: no failure counted
		if at.err == errNoNode {
			at.err = errRawToHTTP
		}
		return nil, nil
	}
	if rt.isSelf(n) {
		// Never dialled: a loop (loop.go). Failed like a refused
		// connect, so the node backs off and the next one is tried.
		n.Done()
		n.ReportFailure(now)
		at.add(n)
		rt.observeTried(x, n)
		at.err = errSelfLoop
		pm.backendError(errSelfLoop)
		rt.log.Warn("node is the router itself: not forwarding (loop)", "pool", pool.Key, "node", n.Address)
		return nil, nil
	}
	return n, nil
}

// attempts is what one request's connects have tried so far: the nodes,
// which Acquire passes over, and the error that decides the status when
// none is left. Owned by the request (proxy), on its stack; init before
// the first connect.
//
// The nodes are counted (n) rather than kept as a slice of buf: a struct
// holding a slice of its own array escapes to the heap (the compiler
// cannot prove the slice does not outlive it), one allocation per request.
type attempts struct {
	buf [maxAttempts]*balancer.Node
	n   int // buf[:n] tried
	err error
	// picked is when the node of the current attempt was picked (unix
	// ns), set for pools that measure latency only (sed).
	picked int64
	// start is proxy's reading of the clock, for the first attempt to
	// use as its own; zero once used.
	start time.Time
}

// clock is the attempt's reading of the clock: proxy's for the first
// attempt (start, used up here), a fresh one for the others.
func (at *attempts) clock(rt *Router) time.Time {
	now := at.start
	if now.IsZero() {
		now = rt.now()
	}
	at.start = time.Time{}
	return now
}

func (at *attempts) init() {
	at.n = 0
	at.err = errNoNode
}

// tried returns the nodes tried so far.
func (at *attempts) tried() []*balancer.Node { return at.buf[:at.n] }

// add records n as tried. connect stops at maxAttempts, and the one add
// outside its loop (closedBeforeAnswer) follows a connect that succeeded
// below it, so buf never overflows; were it full, n would not be recorded.
func (at *attempts) add(n *balancer.Node) {
	if at.n < maxAttempts {
		at.buf[at.n] = n
		at.n++
	}
}

// connectFailed records that dialling n failed with derr (the node backs
// off, the access log names it, backend_errors_total counts it, also when
// another node then takes the request) and returns errClientGone when the
// client left, not the node, or nil to try another node.
func (rt *Router) connectFailed(ctx context.Context, pool *balancer.Pool, pm *poolMetrics, x *exchange, n *balancer.Node, derr error, now time.Time, at *attempts) error {
	if ctx.Err() != nil {
		return errClientGone // the client left, not the node
	}
	n.ObserveLatency(now.UnixNano(), 0, true)
	if n.ReportFailure(now) {
		rt.log.Warn("node failed", "pool", pool.Key, "node", n.Address, "reason", "connect", "err", derr)
	}
	at.add(n)
	rt.observeTried(x, n)
	if isTimeout(derr) {
		at.err = errConnectTimeout
	} else {
		at.err = errAllFailed
	}
	pm.backendError(at.err)
	rt.log.Debug("backend connect failed", "pool", pool.Key, "node", n.Address, "err", derr)
	return nil
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
	return d.DialContext(ctx, network, n.Endpoint.Dial)
}
