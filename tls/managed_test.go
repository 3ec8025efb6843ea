package tls

import (
	ctls "crypto/tls"
	"errors"
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeManaged serves certs by SNI name; challenge hellos get chal.
type fakeManaged struct {
	certs map[string]*ctls.Certificate
	chal  *ctls.Certificate
	asked []string
}

func (m *fakeManaged) GetCertificate(hello *ctls.ClientHelloInfo) (*ctls.Certificate, error) {
	m.asked = append(m.asked, hello.ServerName)
	if isChallengeHello(hello) {
		if m.chal == nil {
			return nil, errors.New("no challenge")
		}
		return m.chal, nil
	}
	return m.certs[strings.ToLower(hello.ServerName)], nil
}

// TestManagedPriority: --tls-dir names win over ACME certificates, which
// win over the default; a name neither has gets the default and counts as
// unknown.
func TestManagedPriority(t *testing.T) {
	f := newFixture(t)
	acmeA := f.ca.Server(t, "a.example.com") // also in --tls-dir: the file wins
	acmeC := f.ca.Server(t, "c.example.org") // only from ACME
	acmeW := f.ca.Server(t, "w.example.com") // the directory's wildcard wins
	ca, cc, cw := acmeA.TLS(t), acmeC.TLS(t), acmeW.TLS(t)
	m := &fakeManaged{certs: map[string]*ctls.Certificate{"a.example.com": &ca, "c.example.org": &cc, "w.example.com": &cw}}
	f.cfg.Managed = m
	s := mustNew(t, f.cfg)
	for _, tt := range []struct {
		sni  string
		want *testcert.Cert
	}{
		{"a.example.com", f.exact},
		{"w.example.com", f.wild},
		{"C.Example.org", acmeC},
		{"nothing.test", f.def},
		{"", f.def},
	} {
		if got := served(s, tt.sni); got == nil || got.Cmp(tt.want.Leaf.SerialNumber) != 0 {
			t.Errorf("%q: served %v; want %v", tt.sni, got, tt.want.Leaf.SerialNumber)
		}
	}
	if got := testutil.ToFloat64(s.m.unknownSNI); got != 1 {
		t.Errorf("unknown SNI counted %v times; want 1 (nothing.test)", got)
	}
}

// TestManagedOnly: ACME alone is a certificate source; a name it lacks then
// fails the handshake.
func TestManagedOnly(t *testing.T) {
	cfg, _ := testConfig(t)
	ca := testcert.NewCA(t, "acme CA")
	c := ca.Server(t, "only.test").TLS(t)
	cfg.Managed = &fakeManaged{certs: map[string]*ctls.Certificate{"only.test": &c}}
	s := mustNew(t, cfg)
	if _, err := s.GetCertificate(&ctls.ClientHelloInfo{ServerName: "only.test"}); err != nil {
		t.Errorf("only.test: %v", err)
	}
	if _, err := s.GetCertificate(&ctls.ClientHelloInfo{ServerName: "other.test"}); !errors.Is(err, ErrNoCertificate) {
		t.Errorf("other.test: %v; want ErrNoCertificate", err)
	}
}

// TestChallengeHandshake: a client offering only acme-tls/1 gets the
// challenge certificate with that protocol negotiated; an ordinary client
// is never offered acme-tls/1, and a challenge without a token fails.
func TestChallengeHandshake(t *testing.T) {
	f := newFixture(t)
	chal := f.ca.Server(t, "a.example.com")
	cc := chal.TLS(t)
	m := &fakeManaged{chal: &cc}
	f.cfg.Managed = m
	s := mustNew(t, f.cfg)
	srv := s.TLSConfig([]string{"h2", "http/1.1"})

	cli := f.clientConfig("a.example.com")
	cli.NextProtos = []string{ALPNChallenge}
	_, client := handshake(t, srv, cli)
	if client.err != nil {
		t.Fatalf("challenge handshake: %v", client.err)
	}
	if client.state.NegotiatedProtocol != ALPNChallenge {
		t.Errorf("ALPN = %q; want %s", client.state.NegotiatedProtocol, ALPNChallenge)
	}
	if got := client.state.PeerCertificates[0].SerialNumber; got.Cmp(chal.Leaf.SerialNumber) != 0 {
		t.Error("the challenge hello got another certificate than the challenge one")
	}

	// An ordinary client asking for acme-tls/1 among others gets the
	// file's certificate and no acme-tls/1.
	cli = f.clientConfig("a.example.com")
	cli.NextProtos = []string{"h2", ALPNChallenge}
	_, client = handshake(t, srv, cli)
	if client.err != nil || client.state.NegotiatedProtocol != "h2" {
		t.Errorf("mixed ALPN: %v, %q; want h2", client.err, client.state.NegotiatedProtocol)
	}
	if got := client.state.PeerCertificates[0].SerialNumber; got.Cmp(f.exact.Leaf.SerialNumber) != 0 {
		t.Error("an ordinary client got the challenge certificate")
	}

	m.chal = nil
	cli = f.clientConfig("a.example.com")
	cli.NextProtos = []string{ALPNChallenge}
	if server, client := handshake(t, srv, cli); server.err == nil || client.err == nil {
		t.Error("a challenge handshake without a challenge succeeded")
	}
}
