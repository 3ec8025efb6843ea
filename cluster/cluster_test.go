package cluster

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastrouter/fastrouter/balancer"
)

func TestSubscribePropagates(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b", "c")
	start := time.Now()
	announceAt(t, rs[0], "app.test", "10.0.0.1:3031", func(a *balancer.Announce) { a.Weight = 3 })
	waitState(t, 5*time.Second, "app.test", "10.0.0.1:3031", "active", rs...)
	t.Logf("converged in %s", time.Since(start))
	for _, r := range rs {
		if w := r.nodeOf("app.test", "10.0.0.1:3031").Weight(); w != 3 {
			t.Errorf("%s: weight %d; want 3", r.name, w)
		}
	}
}

// tickAll runs every router's drain tick once and returns the drain events
// by router name.
func tickAll(rs ...*testRouter) map[string][]balancer.DrainEvent {
	out := map[string][]balancer.DrainEvent{}
	for _, r := range rs {
		if evs := r.table.Tick(); len(evs) > 0 {
			out[r.name] = append(out[r.name], evs...)
		}
	}
	return out
}

// A drain started at b applies on a and c; while a still has a request in
// flight nobody reports drained; when it ends, all do, and exactly one
// router (b, where it started) is the one to notify.
func TestClusterDrainWaitsForEveryRouter(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b", "c")
	a, b, c := rs[0], rs[1], rs[2]
	const key, addr = "drain.test", "10.0.0.2:3031"
	announceAt(t, a, key, addr, nil)
	announceAt(t, a, key, "10.0.0.3:3031", nil)
	waitState(t, 5*time.Second, key, addr, "active", rs...)
	waitState(t, 5*time.Second, key, "10.0.0.3:3031", "active", rs...)

	// A request in flight to the node at a.
	var held *balancer.Node
	for i := 0; i < 4 && held == nil; i++ {
		if n := a.table.Pool(key).Pick(time.Now().UnixNano(), nil); n.Address == addr {
			held = n
		} else {
			n.Done()
		}
	}
	if held == nil {
		t.Fatal("never picked the node at a")
	}
	if _, err := b.o.Drain(key, addr, time.Minute, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, key, addr, "draining", rs...)
	// b and c have nothing in flight, but a does: everyone keeps draining.
	deadline := time.Now().Add(500 * time.Millisecond)
	for time.Now().Before(deadline) {
		if evs := tickAll(rs...); len(evs) > 0 {
			t.Fatalf("drain ended while a request is in flight at a: %v", evs)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := b.c.Status()
	if len(st.Drains) != 1 || st.Drains[0].Inflight["a"] != 1 || len(st.Drains[0].Waiting) != 1 || st.Drains[0].Waiting[0] != "a" {
		t.Fatalf("b's view of the drain: %+v; want a waiting with 1 in flight", st.Drains)
	}
	held.Done()
	ended := map[string]balancer.DrainEvent{}
	waitFor(t, 5*time.Second, "drained everywhere", func() bool {
		for name, evs := range tickAll(rs...) {
			ended[name] = evs[0]
		}
		return len(ended) == 3
	})
	waitState(t, time.Second, key, addr, "drained", rs...)
	var notifiers []string
	for _, r := range rs {
		if r.c.ShouldNotify(ended[r.name]) {
			notifiers = append(notifiers, r.name)
		}
		if ended[r.name].Forced {
			t.Errorf("%s: drain forced; want completed", r.name)
		}
	}
	if len(notifiers) != 1 || notifiers[0] != "b" {
		t.Fatalf("routers that would notify: %v; want [b]", notifiers)
	}
	// Undrain at c: active everywhere.
	if _, err := c.o.Undrain(key, addr); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, key, addr, "active", rs...)
}

// An unsubscribe received by one router removes the node everywhere; an
// admin delete too.
func TestClusterUnsubscribeAndRemove(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b", "c")
	a, b := rs[0], rs[1]
	announceAt(t, a, "u.test", "10.0.0.4:3031", nil)
	announceAt(t, a, "u.test", "10.0.0.5:3031", nil)
	waitState(t, 5*time.Second, "u.test", "10.0.0.4:3031", "active", rs...)
	waitState(t, 5*time.Second, "u.test", "10.0.0.5:3031", "active", rs...)
	if !a.o.Unsubscribe([]byte("u.test"), []byte("10.0.0.4:3031"), 0) {
		t.Fatal("unsubscribe of a known node reported unknown")
	}
	waitState(t, 5*time.Second, "u.test", "10.0.0.4:3031", "absent", rs...)
	if !b.o.RemoveNode("u.test", "10.0.0.5:3031") {
		t.Fatal("RemoveNode at b: not found")
	}
	waitState(t, 5*time.Second, "u.test", "10.0.0.5:3031", "absent", rs...)

	// The node announcing again (a new process) comes back everywhere.
	announceAt(t, rs[2], "u.test", "10.0.0.4:3031", nil)
	waitState(t, 5*time.Second, "u.test", "10.0.0.4:3031", "active", rs...)
}

// Changes applied from the cluster are not broadcast again: after a
// subscribe at a settles, b and c have sent nothing.
func TestClusterLoopFree(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b", "c")
	for i := 0; i < 20; i++ {
		announceAt(t, rs[0], "loop.test", fmt.Sprintf("10.0.1.%d:3031", i+1), nil)
	}
	if _, err := rs[0].o.Drain("loop.test", "10.0.1.1:3031", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, "loop.test", "10.0.1.1:3031", "draining", rs...)
	waitState(t, 5*time.Second, "loop.test", "10.0.1.20:3031", "active", rs...)
	time.Sleep(300 * time.Millisecond) // several sync rounds
	for _, r := range rs[1:] {
		if n := testutil.ToFloat64(r.c.m.sent); n != 0 {
			t.Errorf("%s broadcast %v entries it only received", r.name, n)
		}
	}
	if n := testutil.ToFloat64(rs[0].c.m.sent); n != 21 {
		t.Errorf("a broadcast %v entries; want 21 (20 subscribes, 1 drain)", n)
	}
}

// A router that joins late gets every pool, node and drain at once.
func TestClusterLateJoiner(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b")
	for i := 0; i < 50; i++ {
		announceAt(t, rs[i%2], fmt.Sprintf("p%d.test", i), "10.0.2.1:3031", nil)
	}
	if _, err := rs[1].o.Drain("p7.test", "10.0.2.1:3031", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, "p7.test", "10.0.2.1:3031", "draining", rs...)
	start := time.Now()
	late := newTestRouter(t, "late", routerOpts{join: []string{rs[1].c.Addr()}})
	waitFor(t, 5*time.Second, "50 pools at the late joiner", func() bool { return late.table.Len() == 50 })
	t.Logf("late joiner has 50 pools after %s", time.Since(start))
	if s := late.state("p7.test", "10.0.2.1:3031"); s != "draining" {
		t.Fatalf("drained node at the late joiner: %s; want draining", s)
	}
}
