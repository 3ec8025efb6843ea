package balancer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

// lookupKeys are the pools of TestLookup; each has one node.
var lookupKeys = []string{
	"example.com", "Example.COM:8080", "a.example.com", "*.example.com", "*.b.example.com",
	".dot.org", "*.Upper.test", "fallback", "[::1]:8080", "[::1]",
	strings.Repeat("k", 255),
}

type lookupCase struct {
	name, host string
	want       string // pool key; "" = no pool
	fallback   string // want with FallbackKey "fallback"; "" = same as want, or "fallback" if want is ""
}

func lookupCases() []lookupCase {
	return []lookupCase{
		{name: "exact", host: "example.com", want: "example.com"},
		{name: "exact with port", host: "Example.COM:8080", want: "Example.COM:8080"},
		{name: "case-insensitive", host: "EXAMPLE.com", want: "example.com"},
		{name: "case-insensitive with port before port stripping", host: "example.com:8080", want: "Example.COM:8080"},
		{name: "port stripped", host: "example.com:9999", want: "example.com"},
		{name: "port stripped and case-folded", host: "Example.com:8080x", want: "", fallback: "fallback"},
		{name: "port stripped, key without port", host: "Example.com:81", want: "example.com"},
		{name: "empty port kept", host: "example.com:", want: ""},
		{name: "non-digit port kept", host: "example.com:80a", want: ""},
		{name: "exact beats wildcard", host: "a.example.com", want: "a.example.com"},
		{name: "port-stripped beats wildcard", host: "A.example.com:443", want: "a.example.com"},
		{name: "wildcard", host: "c.example.com", want: "*.example.com"},
		{name: "wildcard with port and case", host: "C.EXAMPLE.COM:80", want: "*.example.com"},
		{name: "deeper wildcard wins", host: "a.b.example.com", want: "*.b.example.com"},
		{name: "deeper wildcard wins, deeper host", host: "x.a.b.example.com", want: "*.b.example.com"},
		{name: "wildcard parent itself", host: "b.example.com", want: "*.example.com"},
		{name: "wildcard does not match its own domain", host: "example.com.evil", want: ""},
		{name: "dotsplit key", host: "a.dot.org", want: ".dot.org"},
		{name: "dotsplit key, case and port", host: "A.Dot.Org:81", want: ".dot.org"},
		{name: "dotsplit key does not match the bare domain", host: "dot.org", want: ""},
		{name: "wildcard key is case-insensitive", host: "x.upper.TEST", want: "*.Upper.test"},
		{name: "ipv6 exact", host: "[::1]:8080", want: "[::1]:8080"},
		{name: "ipv6 port stripped", host: "[::1]:9090", want: "[::1]"},
		{name: "ipv6 without port", host: "[::1]", want: "[::1]"},
		{name: "other ipv6", host: "[::2]:8080", want: ""},
		{name: "bare ipv6 is not port-stripped into a key", host: "::1", want: ""},
		{name: "non-ASCII is not case-folded", host: "É.test", want: ""},
		{name: "255-byte host", host: strings.Repeat("k", 255), want: strings.Repeat("k", 255)},
		{name: "255-byte host, upper case", host: strings.Repeat("K", 255), want: strings.Repeat("k", 255)},
		{name: "256-byte host", host: strings.Repeat("k", 256), want: ""},
		{name: "300-byte host", host: strings.Repeat("a", 300), want: ""},
		{name: "long host that is a key plus a long port", host: "example.com:" + strings.Repeat("1", 300), want: ""},
		{name: "long host under a wildcard", host: strings.Repeat("a", 250) + ".example.com", want: ""},
		{name: "empty host", host: "", want: ""},
		{name: "only a port", host: ":8080", want: ""},
		{name: "unknown", host: "unknown.net", want: ""},
		{name: "fallback key by name", host: "fallback", want: "fallback"},
	}
}

