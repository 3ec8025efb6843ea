//go:build !race

package balancer

import (
	"fmt"
	"testing"
)

// Allocation gates: Lookup, Pick+Done and a refresh announce run per request
// or per datagram and must allocate nothing (house style §5). The race
// detector allocates, hence the build tag.

// longKey is longer than Go's 32-byte conversion buffer, so a []byte→string
// conversion on the path would show up as an allocation.
const longKey = "some-service.staging.internal.example.com"

func TestLookupAllocatesNothing(t *testing.T) {
	tb, _ := newTable(t, Config{FallbackKey: longKey})
	for _, k := range []string{"example.com", "*.wild.com", longKey, "*.svc.internal.example.net"} {
		announce(t, tb, k, "10.0.0.1:3031", 1)
	}
	for i := range 1000 {
		announce(t, tb, fmt.Sprintf("h%d.example.org", i), "10.0.0.1:3031", 1)
	}
	cases := []struct{ name, host, want string }{
		{"exact", "example.com", "example.com"},
		{"case-folded", "EXAMPLE.com", "example.com"},
		{"port-stripped", "example.com:8080", "example.com"},
		{"folded and port-stripped", "Example.COM:8080", "example.com"},
		{"wildcard", "a.wild.com", "*.wild.com"},
		{"wildcard, long host", "some-pod-1234.region-a.svc.internal.example.net:443", "*.svc.internal.example.net"},
		{"long key exact", longKey, longKey},
		{"long key folded with port", "SOME-service.staging.internal.example.com:8443", longKey},
		{"fallback", "nothing.test", longKey},
		{"too long", string(make([]byte, 300)), longKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := []byte(tc.host)
			if got := keyOf(tb.Lookup(h)); got != tc.want {
				t.Fatalf("Lookup(%.40q) = %s; want %s", tc.host, got, tc.want)
			}
			if n := testing.AllocsPerRun(1000, func() { tb.Lookup(h) }); n != 0 {
				t.Errorf("Lookup(%.40q): %v allocs/op; want 0", tc.host, n)
			}
		})
	}
}

func TestPickAllocatesNothing(t *testing.T) {
	for _, algo := range allAlgos {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			weights := make([]uint64, 16)
			for i := range weights {
				weights[i] = uint64(i%3 + 1)
			}
			p := poolWith(t, tb, "example.com", algo, weights...)
			now := clk.Nano()
			if n := testing.AllocsPerRun(1000, func() { p.Pick(now, nil).Done() }); n != 0 {
				t.Errorf("Pick+Done on 16 nodes: %v allocs/op; want 0", n)
			}
			tried := p.Nodes()[:3]
			if n := testing.AllocsPerRun(1000, func() { p.Pick(now, tried).Done() }); n != 0 {
				t.Errorf("Pick+Done with a tried list: %v allocs/op; want 0", n)
			}
			ip := []byte{10, 1, 2, 3}
			cookie := []byte("session=" + longKey)
			for _, key := range [][]byte{ip, cookie} {
				if n := testing.AllocsPerRun(1000, func() { p.PickKey(now, tried, key).Done() }); n != 0 {
					t.Errorf("PickKey(%d-byte key)+Done: %v allocs/op; want 0", len(key), n)
				}
			}
			// Held load: wlrc ties end, hash bounds bite, p2c compares.
			held := make([]*Node, 0, 64)
			for range 64 {
				held = append(held, p.PickKey(now, nil, cookie))
			}
			if n := testing.AllocsPerRun(1000, func() { p.PickKey(now, nil, cookie).Done() }); n != 0 {
				t.Errorf("PickKey+Done under load: %v allocs/op; want 0", n)
			}
			for _, h := range held {
				h.Done()
			}
			host := []byte("Example.com:443")
			if n := testing.AllocsPerRun(1000, func() { tb.Lookup(host).Pick(now, nil).Done() }); n != 0 {
				t.Errorf("Lookup+Pick+Done: %v allocs/op; want 0", n)
			}
			node := p.Nodes()[0]
			if n := testing.AllocsPerRun(1000, func() { node.ReportFailure(tb.Now()); node.ReportSuccess() }); n != 0 {
				t.Errorf("ReportFailure+ReportSuccess: %v allocs/op; want 0", n)
			}
		})
	}
}

// TestPickBackupAllocatesNothing: serving a backup level and computing
// StateBackup allocate nothing either.
func TestPickBackupAllocatesNothing(t *testing.T) {
	for _, algo := range allAlgos {
		t.Run(string(algo), func(t *testing.T) {
			tb, clk := newTable(t, Config{})
			p := backupPool(t, tb, algo, 0, 0, 1, 1, 2)
			now := clk.Nano()
			primaries := p.Nodes()[:2]
			key := []byte{10, 1, 2, 3}
			if n := testing.AllocsPerRun(1000, func() { p.PickKey(now, primaries, key).Done() }); n != 0 {
				t.Errorf("PickKey on level 1: %v allocs/op; want 0", n)
			}
			b := p.Nodes()[4]
			if n := testing.AllocsPerRun(1000, func() { b.State() }); n != 0 {
				t.Errorf("State of a backup node: %v allocs/op; want 0", n)
			}
		})
	}
}

func TestAnnounceRefreshAllocatesNothing(t *testing.T) {
	cases := []struct{ name, key, addr string }{
		{"short", "example.com", "10.0.0.3:3031"},
		{"long key", longKey, "10.0.0.3:3031"},
		{"long key and address", longKey, "/var/run/uwsgi/some-service-staging-01.sock"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, _ := newTable(t, Config{})
			for i := range 16 {
				announce(t, tb, tc.key, addr(i), 1)
			}
			announce(t, tb, tc.key, tc.addr, 1)
			a := &Announce{Key: []byte(tc.key), Address: []byte(tc.addr), Weight: 2, Cores: 4, Load: 1,
				Notify: []byte("/run/uwsgi/notify.sock")}
			if n := testing.AllocsPerRun(1000, func() {
				if res, err := tb.Announce(a); res != Refreshed || err != nil {
					t.Fatalf("Announce = %v, %v; want Refreshed", res, err)
				}
			}); n != 0 {
				t.Errorf("Announce refresh: %v allocs/op; want 0", n)
			}
		})
	}
}

// Acquire under a cap that is not reached takes the slot by CAS and
// allocates nothing; only waiting does (its timer).
func TestAcquireUnderCapAllocatesNothing(t *testing.T) {
	tb, _ := newTable(t, Config{Policy: Policy{MaxInflight: LimitAuto}})
	for i := range 4 {
		if _, err := tb.Announce(&Announce{Key: []byte("cap.test"), Address: []byte(addr(i)), Cores: 8}); err != nil {
			t.Fatal(err)
		}
	}
	p := tb.Pool("cap.test")
	now := tb.Now().UnixNano()
	if a := testing.AllocsPerRun(1000, func() {
		n, err := p.Acquire(now, nil, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		n.Done()
	}); a != 0 {
		t.Fatalf("Acquire+Done under a cap: %v allocs", a)
	}
}
