package cluster

import (
	"github.com/fastrouter/fastrouter/balancer"
)

// DrainGate is the balancer.DrainGate of a clustered router: a node whose
// drain the cluster coordinates is drained only when every other live
// router reports nothing in flight to it for this drain. (Tick has checked
// this router's own count; the deadline overrides the gate.) Install it
// with Table.SetDrainGate.
func (c *Cluster) DrainGate(key string, n *balancer.Node) bool {
	if c.stopped.Load() {
		return true // shutting down: nobody is left to wait for
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupStrLocked(key, n.Address)
	if e == nil || !e.life.drains() {
		return true // a drain of this router alone
	}
	return c.othersDoneLocked(e)
}

// othersDoneLocked reports whether every live member but this one reported
// 0 in flight for e's current drain.
func (c *Cluster) othersDoneLocked(e *entry) bool {
	for id := range c.members {
		if id == c.id {
			continue
		}
		if r, ok := e.reports[id]; !ok || r.epoch != e.lifeAt || r.inflight != 0 {
			return false
		}
	}
	return true
}

// ShouldNotify is the lifecycle hook deciding which router sends a drain
// notice: the one where the drain started, or, if it is not a live member
// any more, the live member with the lowest name. Every router decides the
// same from the same membership, so the node hears once (twice at worst,
// if membership changes at that very moment).
func (c *Cluster) ShouldNotify(ev balancer.DrainEvent) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupStrLocked(ev.Key, ev.Node.Address)
	if e == nil || !e.life.drains() {
		return true
	}
	return c.notifierLocked(e) == c.id
}

func (c *Cluster) notifierLocked(e *entry) uint64 {
	if _, ok := c.members[e.lifeAt.origin]; ok {
		return e.lifeAt.origin
	}
	best, bestName := c.id, c.cfg.Name
	for id, m := range c.members {
		if m.name < bestName {
			best, bestName = id, m.name
		}
	}
	return best
}
