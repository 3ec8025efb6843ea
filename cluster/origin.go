package cluster

import (
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// Origin is the routing table as the components whose changes originate
// at this router see it: the subscription server and the admin API. Every
// method is the table's own (the embedded *balancer.Table), except that the
// changes the cluster shares are also recorded in the replicated state and
// broadcast: subscribe and refresh (Announce), Unsubscribe, Drain, Undrain
// and RemoveNode. Static nodes come from each router's configuration and
// are not shared, but their drains are. Changes that do not pass through
// Origin (state-file restore, static configuration, expiry, drains ending)
// stay local.
//
// Origin is safe for concurrent use. Embedding the table, rather than
// naming the methods in an interface, keeps every other method (present or
// added later) available to the packages that take the table.
type Origin struct {
	*balancer.Table
	c *Cluster
}

// Origin returns the table wrapper to hand to the subscription server and
// the admin API.
func (c *Cluster) Origin() *Origin { return &Origin{Table: c.table, c: c} }

// Announce subscribes or refreshes a node and shares it: a new node, a
// revived one (announcing again after its unsubscribe or removal took
// effect), a drain=1, or a change of weight, backup, notify or modifiers
// goes out at once; the last-seen time, cores and load go out at most once
// per RefreshInterval.
func (o *Origin) Announce(a *balancer.Announce) (balancer.Result, error) {
	c := o.c
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	res, err := o.Table.Announce(a)
	if err != nil || a.Static {
		return res, err
	}
	p := o.Table.Pool(string(a.Key))
	if p == nil {
		return res, nil
	}
	n := p.Node(string(a.Address))
	if n == nil || n.Static {
		return res, nil
	}
	if c.announced(a, n, res) {
		c.kick()
	}
	return res, nil
}

// localLife is the lifecycle the table shows for n.
func localLife(n *balancer.Node) life {
	switch {
	case n.Unsubscribed():
		return lifeUnsub
	case n.State() == balancer.StateDraining || n.State() == balancer.StateDrained:
		return lifeDraining
	}
	return lifeAlive
}

// announced records an announce the table accepted. It reports whether the
// applier has work (the table must be put back in line with the entry).
func (c *Cluster) announced(a *balancer.Announce, n *balancer.Node, res balancer.Result) (kick bool) {
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupLocked(a.Key, a.Address)
	created := e == nil
	if created {
		e = c.addLocked(string(a.Key), string(a.Address), now)
		e.lifeAt = stamp{0, c.id} // knows of nothing: any state known elsewhere wins
		e.applied = e.lifeAt
	}
	send := created
	local := localLife(n)
	switch {
	case created:
		if local != lifeAlive { // drain=1 on the first announce
			d := n.Drain()
			c.setLifeLocked(e, local, d.Started, d.Deadline, now)
		}
	case (e.life == lifeUnsub || e.life == lifeGone) && e.applied == e.lifeAt && local == lifeAlive:
		// Announcing again after the unsubscribe or removal took effect
		// here: a new process on that address, back everywhere.
		c.setLifeLocked(e, lifeAlive, time.Time{}, time.Time{}, now)
		send = true
	case a.Drain && local == lifeDraining && e.life == lifeAlive:
		d := n.Drain()
		c.setLifeLocked(e, lifeDraining, d.Started, d.Deadline, now)
		send = true
	case res != balancer.Refreshed && e.life != local:
		// Created here (the applier had not yet, or expiry removed it
		// here) while the cluster says otherwise: the applier fixes it.
		e.applied = stamp{}
		c.markDirtyLocked(e)
		kick = true
	}

	ea := &e.attrs
	important := created || ea.weight != a.Weight || ea.backup != a.Backup || ea.mod1 != a.Modifier1 ||
		ea.mod2 != a.Modifier2 || len(a.Notify) > 0 && string(a.Notify) != ea.notify ||
		len(a.Algo) > 0 && string(a.Algo) != ea.algo
	minor := ea.cores != a.Cores || ea.load != a.Load
	if important || minor {
		ea.mod1, ea.mod2 = a.Modifier1, a.Modifier2
		ea.weight, ea.cores, ea.load, ea.backup = a.Weight, a.Cores, a.Load, a.Backup
		if len(a.Notify) > 0 && string(a.Notify) != ea.notify {
			ea.notify = string(a.Notify)
		}
		if len(a.Algo) > 0 && string(a.Algo) != ea.algo {
			ea.algo = string(a.Algo)
		}
		e.attrAt = stamp{c.clock.tick(), c.id}
	}
	if s := n.LastSeen().UnixNano(); s > e.lastSeen {
		e.lastSeen = s
	}
	if len(a.Proof) <= maxProofLen && proofAfter(a.Proof, e.proof, now/int64(time.Second)+maxAhead/int64(time.Second)) {
		e.proof = append(e.proof[:0], a.Proof...) // the array is reused: no allocation per refresh
	}
	switch {
	case send || important:
		c.broadcastLocked(e, now)
	case minor || e.lastSeen > e.sentSeen:
		e.pending = e.pending || minor
		c.flush[e] = struct{}{}
	}
	return kick
}

// Unsubscribe drains the node and removes it once drained, on every router.
func (o *Origin) Unsubscribe(key, address []byte, timeout time.Duration) bool {
	c := o.c
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	n := c.node(string(key), string(address))
	known := o.Table.Unsubscribe(key, address, timeout)
	if n != nil && n.Static {
		return known
	}
	if timeout <= 0 {
		timeout = c.cfg.DrainTimeout
	}
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupLocked(key, address)
	if e == nil {
		if !known {
			return false
		}
		e = c.addLocked(string(key), string(address), now.UnixNano())
	} else if e.static || e.life == lifeUnsub || e.life == lifeGone {
		return known
	}
	start, deadline := now, now.Add(timeout)
	if n != nil {
		if d := n.Drain(); !d.Started.IsZero() && n.Unsubscribed() {
			start, deadline = d.Started, d.Deadline // a drain already running keeps its deadline
		}
	}
	c.setLifeLocked(e, lifeUnsub, start, deadline, now.UnixNano())
	c.broadcastLocked(e, now.UnixNano())
	// Known to the cluster but not (or no longer) here: still an unsubscribe.
	return true
}

// Drain starts a drain on every router.
func (o *Origin) Drain(key, address string, timeout time.Duration, force bool) (*balancer.Node, error) {
	c := o.c
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	n, err := o.Table.Drain(key, address, timeout, force)
	if err != nil {
		return n, err
	}
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupStrLocked(key, address)
	if e == nil {
		// Known here only (a static node, or one restored from the state
		// file): the entry carries what the table knows.
		e = c.addLocked(key, address, now)
		i := n.Info()
		e.static = n.Static
		e.attrs = attrs{mod1: i.Modifier1, mod2: i.Modifier2, weight: uint64(i.Weight), cores: i.Cores,
			load: i.Load, backup: i.Backup, notify: n.Notify()}
		e.attrAt = stamp{c.clock.tick(), c.id}
		e.lastSeen = i.LastSeen.UnixNano()
	}
	if e.life == lifeAlive {
		d := n.Drain()
		c.setLifeLocked(e, lifeDraining, d.Started, d.Deadline, now)
		c.broadcastLocked(e, now)
	}
	return n, nil
}

// Undrain returns a node to active on every router.
func (o *Origin) Undrain(key, address string) (*balancer.Node, error) {
	c := o.c
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	n, err := o.Table.Undrain(key, address)
	if err != nil {
		return n, err
	}
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e := c.lookupStrLocked(key, address); e != nil && e.life != lifeAlive {
		c.setLifeLocked(e, lifeAlive, time.Time{}, time.Time{}, now)
		c.broadcastLocked(e, now)
	}
	return n, nil
}

// RemoveNode removes a subscribed node on every router (a static node only
// here: the configuration owns it).
func (o *Origin) RemoveNode(key, address string) bool {
	c := o.c
	c.applyMu.Lock()
	defer c.applyMu.Unlock()
	n := c.node(key, address)
	if !o.Table.RemoveNode(key, address) {
		return false
	}
	if n == nil || n.Static {
		return true
	}
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.lookupStrLocked(key, address)
	if e == nil {
		e = c.addLocked(key, address, now)
	}
	c.setLifeLocked(e, lifeGone, time.Time{}, time.Time{}, now)
	c.broadcastLocked(e, now)
	return true
}
