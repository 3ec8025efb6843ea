package cluster

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// newStateOnly returns a Cluster that is never started: enough to merge.
func newStateOnly(t testing.TB, name string, now func() time.Time) *Cluster {
	t.Helper()
	tb, err := balancer.New(balancer.Config{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Table: tb, Name: name, BindAddr: "127.0.0.1:0", Now: now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Shutdown)
	return c
}

// replicated is the part of an entry that must converge.
type replicated struct {
	static        bool
	life          life
	lifeAt        stamp
	drainStart    int64
	drainDeadline int64
	attrs         attrs
	attrAt        stamp
	lastSeen      int64
	reports       map[uint64]report
	proof         string
}

func snapshot(c *Cluster) map[string]replicated {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]replicated{}
	for _, nodes := range c.pools {
		for _, e := range nodes {
			r := replicated{e.static, e.life, e.lifeAt, e.drainStart, e.drainDeadline, e.attrs, e.attrAt, e.lastSeen, nil, string(e.proof)}
			for id, rep := range e.reports {
				if rep.epoch == e.lifeAt {
					if r.reports == nil {
						r.reports = map[uint64]report{}
					}
					r.reports[id] = rep
				}
			}
			out[e.key+" "+e.addr] = r
		}
	}
	return out
}

// randomWire builds a random entry for one of a few nodes, with stamps from
// a small range so that ties happen. As in a real cluster, one stamp is one
// change: the lifecycle is a function of lifeAt, the attributes of attrAt,
// a report of its router and time.
func randomWire(rng *rand.Rand, now int64) *wireEntry {
	lives := []life{lifeAlive, lifeDraining, lifeUnsub, lifeGone}
	w := &wireEntry{
		key:      []byte(fmt.Sprintf("k%d.test", rng.IntN(2))),
		addr:     []byte(fmt.Sprintf("10.0.0.%d:1", rng.IntN(2)+1)),
		lifeAt:   stamp{int64(rng.IntN(4)) * 1000, uint64(rng.IntN(3) + 1)},
		attrAt:   stamp{int64(rng.IntN(4)) * 1000, uint64(rng.IntN(3) + 1)},
		lastSeen: now - int64(rng.IntN(5))*int64(time.Second),
	}
	l := w.lifeAt.ver/1000 + int64(w.lifeAt.origin)
	w.life = lives[l%4]
	a := w.attrAt.ver/1000 + int64(w.attrAt.origin)
	w.weight, w.cores = uint64(a%3+1), uint64(a%4)
	if a%3 == 0 {
		w.notify = []byte(fmt.Sprintf("/run/n%d.sock", a%2))
	}
	// Proofs with equal times (a tie broken by their bytes), garbage, and
	// one from too far ahead, which must never win.
	switch rng.IntN(5) {
	case 0:
		w.proof = sampleProof(string(w.key), ":1", uint64(now/int64(time.Second)+int64(rng.IntN(2))))
	case 1:
		p := sampleProof(string(w.key), ":1", uint64(now/int64(time.Second)))
		p[len(p)-1] ^= byte(rng.IntN(2) + 1)
		w.proof = p
	case 2:
		w.proof = []byte{byte(rng.IntN(3))}
	case 3:
		w.proof = sampleProof(string(w.key), ":1", uint64(now/int64(time.Second)+int64(48*time.Hour/time.Second)))
	}
	if w.life.drains() {
		w.drainStart = w.lifeAt.ver
		w.drainDeadline = w.lifeAt.ver + int64(time.Minute)
		for i := rng.IntN(3); i > 0; i-- {
			router, at := uint64(rng.IntN(3)+10), int64(rng.IntN(3))
			w.reports = append(w.reports, wireReport{router: router,
				report: report{epoch: w.lifeAt, at: at, inflight: uint32((int64(router) + at) % 2)}})
		}
	}
	return w
}

