package acme

import (
	"encoding/json"
	"errors"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// TestCertificates: the admin view lists configured names without a
// certificate, certificates in service with their renewal, the leader's
// failures, and on a non-leader the failures the leader shared.
func TestCertificates(t *testing.T) {
	m := testManager(t, func(c *Config) { c.Domains = []string{"conf.test", "fail.test"} })
	ca := testcert.NewCA(t, "unit test CA")
	cert := ca.Issue(t, leafSpec("conf.test"))
	leaf := cert.Leaf
	storeCert(t, m, "conf.test", cert)
	m.record("fail.test", false, false, errors.New("dial tcp: connection refused"), time.Second)
	got := map[string]Certificate{}
	for _, c := range m.Certificates() {
		got[c.Name] = c
	}
	if c := got["conf.test"]; c.NotAfter == nil || !c.NotAfter.Equal(leaf.NotAfter) || c.NextRenewal == nil || c.OnDemand || c.Issuer != "unit test CA" {
		t.Errorf("conf.test: %+v", c)
	}
	if c := got["fail.test"]; c.LastError == "" || c.NextAttempt == nil || c.NotAfter != nil {
		t.Errorf("fail.test: %+v", c)
	}
	rec := httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("GET", "/api/certificates", nil))
	var list []Certificate
	if err := json.Unmarshal(rec.Body.Bytes(), &list); err != nil || len(list) != 2 || rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("GET /api/certificates: %v %s", err, rec.Body.String())
	}
	rec = httptest.NewRecorder()
	m.ServeHTTP(rec, httptest.NewRequest("POST", "/api/certificates", nil))
	if rec.Code != 405 {
		t.Errorf("POST: %d", rec.Code)
	}

	cl := newFakeCluster("b", "a", "a", "b")
	peer := testManager(t, func(c *Config) { c.Cluster = cl })
	b, _ := json.Marshal(errRecord{Error: "rate limited", At: time.Now(), Next: time.Now().Add(time.Hour)})
	cl.set(blobErr+"shared.test", b, time.Now())
	var c Certificate
	for _, x := range peer.Certificates() {
		if x.Name == "shared.test" {
			c = x
		}
	}
	if c.LastError != "rate limited" || c.Orderer != "a" {
		t.Errorf("the leader's failure at a peer: %+v", c)
	}
}
