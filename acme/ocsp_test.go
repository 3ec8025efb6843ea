package acme

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"golang.org/x/crypto/ocsp"
)

// ocspResponder answers for ca with status.
func ocspResponder(t *testing.T, ca *testcert.CA, status *atomic.Int32) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, err := ocsp.ParseRequest(body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		resp, err := ocsp.CreateResponse(ca.Cert, ca.Cert, ocsp.Response{
			Status: int(status.Load()), SerialNumber: req.SerialNumber,
			ThisUpdate: time.Now().Add(-time.Minute), NextUpdate: time.Now().Add(time.Hour), RevokedAt: time.Now(),
		}, ca.Key)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		w.Header().Set("Content-Type", "application/ocsp-response")
		w.Write(resp)
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestOCSPStapling: the orderer fetches a good response and every handshake
// carries it; a revoked answer is not stapled and forces a renewal.
func TestOCSPStapling(t *testing.T) {
	ca := testcert.NewCA(t, "unit test CA")
	var status atomic.Int32
	status.Store(int32(ocsp.Good))
	srv := ocspResponder(t, ca, &status)
	m := testManager(t, nil)
	spec := leafSpec("ocsp.test")
	spec.OCSPServer = srv.URL
	storeCert(t, m, "ocsp.test", ca.Issue(t, spec))
	if m.served().certs["ocsp.test"].stapled {
		t.Fatal("stapled before any fetch")
	}
	fetched := map[string]time.Time{}
	m.refreshStaples(context.Background(), fetched)
	sc := m.served().certs["ocsp.test"]
	if !sc.stapled || len(sc.cert.OCSPStaple) == 0 {
		t.Fatal("no staple after a good response")
	}
	resp, err := ocsp.ParseResponse(sc.cert.OCSPStaple, ca.Cert)
	if err != nil || resp.Status != ocsp.Good || resp.SerialNumber.Cmp(sc.cert.Leaf.SerialNumber) != 0 {
		t.Errorf("staple: %v %+v", err, resp)
	}
	// Not fetched again within the interval.
	m.refreshStaples(context.Background(), fetched)
	if len(fetched) != 1 {
		t.Errorf("fetched %v", fetched)
	}

	// A renewed certificate does not take the old one's staple.
	storeCert(t, m, "ocsp.test", ca.Issue(t, spec))
	if m.served().certs["ocsp.test"].stapled {
		t.Error("a new certificate got the old one's staple")
	}
	status.Store(int32(ocsp.Revoked))
	m.refreshStaples(context.Background(), fetched)
	if m.served().certs["ocsp.test"].stapled {
		t.Error("a revoked response was stapled")
	}
	if at := m.dueAt("ocsp.test", time.Now()); at.After(time.Now()) {
		t.Errorf("revoked: renewal due %v; want now", at)
	}
}
