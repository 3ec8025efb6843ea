package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// parkTLSRouter serves HTTPS (optional client certificates from ca) in
// front of one fake node for p.test.
func parkTLSRouter(t testing.TB, ca *testcert.CA) (addr string, l *frontListener, node *fakeNode, rt *Router) {
	t.Helper()
	return parkTLSRouterWith(t, ca, Config{})
}

func parkTLSRouterWith(t testing.TB, ca *testcert.CA, rc Config) (addr string, l *frontListener, node *fakeNode, rt *Router) {
	t.Helper()
	node = startFakeNode(t, okReply("hi"))
	addr, l, rt = tlsRouterTo(t, ca, rc, node.addr())
	return addr, l, node, rt
}

// tlsRouterTo serves HTTPS, as parkTLSRouter, in front of the node at
// nodeAddr for p.test.
func tlsRouterTo(t testing.TB, ca *testcert.CA, rc Config, nodeAddr string) (addr string, l *frontListener, rt *Router) {
	t.Helper()
	r := startRouter(t, rc)
	r.table.AddStatic("p.test", nodeAddr, 1)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg := &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "p.test").TLS(t)},
		NextProtos: []string{"h2", "http/1.1"}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: pool}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go r.rt.ServeTLS(ln, "tls-test", cfg)
	waitFor(t, "the TLS listener", func() bool {
		r.rt.mu.Lock()
		defer r.rt.mu.Unlock()
		for _, fl := range r.rt.frontListenersLocked() {
			if fl.name == "tls-test" {
				l = fl
				return true
			}
		}
		return false
	})
	return ln.Addr().String(), l, r.rt
}

func dialTLSKeepAlive(t *testing.T, addr string, ca *testcert.CA, client *tls.Certificate) *keepAlive {
	t.Helper()
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	cfg := &tls.Config{RootCAs: pool, ServerName: "p.test", NextProtos: []string{"http/1.1"}}
	if client != nil {
		cfg.Certificates = []tls.Certificate{*client}
	}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &keepAlive{uwsgitest.NewClient(t, c), t}
}

// An idle HTTPS keep-alive connection parks like a clear-text one and is
// served again: whole requests, one split across TLS records that arrive
// apart, pipelined ones, and still with its client certificate's subject
// (HTTPS_DN) for the node.
func TestParkTLSConnection(t *testing.T) {
	ca := testcert.NewCA(t, "router test CA")
	addr, l, node, rt := parkTLSRouter(t, ca)
	client := ca.Client(t, "client-1").TLS(t)
	parkRounds(t, dialTLSKeepAlive(t, addr, ca, &client), l, rt)
	if v := node.last(); v["HTTPS"] != "on" || v["HTTPS_DN"] != "CN=client-1" {
		t.Fatalf("after parks the node got HTTPS=%q HTTPS_DN=%q; want on, CN=client-1", v["HTTPS"], v["HTTPS_DN"])
	}
}

// splitConn writes each buffer in two halves with a pause between, once
// split is set: a TLS record that reaches the router in two pieces.
type splitConn struct {
	net.Conn
	pause time.Duration
	split atomic.Bool
}

func (c *splitConn) Write(b []byte) (int, error) {
	if !c.split.Load() || len(b) < 2 {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:len(b)/2])
	if err != nil {
		return n, err
	}
	time.Sleep(c.pause)
	m, err := c.Conn.Write(b[len(b)/2:])
	return n + m, err
}

// Half a TLS record that arrives before the park and the rest well after:
// the connection parks with the half held inside the tls.Conn, and the rest
// of the record, on the socket, wakes it.
func TestParkTLSPartialRecord(t *testing.T) {
	ca := testcert.NewCA(t, "router test CA")
	addr, l, _, _ := parkTLSRouter(t, ca)
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	sc := &splitConn{Conn: raw, pause: 3 * parkAfter}
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	tc := tls.Client(sc, &tls.Config{RootCAs: pool, ServerName: "p.test", NextProtos: []string{"http/1.1"}})
	k := &keepAlive{uwsgitest.NewClient(t, tc), t}
	k.get(getP, 1, "hi")
	parks := l.parks.Load()
	sc.split.Store(true)
	k.get(getP, 1, "hi")
	if got := l.parks.Load(); got <= parks {
		t.Fatalf("parks = %d, was %d: the connection did not park holding half a record", got, parks)
	}
}