// Merging is order-independent and idempotent: any permutation of the same
// entries, some delivered twice, converges to the same replicated state.
func TestMergeConverges(t *testing.T) {
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	rng := rand.New(rand.NewPCG(1, 2))
	for round := 0; round < 300; round++ {
		ws := make([]*wireEntry, 2+rng.IntN(8))
		for i := range ws {
			ws[i] = randomWire(rng, now.UnixNano())
		}
		var want map[string]replicated
		for perm := 0; perm < 4; perm++ {
			c := newStateOnly(t, "x", clock)
			order := rng.Perm(len(ws))
			c.mu.Lock()
			for _, i := range order {
				c.mergeLocked(ws[i], now.UnixNano())
				if rng.IntN(3) == 0 { // a duplicate delivery
					c.mergeLocked(ws[i], now.UnixNano())
				}
			}
			c.mu.Unlock()
			got := snapshot(c)
			if perm == 0 {
				want = got
			} else if !reflect.DeepEqual(got, want) {
				t.Fatalf("round %d: merge order %v gave\n%+v\nwant\n%+v", round, order, got, want)
			}
		}
	}
}

// The lifecycle rules in the order a cluster meets them.
func TestLifecycleOrdering(t *testing.T) {
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	c := newStateOnly(t, "b", clock)
	key, addr := []byte("o.test"), []byte("10.0.0.1:1")
	at := func() *entry {
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.lookupLocked(key, addr)
	}
	merge := func(w wireEntry) bool {
		w.key, w.addr, w.lastSeen = key, addr, now.UnixNano()
		c.mu.Lock()
		defer c.mu.Unlock()
		return c.mergeLocked(&w, now.UnixNano())
	}
	// A drain decided at router 5.
	merge(wireEntry{life: lifeDraining, lifeAt: stamp{100, 5}, drainStart: 100, drainDeadline: 200})
	// A router that only heard of the node from the node itself (stamp 0)
	// does not undo it.
	if merge(wireEntry{life: lifeAlive, lifeAt: stamp{0, 9}}) && at().life != lifeDraining {
		t.Fatalf("first-sight alive undid a drain: %v", at().life)
	}
	// An undrain made after seeing the drain does.
	merge(wireEntry{life: lifeAlive, lifeAt: stamp{101, 3}})
	if e := at(); e.life != lifeAlive || e.lifeAt != (stamp{101, 3}) {
		t.Fatalf("undrain after the drain: %v %v", e.life, e.lifeAt)
	}
	// The older drain arriving late (reordered) changes nothing.
	if merge(wireEntry{life: lifeDraining, lifeAt: stamp{100, 5}, drainStart: 100, drainDeadline: 200}) {
		t.Fatal("a stale drain changed the entry")
	}
	// Equal clocks: the higher router id wins, everywhere.
	merge(wireEntry{life: lifeUnsub, lifeAt: stamp{150, 2}, drainStart: 150, drainDeadline: 250})
	merge(wireEntry{life: lifeGone, lifeAt: stamp{150, 4}})
	if e := at(); e.life != lifeGone {
		t.Fatalf("tie on the clock: %v; want gone (router 4 > 2)", e.life)
	}
	// Our clock moved past what we saw: a change made here now wins.
	if v := c.clock.tick(); v <= 150 {
		t.Fatalf("clock %d not past the observed 150", v)
	}
}

// A local change applied through Origin, then the same state arriving back
// from a peer: nothing changes and nothing is re-broadcast.
func TestEchoIsStale(t *testing.T) {
	now := time.Unix(1700000000, 0)
	clock := func() time.Time { return now }
	c := newStateOnly(t, "a", clock)
	o := c.Origin()
	if _, err := o.Announce(&balancer.Announce{Key: []byte("e.test"), Address: []byte("10.0.0.1:1"), Weight: 2}); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Drain("e.test", "10.0.0.1:1", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	msg := appendEntryMsg(nil, now.UnixNano(), c.lookupStrLocked("e.test", "10.0.0.1:1"))
	dirty := len(c.dirty)
	c.mu.Unlock()
	(*delegate)(c).NotifyMsg(msg)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.dirty) != dirty {
		t.Fatal("our own entry coming back queued work for the applier")
	}
}
