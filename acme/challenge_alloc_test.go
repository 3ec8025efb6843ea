//go:build !race

package acme

import (
	"context"
	"crypto/tls"
	"testing"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// TestHTTPChallengeAllocatesNothing: answering, or not, an HTTP-01 request
// costs no allocation (router.Challenges is asked on the request path).
// So does GetCertificate for a name in service.
func TestHTTPChallengeAllocatesNothing(t *testing.T) {
	m := testManager(t, nil)
	if err := (solver{m.chal}).Present(context.Background(), chal(HTTP01, "app.test")); err != nil {
		t.Fatal(err)
	}
	host, tok, other := []byte("App.Test:80"), []byte(testToken), []byte("nope")
	if n := testing.AllocsPerRun(200, func() {
		m.HTTPChallenge(host, tok)
		m.HTTPChallenge(host, other)
	}); n != 0 {
		t.Errorf("HTTPChallenge: %v allocs", n)
	}
	ca := testcert.NewCA(t, "unit test CA")
	c := ca.Issue(t, leafSpec("served.test"))
	leaf := c.Leaf
	storeCert(t, m, "served.test", c)
	hello := &tls.ClientHelloInfo{ServerName: "Served.test"}
	if n := testing.AllocsPerRun(200, func() {
		if c, _ := m.GetCertificate(hello); c == nil || c.Leaf.SerialNumber.Cmp(leaf.SerialNumber) != 0 {
			t.Fatal("wrong certificate")
		}
	}); n != 0 {
		t.Errorf("GetCertificate: %v allocs", n)
	}
}
