package balancer

import (
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is an injectable clock.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}
func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func newTable(t testing.TB, cfg Config) (*Table, *fakeClock) {
	t.Helper()
	c := newClock()
	cfg.Now = c.Now
	tb, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return tb, c
}

func announce(t testing.TB, tb *Table, key, addr string, weight uint64) {
	t.Helper()
	if _, err := tb.Announce(&Announce{Key: []byte(key), Address: []byte(addr), Weight: weight}); err != nil {
		t.Fatalf("Announce(%s, %s): %v", key, addr, err)
	}
}

// picks returns the addresses chosen by n sequential picks.
func picks(tb *Table, key string, n int, now int64) []string {
	p := tb.Pool(key)
	out := make([]string, 0, n)
	for i := 0; i < n; i++ {
		node := p.Pick(now, nil)
		if node == nil {
			out = append(out, "<nil>")
			continue
		}
		out = append(out, node.Address)
		node.Done()
	}
	return out
}

func TestSmoothWRRExactRatios(t *testing.T) {
	cases := []struct {
		name    string
		weights []uint64
	}{
		{"2:1", []uint64{2, 1}},
		{"3:1", []uint64{3, 1}},
		{"3:2 (uWSGI gives 1:1 here)", []uint64{3, 2}},
		{"0 is 1", []uint64{0, 1}},
		{"five mixed", []uint64{5, 1, 3, 2, 7}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			var sum uint64
			for i, w := range tc.weights {
				announce(t, tb, "k", fmt.Sprintf("10.0.0.%d:1", i+1), w)
				sum += max(w, 1)
			}
			windows := 5
			got := picks(tb, "k", int(sum)*windows, clk.Now().UnixNano())
			for win := 0; win < windows; win++ {
				counts := map[string]uint64{}
				for _, a := range got[win*int(sum) : (win+1)*int(sum)] {
					counts[a]++
				}
				for i, w := range tc.weights {
					a := fmt.Sprintf("10.0.0.%d:1", i+1)
					if counts[a] != max(w, 1) {
						t.Fatalf("window %d: %s picked %d times; want %d (%v)", win, a, counts[a], max(w, 1), counts)
					}
				}
			}
		})
	}
}

func TestSmoothWRRInterleaves(t *testing.T) {
	tb, clk := newTable(t, Config{})
	announce(t, tb, "k", "10.0.0.1:1", 2)
	announce(t, tb, "k", "10.0.0.2:1", 1)
	got := picks(tb, "k", 300, clk.Now().UnixNano())
	for i := 2; i < len(got); i++ {
		if got[i] == got[i-1] && got[i] == got[i-2] {
			t.Fatalf("same node three times in a row at %d: %v", i, got[:i+1])
		}
	}
}

func TestLRC(t *testing.T) {
	tb, clk := newTable(t, Config{})
	tb.Announce(&Announce{Key: []byte("k"), Address: []byte("10.0.0.1:1"), Algo: []byte("lrc")})
	announce(t, tb, "k", "10.0.0.2:1", 1)
	p := tb.Pool("k")
	if p.Algo() != AlgoLRC {
		t.Fatalf("algo %s; want lrc", p.Algo())
	}
	now := clk.Now().UnixNano()
	a := p.Pick(now, nil)
	b := p.Pick(now, nil)
	if a == b {
		t.Fatalf("two concurrent picks chose the same node %s", a.Address)
	}
	b.Done()
	if c := p.Pick(now, nil); c != b {
		t.Fatalf("after %s finished, lrc picked %s", b.Address, c.Address)
	}
}

func TestTriedAndFailureBackoff(t *testing.T) {
	tb, clk := newTable(t, Config{})
	announce(t, tb, "k", "10.0.0.1:1", 1)
	announce(t, tb, "k", "10.0.0.2:1", 1)
	p := tb.Pool("k")
	n1 := p.Node("10.0.0.1:1")
	n2 := p.Node("10.0.0.2:1")
	if got := p.Pick(clk.Now().UnixNano(), []*Node{n1, n2}); got != nil {
		t.Fatalf("all tried: picked %s", got.Address)
	}
	n1.ReportFailure(clk.Now())
	if n1.State() != StateFailed {
		t.Fatalf("state %s; want failed", n1.State())
	}
	for i := 0; i < 10; i++ {
		if got := p.Pick(clk.Now().UnixNano(), nil); got != n2 {
			t.Fatalf("failed node picked during backoff")
		} else {
			got.Done()
		}
	}
	clk.Add(minBackoff)
	seen := false
	for i := 0; i < 4; i++ {
		got := p.Pick(clk.Now().UnixNano(), nil)
		seen = seen || got == n1
		got.Done()
	}
	if !seen {
		t.Fatal("failed node not probed after its backoff")
	}
	// Consecutive failures grow the window.
	n1.ReportFailure(clk.Now())
	clk.Add(minBackoff)
	if n1.usable(clk.Now().UnixNano()) {
		t.Fatal("second failure did not lengthen the backoff")
	}
	n1.ReportSuccess()
	if n1.State() != StateActive || !n1.usable(clk.Now().UnixNano()) {
		t.Fatalf("ReportSuccess: state %s", n1.State())
	}
	// A fresh announce does not revive a failing node.
	n1.ReportFailure(clk.Now())
	announce(t, tb, "k", "10.0.0.1:1", 1)
	if n1.State() != StateFailed {
		t.Fatal("announce revived a failed node")
	}
}

