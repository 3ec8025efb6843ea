package tls

import (
	"context"
	ctls "crypto/tls"
	"crypto/x509"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// handshakeResult is one side's view of a finished (or failed) handshake.
type handshakeResult struct {
	state ctls.ConnectionState
	err   error
}

// handshake runs a real TLS handshake over 127.0.0.1 between a server using
// srv and a client using cli, both bounded by a deadline. After a successful
// client handshake the client reads one byte, so that a server that rejects
// the client's certificate after its Finished (TLS 1.3) fails the client too.
func handshake(t *testing.T, srv, cli *ctls.Config) (server, client handshakeResult) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	deadline, _ := ctx.Deadline()
	srvDone := make(chan handshakeResult, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- handshakeResult{err: err}
			return
		}
		defer c.Close()
		c.SetDeadline(deadline)
		tc := ctls.Server(c, srv)
		err = tc.HandshakeContext(ctx)
		if err == nil {
			_, err = tc.Write([]byte{'!'})
		}
		srvDone <- handshakeResult{state: tc.ConnectionState(), err: err}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(deadline)
	tc := ctls.Client(c, cli)
	client.err = tc.HandshakeContext(ctx)
	if client.err == nil {
		_, client.err = tc.Read(make([]byte, 1))
	}
	client.state = tc.ConnectionState()
	c.Close()
	return <-srvDone, client
}

func (f *fixture) clientConfig(serverName string) *ctls.Config {
	roots := x509.NewCertPool()
	roots.AddCert(f.ca.Cert)
	return &ctls.Config{RootCAs: roots, ServerName: serverName, NextProtos: []string{"h2", "http/1.1"}}
}

func TestHandshake(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	srv := s.TLSConfig([]string{"h2", "http/1.1"})
	tests := []struct {
		sni     string
		want    *testcert.Cert
		version uint16
	}{
		{"a.example.com", f.exact, ctls.VersionTLS13},
		{"A.Example.Com", f.exact, ctls.VersionTLS13},
		{"b.example.com", f.wild, ctls.VersionTLS13},
		{"upper.example.org", f.upper, ctls.VersionTLS12},
		{"default.test", f.def, ctls.VersionTLS12},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			cli := f.clientConfig(tt.sni)
			cli.MaxVersion = tt.version
			server, client := handshake(t, srv, cli)
			if client.err != nil || server.err != nil {
				t.Fatalf("handshake: client %v, server %v", client.err, server.err)
			}
			// The client verified the chain and the host name; check it got
			// the certificate we meant, not merely a valid one.
			if got := client.state.PeerCertificates[0].SerialNumber; got.Cmp(tt.want.Leaf.SerialNumber) != 0 {
				t.Errorf("served %v; want %v", client.state.PeerCertificates[0].DNSNames, tt.want.Leaf.DNSNames)
			}
			if client.state.NegotiatedProtocol != "h2" {
				t.Errorf("ALPN = %q; want h2", client.state.NegotiatedProtocol)
			}
			if client.state.Version != tt.version {
				t.Errorf("version = %x; want %x", client.state.Version, tt.version)
			}
		})
	}
	t.Run("http/1.1 only client", func(t *testing.T) {
		cli := f.clientConfig("a.example.com")
		cli.NextProtos = []string{"http/1.1"}
		_, client := handshake(t, srv, cli)
		if client.err != nil || client.state.NegotiatedProtocol != "http/1.1" {
			t.Errorf("handshake = %v, ALPN %q; want http/1.1", client.err, client.state.NegotiatedProtocol)
		}
	})
	t.Run("TLS 1.1 refused", func(t *testing.T) {
		cli := f.clientConfig("a.example.com")
		cli.MinVersion, cli.MaxVersion = ctls.VersionTLS10, ctls.VersionTLS11
		if server, client := handshake(t, srv, cli); server.err == nil || client.err == nil {
			t.Errorf("TLS 1.1 handshake: client %v, server %v; want both to fail", client.err, server.err)
		}
	})
	t.Run("CBC-only TLS 1.2 client refused", func(t *testing.T) {
		cli := f.clientConfig("a.example.com")
		cli.MaxVersion = ctls.VersionTLS12
		cli.CipherSuites = []uint16{ctls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA}
		if server, _ := handshake(t, srv, cli); server.err == nil {
			t.Error("handshake with a CBC suite succeeded; want ECDHE+AEAD only")
		}
	})
}