// TestLookup checks the matching order (README, "Host matching"): exact key, then
// case-insensitive, then the host without its port, then wildcard keys
// ("*.x" and ".x", longest suffix first), then the fallback key.
func TestLookup(t *testing.T) {
	for _, fb := range []string{"", "fallback"} {
		tb, _ := newTable(t, Config{FallbackKey: fb})
		for _, k := range lookupKeys {
			announce(t, tb, k, "10.0.0.1:3031", 1)
		}
		for _, tc := range lookupCases() {
			t.Run(fmt.Sprintf("fallback=%q/%s", fb, tc.name), func(t *testing.T) {
				want := tc.want
				if fb != "" && want == "" {
					want = fb
				}
				if want == "" {
					want = "<nil>"
				}
				if got := keyOf(tb.Lookup([]byte(tc.host))); got != want {
					t.Errorf("Lookup(%.60q) = %.60q; want %.60q", tc.host, got, want)
				}
			})
		}
	}
}

func TestLookupWildcardNeedsSubdomain(t *testing.T) {
	tb, _ := newTable(t, Config{})
	announce(t, tb, "*.example.com", "10.0.0.1:3031", 1)
	for _, host := range []string{"example.com", "EXAMPLE.COM:80", ".com", "com", "xexample.com"} {
		if p := tb.Lookup([]byte(host)); p != nil {
			t.Errorf("Lookup(%q) = %s; want nil", host, p.Key)
		}
	}
	if p := tb.Lookup([]byte(".example.com")); keyOf(p) != "*.example.com" {
		t.Errorf("Lookup(\".example.com\") = %s; want the wildcard (empty label)", keyOf(p))
	}
}

func TestLookupFallbackMissing(t *testing.T) {
	tb, _ := newTable(t, Config{FallbackKey: "fb"})
	announce(t, tb, "a", "10.0.0.1:3031", 1)
	if p := tb.Lookup([]byte("b")); p != nil {
		t.Fatalf("fallback pool does not exist yet, got %s", p.Key)
	}
	announce(t, tb, "fb", "10.0.0.1:3031", 1)
	if p := tb.Lookup([]byte("b")); keyOf(p) != "fb" {
		t.Fatalf("Lookup miss = %s; want fb", keyOf(p))
	}
	tb.RemoveNode("fb", "10.0.0.1:3031")
	if p := tb.Lookup([]byte("b")); keyOf(p) != "fb" || p.HasNodes() {
		t.Fatalf("emptied fallback pool: Lookup = %s; want fb without nodes (503)", keyOf(p))
	}
	tb.DeletePool("fb")
	if p := tb.Lookup([]byte("b")); p != nil {
		t.Fatalf("fallback pool deleted, got %s", p.Key)
	}
}

func TestNew(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		err  error // nil: must succeed; errAny: any error
	}{
		{"zero", Config{}, nil},
		{"lrc", Config{DefaultAlgo: AlgoLRC}, nil},
		{"bad algo", Config{DefaultAlgo: "rr"}, errAny},
		{"fallback 255", Config{FallbackKey: strings.Repeat("f", 255)}, nil},
		{"fallback 256", Config{FallbackKey: strings.Repeat("f", 256)}, ErrKeyTooLong},
		{"fallback with a space", Config{FallbackKey: "a b"}, ErrBadKey},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, err := New(tc.cfg)
			switch {
			case tc.err == nil && err != nil, tc.err != nil && err == nil,
				tc.err != nil && tc.err != errAny && !errors.Is(err, tc.err):
				t.Fatalf("New(%+v) error = %v; want %v", tc.cfg, err, tc.err)
			}
			if err != nil {
				return
			}
			if time.Since(tb.Now()) > time.Minute {
				t.Error("nil Config.Now is not time.Now")
			}
			want := tc.cfg.DefaultAlgo
			if want == "" {
				want = AlgoWRR
			}
			if _, err := tb.Announce(&Announce{Key: []byte("k"), Address: []byte("/s")}); err != nil || tb.Pool("k").Algo() != want {
				t.Errorf("pool algo %s, %v; want %s", tb.Pool("k").Algo(), err, want)
			}
		})
	}
}

var errAny = errors.New("any error")

