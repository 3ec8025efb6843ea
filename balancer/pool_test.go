package balancer

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// TestSmoothWRRExact checks the smooth-WRR guarantee: over every window of
// sum(weights) consecutive picks each node is chosen exactly weight times
// (weight 0 counts as 1).
//
// Contrast with uWSGI 2.0 (core/subscription.c uwsgi_subscription_algo_wrr):
// its wrr resets every node
// to weight/min_weight with integer division, so weights 3 and 2 give 1:1.
// We give exactly 3:2.
func TestSmoothWRRExact(t *testing.T) {
	cases := []struct {
		name    string
		weights []uint64
		windows int
	}{
		{"2:1", []uint64{2, 1}, 100},
		{"3:1", []uint64{3, 1}, 100},
		{"3:2, uWSGI gives 1:1", []uint64{3, 2}, 100},
		{"1:1", []uint64{1, 1}, 100},
		{"weight 0 is 1", []uint64{0, 1}, 100},
		{"weight 0 is 1 against 2", []uint64{0, 2}, 100},
		{"five mixed", []uint64{5, 1, 3, 2, 7}, 20},
		{"single node", []uint64{4}, 10},
		{"large and small", []uint64{100, 1}, 5},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			p := poolWith(t, tb, "k", AlgoWRR, tc.weights...)
			sum := 0
			for _, w := range tc.weights {
				sum += int(max(w, 1))
			}
			got := picks(p, sum*tc.windows, clk.Nano(), nil)
			for win := range tc.windows {
				c := count(got[win*sum : (win+1)*sum])
				for i, w := range tc.weights {
					if c[addr(i)] != int(max(w, 1)) {
						t.Fatalf("window %d: node %d (weight %d) picked %d times; want %d (%v)",
							win, i, w, c[addr(i)], max(w, 1), c)
					}
				}
			}
		})
	}
}

// TestSmoothWRR2to1 is the headline case: 2:1 over 300 picks is exactly
// 200/100, and the picks interleave (never three of a kind in a row).
func TestSmoothWRR2to1(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoWRR, 2, 1)
	got := picks(p, 300, clk.Nano(), nil)
	if c := count(got); c[addr(0)] != 200 || c[addr(1)] != 100 {
		t.Fatalf("300 picks of 2:1 gave %v; want 200/100", c)
	}
	for i := 2; i < len(got); i++ {
		if got[i] == got[i-1] && got[i] == got[i-2] {
			t.Fatalf("%s picked three times in a row at %d", got[i], i)
		}
	}
}

// TestSmoothWRR3to2 shows the difference from uWSGI 2.0, which sends 3:2
// as 1:1.
func TestSmoothWRR3to2(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoWRR, 3, 2)
	if c := count(picks(p, 500, clk.Nano(), nil)); c[addr(0)] != 300 || c[addr(1)] != 200 {
		t.Fatalf("500 picks of 3:2 gave %v; want 300/200 (uWSGI 2.0 would give 250/250)", c)
	}
}

// TestSmoothWRRSequence pins exact sequences; {5,1,1} → a a b a c a a is
// the example from nginx's smooth-WRR commit.
func TestSmoothWRRSequence(t *testing.T) {
	cases := []struct {
		weights []uint64
		want    string
	}{
		{[]uint64{5, 1, 1}, "aabacaa"},
		{[]uint64{2, 1}, "aba"},
		{[]uint64{3, 2}, "ababa"},
		{[]uint64{1, 1, 1}, "abc"},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.weights), func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			p := poolWith(t, tb, "k", AlgoWRR, tc.weights...)
			var sb strings.Builder
			for _, a := range picks(p, 2*len(tc.want), clk.Nano(), nil) {
				for i := range tc.weights {
					if a == addr(i) {
						sb.WriteByte(byte('a' + i))
					}
				}
			}
			if want := tc.want + tc.want; sb.String() != want {
				t.Errorf("weights %v picked %s; want %s", tc.weights, sb.String(), want)
			}
		})
	}
}