func TestHandshakeNoCertificate(t *testing.T) {
	f := newFixture(t)
	f.cfg.CertFile, f.cfg.KeyFile = "", ""
	s := mustNew(t, f.cfg)
	server, client := handshake(t, s.TLSConfig([]string{"h2"}), f.clientConfig("unknown.test"))
	if client.err == nil || server.err == nil {
		t.Fatalf("handshake for an unknown name without default: client %v, server %v; want both to fail", client.err, server.err)
	}
	if !strings.Contains(client.err.Error(), "remote error") {
		t.Errorf("client error %v; want a TLS alert from the server", client.err)
	}
}

func TestClientCA(t *testing.T) {
	f := newFixture(t)
	clientCA := testcert.NewCA(t, "client CA")
	f.cfg.ClientCAFile = filepath.Join(t.TempDir(), "clients.pem")
	writeFile(t, f.cfg.ClientCAFile, clientCA.PEM)
	s := mustNew(t, f.cfg)
	srv := s.TLSConfig([]string{"h2", "http/1.1"})
	if srv.ClientAuth != ctls.VerifyClientCertIfGiven || srv.ClientCAs == nil {
		t.Fatalf("ClientAuth = %v, ClientCAs %v; want VerifyClientCertIfGiven with the bundle", srv.ClientAuth, srv.ClientCAs)
	}

	t.Run("signed by the CA", func(t *testing.T) {
		cli := f.clientConfig("a.example.com")
		cli.Certificates = []ctls.Certificate{clientCA.Client(t, "client-1").TLS(t)}
		server, client := handshake(t, srv, cli)
		if client.err != nil || server.err != nil {
			t.Fatalf("handshake: client %v, server %v", client.err, server.err)
		}
		peers := server.state.PeerCertificates
		if len(peers) == 0 || peers[0].Subject.CommonName != "client-1" {
			t.Fatalf("server sees peer certificates %v; want CN client-1", peers)
		}
		if len(server.state.VerifiedChains) == 0 {
			t.Error("client certificate not verified")
		}
	})
	t.Run("no client certificate", func(t *testing.T) {
		server, client := handshake(t, srv, f.clientConfig("a.example.com"))
		if client.err != nil || server.err != nil {
			t.Fatalf("handshake: client %v, server %v", client.err, server.err)
		}
		if n := len(server.state.PeerCertificates); n != 0 {
			t.Errorf("%d peer certificates; want none", n)
		}
	})
	foreign := f.ca.Client(t, "intruder").TLS(t)
	t.Run("signed by another CA, not offered", func(t *testing.T) {
		// The server names its acceptable CAs; a Go client then keeps a
		// certificate from another CA to itself.
		cli := f.clientConfig("a.example.com")
		cli.Certificates = []ctls.Certificate{foreign}
		server, client := handshake(t, srv, cli)
		if client.err != nil || server.err != nil {
			t.Fatalf("handshake: client %v, server %v", client.err, server.err)
		}
		if n := len(server.state.PeerCertificates); n != 0 {
			t.Errorf("%d peer certificates; want none", n)
		}
	})
	t.Run("signed by another CA, forced", func(t *testing.T) {
		cli := f.clientConfig("a.example.com")
		cli.GetClientCertificate = func(*ctls.CertificateRequestInfo) (*ctls.Certificate, error) { return &foreign, nil }
		if server, client := handshake(t, srv, cli); server.err == nil || client.err == nil {
			t.Errorf("handshake with a foreign client certificate: client %v, server %v; want both to fail", client.err, server.err)
		}
	})
}

func TestTLSConfig(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	protos := []string{"h2", "http/1.1"}
	c := s.TLSConfig(protos)
	protos[0] = "changed"
	if !slices.Equal(c.NextProtos, []string{"h2", "http/1.1"}) {
		t.Errorf("NextProtos = %q; want a copy of the caller's slice", c.NextProtos)
	}
	if c.MinVersion != ctls.VersionTLS12 {
		t.Errorf("MinVersion = %x; want TLS 1.2", c.MinVersion)
	}
	if c.ClientAuth != ctls.NoClientCert || c.ClientCAs != nil {
		t.Errorf("client auth on without ClientCAFile")
	}
	if len(c.Certificates) != 0 || c.GetCertificate == nil {
		t.Errorf("certificates must come from GetCertificate only")
	}
	secure := map[uint16]bool{}
	for _, cs := range ctls.CipherSuites() {
		secure[cs.ID] = true
	}
	for _, id := range c.CipherSuites {
		name := ctls.CipherSuiteName(id)
		if !secure[id] || !strings.Contains(name, "ECDHE") || !(strings.Contains(name, "GCM") || strings.Contains(name, "CHACHA20")) {
			t.Errorf("cipher suite %s is not ECDHE+AEAD", name)
		}
	}
}
