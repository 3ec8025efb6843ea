package integration

// HTTP/3 (--http3) through real uWSGI nodes, driven with quic-go's HTTP/3
// client and with headless Chromium forced onto QUIC for the origin (its
// own QUIC stack): vars, bodies both ways, Alt-Svc on TCP, stream resets,
// SIGTERM's GOAWAY, a SIGUSR2 upgrade under load, and a connection flood
// against --max-conns.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// h3Client is quic-go's HTTP/3 client trusting p's CA. Closing the
// transport at the end closes its connections.
func h3Client(t *testing.T, p *testPKI) (*http.Client, *http3.Transport) {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool}}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr
}

// startH3Router starts a router with one --https listener and --http3,
// on a port free for both TCP and UDP.
func startH3Router(t *testing.T, p *testPKI, extra ...string) *tlsRouter {
	t.Helper()
	port := strconv.Itoa(freeTCPUDPPort(t))
	https := "127.0.0.1:" + port
	args := append([]string{"--https", https, "--http3",
		"--tls-cert", filepath.Join(p.dir, "default.crt"), "--tls-key", filepath.Join(p.dir, "default.key"),
		"--tls-dir", p.tlsDir}, extra...)
	return &tlsRouter{router: startRouter(t, args...), https: https, port: port, pki: p}
}

// freeTCPUDPPort is a loopback port free for TCP and for UDP.
func freeTCPUDPPort(t *testing.T) int {
	t.Helper()
	for range 100 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", ln.Addr().String())
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

// Requests over HTTP/3 reach a uWSGI node with the vars of an HTTPS
// request and SERVER_PROTOCOL HTTP/3.0; bodies stream both ways intact;
// the TCP listener advertises h3 on its port on HTTP/1.1 and h2; the
// connection is counted with proto="h3".
func TestH3ThroughUWSGI(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p)
	startNode(t, r.router, "default.test", nodeOpts{id: "q"})
	waitForNodes(t, r.router, "default.test", 1)
	c, _ := h3Client(t, p)
	base := "https://default.test:" + r.port
	// quic-go's client resolves the URL's host: send it to the router.
	c.Transport.(*http3.Transport).Dial = dialTo(r.https)

	resp, body := doReq(t, c, "GET", base+"/env?x=1", nil, 0)
	env := decodeEnv(t, body)
	for k, want := range map[string]string{"SERVER_PROTOCOL": "HTTP/3.0", "HTTPS": "on", "REQUEST_METHOD": "GET",
		"HTTP_HOST": "default.test:" + r.port, "QUERY_STRING": "x=1", "SERVER_PORT": r.port} {
		if env[k] != want {
			t.Errorf("node var %s = %q; want %q", k, env[k], want)
		}
	}
	if resp.Proto != "HTTP/3.0" {
		t.Errorf("response proto %s", resp.Proto)
	}

	// A 5 MiB upload of unknown length (no content-length field) and a
	// 10 MiB download, each checked end to end.
	up := make([]byte, 5<<20)
	rng := mrand.New(mrand.NewPCG(1, 2))
	for i := range up {
		up[i] = byte(rng.Uint32())
	}
	sum := sha256.Sum256(up)
	_, body = doReq(t, c, "POST", base+"/upload", io.MultiReader(bytes.NewReader(up)), -1)
	if want := fmt.Sprintf("%d %s", len(up), hex.EncodeToString(sum[:])); body != want {
		t.Errorf("upload: node got %q; want %q", body, want)
	}
	resp, body = doReq(t, c, "GET", base+"/download?size=10485760", nil, 0)
	if resp.StatusCode != 200 || len(body) != 10<<20 {
		t.Errorf("download: %d, %d bytes; want 200, %d", resp.StatusCode, len(body), 10<<20)
	}

	lines := metricLines(t, r.router, "fastrouter_client_connections", `proto="h3"`)
	if len(lines) != 1 || sampleValue(t, lines[0]) != 1 {
		t.Errorf("client_connections{proto=h3}: %q; want one connection", lines)
	}

	want := `h3=":` + r.port + `"; ma=86400`
	for _, h2 := range []bool{false, true} {
		hc := h2Client(r.https, &tls.Config{RootCAs: p.pool}, nil)
		if !h2 {
			hc.Transport.(*http.Transport).Protocols = nil // HTTP/1.1 over TLS
		}
		resp, _ := doReq(t, hc, "GET", base+"/env", nil, 0)
		resp404, _ := doReq(t, hc, "GET", "https://sni.test:"+r.port+"/env", nil, 0) // no pool: an error page
		for _, rs := range []*http.Response{resp, resp404} {
			if got := rs.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != want {
				t.Errorf("%s %d: Alt-Svc %q; want %q", rs.Proto, rs.StatusCode, got, want)
			}
		}
	}
}

