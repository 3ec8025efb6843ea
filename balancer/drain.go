package balancer

import (
	"errors"
	"io"
	"time"
)

// A drain takes a node out of rotation without failing a request: it gets no
// new request, requests in flight finish, and when none is left it is
// drained. At the deadline the backend connections still open are closed and
// counted as forced. Drains are sticky: refreshes from the node do not end
// them; Undrain does, and so does a fresh subscribe after the node
// unsubscribed, expired or was deleted (a new process on that address).

// Drain errors.
var (
	ErrNoPool     = errors.New("balancer: no such pool")
	ErrNoNode     = errors.New("balancer: no such node")
	ErrLastActive = errors.New("balancer: draining this node would leave the pool without an active node")
)

// Track registers a backend connection of a request in flight to n, so that
// a forced drain can close it. Untrack when the request ends.
func (n *Node) Track(c io.Closer) {
	n.connMu.Lock()
	if n.conns == nil {
		n.conns = make(map[io.Closer]struct{}, 8)
	}
	n.conns[c] = struct{}{}
	n.connMu.Unlock()
}

// Untrack forgets a connection registered with Track.
func (n *Node) Untrack(c io.Closer) {
	n.connMu.Lock()
	delete(n.conns, c)
	n.connMu.Unlock()
}

// closeTracked closes every tracked connection and returns how many.
func (n *Node) closeTracked() int {
	n.connMu.Lock()
	cs := make([]io.Closer, 0, len(n.conns))
	for c := range n.conns {
		cs = append(cs, c)
	}
	n.connMu.Unlock()
	for _, c := range cs {
		c.Close()
	}
	return len(cs)
}

// DrainInfo describes a node's drain for the admin API and notifications.
type DrainInfo struct {
	Started  time.Time // zero when not draining
	Deadline time.Time
	Served   uint64 // requests started since the drain began
	Forced   uint64 // connections closed at the deadline
}

// Drain returns the node's drain progress.
func (n *Node) Drain() DrainInfo {
	st := n.drainStarted.Load()
	if st == 0 {
		return DrainInfo{}
	}
	return DrainInfo{
		Started:  time.Unix(0, st),
		Deadline: time.Unix(0, n.drainDeadline.Load()),
		Served:   n.requests.Load() - n.drainReqs.Load(),
		Forced:   n.forced.Load(),
	}
}

// Unsubscribed reports whether the node is draining because it unsubscribed.
func (n *Node) Unsubscribed() bool { return n.unsubscribed.Load() }

// startDrain moves n to draining with the given deadline. It reports false
// when n is already draining or drained (the first drain's deadline holds).
func (n *Node) startDrain(now time.Time, timeout time.Duration) bool {
	for {
		s := n.state.Load()
		if State(s) == StateDraining || State(s) == StateDrained {
			return false
		}
		if n.state.CompareAndSwap(s, uint32(StateDraining)) {
			break
		}
	}
	n.drainReqs.Store(n.requests.Load())
	n.forced.Store(0)
	n.drainDeadline.Store(now.Add(timeout).UnixNano())
	n.drainStarted.Store(now.UnixNano())
	n.CloseIdle() // no request will use them (idle.go)
	n.watch()     // Tick completes the drain
	return true
}

// revive returns a node to active, ending any drain.
func (n *Node) revive(now time.Time) {
	n.state.Store(uint32(StateActive))
	n.drainStarted.Store(0)
	n.drainDeadline.Store(0)
	n.unsubscribed.Store(false)
	n.consecFails.Store(0)
	n.retryAt.Store(0)
	n.forgetLatency() // its estimate is from before the drain
	n.joined.Store(now.UnixNano())
}

// findNode returns the pool and node for key and address, or ErrNoPool /
// ErrNoNode.
func (t *Table) findNode(key, address string) (*Pool, *Node, error) {
	p := t.Pool(key)
	if p == nil {
		return nil, nil, ErrNoPool
	}
	n := p.Node(address)
	if n == nil {
		return p, nil, ErrNoNode
	}
	return p, n, nil
}