func TestLookupOrder(t *testing.T) {
	tb, _ := newTable(t, Config{FallbackKey: "fallback"})
	for _, k := range []string{"example.com", "Example.COM:8080", "*.example.com", "*.b.example.com", ".dot.org", "fallback", "[::1]:8080"} {
		announce(t, tb, k, "10.0.0.1:1", 1)
	}
	cases := []struct{ host, want string }{
		{"example.com", "example.com"},
		{"Example.COM:8080", "Example.COM:8080"},
		{"example.com:8080", "Example.COM:8080"}, // case-insensitive before port stripping
		{"EXAMPLE.com", "example.com"},
		{"example.com:9999", "example.com"},
		{"a.example.com", "*.example.com"},
		{"x.a.b.example.com", "*.b.example.com"},
		{"b.example.com", "*.example.com"},
		{"a.dot.org", ".dot.org"},
		{"A.Dot.Org:81", ".dot.org"},
		{"dot.org", "fallback"},
		{"[::1]:8080", "[::1]:8080"},
		{"unknown.net", "fallback"},
		{strings.Repeat("a", 300), "fallback"},
		{"", "fallback"},
	}
	for _, tc := range cases {
		p := tb.Lookup([]byte(tc.host))
		if p == nil || p.Key != tc.want {
			got := "<nil>"
			if p != nil {
				got = p.Key
			}
			t.Errorf("Lookup(%.40q) = %s; want %s", tc.host, got, tc.want)
		}
	}
	tb2, _ := newTable(t, Config{})
	announce(t, tb2, "*.example.com", "10.0.0.1:1", 1)
	if p := tb2.Lookup([]byte("example.com")); p != nil {
		t.Errorf("example.com matched wildcard %s", p.Key)
	}
}

func TestAnnounceRefreshExpiryRemove(t *testing.T) {
	tb, clk := newTable(t, Config{})
	if _, err := tb.Announce(&Announce{Key: []byte(strings.Repeat("k", 256)), Address: []byte("10.0.0.1:1")}); err != ErrKeyTooLong {
		t.Fatalf("long key: %v", err)
	}
	res, _ := tb.Announce(&Announce{Key: []byte("k"), Address: []byte("10.0.0.1:1"), Modifier1: 5, Weight: 2})
	if res != CreatedPool {
		t.Fatalf("first announce: %v", res)
	}
	clk.Add(10 * time.Second)
	res, _ = tb.Announce(&Announce{Key: []byte("k"), Address: []byte("10.0.0.1:1"), Modifier1: 9, Weight: 4})
	n := tb.Pool("k").Node("10.0.0.1:1")
	if res != Refreshed || len(tb.Pool("k").Nodes()) != 1 || n.Weight() != 4 || n.Modifier1 != 5 {
		t.Fatalf("refresh: res %v nodes %d weight %d m1 %d", res, len(tb.Pool("k").Nodes()), n.Weight(), n.Modifier1)
	}
	tb.AddStatic("k", "10.0.0.2:1", 1)
	clk.Add(29 * time.Second)
	announce(t, tb, "other", "10.0.0.3:1", 1)
	if removed := tb.Expire(20 * time.Second); removed != 1 {
		t.Fatalf("Expire removed %d; want 1 (the node silent for 29s)", removed)
	}
	if tb.Pool("k").Node("10.0.0.1:1") != nil || tb.Pool("k").Node("10.0.0.2:1") == nil || tb.Pool("other") == nil {
		t.Fatal("wrong node expired")
	}
	clk.Add(21 * time.Second)
	tb.Expire(20 * time.Second)
	if tb.Pool("other") != nil {
		t.Fatal("emptied pool not deleted")
	}
	clk.Add(time.Hour)
	tb.Expire(30 * time.Second)
	if tb.Pool("k") == nil {
		t.Fatal("static node expired")
	}
	if !tb.RemoveNode("k", "10.0.0.2:1") || tb.Pool("k") != nil || tb.Len() != 0 {
		t.Fatal("RemoveNode of the last node must delete the pool")
	}
	if tb.RemoveNode("k", "10.0.0.2:1") {
		t.Fatal("RemoveNode of a gone node reported true")
	}
}