// A 64 MiB upload and download over HTTP/3 stream through the router in
// bounded memory: flow control holds what a client can make it buffer.
func TestH3LargeBodiesBoundedMemory(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p)
	startNode(t, r.router, "default.test", nodeOpts{id: "m"})
	waitForNodes(t, r.router, "default.test", 1)
	c, tr := h3Client(t, p)
	tr.Dial = dialTo(r.https)
	base := "https://default.test:" + r.port
	doReq(t, c, "GET", base+"/env", nil, 0)
	before := r.peakRSS(t)
	const size = 64 << 20
	h := sha256.New()
	rng := mrand.New(mrand.NewPCG(3, 4))
	src := io.TeeReader(io.LimitReader(readerFunc(func(b []byte) (int, error) {
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return len(b), nil
	}), size), h)
	resp, body := doReq(t, c, "POST", base+"/upload", src, size)
	if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(h.Sum(nil))); resp.StatusCode != 200 || body != want {
		t.Fatalf("upload: %d %q; want %q", resp.StatusCode, body, want)
	}
	resp, body = doReq(t, c, "GET", fmt.Sprintf("%s/download?size=%d&cl=1", base, size), nil, 0)
	if resp.StatusCode != 200 || len(body) != size {
		t.Fatalf("download: %d, %d bytes", resp.StatusCode, len(body))
	}
	grew := r.peakRSS(t) - before
	t.Logf("64 MiB up and down over HTTP/3: router peak RSS %d → %d MiB", before>>20, (before+grew)>>20)
	if grew > 32<<20 {
		t.Errorf("router peak RSS grew %d MiB for 64 MiB bodies; want them streamed", grew>>20)
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(b []byte) (int, error) { return f(b) }

// A client that resets its stream (cancels its request) ends the node's
// exchange: the router closes the node connection at once, well before the
// slow app would have answered, and the node is free again.
func TestH3StreamResetCutsTheNode(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p)
	startNode(t, r.router, "default.test", nodeOpts{id: "r"})
	waitForNodes(t, r.router, "default.test", 1)
	c, tr := h3Client(t, p)
	tr.Dial = dialTo(r.https)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", "https://default.test:"+r.port+"/slow?ms=20000", nil)
	done := make(chan error, 1)
	go func() {
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	eventually(t, 10*time.Second, "the slow request to be in flight", func() bool {
		return r.pool(t, "default.test").Nodes[0].Inflight == 1
	})
	start := time.Now()
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	eventually(t, 5*time.Second, "the node's exchange to end", func() bool {
		return r.pool(t, "default.test").Nodes[0].Inflight == 0
	})
	t.Logf("node exchange ended %s after the reset", time.Since(start).Round(time.Millisecond))
	lines := metricLines(t, r.router, "fastrouter_requests_total", `code="499"`)
	if len(lines) != 1 || sampleValue(t, lines[0]) != 1 {
		t.Errorf("requests_total{code=499}: %q; want the reset request counted once", lines)
	}
}

// SIGTERM sends GOAWAY on HTTP/3 connections: a request in flight
// finishes, and the router exits 0.
func TestH3GoawayOnShutdown(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p, "--shutdown-timeout", "10s")
	startNode(t, r.router, "default.test", nodeOpts{id: "g"})
	waitForNodes(t, r.router, "default.test", 1)
	c, tr := h3Client(t, p)
	tr.Dial = dialTo(r.https)
	slow := make(chan string, 1)
	go func() {
		resp, err := c.Get("https://default.test:" + r.port + "/slow?ms=1500")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- fmt.Sprintf("%s %d %s %v", resp.Proto, resp.StatusCode, b, err)
	}()
	eventually(t, 10*time.Second, "the slow request to be in flight", func() bool {
		return r.pool(t, "default.test").Nodes[0].Inflight == 1
	})
	if err := syscall.Kill(r.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-slow:
		if got != "HTTP/3.0 200 slow node=g <nil>" {
			t.Fatalf("h3 request in flight during shutdown: %s", got)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("h3 request in flight during shutdown did not finish")
	}
	if code := r.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("router exit code %d after SIGTERM; want 0", code)
	}
}

