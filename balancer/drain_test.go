package balancer

import (
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// closer is a fake backend connection for Track.
type closer struct{ closed atomic.Int32 }

func (c *closer) Close() error { c.closed.Add(1); return nil }

func TestDrainLifecycle(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoWRR, 1, 1)
	n0 := p.Node(addr(0))
	held := p.Pick(clk.Nano(), nil) // n0 first: equal weights, list order
	if held != n0 {
		t.Fatalf("first pick %s; want %s", held.Address, n0.Address)
	}
	if _, err := tb.Drain("k", n0.Address, 10*time.Second, false); err != nil {
		t.Fatal(err)
	}
	if n0.State() != StateDraining || n0.Drain().Started.IsZero() {
		t.Fatalf("state %s drain %+v; want draining", n0.State(), n0.Drain())
	}
	if c := count(picks(p, 10, clk.Nano(), nil)); c[n0.Address] != 0 {
		t.Fatalf("draining node picked: %v", c)
	}
	announce(t, tb, "k", n0.Address, 1) // drains are sticky
	if n0.State() != StateDraining {
		t.Fatalf("refresh ended the drain: %s", n0.State())
	}
	if evs := tb.Tick(); len(evs) != 0 || n0.State() != StateDraining {
		t.Fatalf("Tick with a request in flight: %v events, state %s", len(evs), n0.State())
	}
	n0.Done()
	evs := tb.Tick()
	if len(evs) != 1 || evs[0].Node != n0 || evs[0].Forced || n0.State() != StateDrained {
		t.Fatalf("Tick after the last request: %+v, state %s", evs, n0.State())
	}
	if p.Node(n0.Address) == nil {
		t.Fatal("a drained node stays listed")
	}
	if _, err := tb.Undrain("k", n0.Address); err != nil || n0.State() != StateActive {
		t.Fatalf("Undrain: %v, state %s", err, n0.State())
	}
	if c := count(picks(p, 10, clk.Nano(), nil)); c[n0.Address] == 0 {
		t.Fatalf("undrained node not picked: %v", c)
	}
}

func TestDrainErrors(t *testing.T) {
	tb, _ := newTable(t, Config{})
	poolWith(t, tb, "k", AlgoWRR, 1)
	cases := []struct {
		name, key, addr string
		force           bool
		err             error
	}{
		{"no pool", "nope", addr(0), false, ErrNoPool},
		{"no node", "k", "/nope", false, ErrNoNode},
		{"last active node", "k", addr(0), false, ErrLastActive},
		{"forced", "k", addr(0), true, nil},
		{"already draining", "k", addr(0), false, nil},
	}
	for _, tc := range cases {
		if _, err := tb.Drain(tc.key, tc.addr, time.Second, tc.force); !errors.Is(err, tc.err) {
			t.Errorf("%s: Drain = %v; want %v", tc.name, err, tc.err)
		}
	}
	if _, err := tb.Undrain("nope", addr(0)); !errors.Is(err, ErrNoPool) {
		t.Errorf("Undrain unknown pool: %v", err)
	}
}

func TestDrainDeadlineForcesClose(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoWRR, 1, 1)
	n := p.Pick(clk.Nano(), nil)
	c1, c2 := &closer{}, &closer{}
	n.Track(c1)
	n.Track(c2)
	n.Untrack(c2) // finished before the deadline
	if _, err := tb.Drain("k", n.Address, 5*time.Second, false); err != nil {
		t.Fatal(err)
	}
	clk.Add(5*time.Second - time.Nanosecond)
	if evs := tb.Tick(); len(evs) != 0 {
		t.Fatalf("Tick before the deadline ended the drain: %+v", evs)
	}
	clk.Add(time.Nanosecond)
	evs := tb.Tick()
	if len(evs) != 1 || !evs[0].Forced || evs[0].Info.Forced != 1 || n.State() != StateDrained {
		t.Fatalf("Tick at the deadline: %+v state %s", evs, n.State())
	}
	if c1.closed.Load() != 1 || c2.closed.Load() != 0 {
		t.Fatalf("closed tracked %d, untracked %d; want 1, 0", c1.closed.Load(), c2.closed.Load())
	}
	n.Done()
	if n.Inflight() != 0 {
		t.Fatalf("inflight %d", n.Inflight())
	}
}