func TestAnnounceErrors(t *testing.T) {
	cases := []struct {
		name string
		a    Announce
		err  error
	}{
		{"empty key", Announce{Address: []byte("/s")}, ErrEmptyKey},
		{"key 256 bytes", Announce{Key: []byte(strings.Repeat("k", 256)), Address: []byte("/s")}, ErrKeyTooLong},
		{"non-ASCII key", Announce{Key: []byte("é.test"), Address: []byte("/s")}, ErrBadKey},
		{"invalid UTF-8 key", Announce{Key: []byte("junk.tes\xff"), Address: []byte("/s")}, ErrBadKey},
		{"control byte in key", Announce{Key: []byte("a\x00b"), Address: []byte("/s")}, ErrBadKey},
		{"invalid UTF-8 address", Announce{Key: []byte("k"), Address: []byte("/s\xff")}, ErrBadAddress},
		{"empty address", Announce{Key: []byte("k")}, ErrBadAddress},
		{"host name", Announce{Key: []byte("k"), Address: []byte("localhost:3031")}, ErrBadAddress},
		{"port only", Announce{Key: []byte("k"), Address: []byte(":3031")}, ErrBadAddress},
		{"http node with a path", Announce{Key: []byte("k"), Address: []byte("http://127.0.0.1:8000/x")}, ErrBadHTTPAddress},
		{"bad algo", Announce{Key: []byte("k"), Address: []byte("/s"), Algo: []byte("random")}, errAny},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tb, _ := newTable(t, Config{})
			_, err := tb.Announce(&tc.a)
			if err == nil || (tc.err != errAny && !errors.Is(err, tc.err)) {
				t.Fatalf("Announce error = %v; want %v", err, tc.err)
			}
			if tb.Len() != 0 || len(tb.Pools()) != 0 {
				t.Fatalf("failed Announce left %d pools", tb.Len())
			}
		})
	}
	tb, _ := newTable(t, Config{})
	if _, err := tb.Announce(&Announce{Key: []byte(strings.Repeat("k", 255)), Address: []byte("/s")}); err != nil {
		t.Fatalf("255-byte key refused: %v", err)
	}
	if err := tb.AddStatic("k", "nohost:1", 1); !errors.Is(err, ErrBadAddress) {
		t.Fatalf("AddStatic with a bad address: %v; want ErrBadAddress wrapped", err)
	}
}

func TestAnnounceResults(t *testing.T) {
	var changes []string
	c := newClock()
	tb, err := New(Config{Now: c.Now, OnChange: func(k string) { changes = append(changes, k) }})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		key, addr string
		want      Result
	}{
		{"b", addr(0), CreatedPool},
		{"b", addr(1), CreatedNode},
		{"b", addr(0), Refreshed},
		{"a", addr(0), CreatedPool},
		{"B", addr(0), CreatedPool}, // keys are exact; B is another pool
		{"a", addr(0), Refreshed},
	}
	for _, s := range steps {
		if got := announce(t, tb, s.key, s.addr, 1); got != s.want {
			t.Errorf("Announce(%s, %s) = %v; want %v", s.key, s.addr, got, s.want)
		}
	}
	if want := []string{"b", "b", "a", "B"}; !slices.Equal(changes, want) {
		t.Errorf("OnChange calls %q; want %q (none for refreshes)", changes, want)
	}
	var keys []string
	for _, p := range tb.Pools() {
		keys = append(keys, p.Key)
	}
	if want := []string{"B", "a", "b"}; !slices.Equal(keys, want) || tb.Len() != 3 {
		t.Errorf("Pools() = %q, Len %d; want %q sorted", keys, tb.Len(), want)
	}
	var addrs []string
	for _, n := range tb.Pool("b").Nodes() {
		addrs = append(addrs, n.Address)
	}
	if want := []string{addr(0), addr(1)}; !slices.Equal(addrs, want) {
		t.Errorf("nodes %q; want insertion order %q", addrs, want)
	}
}

