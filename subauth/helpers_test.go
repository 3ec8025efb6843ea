package subauth

import (
	"crypto"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// fakeClock is a settable clock.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func readTestdata(tb testing.TB, name string) []byte {
	tb.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func signer(tb testing.TB, h crypto.Hash, keyFile string) *Signer {
	tb.Helper()
	s, err := NewSigner(h, readTestdata(tb, keyFile))
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// keyDir makes a key directory holding pub (a testdata file) for each key.
func keyDir(tb testing.TB, pub string, keys ...string) string {
	tb.Helper()
	dir := tb.TempDir()
	for _, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, KeyFile([]byte(k))), readTestdata(tb, pub), 0o644); err != nil {
			tb.Fatal(err)
		}
	}
	return dir
}

type testGuard struct {
	*Guard
	clk *fakeClock
	reg *prometheus.Registry
}

func newGuard(tb testing.TB, cfg Config) *testGuard {
	tb.Helper()
	clk := newFakeClock()
	reg := prometheus.NewRegistry()
	cfg.Now, cfg.Registerer = clk.Now, reg
	g, err := New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	return &testGuard{g, clk, reg}
}

// denied returns the denied counter for reason.
func (g *testGuard) denied(reason *Denial) float64 {
	return testutil.ToFloat64(g.Guard.denied[reason])
}

// admit parses datagram and admits it, with the announced address as the
// resolved one.
func (g *testGuard) admit(tb testing.TB, datagram []byte) error {
	tb.Helper()
	var sub uwsgi.Subscription
	if err := uwsgi.ParseSubscription(datagram, &sub); err != nil {
		tb.Fatalf("test datagram does not parse: %v", err)
	}
	return g.Admit(&sub, datagram, sub.Address)
}

// signed returns a datagram for sub signed by s at now.
func signed(tb testing.TB, sub uwsgi.Subscription, s *Signer, now time.Time) []byte {
	tb.Helper()
	d, err := AppendSigned(nil, &sub, s, now)
	if err != nil {
		tb.Fatal(err)
	}
	return d
}

func sub(key, addr string) uwsgi.Subscription {
	return uwsgi.Subscription{Key: []byte(key), Address: []byte(addr), Cores: 2, Weight: 1}
}
