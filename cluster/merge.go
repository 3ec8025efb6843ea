package cluster

import (
	"bytes"
	"math"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Everything in this file runs with Cluster.mu held (the *Locked methods)
// or takes it.

// lookupLocked finds the entry for (key, addr); it allocates nothing.
func (c *Cluster) lookupLocked(key, addr []byte) *entry {
	if nodes := c.pools[string(key)]; nodes != nil {
		return nodes[string(addr)]
	}
	return nil
}

func (c *Cluster) lookupStrLocked(key, addr string) *entry {
	if nodes := c.pools[key]; nodes != nil {
		return nodes[addr]
	}
	return nil
}

// addLocked creates an empty entry: alive at stamp zero, which anything
// known elsewhere overrides.
func (c *Cluster) addLocked(key, addr string, now int64) *entry {
	nodes := c.pools[key]
	if nodes == nil {
		nodes = make(map[string]*entry, 1)
		c.pools[key] = nodes
	}
	e := &entry{key: key, addr: addr, changedAt: now}
	nodes[addr] = e
	c.entries++
	return e
}

// dropLocked forgets an entry (expired or an old tombstone).
func (c *Cluster) dropLocked(e *entry) {
	if nodes := c.pools[e.key]; nodes != nil && nodes[e.addr] == e {
		delete(nodes, e.addr)
		if len(nodes) == 0 {
			delete(c.pools, e.key)
		}
		c.entries--
	}
	delete(c.flush, e)
	delete(c.draining, e)
	e.deleted = true
}

func (c *Cluster) markDirtyLocked(e *entry) {
	if !e.dirty {
		e.dirty = true
		c.dirty = append(c.dirty, e)
	}
}

// setLifeLocked records a lifecycle change made here (already applied to
// the table by the caller) and stamps it with the hybrid clock.
func (c *Cluster) setLifeLocked(e *entry, l life, start, deadline time.Time, now int64) {
	e.life = l
	e.lifeAt = stamp{c.clock.tick(), c.id}
	e.applied = e.lifeAt
	e.drainStart, e.drainDeadline = 0, 0
	if l.drains() {
		e.drainStart, e.drainDeadline = start.UnixNano(), deadline.UnixNano()
	}
	e.changedAt = now
	c.lifeChangedLocked(e)
}

// lifeChangedLocked keeps the draining index and drops reports of drains
// that are over.
func (c *Cluster) lifeChangedLocked(e *entry) {
	if e.life.drains() {
		c.draining[e] = struct{}{}
	} else {
		delete(c.draining, e)
	}
	for id, r := range e.reports {
		if r.epoch != e.lifeAt {
			delete(e.reports, id)
		}
	}
}

// mergeLocked merges an entry from another router. It reports whether the
// entry changed; a changed entry is queued for the applier.
func (c *Cluster) mergeLocked(w *wireEntry, now int64) bool {
	// An entry silent for longer than the tolerance is stored like any
	// other (skipping it would make the result depend on arrival order);
	// the applier does not create it and collect drops it again.
	e := c.lookupLocked(w.key, w.addr)
	if e == nil {
		e = c.addLocked(string(w.key), string(w.addr), now)
	}
	if w.lifeAt.ver > 0 {
		c.clock.observe(w.lifeAt.ver)
	}
	if w.attrAt.ver > 0 {
		c.clock.observe(w.attrAt.ver)
	}
	changed := false
	if w.lifeAt.after(e.lifeAt) {
		e.life, e.lifeAt, e.static = w.life, w.lifeAt, w.static
		e.drainStart, e.drainDeadline = w.drainStart, w.drainDeadline
		e.changedAt = now
		c.lifeChangedLocked(e)
		changed = true
	}
	if w.attrAt.after(e.attrAt) {
		e.attrAt = w.attrAt
		a := &e.attrs
		a.mod1, a.mod2 = w.mod1, w.mod2
		a.weight, a.cores, a.load, a.backup = w.weight, w.cores, w.load, w.backup
		if string(w.notify) != a.notify {
			a.notify = string(w.notify)
		}
		if string(w.algo) != a.algo {
			a.algo = string(w.algo)
		}
		changed = true
	}
	if w.lastSeen > e.lastSeen {
		e.lastSeen = w.lastSeen
		changed = true
	}
	if proofAfter(w.proof, e.proof, now/int64(time.Second)+maxAhead/int64(time.Second)) {
		e.proof = append(e.proof[:0], w.proof...)
		changed = true // may admit a node this router refused for want of one
	}
	// Whoever sent it gossips it; no need for us to send it again.
	e.sentSeen = max(e.sentSeen, w.lastSeen)
	if changed {
		c.markDirtyLocked(e)
	}
	for i := range w.reports {
		if c.mergeReportIntoLocked(e, w.reports[i].router, w.reports[i].report) {
			changed = true
		}
	}
	return changed
}

// mergeReportLocked merges a report broadcast.
func (c *Cluster) mergeReportLocked(m *wireReportMsg) bool {
	e := c.lookupLocked(m.key, m.addr)
	if e == nil {
		return false
	}
	return c.mergeReportIntoLocked(e, m.router, m.report)
}

// mergeReportIntoLocked keeps router's newest report for e's current drain.
// A report for a drain this router has not heard of yet is dropped; the
// reporter repeats it.
func (c *Cluster) mergeReportIntoLocked(e *entry, router uint64, r report) bool {
	if router == c.id || r.epoch != e.lifeAt || !e.life.drains() {
		return false
	}
	if cur, ok := e.reports[router]; ok && cur.epoch == r.epoch && cur.at >= r.at {
		return false
	}
	if e.reports == nil {
		e.reports = make(map[uint64]report, 4)
	}
	e.reports[router] = r
	return true
}

// broadcastLocked queues e, as it is now, for gossip.
func (c *Cluster) broadcastLocked(e *entry, now int64) {
	msg := appendEntryMsg(make([]byte, 0, 96+len(e.key)+len(e.addr)+len(e.attrs.notify)), now, e)
	e.sentSeen = max(e.sentSeen, e.lastSeen)
	e.pending = false
	delete(c.flush, e)
	c.queueBroadcast(e.key+"\x00"+e.addr, msg)
	c.m.sent.Inc()
}

// flushRefreshes gossips the entries whose last-seen time or cores/load
// advanced here since they were last sent.
func (c *Cluster) flushRefreshes() {
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := range c.flush {
		if e.lastSeen > e.sentSeen || e.pending {
			c.broadcastLocked(e, now)
		}
		delete(c.flush, e)
	}
}

// collect forgets entries nobody needs: nodes silent for longer than the
// tolerance (every router has expired them, and the applier never creates
// them from a stale copy) and tombstones old enough that no stale live copy
// can remain.
func (c *Cluster) collect() {
	now := c.now().UnixNano()
	tol := int64(c.cfg.Tolerance)
	ttl := tol + 2*int64(c.cfg.SyncInterval)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.collectBlobsLocked(now)
	for _, nodes := range c.pools {
		for _, e := range nodes {
			switch {
			case e.life == lifeGone || e.life == lifeUnsub:
				if now-max(e.changedAt, e.drainDeadline) > ttl {
					c.dropLocked(e)
				}
			case e.static:
			default:
				seen := e.lastSeen
				if seen == 0 {
					seen = e.changedAt
				}
				if now-seen > tol+int64(c.cfg.SyncInterval) {
					c.dropLocked(e)
				}
			}
		}
	}
}

// reportDrains sends this router's in-flight count for each draining
// entry: at once when it changed, else again every second while the drain
// runs here (so members that missed it catch up) and every 10s after.
func (c *Cluster) reportDrains() {
	now := c.now().UnixNano()
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := range c.draining {
		var inflight int64
		done := true
		if p := c.table.Pool(e.key); p != nil {
			if n := p.Node(e.addr); n != nil {
				inflight = n.Inflight()
				done = inflight == 0 && n.State() != balancer.StateDraining
			}
		}
		cur, ok := e.reports[c.id]
		every := int64(time.Second)
		if done {
			every = 10 * int64(time.Second)
		}
		if ok && cur.epoch == e.lifeAt && int64(cur.inflight) == inflight && now-e.sentRep < every {
			continue
		}
		r := report{epoch: e.lifeAt, at: c.clock.tick(), inflight: uint32(min(max(inflight, 0), 1<<32-1))}
		if e.reports == nil {
			e.reports = make(map[uint64]report, 4)
		}
		e.reports[c.id] = r
		e.sentRep = now
		c.queueBroadcast("r\x00"+e.key+"\x00"+e.addr, appendReportMsg(make([]byte, 0, 64+len(e.key)+len(e.addr)), now, e.key, e.addr, c.id, r))
	}
}

// proofAfter reports whether proof a is newer than b: its signed unix time
// is later, or equal with bytes that compare greater (so that merging is
// order-free). A proof that does not parse as a signed datagram, or whose
// time is past limit (unix seconds; a forged far-future time would
// otherwise win over every real proof to come), is older than any that
// does; nil is older than everything.
func proofAfter(a, b []byte, limit int64) bool {
	if len(a) == 0 {
		return false
	}
	if len(b) == 0 {
		return true
	}
	ta, tb := proofTime(a, limit), proofTime(b, limit)
	return ta > tb || ta == tb && bytes.Compare(a, b) > 0
}

// proofTime is a proof's signed unix time, -1 if it has none or it is
// past limit.
func proofTime(p []byte, limit int64) int64 {
	var s uwsgi.Subscription
	if uwsgi.ParseSubscription(p, &s) != nil || !s.HasUnix || s.Unix > math.MaxInt64 || int64(s.Unix) > limit {
		return -1
	}
	return int64(s.Unix)
}
