package router

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// fakeChallenges knows one token for one host.
type fakeChallenges struct {
	mu          sync.Mutex
	host, token string
	answer      []byte // default token + ".thumbprint"
}

func (f *fakeChallenges) HTTPChallenge(host, token []byte) ([]byte, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if string(host) == f.host && string(token) == f.token {
		if f.answer == nil {
			f.answer = []byte(f.token + ".thumbprint")
		}
		return f.answer, true
	}
	return nil, false
}

// TestHTTPChallenge: a known token is answered before routing, even for a
// host with no pool; an unknown one, another method, or a path merely
// containing the prefix is routed as usual.
func TestHTTPChallenge(t *testing.T) {
	node := startFakeNode(t, okReply("from-node"))
	ch := &fakeChallenges{host: "app.test", token: "tok-1"}
	r := startRouter(t, Config{Challenges: ch})
	r.table.AddStatic("app.test", node.addr(), 1)

	for _, tt := range []struct {
		name, req string
		code      int
		body      string
	}{
		{"known token", "GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, "tok-1.thumbprint"},
		{"known token, query", "GET /.well-known/acme-challenge/tok-1?x=1 HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, "tok-1.thumbprint"},
		{"unknown token routes", "GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, "from-node"},
		{"no pool, unknown token", "GET /.well-known/acme-challenge/other HTTP/1.1\r\nHost: none.test\r\n\r\n", 404, ""},
		{"POST routes", "POST /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 0\r\n\r\n", 200, "from-node"},
		{"prefix elsewhere routes", "GET /x/.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: app.test\r\n\r\n", 200, "from-node"},
	} {
		resp, body := raw(t, r.addr, tt.req)
		if resp.StatusCode != tt.code || (tt.body != "" && body != tt.body) {
			t.Errorf("%s: %d %q; want %d %q", tt.name, resp.StatusCode, body, tt.code, tt.body)
		}
		if tt.code == 200 && tt.body == "tok-1.thumbprint" && !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
			t.Errorf("%s: Content-Type %q", tt.name, resp.Header.Get("Content-Type"))
		}
	}
	// The host with a port: the hook sees the Host header as sent.
	ch.mu.Lock()
	ch.host = "app.test:8080"
	ch.mu.Unlock()
	if resp, body := raw(t, r.addr, "GET /.well-known/acme-challenge/tok-1 HTTP/1.1\r\nHost: app.test:8080\r\n\r\n"); resp.StatusCode != 200 || body != "tok-1.thumbprint" {
		t.Errorf("host with port: %d %q", resp.StatusCode, body)
	}
}

// TestHTTPChallengeRedirect: an --http-to-https listener answers a known
// token instead of redirecting (port 80 is where a CA asks).
func TestHTTPChallengeRedirect(t *testing.T) {
	ch := &fakeChallenges{host: "app.test", token: "tok-2"}
	r := startRouter(t, Config{Challenges: ch})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.rt.ServeRedirect(ln, "redirect", 443) }()
	addr := ln.Addr().String()
	waitFor(t, "the redirect listener", func() bool {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	if resp, body := raw(t, addr, "GET /.well-known/acme-challenge/tok-2 HTTP/1.1\r\nHost: app.test\r\n\r\n"); resp.StatusCode != 200 || body != "tok-2.thumbprint" {
		t.Errorf("known token: %d %q", resp.StatusCode, body)
	}
	if resp, _ := raw(t, addr, "GET /.well-known/acme-challenge/nope HTTP/1.1\r\nHost: app.test\r\n\r\n"); resp.StatusCode != 301 {
		t.Errorf("unknown token: %d; want 301", resp.StatusCode)
	}
}

// TestChallengeALPNClosed: a connection that negotiated acme-tls/1 is
// closed after the handshake, never read as HTTP.
func TestChallengeALPNClosed(t *testing.T) {
	ca := testcert.NewCA(t, "router test CA")
	r := startRouter(t, Config{})
	cert := ca.Server(t, "p.test").TLS(t)
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2", "http/1.1", alpnChallenge}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.rt.ServeTLS(ln, "tls-acme", cfg)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
		&tls.Config{RootCAs: pool, ServerName: "p.test", NextProtos: []string{alpnChallenge}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != alpnChallenge {
		t.Fatalf("ALPN %q", p)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: p.test\r\n\r\n")
	b, err := io.ReadAll(c)
	var ne net.Error
	if len(b) > 0 || errors.As(err, &ne) && ne.Timeout() {
		t.Errorf("after an acme-tls/1 handshake: read %q, %v; want the connection closed", b, err)
	}
}
