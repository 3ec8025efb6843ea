//go:build !race

package tls

import (
	ctls "crypto/tls"
	"testing"
)

// TestGetCertificateAllocs gates the handshake path: picking a certificate
// allocates nothing, whatever the SNI name's case or match.
func TestGetCertificateAllocs(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	for _, sni := range []string{"a.example.com", "A.Example.COM", "b.example.com", "unknown.test", ""} {
		hello := &ctls.ClientHelloInfo{ServerName: sni}
		if n := testing.AllocsPerRun(1000, func() { s.GetCertificate(hello) }); n != 0 {
			t.Errorf("GetCertificate(%q): %v allocs; want 0", sni, n)
		}
	}
}

func BenchmarkGetCertificate(b *testing.B) {
	f := newFixture(b)
	s := mustNew(b, f.cfg)
	hellos := []*ctls.ClientHelloInfo{{ServerName: "a.example.com"}, {ServerName: "B.Example.com"}, {ServerName: "unknown.test"}}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			s.GetCertificate(hellos[i%len(hellos)])
		}
	})
}
