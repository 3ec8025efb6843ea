package subauth

import (
	"crypto"
	"net/netip"
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// BenchmarkAdmitSigned is one signed refresh: freshness, replay lookup and
// update, key cache hit, signature verification. The replay entry is
// rewound each time so the same datagram stays acceptable.
func BenchmarkAdmitSigned(b *testing.B) {
	for _, tc := range []struct{ name, key, pub string }{
		{"rsa2048-sha256", "rsa2048.key", "rsa2048.pub"},
		{"ed25519", "ed25519.key", "ed25519.pub"},
	} {
		b.Run(tc.name, func(b *testing.B) {
			g := newGuard(b, Config{Hash: crypto.SHA256, KeyDir: keyDir(b, tc.pub, "app.test")})
			d := signed(b, sub("app.test", "127.0.0.1:3031"), signer(b, crypto.SHA256, tc.key), g.clk.Now())
			var s uwsgi.Subscription
			if err := uwsgi.ParseSubscription(d, &s); err != nil {
				b.Fatal(err)
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := g.Admit(&s, d, s.Address); err != nil {
					b.Fatal(err)
				}
				*g.seen.m[string(g.seen.id(s.Key, s.Address))] = seen{}
			}
		})
	}
}

// BenchmarkAllowSource is the per-datagram cost of the source allow-list
// in the socket reader (4 prefixes, the match in the last).
func BenchmarkAllowSource(b *testing.B) {
	g := newGuard(b, Config{Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"),
		netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("192.168.0.0/16")}})
	src := netip.MustParseAddrPort("192.168.1.7:40000")
	b.ReportAllocs()
	for b.Loop() {
		if !g.AllowSource(src) {
			b.Fatal("denied")
		}
	}
}
