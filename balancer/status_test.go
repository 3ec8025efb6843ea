package balancer

import (
	"testing"
	"time"
)

// A node's state and health, as the admin API shows them, never
// contradict each other: they are read from the same loads. A node that
// failed a connect used to show "state":"failed" with "healthy":true.
func TestHealthyAgreesWithState(t *testing.T) {
	tb, c := newTable(t, Config{})
	announce(t, tb, "k", "10.0.0.1:1", 1)
	announce(t, tb, "k", "10.0.0.2:1", 1)
	n := tb.Pool("k").Node("10.0.0.1:1")
	check := func(what string, wantState State, wantHealthy bool) {
		t.Helper()
		i := n.Info()
		if i.State != wantState || i.Healthy != wantHealthy {
			t.Fatalf("%s: state %s healthy %v; want %s %v", what, i.State, i.Healthy, wantState, wantHealthy)
		}
		if i.State == StateFailed && i.Healthy {
			t.Fatalf("%s: failed and healthy at once", what)
		}
	}
	check("new", StateActive, true)
	if !n.ReportFailure(c.Now()) {
		t.Fatal("the first connect failure did not report marking the node failed")
	}
	if n.ReportFailure(c.Now()) {
		t.Fatal("a second failure in the same streak reported marking it again")
	}
	check("connect failed", StateFailed, false)
	if !n.ReportSuccess() {
		t.Fatal("the connect that ended the streak did not report a recovery")
	}
	if n.ReportSuccess() {
		t.Fatal("a plain success reported a recovery")
	}
	check("recovered", StateActive, true)
	n.SetHealthy(false)
	check("health check down", StateFailed, false)
	if _, err := tb.Drain("k", n.Address, time.Minute, false); err != nil {
		t.Fatal(err)
	}
	check("draining while down", StateDraining, false)
	if n.ReportFailure(c.Now()) {
		t.Fatal("a draining node was reported as newly failed")
	}
	n.SetHealthy(true)
	check("draining, check up again", StateDraining, true)
}

// Expire names every node it removes, with its last announce, once the
// table lock is released (the callback may use the table).
func TestExpireReportsNodes(t *testing.T) {
	type gone struct {
		key, addr string
		seen      time.Time
	}
	var got []gone
	var tb *Table
	tb, c := newTable(t, Config{OnExpire: func(key, addr string, seen time.Time) {
		got = append(got, gone{key, addr, seen})
		tb.RemoveNode("other", "10.0.0.9:1") // would deadlock under the lock
	}})
	announce(t, tb, "a", "10.0.0.1:1", 1)
	seen := c.Now()
	c.Add(time.Second)
	announce(t, tb, "b", "10.0.0.2:1", 1)
	c.Add(10 * time.Second)
	announce(t, tb, "b", "10.0.0.3:1", 1) // fresh: stays
	if n := tb.Expire(10500 * time.Millisecond); n != 1 {
		t.Fatalf("Expire removed %d; want 1", n)
	}
	if len(got) != 1 || got[0].key != "a" || got[0].addr != "10.0.0.1:1" || !got[0].seen.Equal(seen) {
		t.Fatalf("OnExpire heard %+v; want a's node last seen %v", got, seen)
	}
}
