package balancer

import (
	"fmt"
	"testing"
	"time"
)

func watched(tb *Table) int {
	tb.watch.mu.Lock()
	defer tb.watch.mu.Unlock()
	return len(tb.watch.nodes)
}

// TestTickWatchesOnlyBusyNodes: Tick's list holds a node while it drains or
// parks idle connections, and lets it go once it has neither, however many
// pools the table has.
func TestTickWatchesOnlyBusyNodes(t *testing.T) {
	tb, clk := newTable(t, Config{})
	for i := range 500 {
		announce(t, tb, fmt.Sprintf("p%d", i), "127.0.0.1:3031", 1)
	}
	announce(t, tb, "k", "http://127.0.0.1:8000", 1)
	if w := watched(tb); w != 0 {
		t.Fatalf("%d nodes watched with nothing draining or idle", w)
	}

	n := tb.Pool("p7").Node("127.0.0.1:3031")
	if _, err := tb.Drain("p7", "127.0.0.1:3031", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	if w := watched(tb); w != 1 {
		t.Fatalf("draining node: %d watched; want 1", w)
	}
	evs := tb.Tick()
	if len(evs) != 1 || evs[0].Node != n || evs[0].Key != "p7" || n.State() != StateDrained {
		t.Fatalf("Tick events %+v, state %v; want p7's node drained", evs, n.State())
	}
	if w := watched(tb); w != 0 {
		t.Fatalf("after the drain completed: %d watched; want 0", w)
	}

	h := tb.Pool("k").Node("http://127.0.0.1:8000")
	c := &fakeConn{}
	h.PutIdle(c, clk.Now().Add(time.Second), 8)
	if w := watched(tb); w != 1 {
		t.Fatalf("node with an idle connection: %d watched; want 1", w)
	}
	tb.Tick()
	if w := watched(tb); w != 1 || c.closed.Load() != 0 {
		t.Fatalf("idle connection within its deadline: %d watched, closed %d", w, c.closed.Load())
	}
	clk.Add(2 * time.Second)
	tb.Tick()
	if w := watched(tb); w != 0 || c.closed.Load() != 1 {
		t.Fatalf("after expiry: %d watched (want 0), closed %d (want 1)", w, c.closed.Load())
	}
}

// BenchmarkTick: the lifecycle ticker's cost with a large, quiet table.
func BenchmarkTick(b *testing.B) {
	tb, _ := newTable(b, Config{})
	keys := make([]string, 100_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("pool-%d.bench.test", i)
	}
	bulkLoad(b, tb, keys, "127.0.0.1:3031")
	b.ReportAllocs()
	for b.Loop() {
		tb.Tick()
	}
}