func TestLRCPicksLeastInflight(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoLRC, 1, 5, 1) // lrc ignores weight
	now := clk.Nano()
	n0, n1, n2 := p.Node(addr(0)), p.Node(addr(1)), p.Node(addr(2))
	steps := []struct {
		name string
		do   func() *Node
		want *Node
	}{
		{"all idle: scan starts at n0", func() *Node { return p.Pick(now, nil) }, n0},
		{"n0 busy", func() *Node { return p.Pick(now, nil) }, n1},
		{"n0, n1 busy", func() *Node { return p.Pick(now, nil) }, n2},
		{"all at 1: scan rotated back to n0", func() *Node { return p.Pick(now, nil) }, n0},
		{"n1 done", func() *Node { n1.Done(); return p.Pick(now, nil) }, n1},
		{"n2 done", func() *Node { n2.Done(); return p.Pick(now, nil) }, n2},
	}
	for _, s := range steps {
		if got := s.do(); got != s.want {
			t.Fatalf("%s: picked %s; want %s", s.name, got.Address, s.want.Address)
		}
	}
	want := map[*Node]int64{n0: 2, n1: 1, n2: 1}
	for n, in := range want {
		if n.Inflight() != in {
			t.Errorf("%s inflight %d; want %d", n.Address, n.Inflight(), in)
		}
	}
	for n, in := range want {
		for range in {
			n.Done()
		}
		if n.Inflight() != 0 {
			t.Errorf("%s inflight %d after Done; want 0", n.Address, n.Inflight())
		}
	}
	if got := n0.Info().Requests; got != 2 {
		t.Errorf("n0 requests %d; want 2", got)
	}
}

func TestPickSkipsTried(t *testing.T) {
	for _, algo := range []Algo{AlgoWRR, AlgoLRC} {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			p := poolWith(t, tb, "k", algo, 3, 1, 1)
			nodes := p.Nodes()
			cases := []struct {
				name  string
				tried []*Node
			}{
				{"none", nil},
				{"first", nodes[:1]},
				{"first two", nodes[:2]},
				{"last", nodes[2:]},
				{"other pool's node", []*Node{{Address: addr(0)}}},
			}
			for _, tc := range cases {
				for _, a := range picks(p, 50, clk.Nano(), tc.tried) {
					if a == "<nil>" || slices.ContainsFunc(tc.tried, func(n *Node) bool { return p.Node(a) == n }) {
						t.Fatalf("tried %s: picked %s", tc.name, a)
					}
				}
			}
			if n := p.Pick(clk.Nano(), nodes); n != nil {
				t.Fatalf("every node tried: picked %s; want nil", n.Address)
			}
			for _, n := range nodes {
				if n.Inflight() != 0 {
					t.Fatalf("%s inflight %d; a nil Pick must not count", n.Address, n.Inflight())
				}
			}
		})
	}
}

// TestFailedNodeBackoff: a failed node is skipped until its backoff ends,
// then picked again; ReportSuccess makes it active at once.
func TestFailedNodeBackoff(t *testing.T) {
	for _, algo := range []Algo{AlgoWRR, AlgoLRC} {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			p := poolWith(t, tb, "k", algo, 1, 1)
			bad, good := p.Node(addr(0)), p.Node(addr(1))

			bad.ReportFailure(tb.Now())
			if bad.State() != StateFailed || bad.Info().Failures != 1 {
				t.Fatalf("after ReportFailure: state %s failures %d", bad.State(), bad.Info().Failures)
			}
			clk.Add(minBackoff - time.Nanosecond)
			if c := count(picks(p, 20, clk.Nano(), nil)); c[good.Address] != 20 {
				t.Fatalf("during backoff picks %v; want only %s", c, good.Address)
			}
			clk.Add(time.Nanosecond)
			if c := count(picks(p, 20, clk.Nano(), nil)); c[bad.Address] == 0 {
				t.Fatalf("after backoff picks %v; want %s again", c, bad.Address)
			}
			if bad.State() != StateFailed {
				t.Fatalf("state %s; a probe does not change the state before ReportSuccess", bad.State())
			}
			bad.ReportSuccess()
			if bad.State() != StateActive {
				t.Fatalf("after ReportSuccess state %s; want active", bad.State())
			}
			// The streak was reset: the next failure backs off minBackoff again.
			bad.ReportFailure(tb.Now())
			clk.Add(minBackoff)
			if c := count(picks(p, 20, clk.Nano(), nil)); c[bad.Address] == 0 {
				t.Fatalf("ReportSuccess did not reset the failure streak: %v", c)
			}
		})
	}
}

