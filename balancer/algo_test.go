package balancer

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"sync/atomic"
	"testing"
	"time"
)

// allAlgos is every algorithm, in ParseAlgo's order.
var allAlgos = []Algo{AlgoWRR, AlgoLRC, AlgoWLRC, AlgoIPHash, AlgoP2C, AlgoHash, AlgoSED}

// seqRand is a deterministic Config.Rand (splitmix64 over a counter), safe
// for concurrent use.
func seqRand(seed uint64) func() uint64 {
	var s atomic.Uint64
	s.Store(seed)
	return func() uint64 { return fmix64(s.Add(0x9e3779b97f4a7c15)) }
}

// ipKey is the 4-byte key of client 10.x.y.z number i.
func ipKey(i int) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], 0x0a000000+uint32(i))
	return b[:]
}

// pickKey is PickKey+Done returning the address, or "<nil>".
func pickKey(p *Pool, now int64, tried []*Node, key []byte) string {
	n := p.PickKey(now, tried, key)
	if n == nil {
		return "<nil>"
	}
	n.Done()
	return n.Address
}

// hold sets a node's in-flight count, as requests held elsewhere would.
func hold(n *Node, in int64) { n.inflight.Store(in) }

func TestLRCTieRotation(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoLRC, 1, 1, 1, 1)
	if c := count(picks(p, 400, clk.Nano(), nil)); len(c) != 4 || c[addr(0)] != 100 || c[addr(1)] != 100 || c[addr(2)] != 100 || c[addr(3)] != 100 {
		t.Fatalf("400 picks on an idle 4-node pool gave %v; want 100 each (ties rotate)", c)
	}
	// One busy node: the three idle ones share, the busy one gets nothing.
	hold(p.Node(addr(2)), 1)
	c := count(picks(p, 300, clk.Nano(), nil))
	if c[addr(2)] != 0 || c[addr(0)] < 50 || c[addr(1)] < 50 || c[addr(3)] < 50 {
		t.Fatalf("picks with node 2 busy: %v; want nothing on it and the rest shared", c)
	}
}

func TestLRCDistribution(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoLRC, 1, 9, 1, 1) // lrc ignores weight
	for i, in := range []int64{5, 2, 7, 2} {
		hold(p.Node(addr(i)), in)
	}
	// Held picks fill the least-loaded nodes first, then level out.
	var got []string
	for range 4 {
		got = append(got, p.Pick(clk.Nano(), nil).Address)
	}
	if c := count(got); c[addr(1)] != 2 || c[addr(3)] != 2 {
		t.Fatalf("4 held picks at in-flight 5,2,7,2 went to %v; want two each on nodes 1 and 3", c)
	}
	for range 20 - 4 {
		p.Pick(clk.Nano(), nil)
	}
	// 36 in flight over 4 nodes: level at 9 each.
	for i, want := range []int64{9, 9, 9, 9} {
		if in := p.Node(addr(i)).Inflight(); in < want-1 || in > want+1 {
			t.Errorf("node %d in-flight %d; want %d±1", i, in, want)
		}
	}
}

func TestWLRC(t *testing.T) {
	t.Run("ratio", func(t *testing.T) {
		tb, clk := newTable(t, Config{})
		p := poolWith(t, tb, "k", AlgoWLRC, 1, 2, 4)
		for i, in := range []int64{1, 3, 5} { // ratios 1, 1.5, 1.25
			hold(p.Node(addr(i)), in)
		}
		if got := pickKey(p, clk.Nano(), nil, nil); got != addr(0) {
			t.Fatalf("in-flight 1/1, 3/2, 5/4: picked %s; want node 0", got)
		}
		hold(p.Node(addr(0)), 2) // ratios 2, 1.5, 1.25
		if got := pickKey(p, clk.Nano(), nil, nil); got != addr(2) {
			t.Fatalf("in-flight 2/1, 3/2, 5/4: picked %s; want node 2", got)
		}
	})
	t.Run("held load splits by weight", func(t *testing.T) {
		tb, clk := newTable(t, Config{})
		p := poolWith(t, tb, "k", AlgoWLRC, 1, 2, 3)
		for range 600 {
			p.Pick(clk.Nano(), nil)
		}
		for i, want := range []int64{100, 200, 300} {
			if in := p.Node(addr(i)).Inflight(); in != want {
				t.Errorf("node %d (weight %d) holds %d; want %d", i, i+1, in, want)
			}
		}
	})
	t.Run("idle pool splits ties by weight", func(t *testing.T) {
		tb, clk := newTable(t, Config{})
		p := poolWith(t, tb, "k", AlgoWLRC, 3, 1)
		if c := count(picks(p, 400, clk.Nano(), nil)); c[addr(0)] != 300 || c[addr(1)] != 100 {
			t.Fatalf("400 sequential picks of 3:1 gave %v; want 300/100", c)
		}
	})
	t.Run("no overflow at maximum weight", func(t *testing.T) {
		tb, clk := newTable(t, Config{})
		p := poolWith(t, tb, "k", AlgoWLRC, 1<<20, 1)
		hold(p.Node(addr(0)), 1<<30) // ratio 1024
		hold(p.Node(addr(1)), 1000)  // ratio 1000
		if got := pickKey(p, clk.Nano(), nil, nil); got != addr(1) {
			t.Fatalf("picked %s; want node 1", got)
		}
	})
}