// TestAnnounceRefresh: a refresh keeps the node (same pointer, one node),
// updates weight, cores, load, notify and last-seen, and leaves the
// modifiers, the state and the pool's algorithm alone.
func TestAnnounceRefresh(t *testing.T) {
	tb, clk := newTable(t, Config{})
	first := &Announce{Key: []byte("k"), Address: []byte("/run/app.sock"), Modifier1: 5, Modifier2: 1,
		Weight: 2, Cores: 4, Load: 1, Notify: []byte("/run/n1"), Algo: []byte("lrc")}
	if res, err := tb.Announce(first); err != nil || res != CreatedPool {
		t.Fatalf("Announce = %v, %v", res, err)
	}
	p := tb.Pool("k")
	n := p.Node("/run/app.sock")
	created := tb.Now()
	if !n.Info().LastSeen.Equal(created) || n.Endpoint.Network != NetUnix || n.Notify() != "/run/n1" {
		t.Fatalf("created node %+v", n.Info())
	}
	n.ReportFailure(tb.Now())

	clk.Add(10 * time.Second)
	res, err := tb.Announce(&Announce{Key: []byte("k"), Address: []byte("/run/app.sock"), Modifier1: 9, Modifier2: 9,
		Weight: 7, Cores: 8, Load: 3, Notify: []byte("/run/n2"), Algo: []byte("wrr")})
	if err != nil || res != Refreshed {
		t.Fatalf("refresh = %v, %v; want Refreshed", res, err)
	}
	if len(p.Nodes()) != 1 || p.Node("/run/app.sock") != n || tb.Pool("k") != p {
		t.Fatal("refresh replaced the node or the pool")
	}
	got := n.Info()
	want := NodeInfo{Address: "/run/app.sock", Weight: 7, Cores: 8, Load: 3, State: StateFailed, Failures: 1,
		LastSeen: tb.Now(), Modifier1: 5, Modifier2: 1}
	if !got.LastSeen.Equal(want.LastSeen) {
		t.Errorf("LastSeen %v; want %v", got.LastSeen, want.LastSeen)
	}
	got.LastSeen = want.LastSeen
	if got != want {
		t.Errorf("after refresh\n%+v\nwant\n%+v", got, want)
	}
	if n.Notify() != "/run/n2" || p.Algo() != AlgoLRC {
		t.Errorf("notify %q algo %s; want /run/n2, lrc", n.Notify(), p.Algo())
	}
	// An announce without notify keeps the known one.
	announce(t, tb, "k", "/run/app.sock", 1)
	if n.Notify() != "/run/n2" {
		t.Errorf("empty notify cleared %q", n.Notify())
	}
}

func TestAnnounceWeight(t *testing.T) {
	cases := []struct {
		in   uint64
		want int64
	}{
		{0, 1}, {1, 1}, {100, 100}, {1 << 20, 1 << 20}, {1<<20 + 1, 1 << 20}, {1 << 63, 1 << 20}, {1<<64 - 1, 1 << 20},
	}
	for _, tc := range cases {
		tb, _ := newTable(t, Config{})
		announce(t, tb, "k", "/s", tc.in)
		if got := tb.Pool("k").Node("/s").Weight(); got != tc.want {
			t.Errorf("weight %d stored as %d; want %d", tc.in, got, tc.want)
		}
		announce(t, tb, "k", "/s", tc.in) // refresh path
		if got := tb.Pool("k").Node("/s").Weight(); got != tc.want {
			t.Errorf("refreshed weight %d stored as %d; want %d", tc.in, got, tc.want)
		}
	}
}