// At the shutdown deadline an HTTP/3 stream that would go on (a uWSGI app
// sleeping 30 s) is cut, and the router exits 0 within --shutdown-timeout
// plus a second.
func TestH3ShutdownDeadline(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	const timeout = 2 * time.Second
	r := startH3Router(t, p, "--shutdown-timeout", timeout.String())
	startNode(t, r.router, "default.test", nodeOpts{id: "d"})
	waitForNodes(t, r.router, "default.test", 1)
	c, tr := h3Client(t, p)
	tr.Dial = dialTo(r.https)
	done := make(chan error, 1)
	go func() {
		resp, err := c.Get("https://default.test:" + r.port + "/slow?ms=30000")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
		}
		done <- err
	}()
	eventually(t, 10*time.Second, "the slow request to be in flight", func() bool {
		return r.pool(t, "default.test").Nodes[0].Inflight == 1
	})
	signalled := time.Now()
	if err := syscall.Kill(r.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := r.wait(t, 30*time.Second)
	exit := time.Since(signalled)
	select {
	case err := <-done:
		t.Logf("exit %d after %s; the client saw: %v", code, exit.Round(time.Millisecond), err)
	case <-time.After(5 * time.Second):
		t.Error("the cut request is still waiting 5 s after the router exited")
	}
	if code != 0 || exit > timeout+time.Second {
		t.Errorf("exit %d after %s; want 0 within --shutdown-timeout + 1s", code, exit.Round(time.Millisecond))
	}
}

// A binary upgrade (SIGUSR2) under HTTP/3 load fails no request: the new
// process inherits the UDP socket, the old one finishes its streams.
func TestH3BinaryUpgradeUnderLoad(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	pidFile := filepath.Join(t.TempDir(), "fastrouter.pid")
	r := startH3Router(t, p, "--pid-file", pidFile, "--shutdown-timeout", "10s")
	startNode(t, r.router, "default.test", nodeOpts{id: "u"})
	waitForNodes(t, r.router, "default.test", 1)
	pid := readPID(pidFile)

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			c, tr := h3Client(t, p)
			tr.Dial = dialTo(r.https)
			for {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Get("https://default.test:" + r.port + "/slow?ms=5")
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "slow node=") {
						err = fmt.Errorf("%d %q", resp.StatusCode, b)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		})
	}
	eventually(t, 10*time.Second, "requests before the upgrade", func() bool { return ok.Load() >= 20 })
	before := ok.Load()
	start := time.Now()
	next := upgradeAndWait(t, pidFile, pid)
	took := time.Since(start)
	if code := r.wait(t, 5*time.Second); code != 0 {
		t.Errorf("old process exit code %d, want 0", code)
	}
	after := ok.Load()
	eventually(t, 10*time.Second, "requests served by the new process", func() bool { return ok.Load() >= after+20 })
	close(stop)
	wg.Wait()
	t.Logf("h3 requests: %d ok, %d failed (%d before the upgrade); upgrade+drain took %s; pids %d → %d",
		ok.Load(), failed.Load(), before, took.Round(time.Millisecond), pid, next)
	if failed.Load() > 0 {
		t.Fatalf("%d h3 requests failed across the upgrade; first: %v", failed.Load(), firstErr.Load())
	}
	// The old process leaves once its connections are done (their clients
	// close them after GOAWAY), not at --shutdown-timeout.
	if took > 8*time.Second {
		t.Errorf("upgrade and drain took %s; want the old process gone well before --shutdown-timeout 10s", took)
	}
}

