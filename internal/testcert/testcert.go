// Package testcert makes X.509 certificates for tests: a CA and the leaves
// it signs (ECDSA P-256), as parsed certificates, PEM and files. It is the
// one copy of that code the module's tests share (unit tests' in-process
// fakes live in internal packages: internal/uwsgitest for nodes); only
// _test.go files import it. Every failure fails the test.
package testcert

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// CA is a self-signed certificate authority valid from an hour ago to two
// days ahead. Set Org before issuing to give every certificate it issues
// that Organization (an "O=" in their subject).
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	PEM  []byte // Cert, PEM-encoded
	Org  string
}

// NewCA makes a CA with common name cn.
func NewCA(t testing.TB, cn string) *CA {
	t.Helper()
	now := time.Now()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	cert, key := sign(t, tmpl, nil)
	return &CA{Cert: cert, Key: key, PEM: pemBlock("CERTIFICATE", cert.Raw)}
}

// Pool is a certificate pool holding ca alone (RootCAs, ClientCAs).
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Spec describes a leaf certificate.
type Spec struct {
	CN       string
	DNSNames []string
	IPs      []net.IP
	// Client makes a client certificate (ExtKeyUsageClientAuth) rather
	// than a server one.
	Client bool
	// The validity; zero: from an hour ago, and a day ahead.
	NotBefore, NotAfter time.Time
	// OCSPServer, when set, is the responder the certificate names.
	OCSPServer string
}

// Cert is a leaf certificate and its key.
type Cert struct {
	Leaf     *x509.Certificate
	Key      *ecdsa.PrivateKey
	CertPEM  []byte // Leaf, PEM-encoded
	KeyPEM   []byte // Key, PEM-encoded ("EC PRIVATE KEY")
	ChainPEM []byte // CertPEM followed by the issuing CA's
}

// Issue signs a leaf certificate of s.
func (ca *CA) Issue(t testing.TB, s Spec) *Cert {
	t.Helper()
	usage := x509.ExtKeyUsageServerAuth
	if s.Client {
		usage = x509.ExtKeyUsageClientAuth
	}
	now := time.Now()
	if s.NotBefore.IsZero() {
		s.NotBefore = now.Add(-time.Hour)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: s.CN},
		DNSNames:    s.DNSNames,
		IPAddresses: s.IPs,
		NotBefore:   s.NotBefore,
		NotAfter:    s.NotAfter,
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{usage},
	}
	if s.OCSPServer != "" {
		tmpl.OCSPServer = []string{s.OCSPServer}
	}
	leaf, key := sign(t, tmpl, ca)
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &Cert{Leaf: leaf, Key: key, CertPEM: pemBlock("CERTIFICATE", leaf.Raw), KeyPEM: pemBlock("EC PRIVATE KEY", kder)}
	c.ChainPEM = append(append([]byte(nil), c.CertPEM...), ca.PEM...)
	return c
}

// Server signs a server certificate for names, the first of which is its
// common name; a name that is an IP address goes in its IP addresses.
func (ca *CA) Server(t testing.TB, names ...string) *Cert {
	t.Helper()
	s := Spec{CN: names[0]}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			s.IPs = append(s.IPs, ip)
		} else {
			s.DNSNames = append(s.DNSNames, n)
		}
	}
	return ca.Issue(t, s)
}

// Client signs a client certificate with common name cn.
func (ca *CA) Client(t testing.TB, cn string) *Cert {
	t.Helper()
	return ca.Issue(t, Spec{CN: cn, Client: true})
}

// TLS is c as a tls.Certificate (with its Leaf).
func (c *Cert) TLS(t testing.TB) tls.Certificate {
	t.Helper()
	pair, err := tls.X509KeyPair(c.CertPEM, c.KeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return pair
}

// WriteFiles writes c as dir/base.crt and dir/base.key and returns their
// paths. Each goes through a dot-named temporary in dir renamed over it,
// key first, so that a poller never reads half a file nor a certificate
// without its key.
func (c *Cert) WriteFiles(t testing.TB, dir, base string) (crt, key string) {
	t.Helper()
	crt, key = filepath.Join(dir, base+".crt"), filepath.Join(dir, base+".key")
	writeAtomic(t, key, c.KeyPEM)
	writeAtomic(t, crt, c.CertPEM)
	return crt, key
}

// sign gives tmpl a fresh P-256 key, a random serial and the
// Organization of ca (if any), and signs it with ca (nil: self-signed).
func sign(t testing.TB, tmpl *x509.Certificate, ca *CA) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber, err = rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127)); err != nil {
		t.Fatal(err)
	}
	parent, parentKey := tmpl, key
	if ca != nil {
		parent, parentKey = ca.Cert, ca.Key
		if ca.Org != "" {
			tmpl.Subject.Organization = []string{ca.Org}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c, key
}

func pemBlock(typ string, der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
}

func writeAtomic(t testing.TB, path string, b []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}
