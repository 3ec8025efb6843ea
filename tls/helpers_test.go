package tls

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	ctls "crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// testCA issues test certificates.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newCA(t testing.TB, cn string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial(t),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &testCA{cert: cert, key: key, pem: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})}
}

func serial(t testing.TB) *big.Int {
	t.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// issued is a leaf certificate with its PEM files.
type issued struct {
	certPEM, keyPEM []byte
	leaf            *x509.Certificate
}

// issue signs a server certificate for dnsNames (the first is the CN).
func (ca *testCA) issue(t testing.TB, dnsNames ...string) issued {
	t.Helper()
	return ca.sign(t, dnsNames[0], dnsNames, x509.ExtKeyUsageServerAuth)
}

// issueClient signs a client certificate with common name cn.
func (ca *testCA) issueClient(t testing.TB, cn string) issued {
	t.Helper()
	return ca.sign(t, cn, nil, x509.ExtKeyUsageClientAuth)
}

func (ca *testCA) sign(t testing.TB, cn string, dnsNames []string, usage x509.ExtKeyUsage) issued {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(t),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     dnsNames,
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{usage},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return issued{
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}),
		leaf:    leaf,
	}
}

func (c issued) tlsCert(t testing.TB) ctls.Certificate {
	t.Helper()
	cert, err := ctls.X509KeyPair(c.certPEM, c.keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeAtomic replaces path by renaming a complete temporary file over it,
// so a poll never sees it half-written.
func writeAtomic(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), ".tmp-"+filepath.Base(path))
	writeFile(t, tmp, b)
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// writePair writes dir/base.crt and dir/base.key in place.
func writePair(t testing.TB, dir, base string, c issued) {
	t.Helper()
	writeFile(t, filepath.Join(dir, base+".key"), c.keyPEM)
	writeFile(t, filepath.Join(dir, base+".crt"), c.certPEM)
}

// renamePair writes dir/base.crt and .key the way certbot and Kubernetes do:
// to a hidden temporary, then renamed over the target (key first).
func renamePair(t testing.TB, dir, base string, c issued) {
	t.Helper()
	writeAtomic(t, filepath.Join(dir, base+".key"), c.keyPEM)
	writeAtomic(t, filepath.Join(dir, base+".crt"), c.certPEM)
}

// logBuf collects log output for assertions.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// count returns how many log lines contain every one of subs.
func (l *logBuf) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for line := range strings.Lines(l.buf.String()) {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testConfig returns a Config with a fast poll, a captured log and a private
// registry.
func testConfig(t testing.TB) (Config, *logBuf) {
	t.Helper()
	lb := &logBuf{}
	return Config{
		PollInterval: 10 * time.Millisecond,
		Logger:       slog.New(slog.NewTextHandler(lb, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Registerer:   prometheus.NewRegistry(),
	}, lb
}

func mustNew(t testing.TB, cfg Config) *Store {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// served returns the serial number of the certificate GetCertificate picks
// for sni, or nil on error.
func served(s *Store, sni string) *big.Int {
	c, err := s.GetCertificate(&ctls.ClientHelloInfo{ServerName: sni})
	if err != nil {
		return nil
	}
	return c.Leaf.SerialNumber
}

// eventually polls cond until it holds, failing after a bounded time.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitPolls waits until the poller has completed n more passes.
func waitPolls(t testing.TB, s *Store, n uint64) {
	t.Helper()
	want := s.polls.Load() + n
	eventually(t, "poller passes", func() bool { return s.polls.Load() >= want })
}