// A flood of QUIC connections against --max-conns: the ones past the
// limit are refused at once (CONNECTION_REFUSED, counted), the admitted
// ones are served meanwhile, and the router's memory and goroutines stay
// bounded: what the router adds to quic-go.
func TestH3ConnectionFlood(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	const limit, flood = 20, 300
	r := startH3Router(t, p, "--max-conns", fmt.Sprint(limit))
	startNode(t, r.router, "default.test", nodeOpts{id: "f"})
	waitForNodes(t, r.router, "default.test", 1)
	tcfg := &tls.Config{RootCAs: p.pool, ServerName: "default.test", NextProtos: []string{http3.NextProtoH3}}
	var held []*quic.Conn
	defer func() {
		for _, c := range held {
			c.CloseWithError(0, "")
		}
	}()
	dial := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, r.https, tcfg, &quic.Config{})
	}
	for range limit - 1 { // one slot stays for the client below
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	c, tr := h3Client(t, p)
	tr.Dial = dialTo(r.https)
	if resp, _ := doReq(t, c, "GET", "https://default.test:"+r.port+"/env", nil, 0); resp.StatusCode != 200 {
		t.Fatalf("admitted client: %d", resp.StatusCode)
	}
	var refused, other atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	sem := make(chan struct{}, 32)
	for range flood {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			qc, err := dial()
			var te *quic.TransportError
			switch {
			case errors.As(err, &te) && te.ErrorCode == quic.ConnectionRefused:
				refused.Add(1)
			default:
				other.Add(1)
				if qc != nil {
					qc.CloseWithError(0, "")
				}
			}
		})
	}
	// The admitted client is served throughout.
	served := 0
	for time.Since(start) < 2*time.Second || served == 0 {
		if resp, _ := doReq(t, c, "GET", "https://default.test:"+r.port+"/env", nil, 0); resp.StatusCode == 200 {
			served++
		}
	}
	wg.Wait()
	took := time.Since(start)
	lines := metricLines(t, r.router, "fastrouter_client_connections_refused_total")
	var counted float64
	for _, l := range lines {
		counted += sampleValue(t, l)
	}
	open := metricLines(t, r.router, "fastrouter_client_connections", `proto="h3"`)
	t.Logf("%d QUIC connections over --max-conns %d in %s: %d refused, %d otherwise; refusals counted %v; admitted client served %d requests meanwhile; open %q; peak RSS %d MiB",
		flood, limit, took.Round(time.Millisecond), refused.Load(), other.Load(), counted, served, open, r.peakRSS(t)>>20)
	if refused.Load() != flood {
		t.Errorf("%d of %d connections over the limit refused; want all", refused.Load(), flood)
	}
	if counted < flood {
		t.Errorf("refusals counted %v; want at least %d", counted, flood)
	}
	if len(open) != 1 || sampleValue(t, open[0]) != limit {
		t.Errorf("open h3 connections %q; want %d", open, limit)
	}
}

