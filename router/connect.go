package router

import (
	"context"
	"net"

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
// ctx is the client's interest in the request (h2 streams; fronts without
// one pass context.Background()): once it ends no new connect is attempted,
// a connect in progress is abandoned, and neither counts against the node
// (errClientGone).
func (rt *Router) connect(ctx context.Context, pool *balancer.Pool, x *exchange, key []byte) (*balancer.Node, net.Conn, error) {
	var triedBuf [maxAttempts]*balancer.Node
	tried := triedBuf[:0]
	err := errNoNode
	for len(tried) < maxAttempts {
		if ctx.Err() != nil {
			return nil, nil, errClientGone
		}
		now := rt.now()
		done := ctx.Done() // an h2 stream's wait for a node ends with it (at the shutdown deadline too: its connection is closed)
		if done == nil {
			done = rt.cutCh // the others' at the shutdown deadline (shutdown.go)
		}
		n, perr := pool.Acquire(now.UnixNano(), tried, key, done)
		switch perr {
		case nil:
		case balancer.ErrQueueFull, balancer.ErrQueueTimeout:
			return nil, nil, overload(perr)
		case balancer.ErrCanceled:
			if ctx.Err() == nil { // not the client: the shutdown deadline
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
		if ctx.Err() != nil {
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
	return d.DialContext(ctx, network, n.Endpoint.Dial)
}
