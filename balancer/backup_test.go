package balancer

import (
	"testing"
	"time"
)

// backupPool creates pool "k" with one weight-1 node per level, addresses
// addr(0..).
func backupPool(t *testing.T, tb *Table, algo Algo, levels ...uint64) *Pool {
	t.Helper()
	for i, l := range levels {
		if _, err := tb.Announce(&Announce{Key: []byte("k"), Address: []byte(addr(i)), Algo: []byte(algo), Backup: l}); err != nil {
			t.Fatal(err)
		}
	}
	return tb.Pool("k")
}

// served returns the set of addresses 200 picks reach, half of them keyed.
func served(p *Pool, now int64, tried []*Node) map[string]int {
	c := map[string]int{}
	for i := range 100 {
		c[pickKey(p, now, tried, nil)]++
		c[pickKey(p, now, tried, ipKey(i))]++
	}
	return c
}

func wantServed(t *testing.T, step string, got map[string]int, want ...string) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: picks went to %v; want only %v", step, got, want)
	}
	for _, a := range want {
		if got[a] == 0 {
			t.Fatalf("%s: picks went to %v; want only %v", step, got, want)
		}
	}
}

func wantStates(t *testing.T, step string, p *Pool, want ...State) {
	t.Helper()
	for i, s := range want {
		n := p.Node(addr(i))
		if got := n.State(); got != s {
			t.Fatalf("%s: node %d (level %d) state %s; want %s", step, i, n.Backup(), got, s)
		}
		if got := n.Info().State; got != s {
			t.Fatalf("%s: node %d Info().State %s; want %s", step, i, got, s)
		}
	}
}

// TestBackupTakeoverAndGiveBack walks every algorithm through primaries
// failing and draining, a backup level taking over, the next level taking
// over from it, and the primaries taking everything back.
func TestBackupTakeoverAndGiveBack(t *testing.T) {
	for _, algo := range allAlgos {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{Rand: seqRand(9)})
			p := backupPool(t, tb, algo, 0, 0, 1, 2)
			p0, p1, b1, b2 := p.Nodes()[0], p.Nodes()[1], p.Nodes()[2], p.Nodes()[3]
			const act, bak, fail, drn = StateActive, StateBackup, StateFailed, StateDraining

			wantServed(t, "all up", served(p, clk.Nano(), nil), p0.Address, p1.Address)
			wantStates(t, "all up", p, act, act, bak, bak)
			if i := b1.Info(); i.Backup != 1 {
				t.Fatalf("Info().Backup %d; want 1", i.Backup)
			}

			wantServed(t, "retry after both primaries", served(p, clk.Nano(), []*Node{p0, p1}), b1.Address)
			wantServed(t, "retry after all but the last", served(p, clk.Nano(), []*Node{p0, p1, b1}), b2.Address)
			wantStates(t, "tried does not change states", p, act, act, bak, bak)

			p0.ReportFailure(tb.Now())
			if _, err := tb.Drain("k", p1.Address, time.Minute, false); err != nil {
				t.Fatalf("draining the last usable primary with a backup standing by: %v", err)
			}
			wantServed(t, "primaries down", served(p, clk.Nano(), nil), b1.Address)
			wantStates(t, "primaries down", p, fail, drn, act, bak)

			b1.ReportFailure(tb.Now())
			wantServed(t, "level 1 down", served(p, clk.Nano(), nil), b2.Address)
			wantStates(t, "level 1 down", p, fail, drn, fail, act)

			clk.Add(minBackoff) // p0 (and b1) may be probed again
			wantServed(t, "primary probed", served(p, clk.Nano(), nil), p0.Address)
			wantStates(t, "primary probed", p, fail, drn, fail, bak)

			p0.ReportSuccess()
			b1.ReportSuccess()
			if _, err := tb.Undrain("k", p1.Address); err != nil {
				t.Fatal(err)
			}
			wantServed(t, "give-back", served(p, clk.Nano(), nil), p0.Address, p1.Address)
			wantStates(t, "give-back", p, act, act, bak, bak)

			tb.RemoveNode("k", p0.Address)
			tb.RemoveNode("k", p1.Address)
			if s := p0.State(); s != act {
				t.Fatalf("a removed node reports %s; want its own state", s)
			}
			wantServed(t, "primaries removed", served(p, clk.Nano(), nil), b1.Address)
		})
	}
}

// TestBackupLevelRefresh: a refresh carries the level, and a level change
// is a change (OnChange fires) that takes effect on the next pick.
func TestBackupLevelRefresh(t *testing.T) {
	var changes []string
	tb, clk := newTable(t, Config{OnChange: func(k string) { changes = append(changes, k) }})
	p := backupPool(t, tb, AlgoWRR, 0, 3)
	changes = nil
	announce(t, tb, "k", addr(1), 1) // refresh without backup=: now a primary
	if n := p.Node(addr(1)); n.Backup() != 0 || n.State() != StateActive || len(changes) != 1 {
		t.Fatalf("after a refresh without backup: level %d state %s changes %v", n.Backup(), n.State(), changes)
	}
	wantServed(t, "both primaries", served(p, clk.Nano(), nil), addr(0), addr(1))
	announce(t, tb, "k", addr(1), 1)
	if len(changes) != 1 {
		t.Fatalf("a refresh that changes nothing fired OnChange: %v", changes)
	}
}

func TestAddStaticBackup(t *testing.T) {
	tb, clk := newTable(t, Config{})
	if err := tb.AddStatic("k", addr(0), 1); err != nil {
		t.Fatal(err)
	}
	if err := tb.AddStaticBackup("k", addr(1), 1, 1); err != nil {
		t.Fatal(err)
	}
	p := tb.Pool("k")
	wantStates(t, "static", p, StateActive, StateBackup)
	wantServed(t, "static", served(p, clk.Nano(), nil), addr(0))
	tb.Drain("k", addr(0), time.Minute, false)
	wantServed(t, "static primary drained", served(p, clk.Nano(), nil), addr(1))
	if err := tb.AddStaticBackup("k", "nohost:1", 1, 1); err == nil {
		t.Fatal("AddStaticBackup accepted a host name")
	}
}
