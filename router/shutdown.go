package router

import (
	"context"
	"errors"
	"io"
	"sync"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// The shutdown deadline (Router.Shutdown): whatever is still open then is
// cut, so that no goroutine outlives Shutdown waiting on a peer.
//
//   - client connections: each front closes those it tracks, each in a
//     connSet (connset.go): a --http/--https listener its HTTP/1.1
//     connections (parkState), its h2 ones and those still being split by
//     protocol (frontListener.splitting), and its tunnels; a --uwsgi
//     listener its connections;
//   - node connections of exchanges in flight: Router.backends, closed here.
//     A goroutine waiting on a node (a response head that never comes, a
//     body streaming without end) is woken by that close; closing its
//     client would only wake it at its next client write. They are tracked
//     router-wide beside each node's own tracking for drains (balancer
//     Node.Track): a node may leave the table (expired, deleted) while its
//     exchanges run, so the table cannot list every node that has some;
//   - requests waiting for a node (a pool at its in-flight cap) stop
//     waiting (Router.cutCh), and a dial that completes after the deadline
//     is closed at once (track refuses it).
//
// Then Shutdown waits at most cutGrace for the goroutines that served what
// it cut to let go, so the process exits within --shutdown-timeout plus
// well under a second whatever its peers do.

// drainGrace is how long Shutdown lets open HTTP/1.1 keep-alive
// connections send one more request, answered with "Connection: close",
// before it closes the idle ones. Closing an idle connection races with a
// client that is sending on it at that moment (the client sees a reset and,
// unlike with h2's GOAWAY, cannot tell whether its request was processed);
// a connection the router closes after a response that said so never races.
const drainGrace = time.Second

// Shutdown stops accepting, answers every further HTTP/1.1 response with
// "Connection: close" and sends HTTP/2 GOAWAY, lets requests in flight
// finish, closes connections still idle after a short grace, and returns
// when every connection is gone or ctx ends. At ctx's end it cuts whatever
// is still open, client and node connections alike (above), and returns
// within cutGrace more. Every front does its part (front.Shutdown), all at
// once: --http/--https listeners (serve.go), --uwsgi (uwsgifront.go),
// --http-to-https (redirect.go).
func (rt *Router) Shutdown(ctx context.Context) error {
	rt.mu.Lock()
	rt.closing = true
	fronts := rt.fronts
	rt.mu.Unlock()
	rt.draining.Store(true)
	// Each front closes its client connections at ctx's end; the node
	// connections of the exchanges still in flight are closed here.
	cut := make(chan int, 1)
	stop := context.AfterFunc(ctx, func() { cut <- rt.cutBackends() })
	defer stop()
	var wg sync.WaitGroup
	errs := make([]error, len(fronts))
	for i, f := range fronts {
		wg.Go(func() { errs[i] = f.Shutdown(ctx) })
	}
	wg.Wait()
	if ctx.Err() != nil {
		rt.awaitCut(<-cut)
	}
	rt.socks.closeAll()
	rt.trim.Stop()
	rt.parker.stop()
	return errors.Join(errs...)
}

// awaitH1Grace waits, at most drainGrace or until ctx ends, for the open
// HTTP/1.1 connections to close after a response that said
// "Connection: close". Every --http/--https listener's Shutdown waits so
// before it closes its idle connections.
func (rt *Router) awaitH1Grace(ctx context.Context) {
	grace := time.NewTimer(drainGrace)
	defer grace.Stop()
	poll := time.NewTicker(10 * time.Millisecond)
	defer poll.Stop()
	for rt.h1Open.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-grace.C:
			return
		case <-poll.C:
		}
	}
}

// front is one listener the router serves (Serve, ServeTLS, ServeUwsgi,
// ServeRedirect). Router.Shutdown calls every front's Shutdown at once.
type front interface {
	// Shutdown stops accepting, lets what is in flight finish until ctx
	// ends, then closes what is left (the deadline, above) and returns
	// within cutGrace. Its error is ctx's when it had to cut.
	Shutdown(ctx context.Context) error
}

var (
	_ front = (*frontListener)(nil)
	_ front = (*uwsgiListener)(nil)
	_ front = redirectFront{}
)

// addFront registers f for Shutdown; false once Shutdown has begun (the
// caller then serves nothing).
func (rt *Router) addFront(f front) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.closing {
		return false
	}
	rt.fronts = append(rt.fronts, f)
	return true
}

// shuttingDown reports whether Shutdown has begun: a Serve method whose
// listener then fails returns nil.
func (rt *Router) shuttingDown() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	return rt.closing
}

// frontListenersLocked returns the --http and --https listeners among
// the fronts. Caller holds rt.mu.
func (rt *Router) frontListenersLocked() []*frontListener {
	var ls []*frontListener
	for _, f := range rt.fronts {
		if l, ok := f.(*frontListener); ok {
			ls = append(ls, l)
		}
	}
	return ls
}

// errShutdownCut is an exchange cut at the shutdown deadline.
var errShutdownCut = errors.New("router: cut at the shutdown deadline")

// cutGrace bounds every wait of Shutdown once its deadline has passed.
const cutGrace = 500 * time.Millisecond

// track registers c, a node connection of an exchange in flight to n, with
// n (drain deadlines) and with the router (the shutdown deadline). False
// past the shutdown deadline: nothing is registered and the caller closes c.
// c is the net.Conn on the goroutine path, and on the HTTP/1.1 event loop a
// loopCut, whose Close asks the loop that owns the socket to cut it.
func (rt *Router) track(n *balancer.Node, c io.Closer) bool {
	if !rt.backends.add(c) {
		return false
	}
	n.Track(c)
	return true
}

// untrack forgets a connection registered by track.
func (rt *Router) untrack(n *balancer.Node, c io.Closer) {
	n.Untrack(c)
	rt.backends.remove(c)
}

// cutBackends is the shutdown deadline for node connections: it closes
// those of every exchange in flight, refuses new ones, and stops requests
// waiting for a node. It returns how many it closed.
func (rt *Router) cutBackends() int {
	rt.cutOnce.Do(func() { close(rt.cutCh) })
	return rt.backends.closeAll()
}

// awaitCut waits, at most cutGrace, for the exchanges and HTTP/1.1
// connections cut at the deadline to be released by their goroutines, and
// logs what is left (each ends at its own next timeout).
func (rt *Router) awaitCut(closed int) {
	deadline := time.Now().Add(cutGrace)
	for rt.backends.size() > 0 || rt.h1Open.Load() > 0 {
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	rt.log.Warn("shutdown deadline: cut what was still open", "node_connections_closed", closed,
		"node_connections_left", rt.backends.size(), "http1_connections_left", rt.h1Open.Load())
}
