package acme

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeCluster is an in-memory Cluster: last writer wins by time, as the
// real one does.
type fakeCluster struct {
	mu      sync.Mutex
	name    string
	leader  string
	members []string
	blobs   map[string]fakeBlob
	puts    []string // keys put, in order
	waited  []string // keys put with wait
}

type fakeBlob struct {
	val []byte
	at  time.Time
}

func newFakeCluster(name, leader string, members ...string) *fakeCluster {
	return &fakeCluster{name: name, leader: leader, members: members, blobs: map[string]fakeBlob{}}
}

func (f *fakeCluster) Name() string { return f.name }

func (f *fakeCluster) Leader() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.leader
}

func (f *fakeCluster) Members() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.members...)
}

func (f *fakeCluster) PutBlob(_ context.Context, key string, val []byte, wait bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[key] = fakeBlob{append([]byte{}, val...), time.Now()}
	f.puts = append(f.puts, key)
	if wait {
		f.waited = append(f.waited, key)
	}
	return nil
}

func (f *fakeCluster) DeleteBlob(key string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.blobs, key)
	return nil
}

func (f *fakeCluster) SeedBlob(key string, val []byte, at time.Time) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if b, ok := f.blobs[key]; ok && !at.After(b.at) {
		return false, nil
	}
	f.blobs[key] = fakeBlob{append([]byte{}, val...), at}
	return true, nil
}

func (f *fakeCluster) Blob(key string) ([]byte, time.Time, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	b, ok := f.blobs[key]
	return append([]byte{}, b.val...), b.at, ok
}

func (f *fakeCluster) BlobKeys(prefix string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []string
	for k := range f.blobs {
		if strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	sort.Strings(out)
	return out
}

// set puts a blob as a peer would, at a given time.
func (f *fakeCluster) set(key string, val []byte, at time.Time) {
	f.mu.Lock()
	f.blobs[key] = fakeBlob{val, at}
	f.mu.Unlock()
}

// testManager is a Manager on a temporary directory that is never
// started: no goroutine, no order.
func testManager(t testing.TB, mod func(*Config)) *Manager {
	t.Helper()
	cfg := Config{
		Dir: t.TempDir(), CA: "https://127.0.0.1:1/dir", Challenges: []string{HTTP01, TLSALPN01},
		Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
	}
	if mod != nil {
		mod(&cfg)
	}
	m, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// leafSpec is a certificate for name as certmagic would store it, valid
// from leafNB to leafNA.
func leafSpec(name string) testcert.Spec {
	return testcert.Spec{CN: name, DNSNames: []string{name}, NotBefore: leafNB(), NotAfter: leafNA()}
}

// storeCert writes a certificate for name where certmagic would, and
// reloads it.
func storeCert(t testing.TB, m *Manager, name string, c *testcert.Cert) {
	t.Helper()
	ctx := context.Background()
	if err := m.store.fs.Store(ctx, certmagic.StorageKeys.SiteCert(m.iss.key, name), c.ChainPEM); err != nil {
		t.Fatal(err)
	}
	if err := m.store.fs.Store(ctx, certmagic.StorageKeys.SitePrivateKey(m.iss.key, name), c.KeyPEM); err != nil {
		t.Fatal(err)
	}
	m.reload(ctx, name)
}

func leafNB() time.Time { return time.Now().Add(-time.Hour) }
func leafNA() time.Time { return time.Now().Add(47 * time.Hour) }
