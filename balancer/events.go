package balancer

import (
	"sync/atomic"
	"time"
)

// Hooks for a replicator (the cluster package): it applies what other
// routers decided with the origin's own times, and holds back the end of a
// drain until the other routers are done too. Nothing here runs unless a
// replicator calls it; a single router never does.

// DrainGate decides whether a draining node with nothing in flight here may
// become drained. It is called from Tick without the table lock held, once
// per such node and tick, so it must be cheap and must not call back into
// the Table. The drain deadline overrides it: a node past its deadline is
// drained (forced, if requests remain) whatever the gate says.
type DrainGate func(key string, n *Node) bool

// hooks are the optional replicator hooks of a Table.
type hooks struct {
	gate atomic.Pointer[DrainGate]
}

// SetDrainGate installs g (nil removes it). Safe to call at any time.
func (t *Table) SetDrainGate(g DrainGate) {
	if g == nil {
		t.hooks.gate.Store(nil)
		return
	}
	t.hooks.gate.Store(&g)
}

// drainGateOpen reports whether Tick may finish n's drain now: no gate is
// installed, the gate agrees, or the deadline has passed.
func (t *Table) drainGateOpen(key string, n *Node, now int64) bool {
	g := t.hooks.gate.Load()
	return g == nil || now >= n.drainDeadline.Load() || (*g)(key, n)
}

// LastSeen returns the time of the node's last announce.
func (n *Node) LastSeen() time.Time { return time.Unix(0, n.lastSeen.Load()) }

// Touch moves a node's last-seen time forward to seen (never back): an
// announce another router received keeps the node alive here. It reports
// whether the node exists. Static nodes never expire; touching them is
// harmless.
func (t *Table) Touch(key, address string, seen time.Time) bool {
	_, n, err := t.findNode(key, address)
	if err != nil {
		return false
	}
	s := seen.UnixNano()
	for {
		cur := n.lastSeen.Load()
		if cur >= s || n.lastSeen.CompareAndSwap(cur, s) {
			return true
		}
	}
}

// SetLastSeen sets a node's last-seen time to exactly seen, also backwards:
// a node created here from another router's state has last announced when
// that router says, not when the state arrived, so that it expires at the
// same moment on every router. It reports whether the node exists.
func (t *Table) SetLastSeen(key, address string, seen time.Time) bool {
	_, n, err := t.findNode(key, address)
	if err != nil {
		return false
	}
	n.lastSeen.Store(seen.UnixNano())
	return true
}

// DrainAt drains a node with the start and deadline another router chose,
// so that the deadline falls at the same moment everywhere. An active or
// failed node starts draining (no last-active check: the origin made it);
// a draining node takes the given times; a drained node stays drained. It
// reports whether the node exists.
func (t *Table) DrainAt(key, address string, started, deadline time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, n, err := t.findNode(key, address)
	if err != nil {
		return false
	}
	switch n.stored() {
	case StateDrained:
		return true
	case StateDraining:
	default:
		if !n.startDrain(started, deadline.Sub(started)) {
			return true // drained meanwhile
		}
		t.changed(key)
	}
	n.drainStarted.Store(started.UnixNano())
	n.drainDeadline.Store(deadline.UnixNano())
	return true
}