// Shutdown closes parked TLS connections after its grace, like clear-text
// ones, and counts them closed.
func TestShutdownClosesParkedTLS(t *testing.T) {
	ca := testcert.NewCA(t, "router test CA")
	addr, l, _, rt := parkTLSRouter(t, ca)
	k := dialTLSKeepAlive(t, addr, ca, nil)
	k.get(getP, 1, "hi")
	waitFor(t, "the TLS connection to park", func() bool { return l.parkedCount() == 1 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > drainGrace+2*time.Second {
		t.Errorf("Shutdown took %v with a parked TLS connection", d)
	}
	k.expectEOF(time.Second)
	if got := rt.h1Open.Load(); got != 0 {
		t.Errorf("open connections after Shutdown = %d", got)
	}
}

// sClient is an openssl s_client session: what is written to in goes out
// as application data (lines end in CRLF), except a line that is a single
// command letter ("k": send a TLS 1.3 KeyUpdate, "K": send one and ask
// the peer to update too), which s_client acts on itself.
type sClient struct {
	in     io.WriteCloser
	out    *bufio.Reader
	stderr *lockedBuffer
}

func startSClient(t *testing.T, addr string) *sClient {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Fatal("openssl not installed (scripts/test.sh installs it)")
	}
	// -quiet turns command letters off (it implies -ign_eof); -no_ign_eof
	// after it turns them back on.
	cmd := exec.Command(bin, "s_client", "-connect", addr, "-servername", "p.test", "-tls1_3",
		"-alpn", "http/1.1", "-quiet", "-no_ign_eof", "-crlf")
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	s := &sClient{in: in, out: bufio.NewReader(out), stderr: &lockedBuffer{}}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		in.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("s_client stderr:\n%s", s.stderr.String())
		}
	})
	return s
}

// get sends a GET for p.test and reads its response, which must be 200 "hi".
func (s *sClient) get(t *testing.T, what string) {
	t.Helper()
	io.WriteString(s.in, "GET / HTTP/1.1\nHost: p.test\n\n")
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := http.ReadResponse(s.out, nil)
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		res <- result{resp.StatusCode, string(b), err}
	}()
	select {
	case r := <-res:
		if r.err != nil || r.code != 200 || r.body != "hi" {
			t.Fatalf("%s: %d %q %v; want 200 \"hi\"", what, r.code, r.body, r.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no response in 10s", what)
	}
}

// A parked TLS 1.3 connection woken by a record that carries no request, a
// KeyUpdate from openssl s_client (Go's crypto/tls cannot send one), goes
// back to waiting under the idle timeout: a request sent well after the
// header timeout is still served on it. With "K" the router must answer
// with a KeyUpdate of its own while parked.
func TestParkTLSKeyUpdate(t *testing.T) {
	for _, cmd := range []string{"k", "K"} {
		t.Run(cmd, func(t *testing.T) {
			t.Parallel()
			ca := testcert.NewCA(t, "router test CA")
			// Also the TLS handshake's deadline: not too short for a
			// loaded machine.
			const header = 2 * time.Second
			addr, l, _, _ := parkTLSRouterWith(t, ca, Config{HeaderTimeout: header, Timeout: 20 * time.Second})
			s := startSClient(t, addr)
			s.get(t, "first request")
			waitFor(t, "the connection to park", func() bool { return l.parkedCount() == 1 })
			io.WriteString(s.in, cmd+"\n")
			waitFor(t, "s_client to send its KeyUpdate", func() bool { return strings.Contains(s.stderr.String(), "KEYUPDATE") })
			// Well past the header timeout the connection is still
			// parked, and a request on it is served.
			time.Sleep(header + time.Second)
			if n := l.parkedCount(); n != 1 {
				t.Errorf("parked connections %v after the KeyUpdate: %d; want 1", header+time.Second, n)
			}
			s.get(t, "request after the KeyUpdate")
			s.get(t, "one more")
		})
	}
}
