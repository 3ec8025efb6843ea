package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
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

// testCA signs test certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t testing.TB) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "unit test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

// issue returns the chain (leaf, CA) and key PEM of a certificate for name
// valid from nb to na, naming ocspURL as its responder when set.
func (ca *testCA) issue(t testing.TB, name string, nb, na time.Time, ocspURL string) (chainPEM, keyPEM []byte, leaf *x509.Certificate) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: nb, NotAfter: na, KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	if ocspURL != "" {
		tmpl.OCSPServer = []string{ocspURL}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ = x509.ParseCertificate(der)
	chainPEM = append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	kd, _ := x509.MarshalECPrivateKey(key)
	return chainPEM, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), leaf
}

// storeCert writes a certificate for name where certmagic would, and
// reloads it.
func storeCert(t testing.TB, m *Manager, name string, chainPEM, keyPEM []byte) {
	t.Helper()
	ctx := context.Background()
	if err := m.store.fs.Store(ctx, certmagic.StorageKeys.SiteCert(m.iss.key, name), chainPEM); err != nil {
		t.Fatal(err)
	}
	if err := m.store.fs.Store(ctx, certmagic.StorageKeys.SitePrivateKey(m.iss.key, name), keyPEM); err != nil {
		t.Fatal(err)
	}
	m.reload(ctx, name)
}

func leafNB() time.Time { return time.Now().Add(-time.Hour) }
func leafNA() time.Time { return time.Now().Add(47 * time.Hour) }
