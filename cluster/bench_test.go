package cluster

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/subauth"
)

// fillRouter announces pools × nodes through r's Origin, as if every node
// had subscribed at r.
func fillRouter(tb testing.TB, r *testRouter, pools, nodes int) {
	tb.Helper()
	for p := 0; p < pools; p++ {
		key := []byte(fmt.Sprintf("app%05d.example.com", p))
		for n := 0; n < nodes; n++ {
			a := &balancer.Announce{Key: key, Address: []byte(fmt.Sprintf("10.%d.%d.%d:3031", p/250%250, p%250, n+1)), Weight: uint64(n + 1), Cores: 8}
			if _, err := r.o.Announce(a); err != nil {
				tb.Fatal(err)
			}
		}
	}
}

// synced reports whether r's table holds pools pools of nodes nodes each
// and its applier has nothing left.
func synced(r *testRouter, pools, nodes int) bool {
	if r.table.Len() != pools {
		return false
	}
	r.c.mu.Lock()
	backlog := len(r.c.dirty)
	r.c.mu.Unlock()
	if backlog > 0 {
		return false
	}
	for _, p := range r.table.Pools() {
		if len(p.Nodes()) != nodes {
			return false
		}
	}
	return true
}

// BenchmarkJoinSync measures a router joining a cluster whose state is
// 10k pools × 5 nodes: from Join until its table holds every node (push/pull
// over loopback TCP: encode + zstd at the peer, transfer, decompress, merge,
// and the applier creating 50k nodes in the table).
func BenchmarkJoinSync(b *testing.B) {
	for _, size := range []struct{ pools, nodes int }{{1000, 5}, {10000, 5}} {
		b.Run(fmt.Sprintf("pools=%d/nodes=%d", size.pools, size.nodes), func(b *testing.B) {
			src := newTestRouter(b, "src", routerOpts{sync: time.Hour})
			fillRouter(b, src, size.pools, size.nodes)
			b.ReportAllocs()
			b.ResetTimer()
			i := 0
			for b.Loop() {
				b.StopTimer()
				i++
				dst := newTestRouter(b, fmt.Sprintf("dst%d", i), routerOpts{sync: time.Hour, noStart: true})
				if err := dst.c.Start(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				if _, err := dst.c.ml.Load().Join([]string{src.c.Addr()}); err != nil {
					b.Fatal(err)
				}
				for !synced(dst, size.pools, size.nodes) {
					time.Sleep(time.Millisecond)
				}
				b.StopTimer()
				dst.c.Shutdown()
				b.StartTimer()
			}
			b.ReportMetric(float64(len(src.c.encodeState())), "state-bytes")
		})
	}
}

// BenchmarkState measures the pieces of a 10k × 5 sync on their own:
// encoding (with compression) at the sender, and decoding plus merging at
// the receiver into an empty state (the applier's table work excluded).
func BenchmarkState(b *testing.B) {
	src := newTestRouter(b, "src", routerOpts{noStart: true})
	fillRouter(b, src, 10000, 5)
	msg := src.c.encodeState()
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			src.c.encodeState()
		}
	})
	b.Run("merge-empty", func(b *testing.B) {
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			b.StopTimer()
			dst := newTestRouter(b, "dst", routerOpts{noStart: true})
			b.StartTimer()
			if n, _, err := dst.c.mergeState(msg); err != nil || n != 50000 {
				b.Fatalf("merged %d entries: %v", n, err)
			}
		}
	})
	b.Run("merge-same", func(b *testing.B) { // a periodic push/pull with nothing new
		dst := newTestRouter(b, "dst", routerOpts{noStart: true})
		dst.c.mergeState(msg)
		b.ReportAllocs()
		b.SetBytes(int64(len(msg)))
		for b.Loop() {
			if _, changed, err := dst.c.mergeState(msg); err != nil || changed != 0 {
				b.Fatalf("changed %d: %v", changed, err)
			}
		}
	})
	b.ReportMetric(float64(len(msg)), "state-bytes")
}

// BenchmarkOriginRefresh is the subscription server's common case on a
// clustered router: a known node re-announces (the table refresh plus the
// replicated state's bookkeeping; the gossip itself is batched per
// RefreshInterval).
func BenchmarkOriginRefresh(b *testing.B) {
	r := newTestRouter(b, "r", routerOpts{noStart: true})
	a := &balancer.Announce{Key: []byte("www.example.com"), Address: []byte("10.0.0.1:3031"), Weight: 1, Cores: 4}
	if _, err := r.o.Announce(a); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := r.o.Announce(a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOriginRefreshSigned is BenchmarkOriginRefresh with a signed
// datagram each time (a new signed time per announce, as nodes send): the
// proof kept for the peers is compared and copied in place.
func BenchmarkOriginRefreshSigned(b *testing.B) {
	r := newTestRouter(b, "r", routerOpts{noStart: true})
	proofs := make([][]byte, 64)
	for i := range proofs {
		proofs[i] = sampleProof("www.example.com", "10.0.0.1:3031", uint64(time.Now().Unix())+uint64(i))
	}
	a := &balancer.Announce{Key: []byte("www.example.com"), Address: []byte("10.0.0.1:3031"), Weight: 1, Cores: 4, Proof: proofs[0]}
	if _, err := r.o.Announce(a); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		i++
		a.Proof = proofs[i%len(proofs)]
		if _, err := r.o.Announce(a); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkJoinSyncSigned is BenchmarkJoinSync for 1k pools × 5 signed
// nodes (Ed25519) joining a router that checks signatures: on top of the
// sync, the joiner verifies every relayed datagram once.
func BenchmarkJoinSyncSigned(b *testing.B) {
	const pools, nodes = 1000, 5
	signer, pub := edKeyTB(b)
	keys := make([]string, pools)
	for p := range keys {
		keys[p] = fmt.Sprintf("app%05d.example.com", p)
	}
	guard := func() *subauth.Guard { return signingGuardTB(b, pub, keys) }
	src := newTestRouter(b, "src", routerOpts{sync: time.Hour})
	for p := 0; p < pools; p++ {
		for n := 0; n < nodes; n++ {
			addr := fmt.Sprintf("10.%d.%d.%d:3031", p/250%250, p%250, n+1)
			d, err := subauth.AppendSigned(nil, &uwsgi.Subscription{Key: []byte(keys[p]), Address: []byte(addr), Weight: 1}, signer, time.Now())
			if err != nil {
				b.Fatal(err)
			}
			if _, err := src.o.Announce(&balancer.Announce{Key: []byte(keys[p]), Address: []byte(addr), Weight: 1, Proof: d}); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	i := 0
	for b.Loop() {
		b.StopTimer()
		i++
		g := guard()
		dst := newTestRouter(b, fmt.Sprintf("dst%d", i), routerOpts{sync: time.Hour, noStart: true, admission: g, signed: g})
		if err := dst.c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if _, err := dst.c.ml.Load().Join([]string{src.c.Addr()}); err != nil {
			b.Fatal(err)
		}
		for !synced(dst, pools, nodes) {
			time.Sleep(time.Millisecond)
		}
		b.StopTimer()
		dst.c.Shutdown()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(src.c.encodeState())), "state-bytes")
}
