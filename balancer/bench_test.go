package balancer

import (
	"fmt"
	"testing"
)

func BenchmarkLookup(b *testing.B) {
	for _, pools := range []int{10, 10_000, 100_000} {
		b.Run(fmt.Sprintf("pools=%d", pools), func(b *testing.B) {
			tb, _ := newTable(b, Config{})
			for i := 0; i < pools; i++ {
				announce(b, tb, fmt.Sprintf("host%d.example.com", i), "10.0.0.1:1", 1)
			}
			host := []byte(fmt.Sprintf("host%d.example.com", pools/2))
			b.ReportAllocs()
			for b.Loop() {
				if tb.Lookup(host) == nil {
					b.Fatal("miss")
				}
			}
		})
	}
}

func benchPick(b *testing.B, algo string) {
	for _, nodes := range []int{2, 16, 256} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			tb, clk := newTable(b, Config{DefaultAlgo: Algo(algo)})
			for i := 0; i < nodes; i++ {
				announce(b, tb, "k", fmt.Sprintf("10.0.%d.%d:1", i/250, i%250+1), uint64(i%4+1))
			}
			p := tb.Pool("k")
			now := clk.Now().UnixNano()
			b.ReportAllocs()
			for b.Loop() {
				p.Pick(now, nil).Done()
			}
		})
	}
}

func BenchmarkPickWRR(b *testing.B) { benchPick(b, "wrr") }
func BenchmarkPickLRC(b *testing.B) { benchPick(b, "lrc") }

func BenchmarkPickParallel(b *testing.B) {
	tb, clk := newTable(b, Config{})
	for i := 0; i < 16; i++ {
		announce(b, tb, "k", fmt.Sprintf("10.0.0.%d:1", i+1), 1)
	}
	now := clk.Now().UnixNano()
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		host := []byte("k")
		for pb.Next() {
			tb.Lookup(host).Pick(now, nil).Done()
		}
	})
}

func BenchmarkAnnounceRefresh(b *testing.B) {
	tb, _ := newTable(b, Config{})
	announce(b, tb, "example.com", "10.0.0.1:1", 1)
	a := &Announce{Key: []byte("example.com"), Address: []byte("10.0.0.1:1"), Weight: 2}
	b.ReportAllocs()
	for b.Loop() {
		tb.Announce(a)
	}
}

func BenchmarkCreate10kPools(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		tb, _ := newTable(b, Config{})
		for i := 0; i < 10_000; i++ {
			announce(b, tb, fmt.Sprintf("h%d.example.com", i), "10.0.0.1:1", 1)
		}
	}
}