// TestHashStable pins hashBytes: it must not change between versions, or an
// upgrade would move every sticky client.
func TestHashStable(t *testing.T) {
	cases := []struct {
		in   string
		want uint64
	}{
		{"", 0},
		{"\x0a\x00\x00\x01", 0x896cc16840a5b3e4},
		{"10.0.0.1:3031", 0xd2f48b969b3916d5},
		{"session=0123456789abcdef", 0x2a8e28ee423bc7f8},
	}
	for _, tc := range cases {
		if got := hashBytes([]byte(tc.in)); got != tc.want {
			t.Errorf("hashBytes(%q) = %#x; want %#x", tc.in, got, tc.want)
		}
	}
}

// keyMap returns the node address every key goes to.
func keyMap(p *Pool, now int64, keys int) map[int]string {
	m := make(map[int]string, keys)
	for i := range keys {
		m[i] = pickKey(p, now, nil, ipKey(i))
	}
	return m
}

func TestIPHash(t *testing.T) {
	const keys = 20000
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoIPHash, 1, 1, 2, 1)
	before := keyMap(p, clk.Nano(), keys)

	t.Run("sticky", func(t *testing.T) {
		for range 3 {
			for i, a := range keyMap(p, clk.Nano(), keys) {
				if before[i] != a {
					t.Fatalf("key %d moved from %s to %s with nothing changed", i, before[i], a)
				}
			}
		}
	})
	t.Run("shares follow weights", func(t *testing.T) {
		c := map[string]int{}
		for _, a := range before {
			c[a]++
		}
		for i, share := range []float64{0.2, 0.2, 0.4, 0.2} {
			if got := float64(c[addr(i)]) / keys; math.Abs(got-share) > 0.02 {
				t.Errorf("node %d has %.3f of the keys; want %.2f (%v)", i, got, share, c)
			}
		}
	})
	t.Run("removal moves only the removed node's keys, and back", func(t *testing.T) {
		tb.RemoveNode("k", addr(2))
		after := keyMap(p, clk.Nano(), keys)
		moved := 0
		for i, a := range after {
			switch {
			case before[i] == addr(2):
				moved++
				if a == addr(2) {
					t.Fatalf("key %d still on the removed node", i)
				}
			case a != before[i]:
				t.Fatalf("key %d moved from %s to %s; only node 2's keys may move", i, before[i], a)
			}
		}
		if moved < keys/4 {
			t.Fatalf("only %d keys moved; node 2 held ~40%%", moved)
		}
		announce(t, tb, "k", addr(2), 2)
		for i, a := range keyMap(p, clk.Nano(), keys) {
			if a != before[i] {
				t.Fatalf("after the node came back key %d is on %s; want %s again", i, a, before[i])
			}
		}
	})
	t.Run("a failed node's keys move and return", func(t *testing.T) {
		bad := p.Node(addr(0))
		bad.ReportFailure(tb.Now())
		for i, a := range keyMap(p, clk.Nano(), keys) {
			if (before[i] == addr(0)) == (a == before[i]) {
				t.Fatalf("node 0 failed: key %d went %s → %s", i, before[i], a)
			}
		}
		bad.ReportSuccess()
		for i, a := range keyMap(p, clk.Nano(), keys) {
			if a != before[i] {
				t.Fatalf("node 0 recovered: key %d on %s; want %s", i, a, before[i])
			}
		}
	})
	t.Run("tried moves to the key's next node", func(t *testing.T) {
		for i := range 200 {
			first := p.PickKey(clk.Nano(), nil, ipKey(i))
			first.Done()
			second := p.PickKey(clk.Nano(), []*Node{first}, ipKey(i))
			second.Done()
			if second == first || second == nil {
				t.Fatalf("key %d: retry picked %v after %s", i, second, first.Address)
			}
			if again := pickKey(p, clk.Nano(), []*Node{first}, ipKey(i)); again != second.Address {
				t.Fatalf("key %d: retry not deterministic: %s then %s", i, second.Address, again)
			}
		}
	})
	t.Run("no key falls back to wrr", func(t *testing.T) {
		if c := count(picks(p, 500, clk.Nano(), nil)); c[addr(2)] != 200 || c[addr(0)] != 100 {
			t.Fatalf("500 keyless picks of 1:1:2:1 gave %v; want the wrr split", c)
		}
	})
}

