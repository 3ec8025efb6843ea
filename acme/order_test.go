package acme

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/fastrouter/fastrouter/internal/testcert"
	acmeproto "github.com/mholt/acmez/v3/acme"
)

func TestBackoff(t *testing.T) {
	m := testManager(t, nil)
	netErr := errors.New("dial tcp 127.0.0.1:1: connect: connection refused")
	prob := fmt.Errorf("obtain: %w", acmeproto.Problem{Type: "urn:ietf:params:acme:error:unauthorized", Status: 403})
	for _, tt := range []struct {
		err      error
		failures int
		want     time.Duration
	}{
		{netErr, 1, DefaultRetryBase},
		{netErr, 2, 2 * DefaultRetryBase},
		{netErr, 30, DefaultRetryMax},
		{prob, 1, DefaultProblemRetryBase},
		{prob, 3, 4 * DefaultProblemRetryBase},
		{prob, 40, DefaultProblemRetryMax},
	} {
		if got := m.backoff(tt.err, tt.failures); got != tt.want {
			t.Errorf("backoff(%v, %d) = %v; want %v", tt.err, tt.failures, got, tt.want)
		}
	}
}

func TestRenewalDue(t *testing.T) {
	nb := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	leaf := &x509.Certificate{NotBefore: nb, NotAfter: nb.Add(90 * 24 * time.Hour)}
	if got, ari := renewalDue(leaf, nil); !got.Equal(nb.Add(60*24*time.Hour)) || ari {
		t.Errorf("90-day certificate: due %v, ari %v; want day 60", got, ari)
	}
	var ri acmeproto.RenewalInfo
	ri.SuggestedWindow.Start, ri.SuggestedWindow.End = nb.Add(50*24*time.Hour), nb.Add(52*24*time.Hour)
	if got, ari := renewalDue(leaf, &ri); !got.Equal(ri.SuggestedWindow.Start) || !ari {
		t.Errorf("window without a chosen time: %v %v", got, ari)
	}
	selectTime(&ri)
	if ri.SelectedTime.Before(ri.SuggestedWindow.Start) || ri.SelectedTime.After(ri.SuggestedWindow.End) {
		t.Fatalf("selected %v outside the window", ri.SelectedTime)
	}
	if got, ari := renewalDue(leaf, &ri); !got.Equal(ri.SelectedTime) || !ari {
		t.Errorf("chosen time: %v %v", got, ari)
	}
}

// TestWanted: the leader keeps its own domains, the domains of live
// members, and eligible on-demand requests and stored certificates; wants
// of members gone, or for names no longer eligible, are ignored.
func TestWanted(t *testing.T) {
	cl := newFakeCluster("a", "a", "a", "b")
	pools := map[string]bool{"pool.shop.test": true, "stored.shop.test": true}
	m := testManager(t, func(c *Config) {
		c.Domains = []string{"mine.test"}
		c.Cluster, c.OnDemand, c.Allow = cl, true, []string{"shop.test"}
		c.Pools = PoolsFunc(func(k string) bool { return pools[k] })
	})
	conf, _ := json.Marshal(wantRecord{Configured: true})
	od, _ := json.Marshal(wantRecord{})
	now := time.Now()
	cl.set(wantKey("b-domain.test", "b"), conf, now)
	cl.set(wantKey("gone-domain.test", "c"), conf, now) // c is not a member
	cl.set(wantKey("pool.shop.test", "b"), od, now)
	cl.set(wantKey("nopool.shop.test", "b"), od, now)
	cl.set(blobWant+"Bad_Name/b", conf, now)
	ca := testcert.NewCA(t, "unit test CA")
	storeCert(t, m, "stored.shop.test", ca.Issue(t, leafSpec("stored.shop.test")))
	got := m.wanted(m.ctx)
	want := map[string]bool{"mine.test": false, "b-domain.test": false, "pool.shop.test": true, "stored.shop.test": true}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("wanted = %v; want %v", got, want)
	}
	delete(pools, "stored.shop.test")
	if _, ok := m.wanted(m.ctx)["stored.shop.test"]; ok {
		t.Error("a stored on-demand certificate whose pool is gone is still renewed")
	}
}

