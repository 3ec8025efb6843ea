package router

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
)

func TestParseHashKey(t *testing.T) {
	for _, ok := range []string{"header:X-User", "cookie:sessionid"} {
		if _, err := parseHashKey(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "header", "header:", "query:x", "cookie:a b", "cookie:a;b", "cookie:a=b"} {
		if _, err := parseHashKey(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestCookieValue(t *testing.T) {
	for _, c := range []struct{ h, name, want string }{
		{"a=1; sid=xyz; b=2", "sid", "xyz"},
		{"sid=xyz", "sid", "xyz"},
		{`sid="quoted"`, "sid", "quoted"},
		{"xsid=1; sid=2", "sid", "2"},
		{"a=1", "sid", ""},
		{"sid", "sid", ""},
		{"", "sid", ""},
	} {
		if got := string(cookieValue([]byte(c.h), []byte(c.name))); got != c.want {
			t.Errorf("cookieValue(%q, %q) = %q; want %q", c.h, c.name, got, c.want)
		}
	}
}

func TestAffinityKey(t *testing.T) {
	rt := &Router{}
	var err error
	if rt.hash, err = parseHashKey("cookie:sid"); err != nil {
		t.Fatal(err)
	}
	x := &exchange{}
	x.req.Remote = netip.MustParseAddrPort("192.0.2.7:5555")
	x.req.Headers = []hdr{
		{[]byte("Cookie"), []byte("a=1; sid=abc")},
		{[]byte("X-Forwarded-For"), []byte("198.51.100.1, 203.0.113.9")},
	}
	// Untrusted peer: its own address, IPv4 and v4-mapped alike.
	k := rt.affinityKey(x, balancer.AlgoIPHash)
	want := netip.MustParseAddr("::ffff:192.0.2.7").As16()
	if string(k) != string(want[:]) {
		t.Errorf("iphash key for an untrusted peer = %x; want its address", k)
	}
	// Trusted proxy: the address it saw (right-most X-Forwarded-For).
	x.req.Trusted = true
	if k := rt.affinityKey(x, balancer.AlgoIPHash); string(k) != "203.0.113.9" {
		t.Errorf("iphash key behind a trusted proxy = %q; want 203.0.113.9", k)
	}
	if k := rt.affinityKey(x, balancer.AlgoHash); string(k) != "abc" {
		t.Errorf("hash key = %q; want the sid cookie abc", k)
	}
	if k := rt.affinityKey(x, balancer.AlgoWRR); k != nil {
		t.Errorf("wrr key = %q; want nil", k)
	}
	rt.hash, _ = parseHashKey("header:x-user")
	if k := rt.affinityKey(x, balancer.AlgoHash); k != nil {
		t.Errorf("hash key with the header absent = %q; want nil", k)
	}
	x.req.Headers = append(x.req.Headers, hdr{[]byte("X-User"), []byte("u42")})
	if k := rt.affinityKey(x, balancer.AlgoHash); string(k) != "u42" {
		t.Errorf("hash key = %q; want u42", k)
	}
	if n := testing.AllocsPerRun(100, func() {
		rt.affinityKey(x, balancer.AlgoHash)
		rt.affinityKey(x, balancer.AlgoIPHash)
	}); n != 0 {
		t.Errorf("affinityKey allocates %v times per run; want 0", n)
	}
}

// FuzzCookieValue: any Cookie header and name yield nil or a value that is
// a slice of the header, never a panic.
func FuzzCookieValue(f *testing.F) {
	for _, s := range []string{"a=1; sid=xyz; b=2", `sid="q"`, "sid", ";;=;", "sid=", `sid="`} {
		f.Add(s, "sid")
	}
	f.Fuzz(func(t *testing.T, h, name string) {
		v := cookieValue([]byte(h), []byte(name))
		if v != nil && !strings.Contains(h, string(v)) {
			t.Fatalf("cookieValue(%q, %q) = %q, not part of the header", h, name, v)
		}
	})
}
