package cluster

import (
	"hash/fnv"
	"sync"
	"time"
)

// The replicated state is one entry per (pool key, node address). An entry
// is four independent registers, each merged on its own, so that two
// routers changing different aspects of a node at the same time do not
// overwrite each other:
//
//	lifecycle  alive | draining | unsubscribed | gone, with drain times
//	           last-writer-wins on lifeAt (hybrid clock, then router id)
//	attributes modifiers, weight, cores, load, backup, notify, algo
//	           last-writer-wins on attrAt
//	lastSeen   the newest announce anywhere (a max register)
//	proof      the newest signed datagram announcing the node (a max
//	           register on its signed unix time, then its bytes)
//
// plus, while the node drains, each router's count of requests still in
// flight to it (a register per router, newest report wins).
//
// Merging is commutative, associative and idempotent: applying the same
// entry twice, or two entries in either order, ends in the same state. That
// is what makes broadcasts loop-free and lets push/pull repair whatever a
// lost broadcast missed.
//
// Ordering: a lifecycle change made here is stamped with the hybrid clock,
// which is above every stamp this router has seen, so a change made after
// seeing another router's change always wins over it. A node announcing to
// a router that has no entry for it yet is stamped 0: that router knows
// nothing, so its "alive" must not undo a drain or removal decided
// elsewhere that it has not heard of yet. A node announcing again after its
// unsubscribe or removal took effect here gets a real stamp: a new process
// on that address comes back everywhere, as on a single router.

// life is an entry's replicated lifecycle.
type life uint8

const (
	lifeAlive    life = iota // subscribed (or a static node): takes traffic
	lifeDraining             // a sticky drain (admin API, drain=1)
	lifeUnsub                // unsubscribed: drains, then removed; a tombstone
	lifeGone                 // removed (admin DELETE): a tombstone
	numLives
)

var lifeNames = [numLives]string{"alive", "draining", "unsubscribed", "gone"}

func (l life) String() string {
	if l < numLives {
		return lifeNames[l]
	}
	return "unknown"
}

// drains reports whether the life is one whose end is coordinated.
func (l life) drains() bool { return l == lifeDraining || l == lifeUnsub }

// stamp orders changes: ver is a hybrid logical clock reading (unix ns,
// bumped past every stamp seen), origin the id of the router that made the
// change (the tie-break).
type stamp struct {
	ver    int64
	origin uint64
}

func (a stamp) after(b stamp) bool {
	return a.ver > b.ver || a.ver == b.ver && a.origin > b.origin
}

// attrs are what a node announces about itself.
type attrs struct {
	mod1, mod2                  uint8
	weight, cores, load, backup uint64
	notify, algo                string
}

// report is one router's in-flight count for one drain (epoch = the
// lifecycle stamp of that drain). at orders reports of the same router.
type report struct {
	epoch    stamp
	at       int64
	inflight uint32
}

// entry is the replicated state of one node plus local bookkeeping. Every
// field is guarded by Cluster.mu.
type entry struct {
	key, addr string

	// Replicated.
	static        bool // a configured node at the origin: never created elsewhere
	life          life
	lifeAt        stamp
	drainStart    int64 // unix ns; set for lifeDraining and lifeUnsub
	drainDeadline int64
	attrs         attrs
	attrAt        stamp
	lastSeen      int64 // unix ns of the newest announce anywhere; 0 = unknown
	reports       map[uint64]report
	// proof is the newest signed datagram accepted for the node anywhere
	// (newest by its signed unix time), or nil: routers that check
	// signatures admit the node on it (subauth.Guard.AdmitRelayed). Updated
	// in place (its array is reused), so readers outside mu copy it.
	proof []byte

	// Local only.
	applied   stamp // the lifecycle stamp the local table reflects
	changedAt int64 // local unix ns of the last lifecycle change (tombstone GC)
	sentSeen  int64 // lastSeen carried by a broadcast already (ours or received)
	sentRep   int64 // local unix ns our report for this drain last went out
	pending   bool  // cores/load changed here since the last broadcast
	dirty     bool  // queued in Cluster.dirty
	deleted   bool  // dropped from the map by GC; ignore if still queued
}

// clock is a hybrid logical clock: readings follow the wall clock but are
// strictly increasing and above every stamp observed from other routers.
// Safe for concurrent use.
type clock struct {
	now  func() time.Time
	mu   sync.Mutex
	last int64
}

// tick returns a new reading.
func (c *clock) tick() int64 {
	n := c.now().UnixNano()
	c.mu.Lock()
	if n <= c.last {
		n = c.last + 1
	}
	c.last = n
	c.mu.Unlock()
	return n
}

// maxAhead bounds how far ahead of our wall clock an observed stamp may
// move the clock: a peer with a wild clock (or a forged message) must not
// push ours to the end of int64, where it would wrap.
const maxAhead = int64(24 * time.Hour)

// observe moves the clock past a stamp seen from another router.
func (c *clock) observe(v int64) {
	if v > c.now().UnixNano()+maxAhead {
		return
	}
	c.mu.Lock()
	if v > c.last {
		c.last = v
	}
	c.mu.Unlock()
}

// routerID is a router's name as the 64-bit id entries carry (FNV-1a). Ids
// only order concurrent changes and name the router a report is from, so a
// collision between two router names costs at most a tie-break.
func routerID(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	if id := h.Sum64(); id != 0 {
		return id
	}
	return 1 // 0 means "none"
}