// TestDueAt: no certificate or a forced renewal is due now, a back-off
// defers, a certificate is due at its renewal time.
func TestDueAt(t *testing.T) {
	m := testManager(t, nil)
	now := time.Now()
	if got := m.dueAt("none.test", now); !got.Equal(now) {
		t.Errorf("no certificate: %v", got)
	}
	ca := testcert.NewCA(t, "unit test CA")
	spec := leafSpec("has.test")
	spec.NotBefore, spec.NotAfter = now.Add(-time.Hour), now.Add(2*time.Hour)
	c := ca.Issue(t, spec)
	leaf := c.Leaf
	storeCert(t, m, "has.test", c)
	if got, want := m.dueAt("has.test", now), leaf.NotBefore.Add(2*time.Hour); !got.Equal(want) {
		t.Errorf("certificate: due %v; want %v", got, want)
	}
	m.setNext("none.test", now.Add(time.Minute))
	if got := m.dueAt("none.test", now); !got.Equal(now.Add(time.Minute)) {
		t.Errorf("backing off: %v", got)
	}
	m.forceRenewal("has.test")
	if got := m.dueAt("has.test", now); !got.Equal(now) {
		t.Errorf("forced: %v", got)
	}
}

// TestBusyElsewhere: a lock held by another live member, or a certificate
// the cluster holds and this router has not written yet, defers an order.
func TestBusyElsewhere(t *testing.T) {
	cl := newFakeCluster("a", "a", "a", "b")
	m := testManager(t, func(c *Config) { c.Cluster = cl })
	now := time.Now()
	lock, _ := json.Marshal(lockRecord{By: "b", Until: now.Add(time.Minute)})
	cl.set(blobLock+"x.test", lock, now)
	if until, busy := m.busyElsewhere("x.test", now); !busy || until.Sub(now) < 59*time.Second {
		t.Errorf("locked by b: %v %v", until, busy)
	}
	cl.mu.Lock()
	cl.members = []string{"a"}
	cl.mu.Unlock()
	if _, busy := m.busyElsewhere("x.test", now); busy {
		t.Error("a lock of a member gone still defers")
	}
	cl.set(blobStore+certmagic.StorageKeys.SiteCert(m.iss.key, "y.test"), []byte("pem"), now)
	if _, busy := m.busyElsewhere("y.test", now); !busy {
		t.Error("a certificate the cluster holds is ordered again")
	}
}

func TestSplitWant(t *testing.T) {
	for key, want := range map[string][2]string{
		"acme/want/a.test/router-1:7946": {"a.test", "router-1:7946"},
		"acme/want/a.test/":              {},
		"acme/want/A.test/r":             {},
		"acme/want/a.test":               {},
		"acme/want/":                     {},
	} {
		name, by, ok := splitWant(key)
		if got := [2]string{name, by}; got != want || ok != (want[0] != "") {
			t.Errorf("splitWant(%q) = %q %q %v", key, name, by, ok)
		}
	}
}

// FuzzParsePeerRecords: the small JSON records peers share (want, err,
// lock, account) parse or fail, never panic, and stay bounded.
func FuzzParsePeerRecords(f *testing.F) {
	f.Add([]byte(`{"configured":true}`))
	f.Add([]byte(`{"error":"x","at":"2026-01-01T00:00:00Z","next":"2026-01-01T00:01:00Z"}`))
	f.Add([]byte(`{"by":"a","until":"2026-01-01T00:00:00Z"}`))
	f.Add([]byte(`{"sans":["a.test"],"issuer_data":{"url":"u","renewal_info":{"suggestedWindow":{"start":"2026-01-01T00:00:00Z","end":"2026-01-02T00:00:00Z"},"_selectedTime":"2026-01-01T12:00:00Z"}}}`))
	f.Add([]byte(`{"location":"https://ca/acct/1","status":"valid","key_pem":"-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n"}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseWant(b)
		if r, err := parseErr(b); err == nil && len(r.Error) > 4096 {
			t.Fatalf("error record of %d bytes", len(r.Error))
		}
		_, _ = parseLock(b)
		if a, err := parseAccount(b); err == nil && (a.PrivateKey == nil || a.Location == "") {
			t.Fatal("account without key or location accepted")
		}
		_ = parseMeta(b)
	})
}