// Headless Chromium, forced onto QUIC for the router's origin (its own
// QUIC and HTTP/3 stack), loads a page from a uWSGI node through the h3
// front.
func TestH3Chromium(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p)
	startNode(t, r.router, "default.test", nodeOpts{id: "c"})
	waitForNodes(t, r.router, "default.test", 1)
	origin := "default.test:" + r.port
	b := startBrowser(t,
		"--origin-to-force-quic-on="+origin,
		"--host-resolver-rules=MAP default.test 127.0.0.1",
		"--ignore-certificate-errors-spki-list="+leafSPKIHash(t, filepath.Join(p.dir, "default.crt")))
	b.navigate(t, "https://"+origin+"/env")
	var proto string
	b.eval(t, `performance.getEntriesByType("navigation")[0].nextHopProtocol`, &proto)
	var text string
	b.eval(t, `document.body.innerText`, &text)
	env := decodeEnv(t, text)
	if proto != "h3" || env["SERVER_PROTOCOL"] != "HTTP/3.0" || env["HTTPS"] != "on" {
		t.Fatalf("chromium: protocol %q, node saw SERVER_PROTOCOL=%q HTTPS=%q; want h3 through the h3 front",
			proto, env["SERVER_PROTOCOL"], env["HTTPS"])
	}
	lines := metricLines(t, r.router, "fastrouter_client_connections", `proto="h3"`)
	if len(lines) != 1 || sampleValue(t, lines[0]) < 1 {
		t.Errorf("client_connections{proto=h3}: %q; want Chromium's connection", lines)
	}
}

// HTTP/3 serves the TCP listener's certificates: SNI names from --tls-dir,
// the default one otherwise, and a certificate added to --tls-dir while
// the router runs, without a restart.
func TestH3Certificates(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p)
	leafFor := func(name string) *x509.Certificate {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		qc, err := quic.DialAddr(ctx, r.https, &tls.Config{ServerName: name, InsecureSkipVerify: true,
			NextProtos: []string{http3.NextProtoH3}}, &quic.Config{})
		if err != nil {
			t.Fatalf("QUIC handshake for %s: %v", name, err)
		}
		defer qc.CloseWithError(0, "")
		return qc.ConnectionState().TLS.PeerCertificates[0]
	}
	for name, want := range map[string]string{"sni.test": "sni.test", "a.wild.test": "*.wild.test", "other.test": "default.test"} {
		if got := leafFor(name).Subject.CommonName; got != want {
			t.Errorf("SNI %s over QUIC: certificate %q; want %q", name, got, want)
		}
	}
	added := p.writePair(t, p.tlsDir, "new.test", "new.test", "new.test")
	eventually(t, 10*time.Second, "new.test.crt to be served over QUIC", func() bool {
		return leafFor("new.test").SerialNumber.Cmp(added.SerialNumber) == 0
	})
}

// leafSPKIHash is the base64 SHA-256 of the certificate's public key in
// file, which --ignore-certificate-errors-spki-list takes.
func leafSPKIHash(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM block", file)
	}
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(cert.RawSubjectPublicKeyInfo)
	return base64.StdEncoding.EncodeToString(sum[:])
}

// dialTo is an http3.Transport Dial that sends every connection to addr,
// whatever the URL's host (which stays the SNI name and :authority).
func dialTo(addr string) func(context.Context, string, *tls.Config, *quic.Config) (*quic.Conn, error) {
	return func(ctx context.Context, _ string, tc *tls.Config, qc *quic.Config) (*quic.Conn, error) {
		return quic.DialAddrEarly(ctx, addr, tc, qc)
	}
}

// fastrouter check names the HTTP/3 sockets it would serve, and 0-RTT.
func TestH3Check(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	code, stdout, stderr := runBinary(t, "check", "--https", "127.0.0.1:0", "--http3", "--http3-0rtt",
		"--tls-cert", filepath.Join(p.dir, "default.crt"), "--tls-key", filepath.Join(p.dir, "default.key"))
	if code != 0 || !strings.Contains(stdout, "http3 (udp) 127.0.0.1:0 with 0-RTT") {
		t.Fatalf("check: exit %d, stdout %q, stderr %q; want 0 and the HTTP/3 socket in the summary", code, stdout, stderr)
	}
}