func TestExpire(t *testing.T) {
	const tol = 17 * time.Second
	tb, clk := newTable(t, Config{})
	t0 := clk.Nano()
	announce(t, tb, "k", addr(0), 1) // silent from t0
	announce(t, tb, "k", addr(1), 1) // refreshed right before the cutoff
	announce(t, tb, "alone", addr(2), 1)
	if err := tb.AddStatic("k", addr(3), 1); err != nil {
		t.Fatal(err)
	}

	clk.Add(tol)
	if n := tb.Expire(tol); n != 0 {
		t.Fatalf("at exactly the tolerance Expire removed %d; want 0", n)
	}
	announce(t, tb, "k", addr(1), 1) // at t0+tol
	clk.Add(time.Nanosecond)
	if n := tb.Expire(tol); n != 2 {
		t.Fatalf("1ns past the tolerance Expire removed %d; want 2 (%s and alone)", n, addr(0))
	}
	if tb.Pool("k").Node(addr(0)) != nil || tb.Pool("k").Node(addr(1)) == nil || tb.Pool("k").Node(addr(3)) == nil {
		t.Fatal("wrong nodes expired")
	}
	// An emptied pool stays (answering 503) for one more tolerance.
	if p := tb.Lookup([]byte("alone")); keyOf(p) != "alone" || p.HasNodes() || tb.Len() != 2 {
		t.Fatalf("emptied pool: Lookup = %s, Len %d; want alone without nodes, Len 2", keyOf(p), tb.Len())
	}

	clk.Add(tol) // addr(1) last seen at t0+tol, now t0+2tol+1ns
	if n := tb.Expire(tol); n != 1 {
		t.Fatalf("Expire removed %d; want 1", n)
	}
	clk.Add(24 * time.Hour)
	if n := tb.Expire(tol); n != 0 {
		t.Fatalf("static node expired (%d removed)", n)
	}
	if tb.Pool("alone") != nil || tb.Len() != 1 {
		t.Fatalf("emptied pool not deleted after the tolerance (Len %d)", tb.Len())
	}
	if p := tb.Pool("k"); p == nil || len(p.Nodes()) != 1 || !p.Nodes()[0].Static {
		t.Fatal("static node gone")
	}
	if got := time.Duration(clk.Nano() - t0); got < 24*time.Hour {
		t.Fatal("clock did not move")
	}
}

func TestRemoveNode(t *testing.T) {
	tb, clk := newTable(t, Config{})
	p := poolWith(t, tb, "*.k.test", AlgoWRR, 1, 1)
	n := p.Pick(clk.Nano(), nil)
	cases := []struct {
		key, addr string
		want      bool
	}{
		{"nope", addr(0), false},
		{"*.k.test", "/nope", false},
		{"*.K.test", n.Address, false}, // keys are exact
		{"*.k.test", n.Address, true},
		{"*.k.test", n.Address, false},
	}
	for _, tc := range cases {
		if got := tb.RemoveNode(tc.key, tc.addr); got != tc.want {
			t.Errorf("RemoveNode(%q, %q) = %v; want %v", tc.key, tc.addr, got, tc.want)
		}
	}
	if p.Node(n.Address) != nil || len(p.Nodes()) != 1 {
		t.Fatal("removed node still listed")
	}
	if !n.removed.Load() || n.Inflight() != 1 {
		t.Fatalf("removed %v inflight %d; the in-flight request keeps its node", n.removed.Load(), n.Inflight())
	}
	n.Done()
	if n.Inflight() != 0 {
		t.Fatalf("inflight %d after Done on a removed node", n.Inflight())
	}
	for range 10 {
		if got := p.Pick(clk.Nano(), nil); got == n {
			t.Fatal("removed node picked")
		} else {
			got.Done()
		}
	}
	tb.RemoveNode("*.k.test", p.Nodes()[0].Address)
	if p := tb.Lookup([]byte("a.k.test")); keyOf(p) != "*.k.test" || p.HasNodes() || tb.Len() != 1 {
		t.Fatal("emptied pool must stay reachable without nodes (503) until it expires")
	}
	// The pool comes back with the next announce.
	announce(t, tb, "*.k.test", addr(0), 1)
	if keyOf(tb.Lookup([]byte("a.k.test"))) != "*.k.test" {
		t.Fatal("re-announced wildcard not reachable")
	}
}

