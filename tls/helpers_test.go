package tls

import (
	"bytes"
	ctls "crypto/tls"
	"log/slog"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
)

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
func writePair(t testing.TB, dir, base string, c *testcert.Cert) {
	t.Helper()
	writeFile(t, filepath.Join(dir, base+".key"), c.KeyPEM)
	writeFile(t, filepath.Join(dir, base+".crt"), c.CertPEM)
}

// renamePair writes dir/base.crt and .key the way certbot and Kubernetes do:
// to a hidden temporary, then renamed over the target (key first).
func renamePair(t testing.TB, dir, base string, c *testcert.Cert) {
	t.Helper()
	writeAtomic(t, filepath.Join(dir, base+".key"), c.KeyPEM)
	writeAtomic(t, filepath.Join(dir, base+".crt"), c.CertPEM)
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
