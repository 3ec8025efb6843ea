package balancer

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// fakeClock is an injectable clock (Config.Now), safe for concurrent use.
type fakeClock struct{ ns atomic.Int64 }

func newClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *fakeClock) Nano() int64         { return c.ns.Load() }

// newTable returns a table on a fake clock.
func newTable(t testing.TB, cfg Config) (*Table, *fakeClock) {
	t.Helper()
	c := newClock()
	cfg.Now = c.Now
	tb, err := New(cfg)
	if err != nil {
		t.Fatalf("New(%+v): %v", cfg, err)
	}
	return tb, c
}

func announce(t testing.TB, tb *Table, key, addr string, weight uint64) Result {
	t.Helper()
	res, err := tb.Announce(&Announce{Key: []byte(key), Address: []byte(addr), Weight: weight})
	if err != nil {
		t.Fatalf("Announce(%q, %q): %v", key, addr, err)
	}
	return res
}

func addr(i int) string { return fmt.Sprintf("10.0.%d.%d:3031", i/250, i%250+1) }

// poolWith creates pool key with one node per weight, addresses addr(0..).
func poolWith(t testing.TB, tb *Table, key string, algo Algo, weights ...uint64) *Pool {
	t.Helper()
	for i, w := range weights {
		if _, err := tb.Announce(&Announce{Key: []byte(key), Address: []byte(addr(i)), Weight: w, Algo: []byte(algo)}); err != nil {
			t.Fatalf("Announce(%q, %q): %v", key, addr(i), err)
		}
	}
	p := tb.Pool(key)
	if p == nil || p.Algo() != algo {
		t.Fatalf("pool %q not created with algo %s", key, algo)
	}
	return p
}

// picks returns the addresses chosen by n sequential Pick+Done at time now.
func picks(p *Pool, n int, now int64, tried []*Node) []string {
	out := make([]string, 0, n)
	for range n {
		node := p.Pick(now, tried)
		if node == nil {
			out = append(out, "<nil>")
			continue
		}
		out = append(out, node.Address)
		node.Done()
	}
	return out
}

func count(seq []string) map[string]int {
	m := map[string]int{}
	for _, a := range seq {
		m[a]++
	}
	return m
}

func keyOf(p *Pool) string {
	if p == nil {
		return "<nil>"
	}
	return p.Key
}

// bulkLoad fills a table that no other goroutine uses yet with one node per
// key, writing the shard maps in place. It mirrors putPool without the
// copy-on-write, whose per-pool cost makes building 100k pools through
// Announce take minutes (see BenchmarkCreatePools). TestBulkLoadMatchesAnnounce
// keeps it honest.
func bulkLoad(t testing.TB, tb *Table, keys []string, address string) {
	t.Helper()
	if tb.Len() != 0 {
		t.Fatal("bulkLoad needs an empty table")
	}
	// Shards start as one shared read-only empty snapshot: give each its
	// own maps before writing into them in place.
	for i := range tb.shards {
		tb.shards[i].Store(&shard{exact: map[string]*Pool{}, lower: map[string]*Pool{}, wild: map[string]*Pool{}})
	}
	ep, err := ParseEndpoint(address)
	if err != nil {
		t.Fatal(err)
	}
	now := tb.Now().UnixNano()
	for _, key := range keys {
		p := newPool(key, Policy{Algo: tb.cfg.DefaultAlgo}, &tb.cfg, &tb.watch)
		n := &Node{Address: address, Endpoint: ep, pool: p, hash: hashBytes([]byte(address))}
		refresh(n, &Announce{Weight: 1}, now)
		p.nodes.Store(&[]*Node{n})
		var buf [maxKeyLen]byte
		l, ok := lowerInto(&buf, []byte(key))
		if !ok || len(key) == 0 {
			t.Fatalf("bulkLoad: bad key %q", key)
		}
		s := tb.shards[tb.shardOf(l)].Load()
		if s.exact[key] != nil {
			t.Fatalf("bulkLoad: duplicate key %q", key)
		}
		s.exact[key] = p
		if _, ok := s.lower[string(l)]; !ok {
			s.lower[string(l)] = p
		}
		if w := wildSuffix(string(l)); w != "" {
			ws := tb.shards[tb.shardOf([]byte(w))].Load()
			if _, ok := ws.wild[w]; !ok {
				ws.wild[w] = p
			}
		}
		tb.count.Add(1)
	}
}