// TestCaseFoldedKeys: keys that differ only in case are separate pools,
// each reachable by its exact spelling; removing one leaves the other
// reachable case-insensitively, whichever was added first.
func TestCaseFoldedKeys(t *testing.T) {
	for _, order := range [][2]string{{"Site.test", "site.TEST"}, {"site.TEST", "Site.test"}} {
		for _, remove := range order {
			t.Run(fmt.Sprintf("add %s then %s, remove %s", order[0], order[1], remove), func(t *testing.T) {
				tb, _ := newTable(t, Config{})
				announce(t, tb, order[0], "10.0.0.1:3031", 1)
				announce(t, tb, order[1], "10.0.0.2:3031", 1)
				for _, k := range order {
					if got := keyOf(tb.Lookup([]byte(k))); got != k {
						t.Fatalf("Lookup(%s) = %s; want the exact pool", k, got)
					}
				}
				if got := keyOf(tb.Lookup([]byte("SITE.Test"))); got != order[0] {
					t.Fatalf("case-insensitive Lookup = %s; want the first added, %s", got, order[0])
				}
				keep := order[0]
				if keep == remove {
					keep = order[1]
				}
				tb.RemoveNode(remove, tb.Pool(remove).Nodes()[0].Address)
				for _, host := range []string{"SITE.Test", "site.test", remove, remove + ":8080"} {
					if got := keyOf(tb.Lookup([]byte(host))); got != keep {
						t.Errorf("after removing %s: Lookup(%s) = %s; want %s", remove, host, got, keep)
					}
				}
			})
		}
	}
}

// TestWildcardSpellings: "*.x.test" and ".x.test" serve the same suffix;
// removing either keeps wildcard routing through the other.
func TestWildcardSpellings(t *testing.T) {
	for _, order := range [][2]string{{"*.x.test", ".x.test"}, {".x.test", "*.x.test"}, {"*.X.test", ".x.TEST"}} {
		for _, remove := range order {
			t.Run(fmt.Sprintf("add %s then %s, remove %s", order[0], order[1], remove), func(t *testing.T) {
				tb, _ := newTable(t, Config{})
				announce(t, tb, order[0], "10.0.0.1:3031", 1)
				announce(t, tb, order[1], "10.0.0.2:3031", 1)
				if got := keyOf(tb.Lookup([]byte("a.x.test"))); got != order[0] {
					t.Fatalf("Lookup(a.x.test) = %s; want the first added, %s", got, order[0])
				}
				keep := order[0]
				if keep == remove {
					keep = order[1]
				}
				tb.RemoveNode(remove, tb.Pool(remove).Nodes()[0].Address)
				if got := keyOf(tb.Lookup([]byte("a.x.test"))); got != keep {
					t.Fatalf("after removing %s: Lookup(a.x.test) = %s; want %s", remove, got, keep)
				}
				tb.RemoveNode(keep, tb.Pool(keep).Nodes()[0].Address)
				if p := tb.Lookup([]byte("a.x.test")); p != nil && p.HasNodes() {
					t.Fatalf("both spellings emptied, Lookup = %s with nodes", p.Key)
				}
			})
		}
	}
}

// TestWildcardTakeoverUnrelated: removing a wildcard keeps unrelated
// wildcards and does not hand a suffix to a pool of another suffix.
func TestWildcardTakeoverUnrelated(t *testing.T) {
	tb, _ := newTable(t, Config{})
	for i := range 50 {
		announce(t, tb, fmt.Sprintf("*.w%d.test", i), "10.0.0.1:3031", 1)
	}
	announce(t, tb, "*.gone.test", "10.0.0.1:3031", 1)
	tb.RemoveNode("*.gone.test", "10.0.0.1:3031")
	if p := tb.Lookup([]byte("a.gone.test")); p != nil && (p.Key != "*.gone.test" || p.HasNodes()) {
		t.Fatalf("emptied wildcard routed to %s", p.Key)
	}
	for i := range 50 {
		if got, want := keyOf(tb.Lookup([]byte(fmt.Sprintf("a.w%d.test", i)))), fmt.Sprintf("*.w%d.test", i); got != want {
			t.Fatalf("Lookup = %s; want %s", got, want)
		}
	}
}

