package testcert

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
	"time"
)

// A server certificate verifies against its CA's pool for each of its
// names (DNS and IP), a client one only for client authentication, and the
// validity and responder of a Spec are kept.
func TestIssue(t *testing.T) {
	ca := NewCA(t, "test CA")
	ca.Org = "tests"
	srv := ca.Server(t, "a.test", "127.0.0.1")
	if srv.Leaf.Subject.CommonName != "a.test" || len(srv.Leaf.Subject.Organization) != 1 {
		t.Errorf("subject %v; want CN a.test, O tests", srv.Leaf.Subject)
	}
	for _, name := range []string{"a.test", "127.0.0.1"} {
		if _, err := srv.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), DNSName: name}); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	cl := ca.Client(t, "c")
	if _, err := cl.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if _, err := cl.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()}); err == nil {
		t.Error("client certificate verified for server authentication")
	}
	nb, na := time.Now().Add(-2*time.Hour).Truncate(time.Second), time.Now().Add(time.Minute).Truncate(time.Second)
	c := ca.Issue(t, Spec{CN: "x", NotBefore: nb, NotAfter: na, OCSPServer: "http://ocsp.test"})
	if !c.Leaf.NotBefore.Equal(nb) || !c.Leaf.NotAfter.Equal(na) || len(c.Leaf.OCSPServer) != 1 {
		t.Errorf("validity %v–%v, OCSP %v; want %v–%v, http://ocsp.test", c.Leaf.NotBefore, c.Leaf.NotAfter, c.Leaf.OCSPServer, nb, na)
	}
	if pair := c.TLS(t); pair.Leaf == nil || !pair.Leaf.Equal(c.Leaf) {
		t.Error("TLS: not the certificate issued")
	}
}

// WriteFiles leaves a certificate and key that load as a pair, and no
// temporary behind.
func TestWriteFiles(t *testing.T) {
	dir := t.TempDir()
	crt, key := NewCA(t, "test CA").Server(t, "a.test").WriteFiles(t, dir, "a")
	if _, err := tls.LoadX509KeyPair(crt, key); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("%d files in the directory; want 2", len(ents))
	}
}
