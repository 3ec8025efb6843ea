package acme

import (
	"crypto/tls"
	"encoding/json"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestLimits: a burst of new names, then one per refill; a pending name
// waits without spending a token; a failed one is held back; an
// unanswered request counts as failed.
func TestLimits(t *testing.T) {
	l := newLimits()
	now := time.Unix(1700000000, 0)
	for i := range onDemandBurst {
		if got := l.request(string(rune('a'+i))+".test", now); got != reqNew {
			t.Fatalf("request %d: %d; want reqNew", i, got)
		}
	}
	if got := l.request("z.test", now); got != reqLimited {
		t.Errorf("past the burst: %d; want reqLimited", got)
	}
	if got := l.request("a.test", now); got != reqPending {
		t.Errorf("a pending name: %d; want reqPending", got)
	}
	if !l.pending("a.test", now) || len(l.pendingNames(now)) != onDemandBurst {
		t.Error("pending names lost")
	}
	if got := l.request("z.test", now.Add(onDemandRefill)); got != reqNew {
		t.Errorf("after a refill: %d; want reqNew", got)
	}
	l.failed("b.test", now, time.Minute)
	if got := l.request("b.test", now.Add(30*time.Second)); got != reqLimited {
		t.Errorf("a failed name within its back-off: %d", got)
	}
	l.done("a.test")
	if l.pending("a.test", now) {
		t.Error("done name still pending")
	}
	later := now.Add(onDemandPending + time.Second)
	if got := l.request("c.test", later); got != reqLimited {
		t.Errorf("a request never answered: %d; want reqLimited (a failure)", got)
	}
}

// TestOnDemandRefusals: names outside --acme-allow, or that are not a
// pool's exact key, get nothing at once and ask for nothing.
func TestOnDemandRefusals(t *testing.T) {
	cl := newFakeCluster("b", "a", "a", "b")
	pools := map[string]bool{"eu.shop.test": true, "other.test": true}
	m := testManager(t, func(c *Config) {
		c.OnDemand, c.Allow, c.Cluster = true, []string{"shop.test"}, cl
		c.Pools = PoolsFunc(func(k string) bool { return pools[k] })
		c.OnDemandWait = 50 * time.Millisecond
	})
	for _, tt := range []struct {
		sni  string
		want float64
		what string
	}{
		{"other.test", 1, "not_allowed"},
		{"x.shop.test", 1, "not_pool"},
		{"*.shop.test", 0, ""},
	} {
		start := time.Now()
		c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
		if c != nil || err != nil || time.Since(start) > 20*time.Millisecond {
			t.Errorf("%s: %v %v after %v; want nothing at once", tt.sni, c, err, time.Since(start))
		}
	}
	if got := testutil.ToFloat64(m.m.onDemandNotAllowed); got != 1 {
		t.Errorf("not_allowed %v", got)
	}
	if got := testutil.ToFloat64(m.m.onDemandNotPool); got != 2 {
		t.Errorf("not_pool %v; want 2 (x.shop.test, *.shop.test)", got)
	}
	if len(cl.puts) != 0 {
		t.Errorf("refused names were asked for: %q", cl.puts)
	}
	// A pool's name: a non-leader asks the leader with a want blob, then
	// serves the default after OnDemandWait.
	c, _ := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "EU.shop.test"})
	if c != nil {
		t.Error("a certificate out of nowhere")
	}
	val, _, ok := cl.Blob(wantKey("eu.shop.test", "b"))
	var w wantRecord
	if !ok || json.Unmarshal(val, &w) != nil || w.Configured {
		t.Errorf("want blob %q %v", val, ok)
	}
	if got := testutil.ToFloat64(m.m.onDemandRequested); got != 1 {
		t.Errorf("requested %v", got)
	}
}

// TestOnDemandServedWhenReady: a handshake waiting for an on-demand order
// gets the certificate as soon as it is stored.
func TestOnDemandServedWhenReady(t *testing.T) {
	m := testManager(t, func(c *Config) {
		c.OnDemand, c.Allow = true, []string{"test"}
		c.Pools = PoolsFunc(func(k string) bool { return k == "soon.test" })
		c.OnDemandWait = 10 * time.Second
	})
	ca := testcert.NewCA(t, "unit test CA")
	c := ca.Issue(t, leafSpec("soon.test"))
	leaf := c.Leaf
	done := make(chan *tls.Certificate)
	go func() {
		c, _ := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "soon.test"})
		done <- c
	}()
	deadline := time.Now().Add(5 * time.Second)
	for !m.limits.pending("soon.test", m.now()) {
		if time.Now().After(deadline) {
			t.Fatal("no request")
		}
		time.Sleep(time.Millisecond)
	}
	storeCert(t, m, "soon.test", c)
	select {
	case c := <-done:
		if c == nil || c.Leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatal("the waiting handshake did not get the stored certificate")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting handshake did not wake")
	}
}