// Drain starts draining a node. Unless force is set, it refuses with
// ErrLastActive when no other node of the pool would stay active. Draining a
// node that already drains is not an error (its deadline stays).
func (t *Table) Drain(key, address string, timeout time.Duration, force bool) (*Node, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p, n, err := t.findNode(key, address)
	if err != nil {
		return nil, err
	}
	if !force && n.stored() != StateDraining && n.stored() != StateDrained {
		others := 0
		for _, o := range p.Nodes() {
			if o != n && (o.stored() == StateActive || o.stored() == StateFailed) {
				others++
			}
		}
		if others == 0 {
			return n, ErrLastActive
		}
	}
	n.startDrain(t.cfg.Now(), timeout)
	t.changed(key)
	return n, nil
}

// Undrain returns a draining or drained node to active.
func (t *Table) Undrain(key, address string) (*Node, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, n, err := t.findNode(key, address)
	if err != nil {
		return nil, err
	}
	if s := n.stored(); s == StateDraining || s == StateDrained {
		n.revive(t.cfg.Now())
		t.changed(key)
	}
	return n, nil
}

// Unsubscribe handles a node's unsubscribe: an active node drains with the
// given deadline and is removed once drained; a drained node is removed at
// once; a draining one keeps its deadline and is removed when done. It
// reports whether the node existed. A zero timeout means Config.DrainTimeout.
func (t *Table) Unsubscribe(key, address []byte, timeout time.Duration) bool {
	if timeout <= 0 {
		timeout = t.cfg.DrainTimeout
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.poolBytes(key)
	if p == nil {
		return false
	}
	n := p.Node(string(address))
	if n == nil || n.Static { // a datagram cannot remove a configured node
		return false
	}
	if n.stored() == StateDrained || n.inflight.Load() == 0 && n.stored() != StateDraining {
		return t.removeLocked(p.Key, n.Address)
	}
	n.unsubscribed.Store(true)
	n.startDrain(t.cfg.Now(), timeout)
	t.changed(p.Key)
	return true
}

// DrainEvent reports a drain that ended during Tick.
type DrainEvent struct {
	Key    string
	Node   *Node
	Forced bool // the deadline passed with requests in flight
	Info   DrainInfo
}

// Tick finishes drains and closes idle keep-alive connections past their
// deadline (idle.go): a draining node with nothing in flight becomes
// drained; one past its deadline has its connections closed (counted as
// forced) and becomes drained. Nodes drained because they unsubscribed are
// removed. Call it periodically; it returns the drains that ended.
func (t *Table) Tick() []DrainEvent {
	now := t.cfg.Now()
	var evs []DrainEvent
	var victims []*Node
	var keys []string
	var buf [64]*Node
	for _, n := range t.watch.snapshot(buf[:0]) {
		n.closeIdle(now.UnixNano()) // keep-alive connections past their idle deadline
		if n.stored() != StateDraining {
			t.watch.settle(n)
			continue
		}
		p := n.pool
		forced := false
		if n.inflight.Load() > 0 {
			if now.UnixNano() < n.drainDeadline.Load() {
				continue
			}
			n.forced.Add(uint64(n.closeTracked()))
			forced = true
		} else if !t.drainGateOpen(p.Key, n, now.UnixNano()) {
			continue // other routers still have requests in flight
		}
		if !n.state.CompareAndSwap(uint32(StateDraining), uint32(StateDrained)) {
			continue
		}
		t.watch.settle(n)
		evs = append(evs, DrainEvent{Key: p.Key, Node: n, Forced: forced, Info: n.Drain()})
		if n.unsubscribed.Load() {
			victims = append(victims, n)
			keys = append(keys, p.Key)
		}
	}
	if len(victims) > 0 {
		t.mu.Lock()
		for i, n := range victims {
			if n.stored() == StateDrained {
				t.removeLocked(keys[i], n.Address)
			}
		}
		t.mu.Unlock()
	}
	for _, e := range evs {
		t.changed(e.Key)
	}
	return evs
}
