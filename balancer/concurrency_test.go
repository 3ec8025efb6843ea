package balancer

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConcurrentPickAndChurn runs lookups and picks against announces,
// removals, unsubscribes, drains, pool deletion, expiry, Tick and failure
// reports (run it with -race). No node's
// in-flight count may go negative, a picked node holds at least its own
// request, and every count returns to 0 once the pickers are done.
func TestConcurrentPickAndChurn(t *testing.T) {
	tb, clk := newTable(t, Config{FallbackKey: "fb"})
	keys := []string{"wrr.test", "lrc.test", "*.wild.test", "churn.test", "fb", "wlrc.test", "ip.test", "p2c.test", "hash.test"}
	hosts := []string{"wrr.test", "LRC.test:8080", "a.wild.test", "churn.test", "nothing.test", "wlrc.test", "ip.test", "p2c.test", "hash.test"}
	algos := []Algo{AlgoWRR, AlgoLRC, AlgoP2C, AlgoHash, AlgoWRR, AlgoWLRC, AlgoIPHash, AlgoP2C, AlgoHash}
	const addrs = 12
	for i, k := range keys {
		poolWith(t, tb, k, algos[i], 1, 2, 3)
	}

	var (
		stop    atomic.Bool
		wg      sync.WaitGroup
		mu      sync.Mutex
		seen    = map[*Node]bool{}
		pickCnt atomic.Int64
	)
	// Pickers.
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 1))
			local := map[*Node]bool{}
			var tried []*Node
			for i := 0; !stop.Load() || i < 2000; i++ {
				p := tb.Lookup([]byte(hosts[rng.IntN(len(hosts))]))
				if p == nil {
					continue
				}
				tried = tried[:0]
				var key []byte
				if rng.IntN(4) != 0 {
					key = ipKey(rng.IntN(50))
				}
				for range 2 { // a retry after a "failed connect"
					n := p.PickKey(clk.Nano(), tried, key)
					if n == nil {
						break
					}
					pickCnt.Add(1)
					local[n] = true
					if in := n.Inflight(); in < 1 {
						t.Errorf("picked %s with inflight %d", n.Address, in)
					}
					switch rng.IntN(20) {
					case 0:
						n.ReportFailure(clk.Now())
					case 1:
						n.ReportSuccess()
					}
					tried = append(tried, n)
					if rng.IntN(2) == 0 {
						break
					}
				}
				for _, n := range tried {
					n.Done()
					if in := n.Inflight(); in < 0 {
						t.Errorf("%s inflight %d after Done", n.Address, in)
					}
				}
			}
			mu.Lock()
			for n := range local {
				seen[n] = true
			}
			mu.Unlock()
		}()
	}
	// Writers: announce/remove, and expiry on a moving clock.
	var writers sync.WaitGroup
	for g := range 2 {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(100+g), 2))
			for range 20000 {
				k, a := keys[rng.IntN(len(keys))], addr(rng.IntN(addrs))
				switch rng.IntN(12) {
				case 0, 1:
					tb.RemoveNode(k, a)
				case 2:
					tb.Unsubscribe([]byte(k), []byte(a), time.Second)
				case 3:
					tb.Drain(k, a, time.Second, rng.IntN(2) == 0)
				case 4:
					tb.Undrain(k, a)
				case 5:
					if rng.IntN(20) == 0 {
						tb.DeletePool(k)
					}
				default:
					a := &Announce{Key: []byte(k), Address: []byte(a), Weight: uint64(rng.IntN(5)), Drain: rng.IntN(30) == 0,
						Backup: uint64(rng.IntN(6) / 4)} // a third at level 1
					if _, err := tb.Announce(a); err != nil {
						t.Errorf("Announce: %v", err)
					}
				}
			}
		}()
	}
	writers.Add(1)
	go func() {
		defer writers.Done()
		for range 2000 {
			clk.Add(20 * time.Millisecond)
			tb.Expire(2 * time.Second)
			tb.Tick()
			for _, p := range tb.Pools() { // readers of the admin API
				for _, n := range p.Nodes() {
					n.Info() // computes StateBackup against pickers and writers
					if in := n.Inflight(); in < 0 {
						t.Errorf("%s inflight %d", n.Address, in)
					}
				}
			}
		}
	}()
	writers.Wait()
	stop.Store(true)
	wg.Wait()

	for _, p := range tb.Pools() {
		for _, n := range p.Nodes() {
			seen[n] = true
		}
	}
	var sum int64
	for n := range seen {
		if in := n.Inflight(); in != 0 {
			t.Errorf("%s inflight %d after all Done", n.Address, in)
		}
		sum += n.Inflight()
	}
	if sum != 0 || pickCnt.Load() == 0 || len(seen) < addrs {
		t.Fatalf("sum of inflight %d, %d picks over %d nodes", sum, pickCnt.Load(), len(seen))
	}
	t.Logf("%d picks, %d nodes, %d pools left", pickCnt.Load(), len(seen), tb.Len())
}

// TestConcurrentCreatePools: concurrent creation of distinct pools loses
// none (writers serialise; readers see each publish).
func TestConcurrentCreatePools(t *testing.T) {
	tb, _ := newTable(t, Config{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 250 {
				k := fmt.Sprintf("g%d-%d.test", g, i)
				if _, err := tb.Announce(&Announce{Key: []byte(k), Address: []byte("/s")}); err != nil {
					t.Error(err)
				}
				if tb.Lookup([]byte(k)) == nil {
					t.Errorf("pool %s not visible to its creator", k)
				}
			}
		}()
	}
	wg.Wait()
	if tb.Len() != 1000 || len(tb.Pools()) != 1000 {
		t.Fatalf("Len %d Pools %d; want 1000", tb.Len(), len(tb.Pools()))
	}
}
