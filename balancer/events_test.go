package balancer

import (
	"testing"
	"time"
)

func TestDrainGateHoldsTick(t *testing.T) {
	tb, clock := newTable(t, Config{})
	announce(t, tb, "g.test", addr(0), 1)
	announce(t, tb, "g.test", addr(1), 1)
	open := false
	tb.SetDrainGate(func(key string, n *Node) bool { return open })
	if _, err := tb.Drain("g.test", addr(0), time.Minute, false); err != nil {
		t.Fatal(err)
	}
	if evs := tb.Tick(); len(evs) != 0 {
		t.Fatalf("Tick with the gate closed ended %d drains", len(evs))
	}
	open = true
	if evs := tb.Tick(); len(evs) != 1 || evs[0].Forced {
		t.Fatalf("Tick with the gate open: %+v; want one completed drain", evs)
	}
	// The deadline overrides a closed gate.
	open = false
	if _, err := tb.Drain("g.test", addr(1), time.Second, true); err != nil {
		t.Fatal(err)
	}
	clock.Add(2 * time.Second)
	if evs := tb.Tick(); len(evs) != 1 {
		t.Fatalf("Tick past the deadline with the gate closed: %d drains ended; want 1", len(evs))
	}
	tb.SetDrainGate(nil)
}

func TestDrainAtUsesGivenTimes(t *testing.T) {
	tb, clock := newTable(t, Config{})
	announce(t, tb, "d.test", addr(0), 1)
	start := clock.Now().Add(-time.Second)
	deadline := start.Add(10 * time.Second)
	if !tb.DrainAt("d.test", addr(0), start, deadline) {
		t.Fatal("DrainAt of a known node reported unknown")
	}
	d := tb.Pool("d.test").Node(addr(0)).Drain()
	if !d.Started.Equal(start) || !d.Deadline.Equal(deadline) {
		t.Fatalf("drain %v..%v; want %v..%v", d.Started, d.Deadline, start, deadline)
	}
	// Again with other times (a concurrent drain elsewhere won): they move.
	if tb.DrainAt("d.test", addr(0), start, deadline.Add(time.Second)); !tb.Pool("d.test").Node(addr(0)).Drain().Deadline.Equal(deadline.Add(time.Second)) {
		t.Fatal("DrainAt did not align a running drain's deadline")
	}
	if tb.DrainAt("d.test", addr(9), start, deadline) {
		t.Fatal("DrainAt of an unknown node reported known")
	}
}

func TestTouchAndSetLastSeen(t *testing.T) {
	tb, clock := newTable(t, Config{})
	announce(t, tb, "s.test", addr(0), 1)
	n := tb.Pool("s.test").Node(addr(0))
	now := clock.Now()
	tb.Touch("s.test", addr(0), now.Add(-time.Minute)) // older: ignored
	if !n.LastSeen().Equal(now) {
		t.Fatalf("Touch moved last-seen back to %v", n.LastSeen())
	}
	tb.Touch("s.test", addr(0), now.Add(time.Second))
	if !n.LastSeen().Equal(now.Add(time.Second)) {
		t.Fatalf("Touch: last-seen %v", n.LastSeen())
	}
	tb.SetLastSeen("s.test", addr(0), now.Add(-5*time.Second))
	if !n.LastSeen().Equal(now.Add(-5 * time.Second)) {
		t.Fatalf("SetLastSeen: last-seen %v", n.LastSeen())
	}
	// Expiry follows the set time.
	clock.Add(-5*time.Second + 31*time.Second)
	if removed := tb.Expire(30 * time.Second); removed != 1 {
		t.Fatalf("Expire removed %d; want 1", removed)
	}
	if tb.Touch("s.test", addr(0), now) || tb.SetLastSeen("s.test", addr(0), now) {
		t.Fatal("Touch/SetLastSeen of a removed node reported known")
	}
}
