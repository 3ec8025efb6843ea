package acme

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/json"
	"strings"
	"testing"

	acmeproto "github.com/mholt/acmez/v3/acme"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

const (
	testToken   = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"
	testKeyAuth = testToken + ".9jg46WB3rR_AHD-EBXdN7cBkH1WOu0tA3M9fm21mqTI"
)

func chal(typ, id string) acmeproto.Challenge {
	return acmeproto.Challenge{Type: typ, Token: testToken, KeyAuthorization: testKeyAuth,
		Identifier: acmeproto.Identifier{Type: "dns", Value: id}}
}

// TestHTTPChallengeAnswers: a token in progress is answered for its host,
// whatever the case or port; another token, host or type is not; after
// CleanUp nothing is.
func TestHTTPChallengeAnswers(t *testing.T) {
	m := testManager(t, nil)
	s := solver{m.chal}
	if err := s.Present(context.Background(), chal(HTTP01, "App.Test")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		host, token string
		ok          bool
	}{
		{"app.test", testToken, true},
		{"APP.test:80", testToken, true},
		{"app.test.", testToken, true},
		{"app.test", "other", false},
		{"other.test", testToken, false},
		{"", testToken, false},
		{strings.Repeat("a", 300), testToken, false},
	} {
		ka, ok := m.HTTPChallenge([]byte(tt.host), []byte(tt.token))
		if ok != tt.ok || (ok && string(ka) != testKeyAuth) {
			t.Errorf("HTTPChallenge(%q, %q) = %q, %v; want %v", tt.host, tt.token, ka, ok, tt.ok)
		}
	}
	if _, err := m.alpnCertificate("app.test"); err == nil {
		t.Error("an HTTP-01 challenge answered TLS-ALPN-01")
	}
	if err := s.CleanUp(context.Background(), chal(HTTP01, "app.test")); err != nil {
		t.Fatal(err)
	}
	if _, ok := m.HTTPChallenge([]byte("app.test"), []byte(testToken)); ok {
		t.Error("answered after CleanUp")
	}
}

// idPeACMEIdentifier is the TLS-ALPN-01 certificate extension (RFC 8737 §3).
var idPeACMEIdentifier = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 31}

// TestALPNChallengeCertificate: the certificate for a TLS-ALPN-01 hello
// names the identifier and carries the SHA-256 of the key authorization in
// a critical acmeIdentifier extension, as RFC 8737 §3 requires; it comes
// through GetCertificate for a hello offering only acme-tls/1.
func TestALPNChallengeCertificate(t *testing.T) {
	m := testManager(t, nil)
	if err := (solver{m.chal}).Present(context.Background(), chal(TLSALPN01, "alpn.test")); err != nil {
		t.Fatal(err)
	}
	c, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "ALPN.test", SupportedProtos: []string{"acme-tls/1"}})
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(c.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "alpn.test" {
		t.Errorf("names %v", leaf.DNSNames)
	}
	sum := sha256.Sum256([]byte(testKeyAuth))
	want, _ := asn1.Marshal(sum[:])
	found := false
	for _, e := range leaf.Extensions {
		if e.Id.Equal(idPeACMEIdentifier) {
			found = e.Critical && bytes.Equal(e.Value, want)
		}
	}
	if !found {
		t.Error("no critical acmeIdentifier extension with the key authorization's digest")
	}
	if got := testutil.ToFloat64(m.m.answeredALPN); got != 1 {
		t.Errorf("tls-alpn-01 answered counted %v; want 1", got)
	}
	if _, err := m.GetCertificate(&tls.ClientHelloInfo{ServerName: "other.test", SupportedProtos: []string{"acme-tls/1"}}); err == nil {
		t.Error("a challenge certificate for a name without a challenge")
	}
}

// TestPeerChallenge: a record a peer shares is answered here; a deletion
// withdraws it; garbage and names that are not canonical are dropped.
func TestPeerChallenge(t *testing.T) {
	m := testManager(t, nil)
	rec, _ := json.Marshal(&challenge{Type: HTTP01, Token: testToken, KeyAuth: testKeyAuth})
	m.chal.applyPeerChallenge("peer.test", rec, true)
	if _, ok := m.HTTPChallenge([]byte("peer.test"), []byte(testToken)); !ok {
		t.Fatal("a peer's token is not answered")
	}
	m.chal.applyPeerChallenge("peer.test", nil, false)
	if _, ok := m.HTTPChallenge([]byte("peer.test"), []byte(testToken)); ok {
		t.Error("a deleted peer token is still answered")
	}
	m.chal.applyPeerChallenge("Peer.test", rec, true)
	m.chal.applyPeerChallenge("x.test", []byte(`{"type":"http-01","token":"a","key_auth":"b.c"}`), true)
	if len(m.chal.byName) != 0 {
		t.Errorf("kept %v", m.chal.byName)
	}
}

// TestChallengeWaitsForCluster: in a cluster the token is put at Present
// and put again with acknowledgements at Wait, before the CA validates.
func TestChallengeWaitsForCluster(t *testing.T) {
	cl := newFakeCluster("a", "a", "a", "b")
	m := testManager(t, func(c *Config) { c.Cluster = cl })
	s := solver{m.chal}
	ctx := context.Background()
	ch := chal(HTTP01, "wait.test")
	if err := s.Present(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if err := s.Wait(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if len(cl.waited) != 1 || cl.waited[0] != blobChal+"wait.test" {
		t.Errorf("waited for %q", cl.waited)
	}
	if err := s.CleanUp(ctx, ch); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := cl.Blob(blobChal + "wait.test"); ok {
		t.Error("the token stayed in the cluster after CleanUp")
	}
}

func TestParseChallenge(t *testing.T) {
	good := `{"type":"tls-alpn-01","token":"` + testToken + `","key_auth":"` + testKeyAuth + `"}`
	if _, err := parseChallenge([]byte(good)); err != nil {
		t.Fatalf("good record: %v", err)
	}
	for _, bad := range []string{
		`{"type":"dns-01","token":"` + testToken + `","key_auth":"` + testKeyAuth + `"}`,
		`{"type":"http-01","token":"","key_auth":"x.y"}`,
		`{"type":"http-01","token":"a/b","key_auth":"a/b.y"}`,
		`{"type":"http-01","token":"abc","key_auth":"abd.y"}`,
		`{"type":"http-01","token":"abc","key_auth":"abc."}`,
		`{"type":"http-01","token":"abc","key_auth":"abc.<script>"}`,
		`[]`, `{`, strings.Repeat(" ", 3000),
	} {
		if _, err := parseChallenge([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// FuzzParseChallenge: a record from a peer parses to a bounded, valid
// challenge or an error, never a panic.
func FuzzParseChallenge(f *testing.F) {
	f.Add([]byte(`{"type":"http-01","token":"` + testToken + `","key_auth":"` + testKeyAuth + `"}`))
	f.Add([]byte(`{"type":"tls-alpn-01","token":"a","key_auth":"a.b"}`))
	f.Add([]byte(`{"type":"http-01","token":"a","key_auth":"a.b","x":[1,2,{}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, err := parseChallenge(b)
		if err != nil {
			return
		}
		if (ch.Type != HTTP01 && ch.Type != TLSALPN01) || len(ch.Token) > maxToken || len(ch.KeyAuth) > maxKeyAuth ||
			!strings.HasPrefix(ch.KeyAuth, ch.Token+".") || strings.ContainsAny(ch.KeyAuth, "\r\n<>\"' ") {
			t.Fatalf("parseChallenge accepted %+v", ch)
		}
	})
}
