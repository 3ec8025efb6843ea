package tls

import (
	"bytes"
	ctls "crypto/tls"
	"testing"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// FuzzLoadPair feeds arbitrary bytes as certificate and key PEM: the result
// is an error or a usable certificate with its leaf parsed, never a panic.
func FuzzLoadPair(f *testing.F) {
	ca := testcert.NewCA(f, "fuzz CA")
	good, other := ca.Server(f, "fuzz.test"), ca.Server(f, "other.test")
	chain := append(bytes.Clone(good.CertPEM), ca.PEM...)
	seeds := [][2][]byte{
		{good.CertPEM, good.KeyPEM},
		{chain, good.KeyPEM},
		{good.CertPEM, other.KeyPEM},
		{good.KeyPEM, good.CertPEM},
		{good.CertPEM[:len(good.CertPEM)/2], good.KeyPEM},
		{good.CertPEM, good.KeyPEM[:len(good.KeyPEM)-40]},
		{[]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), good.KeyPEM},
		{[]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")},
		{nil, nil},
		{[]byte("garbage"), []byte{0, 1, 2}},
	}
	for _, s := range seeds {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		cert, err := loadPair(certPEM, keyPEM)
		if err != nil {
			if cert != nil {
				t.Fatalf("loadPair returned a certificate with error %v", err)
			}
			return
		}
		if cert.Leaf == nil || len(cert.Certificate) == 0 || cert.PrivateKey == nil {
			t.Fatalf("loadPair succeeded with an incomplete certificate: %+v", cert)
		}
	})
}

// FuzzLookup feeds arbitrary SNI names: never a panic, and a match only for
// a name equal (case-insensitively) to a loaded one or one label under the
// wildcard.
func FuzzLookup(f *testing.F) {
	ca := testcert.NewCA(f, "fuzz CA")
	exact, wild := ca.Server(f, "a.example.com"), ca.Server(f, "*.example.com")
	ce, cw := exact.TLS(f), wild.TLS(f)
	snap := &snapshot{
		exact: map[string]*ctls.Certificate{"a.example.com": &ce},
		wild:  map[string]*ctls.Certificate{"example.com": &cw},
	}
	for _, s := range []string{"a.example.com", "A.EXAMPLE.COM.", "b.example.com", "example.com", ".example.com", "..", "", "\xff.example.com"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		c := snap.lookup(name)
		if c == nil {
			return
		}
		lower := bytes.ToLower(bytes.TrimSuffix([]byte(name), []byte{'.'}))
		switch c {
		case &ce:
			if string(lower) != "a.example.com" {
				t.Fatalf("lookup(%q) matched a.example.com", name)
			}
		case &cw:
			label, rest, _ := bytes.Cut(lower, []byte{'.'})
			if len(label) == 0 || string(rest) != "example.com" {
				t.Fatalf("lookup(%q) matched *.example.com", name)
			}
		}
	})
}
