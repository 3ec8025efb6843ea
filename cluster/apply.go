package cluster

import (
	"bytes"
	"errors"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// apply brings the table in line with e, as merged from other routers.
// It runs on the applier goroutine with applyMu held (not mu). Changes go
// straight to the table, not through Origin: they are not broadcast again.
//
// Static (configured) nodes belong to each router's configuration: the
// cluster never creates or removes them, it only drains and undrains them.
func (c *Cluster) apply(e *entry) {
	c.mu.Lock()
	e.dirty = false
	if e.deleted {
		c.mu.Unlock()
		return
	}
	s := *e // a snapshot; the maps it shares are not read here
	s.proof = bytes.Clone(e.proof)
	c.mu.Unlock()

	now := c.now()
	n := c.node(s.key, s.addr)
	lifeDue := s.applied != s.lifeAt
	switch {
	case n != nil && n.Static, n == nil && s.static:
		if n != nil && lifeDue {
			c.applyDrain(&s, n)
		}
	case s.life == lifeGone:
		if n != nil && c.table.RemoveNode(s.key, s.addr) {
			c.log.Info("node left", "pool", s.key, "node", s.addr, "source", "cluster", "reason", "deleted")
		}
	case s.life == lifeUnsub:
		if n != nil && !n.Unsubscribed() {
			// Drains with the origin's deadline (removed at once when idle).
			c.table.Unsubscribe([]byte(s.key), []byte(s.addr), max(time.Unix(0, s.drainDeadline).Sub(now), time.Millisecond))
			c.log.Info("node left", "pool", s.key, "node", s.addr, "source", "cluster", "reason", "unsubscribe",
				"draining", c.node(s.key, s.addr) != nil)
		}
	default: // alive or draining
		if !s.static && now.UnixNano()-s.lastSeen > int64(c.cfg.Tolerance) {
			break // silent everywhere: the table's expiry removes it here too
		}
		if revive := n == nil || n.Unsubscribed(); revive || attrsDiffer(n, &s.attrs) {
			if !c.admit(&s) {
				return // not applied: its next change is asked again
			}
			var prev int64
			if n != nil {
				prev = n.LastSeen().UnixNano()
			}
			a := s.attrs
			_, err := c.table.Announce(&balancer.Announce{
				Key: []byte(s.key), Address: []byte(s.addr),
				Modifier1: a.mod1, Modifier2: a.mod2,
				Weight: a.weight, Cores: a.cores, Load: a.load, Backup: a.backup,
				Notify: []byte(a.notify), Algo: []byte(a.algo),
			})
			if err != nil {
				c.log.Debug("cluster: node from a peer refused by the table", "pool", s.key, "node", s.addr, "err", err)
				break
			}
			// Announce stamped it with our clock; it was last seen when
			// the origin says, so it expires at the same time everywhere.
			c.table.SetLastSeen(s.key, s.addr, time.Unix(0, max(prev, s.lastSeen)))
			if revive {
				c.log.Info("node joined", "pool", s.key, "node", s.addr, "source", "cluster", "weight", max(a.weight, 1))
			}
			n = c.node(s.key, s.addr)
			lifeDue = lifeDue || revive // created or revived here: give it the entry's lifecycle
		} else {
			c.table.Touch(s.key, s.addr, time.Unix(0, s.lastSeen))
		}
		if n != nil && lifeDue {
			c.applyDrain(&s, n)
		}
	}
	c.m.applied.Inc()
	c.mu.Lock()
	if e.lifeAt == s.lifeAt {
		e.applied = s.lifeAt
	}
	c.mu.Unlock()
}

// applyDrain gives an existing node the drain state of s: undrained when s
// is alive, draining with the origin's times when s drains.
func (c *Cluster) applyDrain(s *entry, n *balancer.Node) {
	st := n.State()
	switch s.life {
	case lifeAlive:
		if st == balancer.StateDraining || st == balancer.StateDrained {
			if _, err := c.table.Undrain(s.key, s.addr); err == nil {
				c.log.Info("node undrained", "pool", s.key, "node", s.addr, "source", "cluster", "was", st.String())
			}
		}
	case lifeDraining:
		c.table.DrainAt(s.key, s.addr, time.Unix(0, s.drainStart), time.Unix(0, s.drainDeadline))
		if st != balancer.StateDraining && st != balancer.StateDrained {
			c.log.Info("drain started", "pool", s.key, "node", s.addr, "source", "cluster",
				"deadline", time.Unix(0, s.drainDeadline).UTC().Format(time.RFC3339))
		}
	}
}

// node returns the table's node (key, addr), or nil.
func (c *Cluster) node(key, addr string) *balancer.Node {
	if p := c.table.Pool(key); p != nil {
		return p.Node(addr)
	}
	return nil
}

// attrsDiffer reports whether the table's node differs from a in what a
// refresh can change (the modifiers are fixed at creation, as in uWSGI).
func attrsDiffer(n *balancer.Node, a *attrs) bool {
	w := int64(a.weight)
	if a.weight == 0 {
		w = 1
	} else if a.weight > 1<<20 {
		w = 1 << 20
	}
	i := n.Info()
	return i.Weight != w || i.Cores != a.cores || i.Load != a.load || i.Backup != a.backup ||
		(a.notify != "" && n.Notify() != a.notify)
}

// admit asks Config.Admission whether the node of s may enter this table
// (or be revived or changed in it), and counts a refusal by reason.
func (c *Cluster) admit(s *entry) bool {
	if c.cfg.Admission == nil {
		return true
	}
	err := c.cfg.Admission.AdmitRelayed([]byte(s.key), []byte(s.addr), s.proof)
	if err == nil {
		return true
	}
	reason := "other"
	var r interface{ Reason() string }
	if errors.As(err, &r) {
		reason = r.Reason()
	}
	c.m.denied.WithLabelValues(reason).Inc()
	c.log.Debug("cluster: node from a peer refused by the admission rules", "pool", s.key, "node", s.addr, "err", err)
	return false
}