func TestP2C(t *testing.T) {
	t.Run("deterministic under an injected source", func(t *testing.T) {
		run := func() []string {
			tb, clk := newTable(t, Config{Rand: seqRand(7)})
			p := poolWith(t, tb, "k", AlgoP2C, 1, 1, 1, 1, 1)
			var got []string
			for i := range 200 {
				n := p.Pick(clk.Nano(), nil)
				got = append(got, n.Address)
				if i%3 == 0 {
					n.Done()
				}
			}
			return got
		}
		if a, b := run(), run(); !slices.Equal(a, b) {
			t.Fatal("two runs with the same Rand picked differently")
		}
	})
	t.Run("the busiest node is never picked", func(t *testing.T) {
		tb, clk := newTable(t, Config{Rand: seqRand(1)})
		p := poolWith(t, tb, "k", AlgoP2C, 1, 1, 1)
		for i, in := range []int64{5, 0, 3} {
			hold(p.Node(addr(i)), in)
		}
		c := count(picks(p, 3000, clk.Nano(), nil))
		if c[addr(0)] != 0 || c[addr(1)] < 1800 || c[addr(2)] < 800 {
			t.Fatalf("in-flight 5,0,3: picks %v; want none on node 0, ~2/3 on node 1, ~1/3 on node 2", c)
		}
	})
	t.Run("a failing node never beats a healthy idle one", func(t *testing.T) {
		for _, size := range []int{2, 5} {
			tb, clk := newTable(t, Config{Rand: seqRand(3)})
			weights := slices.Repeat([]uint64{1}, size)
			p := poolWith(t, tb, "k", AlgoP2C, weights...)
			bad := p.Node(addr(0))
			bad.ReportFailure(tb.Now())
			clk.Add(maxBackoff) // its backoff is over: usable, and idle
			if c := count(picks(p, 2000, clk.Nano(), nil)); c[bad.Address] != 0 {
				t.Fatalf("%d nodes: the failing node got %d of 2000 picks over healthy idle ones", size, c[bad.Address])
			}
		}
	})
	t.Run("the penalty doubles per failure and lets a probe through under load", func(t *testing.T) {
		tb, clk := newTable(t, Config{Rand: seqRand(5)})
		p := poolWith(t, tb, "k", AlgoP2C, 1, 1)
		bad, good := p.Node(addr(0)), p.Node(addr(1))
		const never, some, always = 0, 1, 2
		for _, tc := range []struct {
			fails  int
			goodIn int64
			want   int
		}{
			{1, 0, never},  // cost 2 vs 1
			{1, 1, some},   // 2 vs 2: a tie goes to the first drawn
			{1, 2, always}, // 2 vs 3
			{3, 6, never},  // 8 vs 7
			{3, 8, always}, // 8 vs 9
		} {
			bad.ReportSuccess()
			for range tc.fails {
				bad.ReportFailure(tb.Now())
			}
			clk.Add(maxBackoff)
			hold(good, tc.goodIn)
			got := count(picks(p, 200, clk.Nano(), nil))[bad.Address]
			if tc.want == never && got != 0 || tc.want == always && got != 200 || tc.want == some && (got == 0 || got == 200) {
				t.Fatalf("%d failures against %d in flight: the failing node got %d/200; want %s",
					tc.fails, tc.goodIn, got, [...]string{"none", "some", "all"}[tc.want])
			}
		}
	})
	t.Run("the default source is per pool", func(t *testing.T) {
		tb, clk := newTable(t, Config{})
		p := poolWith(t, tb, "k", AlgoP2C, 1, 1, 1, 1)
		if c := count(picks(p, 4000, clk.Nano(), nil)); len(c) != 4 {
			t.Fatalf("picks %v; want all four nodes", c)
		}
	})
}

