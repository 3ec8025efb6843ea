package balancer

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkLookup shows that lookup cost does not depend on the number of
// pools. The large tables are built with bulkLoad, which is quicker than
// Announce (BenchmarkCreatePools).
func BenchmarkLookup(b *testing.B) {
	for _, pools := range []int{10, 10_000, 100_000} {
		tb, _ := newTable(b, Config{})
		keys := make([]string, 0, pools+1)
		for i := range pools {
			keys = append(keys, fmt.Sprintf("host%d.example.com", i))
		}
		keys = append(keys, "*.wild.example.net")
		bulkLoad(b, tb, keys, "10.0.0.1:3031")
		mid := pools / 2
		for _, bc := range []struct{ name, host, want string }{
			{"exact", fmt.Sprintf("host%d.example.com", mid), fmt.Sprintf("host%d.example.com", mid)},
			{"folded+port", fmt.Sprintf("HOST%d.example.com:8080", mid), fmt.Sprintf("host%d.example.com", mid)},
			{"wildcard", "api.eu.wild.example.net:443", "*.wild.example.net"},
			{"miss", "nothing.example.org:443", "<nil>"},
		} {
			b.Run(fmt.Sprintf("pools=%d/%s", pools, bc.name), func(b *testing.B) {
				host := []byte(bc.host)
				if got := keyOf(tb.Lookup(host)); got != bc.want {
					b.Fatalf("Lookup(%s) = %s; want %s", bc.host, got, bc.want)
				}
				b.ReportAllocs()
				for b.Loop() {
					tb.Lookup(host)
				}
			})
		}
	}
}

// BenchmarkPick is one PickKey+Done per algorithm and pool size, weights
// 1..4. iphash hashes a 4-byte client address, hash a 36-byte cookie; both
// cycle through 64 keys. The others pick without a key.
func BenchmarkPick(b *testing.B) {
	var ips, cookies [64][]byte
	for i := range ips {
		ips[i] = ipKey(i * 7919)
		cookies[i] = []byte(fmt.Sprintf("sessionid=%026d", i*7919))
	}
	for _, algo := range allAlgos {
		var keys *[64][]byte
		switch algo {
		case AlgoIPHash:
			keys = &ips
		case AlgoHash:
			keys = &cookies
		}
		for _, nodes := range []int{2, 16, 256} {
			b.Run(fmt.Sprintf("algo=%s/nodes=%d", algo, nodes), func(b *testing.B) {
				tb, clk := newTable(b, Config{})
				weights := make([]uint64, nodes)
				for i := range weights {
					weights[i] = uint64(i%4 + 1)
				}
				p := poolWith(b, tb, "k", algo, weights...)
				now := clk.Nano()
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					var key []byte
					if keys != nil {
						key = keys[i&63]
						i++
					}
					p.PickKey(now, nil, key).Done()
				}
			})
		}
	}
}

// BenchmarkParallelPick is Lookup+PickKey+Done from every P on one 16-node
// pool: wrr serialises on the pool mutex, the others only on node counters.
func BenchmarkParallelPick(b *testing.B) {
	for _, algo := range allAlgos {
		b.Run(string(algo), func(b *testing.B) {
			tb, clk := newTable(b, Config{})
			poolWith(b, tb, "example.com", algo, 1, 1, 2, 2, 3, 3, 4, 4, 1, 1, 2, 2, 3, 3, 4, 4)
			now := clk.Nano()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				host := []byte("example.com")
				key := []byte{10, 0, 0, 1}
				for pb.Next() {
					key[3]++
					tb.Lookup(host).PickKey(now, nil, key).Done()
				}
			})
		})
	}
}

func BenchmarkAnnounceRefresh(b *testing.B) {
	for _, bc := range []struct{ name, key, addr string }{
		{"short", "example.com", "10.0.0.1:3031"},
		{"long", "some-service.staging.internal.example.com", "/var/run/uwsgi/some-service-staging-01.sock"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tb, _ := newTable(b, Config{})
			for i := range 8 {
				announce(b, tb, bc.key, addr(i), 1)
			}
			announce(b, tb, bc.key, bc.addr, 1)
			a := &Announce{Key: []byte(bc.key), Address: []byte(bc.addr), Weight: 2, Cores: 4}
			b.ReportAllocs()
			for b.Loop() {
				tb.Announce(a)
			}
		})
	}
}

// BenchmarkCreate10kPools is the bulk creation of 10k pools through
// Announce (a state-file restore or a mass subscribe).
func BenchmarkCreate10kPools(b *testing.B) {
	keys := make([]string, 10_000)
	for i := range keys {
		keys[i] = fmt.Sprintf("h%d.example.com", i)
	}
	b.ReportAllocs()
	for b.Loop() {
		tb, _ := newTable(b, Config{})
		for _, k := range keys {
			announce(b, tb, k, "10.0.0.1:3031", 1)
		}
	}
}

// BenchmarkCreatePools reports the cost per created pool at growing table
// sizes. Every new pool copies its copy-on-write shard (1/1024 of the table),
// so ns/pool still grows with the size, 16 times more slowly than with the 64
// shards of earlier versions.
func BenchmarkCreatePools(b *testing.B) {
	for _, n := range []int{1_000, 5_000, 10_000, 20_000} {
		b.Run(fmt.Sprintf("pools=%d", n), func(b *testing.B) {
			keys := make([]string, n)
			for i := range keys {
				keys[i] = fmt.Sprintf("h%d.example.com", i)
			}
			b.ReportAllocs()
			var total time.Duration
			runs := 0
			for b.Loop() {
				tb, _ := newTable(b, Config{})
				start := time.Now()
				for _, k := range keys {
					announce(b, tb, k, "10.0.0.1:3031", 1)
				}
				total += time.Since(start)
				runs++
			}
			b.ReportMetric(float64(total.Nanoseconds())/float64(runs*n), "ns/pool")
		})
	}
}
