package cluster

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

var testSecret = bytes.Repeat([]byte{7}, 32)

// blobLog is a BlobWatcher that records what it hears.
type blobLog struct {
	mu      sync.Mutex
	keys    []string
	members int
}

func (l *blobLog) BlobChanged(key string) {
	l.mu.Lock()
	l.keys = append(l.keys, key)
	l.mu.Unlock()
}

func (l *blobLog) MembersChanged() {
	l.mu.Lock()
	l.members++
	l.mu.Unlock()
}

func (l *blobLog) heard(key string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Contains(l.keys, key)
}

func encrypted(t *testing.T, names ...string) []*testRouter {
	t.Helper()
	rs := []*testRouter{newTestRouter(t, names[0], routerOpts{secret: testSecret})}
	for _, n := range names[1:] {
		rs = append(rs, newTestRouter(t, n, routerOpts{secret: testSecret, join: []string{rs[0].c.Addr()}}))
	}
	waitMembers(t, len(names), rs...)
	return rs
}

func blobIs(r *testRouter, key string, want []byte) bool {
	v, _, ok := r.c.Blob(key)
	if want == nil {
		return !ok
	}
	return ok && bytes.Equal(v, want)
}

// TestBlobsTravel: a small blob goes by gossip, a large one over TCP, a
// delete as a tombstone; the peer's watcher hears each, and nothing is
// reported back to the writer.
func TestBlobsTravel(t *testing.T) {
	rs := encrypted(t, "a", "b")
	a, b := rs[0], rs[1]
	var la, lb blobLog
	a.c.SetBlobWatcher(&la)
	b.c.SetBlobWatcher(&lb)
	ctx := context.Background()
	small, large := []byte("token.keyauth"), bytes.Repeat([]byte("c"), 20<<10)
	if err := a.c.PutBlob(ctx, "acme/ch/x", small, false); err != nil {
		t.Fatal(err)
	}
	if err := a.c.PutBlob(ctx, "acme/cert/x", large, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "both blobs at b", func() bool {
		return blobIs(b, "acme/ch/x", small) && blobIs(b, "acme/cert/x", large)
	})
	if !lb.heard("acme/ch/x") || !lb.heard("acme/cert/x") {
		t.Errorf("b's watcher heard %q", lb.keys)
	}
	if err := b.c.DeleteBlob("acme/ch/x"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "the delete at a", func() bool { return blobIs(a, "acme/ch/x", nil) })
	if la.heard("acme/cert/x") {
		t.Error("a's watcher heard of its own write")
	}
	if got := b.c.BlobKeys("acme/"); !slices.Equal(got, []string{"acme/cert/x"}) {
		t.Errorf("BlobKeys = %q", got)
	}
}

// TestBlobAckWait: PutBlob with wait returns only once the peer holds the
// value, so a CA that asks the peer right after finds the token.
func TestBlobAckWait(t *testing.T) {
	rs := encrypted(t, "a", "b", "c")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i := range 20 {
		v := []byte{byte(i)}
		if err := rs[1].c.PutBlob(ctx, "acme/ch/t", v, true); err != nil {
			t.Fatal(err)
		}
		for _, r := range []*testRouter{rs[0], rs[2]} {
			if !blobIs(r, "acme/ch/t", v) {
				t.Fatalf("round %d: PutBlob returned before %s held the value", i, r.name)
			}
		}
	}
	// A member that does not answer: the wait ends with the context.
	rs[2].c.Shutdown()
	short, stop := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer stop()
	if err := rs[0].c.PutBlob(short, "acme/ch/u", []byte("x"), true); err == nil && rs[0].c.numMembers() == 3 {
		t.Error("PutBlob waited for a dead member and still returned nil")
	}
}

// TestBlobsLateJoiner: a router that joins later gets every blob, and the
// newest of two seeded versions wins everywhere.
func TestBlobsLateJoiner(t *testing.T) {
	rs := encrypted(t, "a", "b")
	now := time.Now()
	if err := rs[0].c.PutBlob(context.Background(), "acme/cert/y", []byte("new"), false); err != nil {
		t.Fatal(err)
	}
	c := newTestRouter(t, "c", routerOpts{secret: testSecret, noStart: true, join: []string{rs[1].c.Addr()}})
	var lc blobLog
	c.c.SetBlobWatcher(&lc)
	// c comes with older files of its own: they must not win.
	if ok, err := c.c.SeedBlob("acme/cert/y", []byte("old"), now.Add(-time.Hour)); !ok || err != nil {
		t.Fatalf("seed: %v %v", ok, err)
	}
	if ok, err := c.c.SeedBlob("acme/cert/z", []byte("only-c"), now); !ok || err != nil {
		t.Fatalf("seed: %v %v", ok, err)
	}
	if ok, _ := c.c.SeedBlob("acme/cert/z", []byte("older"), now.Add(-time.Second)); ok {
		t.Error("an older seed replaced a newer one")
	}
	if err := c.c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	all := append(rs, c)
	waitFor(t, 10*time.Second, "blobs everywhere", func() bool {
		for _, r := range all {
			if !blobIs(r, "acme/cert/y", []byte("new")) || !blobIs(r, "acme/cert/z", []byte("only-c")) {
				return false
			}
		}
		return true
	})
	if !lc.heard("acme/cert/y") {
		t.Errorf("c's watcher heard %q", lc.keys)
	}
}

