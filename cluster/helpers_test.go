package cluster

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/balancer"
)

// testRouter is one in-process router: a table and its cluster member on
// loopback, with memberlist's timers tightened.
type testRouter struct {
	name  string
	table *balancer.Table
	c     *Cluster
	o     *Origin
}

type routerOpts struct {
	join      []string
	tolerance time.Duration
	secret    []byte
	label     string
	sync      time.Duration
	tune      func(*memberlist.Config)
	noStart   bool
	admission Admission
	signed    SignedTimes
	reg       *prometheus.Registry
	maxBlobs  int          // Config.MaxBlobBytes
	log       *slog.Logger // nil: warnings through t.Log
}

func fastMemberlist(mc *memberlist.Config) {
	mc.ProbeInterval = 200 * time.Millisecond
	mc.ProbeTimeout = 100 * time.Millisecond
	mc.GossipInterval = 20 * time.Millisecond
	mc.SuspicionMult = 2
	mc.TCPTimeout = 2 * time.Second
	mc.GossipToTheDeadTime = 2 * time.Second
	mc.RetransmitMult = 3
}

// testLogger logs warnings and errors through t.Log until the test ends
// (memberlist's goroutines may still log after Shutdown returns).
func testLogger(t testing.TB, name string) *slog.Logger {
	w := testLogWriter(t, name) // its cleanup is registered first: runs after Shutdown
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type tLogWriter struct {
	t    testing.TB
	name string
	mu   sync.Mutex
	done bool
}

func (w *tLogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.done {
		w.t.Logf("[%s] %s", w.name, strings.TrimRight(string(p), "\n"))
	}
	return len(p), nil
}

// testLogWriter is the writer under testLogger, for memberlist's own loggers.
func testLogWriter(t testing.TB, name string) *tLogWriter {
	w := &tLogWriter{t: t, name: name}
	t.Cleanup(func() {
		w.mu.Lock()
		w.done = true
		w.mu.Unlock()
	})
	return w
}

func newTestRouter(t testing.TB, name string, o routerOpts) *testRouter {
	t.Helper()
	if o.tolerance == 0 {
		o.tolerance = 30 * time.Second
	}
	if o.sync == 0 {
		o.sync = 500 * time.Millisecond
	}
	tb, err := balancer.New(balancer.Config{DrainTimeout: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{
		Table: tb, Name: name, Label: o.label, BindAddr: "127.0.0.1:0", Join: o.join, SecretKey: o.secret,
		SyncInterval: o.sync, Tolerance: o.tolerance, RefreshInterval: 100 * time.Millisecond,
		ReportInterval: 20 * time.Millisecond, ReconnectInterval: 200 * time.Millisecond,
		Logger: cmp.Or(o.log, testLogger(t, name)), Admission: o.admission, Signed: o.signed, Registerer: registerer(o.reg),
		MaxBlobBytes: o.maxBlobs,
		Memberlist: func(mc *memberlist.Config) {
			fastMemberlist(mc)
			if o.tune != nil {
				o.tune(mc)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	tb.SetDrainGate(c.DrainGate)
	r := &testRouter{name: name, table: tb, c: c, o: c.Origin()}
	if !o.noStart {
		if err := c.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { c.Shutdown() })
	return r
}

// cluster3 starts routers a, b, c (b and c join a) and waits until each
// sees three members.
func clusterOf(t testing.TB, names ...string) []*testRouter {
	t.Helper()
	rs := []*testRouter{newTestRouter(t, names[0], routerOpts{})}
	for _, n := range names[1:] {
		rs = append(rs, newTestRouter(t, n, routerOpts{join: []string{rs[0].c.Addr()}}))
	}
	waitMembers(t, len(names), rs...)
	return rs
}

func waitMembers(t testing.TB, n int, rs ...*testRouter) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%d members everywhere", n), func() bool {
		for _, r := range rs {
			if r.c.numMembers() != n {
				return false
			}
		}
		return true
	})
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func announceAt(t testing.TB, r *testRouter, key, addr string, mod func(*balancer.Announce)) balancer.Result {
	t.Helper()
	a := &balancer.Announce{Key: []byte(key), Address: []byte(addr), Weight: 1}
	if mod != nil {
		mod(a)
	}
	res, err := r.o.Announce(a)
	if err != nil {
		t.Fatalf("%s: Announce(%s, %s): %v", r.name, key, addr, err)
	}
	return res
}

// nodeOf returns the node in r's table, or nil.
func (r *testRouter) nodeOf(key, addr string) *balancer.Node {
	if p := r.table.Pool(key); p != nil {
		return p.Node(addr)
	}
	return nil
}

func (r *testRouter) state(key, addr string) string {
	if n := r.nodeOf(key, addr); n != nil {
		return n.State().String()
	}
	return "absent"
}

func waitState(t testing.TB, d time.Duration, key, addr, want string, rs ...*testRouter) {
	t.Helper()
	waitFor(t, d, fmt.Sprintf("%s %s %s everywhere", key, addr, want), func() bool {
		for _, r := range rs {
			if r.state(key, addr) != want {
				return false
			}
		}
		return true
	})
}

// registerer is reg, or nil (not a typed nil) for a private registry.
func registerer(reg *prometheus.Registry) prometheus.Registerer {
	if reg == nil {
		return nil
	}
	return reg
}