// TestBulkLoadMatchesAnnounce keeps the benchmark helper bulkLoad equivalent
// to building the table with Announce.
func TestBulkLoadMatchesAnnounce(t *testing.T) {
	var keys, hosts []string
	for i := range 300 {
		k := fmt.Sprintf("h%d.example.com", i)
		switch i % 5 {
		case 1:
			k = "*." + k
		case 2:
			k = "." + k
		case 3:
			k = strings.ToUpper(k)
		}
		keys = append(keys, k)
		hosts = append(hosts, k, strings.ToLower(k), "a"+k, "a."+strings.TrimLeft(k, "*."), k+":80")
	}
	keys = append(keys, "H3.EXAMPLE.COM.", "h3.Example.com") // case-fold collisions
	want, _ := newTable(t, Config{})
	for _, k := range keys {
		announce(t, want, k, "10.0.0.1:3031", 1)
	}
	got, _ := newTable(t, Config{})
	bulkLoad(t, got, keys, "10.0.0.1:3031")
	if got.Len() != want.Len() || len(got.Pools()) != len(want.Pools()) {
		t.Fatalf("bulkLoad made %d pools; Announce %d", got.Len(), want.Len())
	}
	for _, h := range hosts {
		if g, w := keyOf(got.Lookup([]byte(h))), keyOf(want.Lookup([]byte(h))); g != w {
			t.Errorf("Lookup(%s): bulkLoad table %s, Announce table %s", h, g, w)
		}
	}
}

// TestKeySpellingsBounded: keys that differ only in case share one shard,
// so their number is bounded (maxSpellings); a freed spelling can be taken
// again, and other keys are unaffected.
func TestKeySpellingsBounded(t *testing.T) {
	tb, _ := newTable(t, Config{})
	const base = "abcdefghijklmnop.test" // 16 letters before the dot: 2^16 spellings
	spelling := func(i int) string {
		b := []byte(base)
		for j := 0; j < 16; j++ {
			if i&(1<<j) != 0 {
				b[j] -= 'a' - 'A'
			}
		}
		return string(b)
	}
	for i := range maxSpellings {
		announce(t, tb, spelling(i), "10.0.0.1:3031", 1)
	}
	a := &Announce{Key: []byte(spelling(maxSpellings)), Address: []byte("10.0.0.1:3031")}
	if _, err := tb.Announce(a); !errors.Is(err, ErrTooManySpellings) {
		t.Fatalf("spelling %d: err %v; want ErrTooManySpellings", maxSpellings+1, err)
	}
	if got := tb.Len(); got != maxSpellings {
		t.Fatalf("Len = %d; want %d", got, maxSpellings)
	}
	// A new node in an existing spelling is still taken.
	announce(t, tb, spelling(0), "10.0.0.2:3031", 1)
	announce(t, tb, "other.test", "10.0.0.1:3031", 1)
	tb.DeletePool(spelling(3))
	if _, err := tb.Announce(a); err != nil {
		t.Fatalf("after a delete: %v", err)
	}
}

// TestShardsAreSeeded: keys chosen to collide in one shard under a fixed
// hash (FNV-1a, which shardOf used) spread over the shards, so that nobody
// who can subscribe can make every creation copy one ever-growing shard.
func TestShardsAreSeeded(t *testing.T) {
	fnv := func(s string) int {
		h := uint32(2166136261)
		for i := 0; i < len(s); i++ {
			h ^= uint32(s[i])
			h *= 16777619
		}
		return int(h % shardCount)
	}
	var keys []string
	for i := 0; len(keys) < 64; i++ {
		if k := fmt.Sprintf("c%d.test", i); fnv(k) == 0 {
			keys = append(keys, k)
		}
	}
	tb, _ := newTable(t, Config{})
	shards := map[int]bool{}
	for _, k := range keys {
		announce(t, tb, k, "10.0.0.1:3031", 1)
		shards[tb.shardOf([]byte(k))] = true
		if keyOf(tb.Lookup([]byte(k))) != k {
			t.Fatalf("Lookup(%s) = %s", k, keyOf(tb.Lookup([]byte(k))))
		}
	}
	// Under a random seed, 64 keys in one shard has probability 1024^-63.
	if len(shards) == 1 {
		t.Fatalf("64 FNV-colliding keys all in one shard")
	}
}