// TestBlobsNeedEncryption: an unencrypted cluster shares no blob, and drops
// blob messages it receives.
func TestBlobsNeedEncryption(t *testing.T) {
	rs := clusterOf(t, "a", "b")
	if err := rs[0].c.PutBlob(context.Background(), "k", []byte("v"), false); !errors.Is(err, ErrBlobsNotShared) {
		t.Fatalf("PutBlob on an unencrypted cluster: %v", err)
	}
	if _, err := rs[0].c.SeedBlob("k", []byte("v"), time.Now()); !errors.Is(err, ErrBlobsNotShared) {
		t.Fatalf("SeedBlob: %v", err)
	}
	(*delegate)(rs[1].c).NotifyMsg(appendBlobMsg(nil, 0, "k", stamp{1, 1}, false, false, []byte("v")))
	if blobIs(rs[1], "k", []byte("v")) {
		t.Error("an unencrypted router took a blob message")
	}
}

// TestBlobBound: past MaxBlobBytes a local put fails and a peer's blob is
// refused and counted; replacing a value with a smaller one always works.
func TestBlobBound(t *testing.T) {
	reg := prometheus.NewRegistry()
	a := newTestRouter(t, "a", routerOpts{secret: testSecret, maxBlobs: 4 << 10})
	b := newTestRouter(t, "b", routerOpts{secret: testSecret, maxBlobs: 2 << 10, reg: reg, join: []string{a.c.Addr()}})
	waitMembers(t, 2, a, b)
	ctx := context.Background()
	if err := a.c.PutBlob(ctx, "big", bytes.Repeat([]byte("x"), 3<<10), false); err != nil {
		t.Fatal(err)
	}
	if err := a.c.PutBlob(ctx, "more", bytes.Repeat([]byte("x"), 2<<10), false); !errors.Is(err, ErrBlobsFull) {
		t.Fatalf("put past the bound: %v", err)
	}
	if err := a.c.PutBlob(ctx, "big", []byte("small"), false); err != nil {
		t.Fatalf("shrinking a value: %v", err)
	}
	if err := a.c.PutBlob(ctx, "k", make([]byte, MaxBlobLen+1), false); !errors.Is(err, ErrBlobTooLarge) {
		t.Fatalf("value over MaxBlobLen: %v", err)
	}
	// b's bound is smaller than a's: a 3 KiB value from a is refused there.
	if err := a.c.PutBlob(ctx, "mid", bytes.Repeat([]byte("y"), 3<<10), false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "b refusing the value", func() bool {
		return testutil.ToFloat64(b.c.m.blobsRefused) > 0
	})
	if blobIs(b, "mid", bytes.Repeat([]byte("y"), 3<<10)) {
		t.Error("b kept a value past its bound")
	}
	waitFor(t, 10*time.Second, "the small value at b", func() bool { return blobIs(b, "big", []byte("small")) })
}

// TestLeader: the live member with the lowest name leads; when it leaves
// the next one does, and watchers hear of the change.
func TestLeader(t *testing.T) {
	rs := encrypted(t, "r2", "r1", "r3")
	var l blobLog
	rs[2].c.SetBlobWatcher(&l)
	for _, r := range rs {
		if got := r.c.Leader(); got != "r1" {
			t.Fatalf("%s: Leader = %q; want r1", r.name, got)
		}
	}
	if !rs[1].c.IsLeader() || rs[0].c.IsLeader() {
		t.Error("IsLeader disagrees with Leader")
	}
	if err := rs[1].c.Leave(time.Second); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "r2 leading", func() bool {
		return rs[0].c.Leader() == "r2" && rs[2].c.Leader() == "r2"
	})
	l.mu.Lock()
	heard := l.members
	l.mu.Unlock()
	if heard == 0 {
		t.Error("the watcher heard of no membership change")
	}
}