func TestUnsubscribe(t *testing.T) {
	tb, clk := newTable(t, Config{DrainTimeout: 7 * time.Second})
	p := poolWith(t, tb, "k", AlgoWRR, 1, 1, 1)
	idle, busy := p.Node(addr(2)), p.Pick(clk.Nano(), nil)

	if !tb.Unsubscribe([]byte("k"), []byte(idle.Address), 0) || p.Node(idle.Address) != nil {
		t.Fatal("an idle node is removed at once")
	}
	if tb.Unsubscribe([]byte("k"), []byte("/nope"), 0) || tb.Unsubscribe([]byte("nope"), []byte(busy.Address), 0) {
		t.Fatal("unknown node or pool reported true")
	}
	if !tb.Unsubscribe([]byte("k"), []byte(busy.Address), 0) || busy.State() != StateDraining || !busy.Unsubscribed() {
		t.Fatalf("busy node: state %s unsubscribed %v; want draining", busy.State(), busy.Unsubscribed())
	}
	if d := busy.Drain(); d.Deadline.Sub(d.Started) != 7*time.Second {
		t.Fatalf("drain %+v; want Config.DrainTimeout 7s", d)
	}
	// A new process on that address announces: back to active.
	announce(t, tb, "k", busy.Address, 1)
	if busy.State() != StateActive || busy.Unsubscribed() {
		t.Fatalf("re-announce after unsubscribe: state %s", busy.State())
	}
	tb.Unsubscribe([]byte("k"), []byte(busy.Address), time.Second)
	busy.Done()
	if evs := tb.Tick(); len(evs) != 1 || p.Node(busy.Address) != nil {
		t.Fatalf("drained unsubscribed node not removed: %+v", evs)
	}
	if len(p.Nodes()) != 1 {
		t.Fatalf("%d nodes left; want 1", len(p.Nodes()))
	}
}

func TestAnnounceDrainExtension(t *testing.T) {
	tb, _ := newTable(t, Config{DrainTimeout: 9 * time.Second})
	poolWith(t, tb, "k", AlgoWRR, 1, 1)
	cases := []struct {
		name    string
		timeout time.Duration
		want    time.Duration
	}{
		{"default timeout", 0, 9 * time.Second},
		{"own timeout", 3 * time.Second, 3 * time.Second},
	}
	for i, tc := range cases {
		a := &Announce{Key: []byte("k"), Address: []byte(addr(i)), Drain: true, DrainTimeout: tc.timeout}
		if res, err := tb.Announce(a); err != nil || res != Refreshed {
			t.Fatalf("%s: Announce = %v, %v", tc.name, res, err)
		}
		n := tb.Pool("k").Node(addr(i))
		if d := n.Drain(); n.State() != StateDraining || d.Deadline.Sub(d.Started) != tc.want {
			t.Errorf("%s: state %s drain %+v; want draining for %v", tc.name, n.State(), d, tc.want)
		}
	}
	a := &Announce{Key: []byte("k"), Address: []byte("/new.sock"), Drain: true}
	if res, err := tb.Announce(a); err != nil || res != CreatedNode || tb.Pool("k").Node("/new.sock").State() != StateDraining {
		t.Fatalf("new node with drain=1: %v, %v", res, err)
	}
}

// Datagrams cannot touch static nodes: an unsubscribe, a refresh or a
// drain=1 naming a --to node's address leaves it as configured.
func TestSubscriptionsCannotChangeStaticNodes(t *testing.T) {
	tb, _ := newTable(t, Config{})
	if err := tb.AddStatic("k", addr(0), 2); err != nil {
		t.Fatal(err)
	}
	if tb.Unsubscribe([]byte("k"), []byte(addr(0)), 0) {
		t.Fatal("unsubscribe reported removing a static node")
	}
	for _, a := range []*Announce{
		{Key: []byte("k"), Address: []byte(addr(0)), Weight: 9},
		{Key: []byte("k"), Address: []byte(addr(0)), Drain: true},
	} {
		if _, err := tb.Announce(a); !errors.Is(err, ErrStaticNode) {
			t.Fatalf("announce %+v: %v; want ErrStaticNode", a, err)
		}
	}
	n := tb.Pool("k").Node(addr(0))
	if n == nil || n.Weight() != 2 || n.State() != StateActive {
		t.Fatalf("static node changed: %+v", n)
	}
	// The configuration itself may still refresh it (SIGHUP reapplies --to).
	if err := tb.AddStatic("k", addr(0), 2); err != nil {
		t.Fatal(err)
	}
}