// TestBackoffGrows: each consecutive failure doubles the backoff from 500ms
// up to 30s.
func TestBackoffGrows(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoWRR, 1)
	n := p.Node(addr(0))
	want := []time.Duration{
		500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second,
		16 * time.Second, 30 * time.Second, 30 * time.Second,
	}
	for i := range 40 {
		backoff := maxBackoff
		if i < len(want) {
			backoff = want[i]
		}
		n.ReportFailure(tb.Now())
		if got := n.Info().Failures; got != uint64(i+1) {
			t.Fatalf("failures %d; want %d", got, i+1)
		}
		start := clk.Nano()
		if got := p.Pick(start+int64(backoff)-1, nil); got != nil {
			t.Fatalf("failure %d: picked at backoff-1ns; want backoff %v", i+1, backoff)
		}
		got := p.Pick(start+int64(backoff), nil)
		if got != n {
			t.Fatalf("failure %d: not picked after backoff %v", i+1, backoff)
		}
		got.Done()
		clk.Add(backoff)
	}
}

// TestPickSkipsUnusableStates: only active nodes, and failed nodes past
// their backoff, are picked.
func TestPickSkipsUnusableStates(t *testing.T) {
	for _, st := range []State{StateDraining, StateDrained, StateBackup} {
		t.Run(st.String(), func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			p := poolWith(t, tb, "k", AlgoWRR, 1, 1)
			p.Node(addr(0)).state.Store(uint32(st))
			if c := count(picks(p, 10, clk.Nano(), nil)); c[addr(1)] != 10 {
				t.Fatalf("picks %v; want only the active node", c)
			}
			// A failure does not move a node out of a non-active state.
			p.Node(addr(0)).ReportFailure(tb.Now())
			if got := p.Node(addr(0)).State(); got != st {
				t.Fatalf("ReportFailure changed %s to %s", st, got)
			}
			p.Node(addr(1)).state.Store(uint32(st))
			if n := p.Pick(clk.Nano(), nil); n != nil {
				t.Fatalf("no usable node, picked %s", n.Address)
			}
		})
	}
}

func TestPickEmptyPool(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoWRR, 1)
	tb.RemoveNode("k", addr(0))
	if p.HasNodes() {
		t.Fatal("HasNodes after removing the only node")
	}
	if n := p.Pick(clk.Nano(), nil); n != nil {
		t.Fatalf("empty pool picked %s", n.Address)
	}
}

func TestParseAlgo(t *testing.T) {
	cases := []struct {
		in   string
		want Algo
		ok   bool
	}{
		{"wrr", AlgoWRR, true},
		{"lrc", AlgoLRC, true},
		{"", "", false},
		{"WRR", "", false},
		{"wlrc", AlgoWLRC, true},
		{"iphash", AlgoIPHash, true},
		{"p2c", AlgoP2C, true},
		{"hash", AlgoHash, true},
		{"sed", AlgoSED, true},
		{"SED", "", false},
		{"P2C", "", false},
		{"rr", "", false},
	}
	for _, tc := range cases {
		got, err := ParseAlgo(tc.in)
		if got != tc.want || (err == nil) != tc.ok {
			t.Errorf("ParseAlgo(%q) = %q, %v; want %q, ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

// TestSlowStartRamp: a joining node's share grows with its age over
// Config.SlowStart, also for the largest weight and a long ramp (where the
// integer product weight×age overflowed int64).
func TestSlowStartRamp(t *testing.T) {
	cases := []struct {
		name   string
		weight uint64
		ramp   time.Duration
	}{
		{"weight 1, 1m", 1, time.Minute},
		{"weight 100, 10m", 100, 10 * time.Minute},
		{"max weight, 1h", 1 << 20, time.Hour},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, clk := newTable(t, Config{SlowStart: tc.ramp})
			announce(t, tb, "k", addr(0), tc.weight)
			announce(t, tb, "k", addr(1), tc.weight)
			clk.Add(tc.ramp) // both fully ramped
			announce(t, tb, "k", addr(2), tc.weight)
			p := tb.Pool("k")
			for _, step := range []struct {
				age        time.Duration
				share, tol float64
			}{
				{tc.ramp / 2, 0.5 / 2.5, 0.02}, // half weight against two full ones
				{tc.ramp / 2, 1.0 / 3, 0.02},   // ramp over: equal shares
			} {
				clk.Add(step.age)
				c := count(picks(p, 3000, clk.Nano(), nil))
				if got := float64(c[addr(2)]) / 3000; got < step.share-step.tol || got > step.share+step.tol {
					t.Fatalf("after %v the new node got %.3f of picks; want %.3f (%v)", step.age, got, step.share, c)
				}
			}
		})
	}
}
