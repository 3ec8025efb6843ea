package router

import (
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// The shutdown deadline (Router.Shutdown): whatever is still open then is
// cut, so that no goroutine outlives Shutdown waiting on a peer.
//
//   - client connections: each front closes those it tracks (HTTP/1.1:
//     parkState; h2: h2Front.open; uwsgi front: uwsgiListener.open;
//     tunnels: tunnelSet; connections still being split by protocol:
//     frontListener.splitting);
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

// errShutdownCut is an exchange cut at the shutdown deadline.
var errShutdownCut = errors.New("router: cut at the shutdown deadline")

// cutGrace bounds every wait of Shutdown once its deadline has passed.
const cutGrace = 500 * time.Millisecond

// connSet is a set of connections to close all at once at some point (the
// shutdown deadline). Safe for concurrent use.
type connSet struct {
	mu  sync.Mutex
	m   map[io.Closer]struct{} // guarded by mu
	cut bool                   // guarded by mu: closeAll ran; add refuses
}

// add registers c; false (c not registered: the caller closes it) once the
// set has been cut.
func (s *connSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return false
	}
	if s.m == nil {
		s.m = make(map[io.Closer]struct{}, 64)
	}
	s.m[c] = struct{}{}
	return true
}

// remove forgets c (idempotent).
func (s *connSet) remove(c io.Closer) {
	s.mu.Lock()
	delete(s.m, c)
	s.mu.Unlock()
}

// size is how many connections are registered.
func (s *connSet) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// closeAll closes every registered connection (outside the lock: a Close
// may block briefly) and refuses new ones. It returns how many it closed.
// The connections stay registered until their owners remove them.
func (s *connSet) closeAll() int {
	s.mu.Lock()
	s.cut = true
	cs := make([]io.Closer, 0, len(s.m))
	for c := range s.m {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	return len(cs)
}

// track registers c, a node connection of an exchange in flight to n, with
// n (drain deadlines) and with the router (the shutdown deadline). False
// past the shutdown deadline: nothing is registered and the caller closes c.
func (rt *Router) track(n *balancer.Node, c net.Conn) bool {
	if !rt.backends.add(c) {
		return false
	}
	n.Track(c)
	return true
}

// untrack forgets a connection registered by track.
func (rt *Router) untrack(n *balancer.Node, c net.Conn) {
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