func TestCaseFoldedKeysAndWildcardSpellings(t *testing.T) {
	tb, _ := newTable(t, Config{})
	announce(t, tb, "Site.test", "10.0.0.1:1", 1)
	announce(t, tb, "site.TEST", "10.0.0.2:1", 1)
	for _, k := range []string{"Site.test", "site.TEST"} {
		if p := tb.Lookup([]byte(k)); p == nil || p.Key != k {
			t.Fatalf("exact key %s not reachable", k)
		}
	}
	tb.RemoveNode("Site.test", "10.0.0.1:1")
	if p := tb.Lookup([]byte("SITE.test")); p == nil || p.Key != "site.TEST" {
		t.Fatal("remaining key not reachable case-insensitively")
	}
	announce(t, tb, "*.w.test", "10.0.0.1:1", 1)
	announce(t, tb, ".w.test", "10.0.0.2:1", 1)
	tb.RemoveNode("*.w.test", "10.0.0.1:1")
	if p := tb.Lookup([]byte("a.w.test")); p == nil || p.Key != ".w.test" {
		t.Fatal("wildcard routing lost when one spelling was removed")
	}
}

func TestParseEndpoint(t *testing.T) {
	cases := []struct {
		in   string
		net  Network
		fail bool
	}{
		{"127.0.0.1:3031", NetTCP, false},
		{"[::1]:3031", NetTCP, false},
		{"/tmp/a.sock", NetUnix, false},
		{"@abstract", NetUnix, false},
		{"relative.sock", NetUnix, false},
		{"localhost:3031", 0, true},
		{":3031", 0, true},
		{"127.0.0.1:0", 0, true},
		{"http://127.0.0.1:8000", 0, true},
		{"", 0, true},
	}
	for _, tc := range cases {
		ep, err := ParseEndpoint(tc.in)
		if (err != nil) != tc.fail || (!tc.fail && ep.Network != tc.net) {
			t.Errorf("ParseEndpoint(%q) = %+v, %v", tc.in, ep, err)
		}
	}
}

func TestConcurrentPickAndChurn(t *testing.T) {
	tb, clk := newTable(t, Config{})
	for i := 0; i < 8; i++ {
		announce(t, tb, "k", fmt.Sprintf("10.0.0.%d:1", i+1), uint64(i+1))
	}
	var held []*Node
	var mu sync.Mutex
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := 0; g < 4; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if p := tb.Lookup([]byte("k")); p != nil {
					if n := p.Pick(clk.Now().UnixNano(), nil); n != nil {
						mu.Lock()
						held = append(held, n)
						mu.Unlock()
						n.Done()
					}
				}
			}
		}()
	}
	rng := rand.New(rand.NewPCG(1, 1))
	for i := 0; i < 2000; i++ {
		a := fmt.Sprintf("10.0.0.%d:1", rng.IntN(12)+1)
		if rng.IntN(2) == 0 {
			announce(t, tb, "k", a, uint64(rng.IntN(5)))
		} else {
			tb.RemoveNode("k", a)
		}
		if i%100 == 0 {
			clk.Add(time.Second)
			tb.Expire(time.Hour)
		}
	}
	close(stop)
	wg.Wait()
	for _, n := range held {
		if n.Inflight() != 0 {
			t.Fatalf("node %s inflight %d after all Done", n.Address, n.Inflight())
		}
	}
}

func FuzzLookup(f *testing.F) {
	tb, _ := newTable(f, Config{FallbackKey: "fb"})
	for _, k := range []string{"example.com", "*.example.com", ".x.org", "fb", "A.b:80"} {
		announce(f, tb, k, "10.0.0.1:1", 1)
	}
	f.Add([]byte("a.example.com:8080"))
	f.Add([]byte("[::1]:80"))
	f.Add([]byte(":::::"))
	f.Fuzz(func(t *testing.T, host []byte) {
		if tb.Lookup(host) == nil {
			t.Fatal("fallback pool must catch every miss")
		}
	})
}