func TestHashBoundedLoad(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "k", AlgoHash, 1, 1, 1, 1, 1, 1, 1, 1)
	now := clk.Nano()

	t.Run("idle: sticky like iphash", func(t *testing.T) {
		for i := range 500 {
			k := []byte(fmt.Sprintf("session-%d", i))
			first := pickKey(p, now, nil, k)
			for range 3 {
				if again := pickKey(p, now, nil, k); again != first {
					t.Fatalf("key %s went to %s then %s", k, first, again)
				}
			}
		}
	})
	t.Run("skewed keys never push a node over the bound", func(t *testing.T) {
		var held []*Node
		hot := []byte("session=hot")
		for i := range 4000 {
			k := hot // 80% of the requests carry one key
			if i%5 == 0 {
				k = []byte(fmt.Sprintf("session=%d", i%37))
			}
			n := p.PickKey(now, nil, k)
			if n == nil {
				t.Fatal("no node")
			}
			held = append(held, n)
			total := int64(len(held))
			bound := (5*total + 4*8 - 1) / (4 * 8) // ceil(1.25 × total / 8)
			for _, m := range p.Nodes() {
				if m.Inflight() > bound {
					t.Fatalf("after %d requests %s holds %d; bound ceil(1.25×%d/8) = %d", total, m.Address, m.Inflight(), total, bound)
				}
			}
		}
		// The hot key filled its node to the bound, then the next node in
		// its rendezvous order, and so on.
		full := 0
		for _, m := range p.Nodes() {
			if m.Inflight() == 625 { // ceil(1.25 × 4000 / 8)
				full++
			}
		}
		if full < 4 {
			t.Errorf("%d nodes at the bound of 625; the hot key should have filled several in turn", full)
		}
		for _, n := range held {
			n.Done()
		}
	})
	t.Run("weighted bound", func(t *testing.T) {
		tb, clk := newTable(t, Config{})
		p := poolWith(t, tb, "k", AlgoHash, 3, 1)
		for range 400 {
			p.PickKey(clk.Nano(), nil, []byte("hot"))
		}
		a, b := p.Node(addr(0)).Inflight(), p.Node(addr(1)).Inflight()
		if a > 375 || b > 125 || a+b != 400 {
			t.Fatalf("400 hot requests on weights 3:1 held %d/%d; bounds 375/125", a, b)
		}
	})
}

// TestPickKeyTried: for every algorithm, with and without a key, a pick
// never returns a node in tried, and nil once every node is tried.
func TestPickKeyTried(t *testing.T) {
	for _, algo := range allAlgos {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{Rand: seqRand(11)})
			p := poolWith(t, tb, "k", algo, 3, 1, 1, 2)
			nodes := p.Nodes()
			for _, tried := range [][]*Node{nil, nodes[:1], nodes[1:3], nodes[:3], nodes[3:], {{Address: addr(0)}}} {
				for i := range 100 {
					for _, key := range [][]byte{nil, ipKey(i)} {
						got := p.PickKey(clk.Nano(), tried, key)
						if got == nil || slices.Contains(tried, got) {
							t.Fatalf("tried %d nodes, key %v: picked %v", len(tried), key, got)
						}
						got.Done()
					}
				}
			}
			for _, key := range [][]byte{nil, ipKey(1)} {
				if n := p.PickKey(clk.Nano(), nodes, key); n != nil {
					t.Fatalf("every node tried: picked %s", n.Address)
				}
			}
			for _, n := range nodes {
				if n.Inflight() != 0 {
					t.Fatalf("%s in-flight %d after all Done", n.Address, n.Inflight())
				}
			}
		})
	}
}

// TestFailedNodeSkippedAllAlgos: a node inside its backoff window gets
// nothing from any algorithm, keyed or not.
func TestFailedNodeSkippedAllAlgos(t *testing.T) {
	for _, algo := range allAlgos {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{Rand: seqRand(2)})
			p := poolWith(t, tb, "k", algo, 1, 1, 1)
			bad := p.Node(addr(1))
			bad.ReportFailure(tb.Now())
			clk.Add(minBackoff - time.Nanosecond)
			for i := range 300 {
				if a := pickKey(p, clk.Nano(), nil, ipKey(i)); a == bad.Address || a == "<nil>" {
					t.Fatalf("key %d: picked %s during its backoff", i, a)
				}
				if a := pickKey(p, clk.Nano(), nil, nil); a == bad.Address || a == "<nil>" {
					t.Fatalf("picked %s during its backoff", a)
				}
			}
		})
	}
}

func TestRandomDraw2(t *testing.T) {
	for _, n := range []int{2, 3, 7, 256} {
		seen := make([]int, n)
		r := seqRand(uint64(n))
		for range 1000 * n {
			i, j := draw2(r(), n)
			if i == j || i < 0 || j < 0 || i >= n || j >= n {
				t.Fatalf("draw2(_, %d) = %d, %d", n, i, j)
			}
			seen[i]++
			seen[j]++
		}
		for k, c := range seen {
			if c < 1600 || c > 2400 { // expected 2000
				t.Errorf("n=%d: index %d drawn %d times of %d; want ~2000", n, k, c, 2000*n)
			}
		}
	}
}
