package integration

// HTTPS, HTTP/2 (TLS and h2c prior knowledge), SNI certificates, client
// certificates and the http-to-https redirect, driven with real clients:
// Go's net/http and x/net/http2, curl, openssl s_client and h2load.
// Certificates are made in-test (ECDSA P-256, one test CA per test).

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// testPKI is a test CA and the files a TLS router is started with:
//
//	dir/ca.crt                        the CA (for clients' RootCAs, --cacert, -CAfile, --tls-client-ca)
//	dir/default.crt, dir/default.key  --tls-cert/--tls-key, for default.test
//	tlsDir/sni.test.crt/.key          --tls-dir, for sni.test
//	tlsDir/_wildcard.wild.test.crt/.key                for *.wild.test
type testPKI struct {
	dir, tlsDir string
	caFile      string
	ca          *testcert.CA
	pool        *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	p := &testPKI{dir: t.TempDir(), tlsDir: t.TempDir()}
	p.ca = testcert.NewCA(t, "fastrouter test CA")
	p.ca.Org = "fastrouter tests" // what openssl s_client shows of the subject
	p.pool = p.ca.Pool()
	p.caFile = filepath.Join(p.dir, "ca.crt")
	writeFileAtomic(t, p.caFile, p.ca.PEM)
	p.writePair(t, p.dir, "default", "default.test", "default.test")
	p.writePair(t, p.tlsDir, "sni.test", "sni.test", "sni.test")
	p.writePair(t, p.tlsDir, "_wildcard.wild.test", "*.wild.test", "*.wild.test")
	return p
}

// writePair issues a server certificate and writes dir/name.crt and
// dir/name.key (testcert.Cert.WriteFiles: renamed into place, key first,
// so a poller never reads half a file).
func (p *testPKI) writePair(t *testing.T, dir, name, cn string, dns ...string) *x509.Certificate {
	t.Helper()
	c := p.ca.Issue(t, testcert.Spec{CN: cn, DNSNames: dns})
	c.WriteFiles(t, dir, name)
	return c.Leaf
}

// writeFileAtomic writes path through a dot-named temporary in the same
// directory (the certificate store ignores dot files) and renames it over.
func writeFileAtomic(t *testing.T, path string, b []byte) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// startTLSPool starts a router on a fresh test PKI (startTLSRouter) with
// one node of o in pool host, and waits for the node to be up.
func startTLSPool(t *testing.T, host string, o nodeOpts) (*testPKI, *tlsRouter) {
	t.Helper()
	p := newTestPKI(t)
	r := startTLSRouter(t, p)
	startNode(t, r.router, host, o)
	waitForNodes(t, r.router, host, 1)
	return p, r
}

// tlsRouter is a router with one --https listener serving p's certificates.
type tlsRouter struct {
	*router
	https string // the --https address
	port  string // its port
	pki   *testPKI
}

func startTLSRouter(t *testing.T, p *testPKI, extra ...string) *tlsRouter {
	t.Helper()
	port := strconv.Itoa(freePort(t))
	https := "127.0.0.1:" + port
	args := append([]string{"--https", https,
		"--tls-cert", filepath.Join(p.dir, "default.crt"), "--tls-key", filepath.Join(p.dir, "default.key"),
		"--tls-dir", p.tlsDir}, extra...)
	return &tlsRouter{router: startRouter(t, args...), https: https, port: port, pki: p}
}

// h2Client speaks HTTP/2 only. With tlsConf it speaks TLS (ALPN h2),
// without it h2c with prior knowledge. Every connection goes to addr
// whatever the URL's host, so the URL's host is both the SNI name and
// :authority. dials, when not nil, counts the connections made.
func h2Client(addr string, tlsConf *tls.Config, dials *atomic.Int32) *http.Client {
	var protos http.Protocols
	if tlsConf != nil {
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	return &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{
		Protocols:       &protos,
		TLSClientConfig: tlsConf,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			if dials != nil {
				dials.Add(1)
			}
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		},
	}}
}

// doReq sends method url (through c) and returns the response and its body;
// any transport error fails the test.
func doReq(t *testing.T, c *http.Client, method, url string, body io.Reader, n int64) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, body)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.ContentLength = n
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: body: %v", method, url, err)
	}
	return resp, string(b)
}

func decodeEnv(t *testing.T, body string) map[string]string {
	t.Helper()
	var env map[string]string
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("/env: %v in %.200q", err, body)
	}
	return env
}

// runTool runs a command line tool with a deadline and returns its
// combined output and its error (nil on exit 0).
func runTool(t *testing.T, d time.Duration, stdin string, name string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: no result within %s\n%s", name, strings.Join(args, " "), d, tail(out, 2000))
	}
	return string(out), err
}

// curlGet runs curl and returns the body, the HTTP version curl used ("2",
// "1.1") and the status code.
func curlGet(t *testing.T, args ...string) (body, version string, code int) {
	t.Helper()
	args = append([]string{"-sS", "--max-time", "20", "-w", "\n%{http_version} %{http_code}"}, args...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "curl", args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("curl %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	s := string(out)
	i := strings.LastIndexByte(s, '\n')
	f := strings.Fields(s[i+1:])
	if i < 0 || len(f) != 2 {
		t.Fatalf("curl %s: unexpected output %q", strings.Join(args, " "), s)
	}
	code, _ = strconv.Atoi(f[1])
	return s[:i], f[0], code
}

// metricLines returns the /metrics sample lines whose name is name, with
// every label in labels (`pool="x"` form) present.
func metricLines(t *testing.T, r *router, name string, labels ...string) []string {
	t.Helper()
	_, body := get(t, client(), r.admin, r.admin, "/metrics")
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if !strings.HasPrefix(l, name+"{") && !strings.HasPrefix(l, name+" ") {
			continue
		}
		ok := true
		for _, lb := range labels {
			ok = ok && strings.Contains(l, lb)
		}
		if ok {
			out = append(out, l)
		}
	}
	return out
}

func sampleValue(t *testing.T, line string) float64 {
	t.Helper()
	f, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
	if err != nil {
		t.Fatalf("metric line %q: %v", line, err)
	}
	return f
}

// promtoolCheck validates the router's /metrics with promtool (format and
// lint).
func promtoolCheck(t *testing.T, r *router) {
	t.Helper()
	_, body := get(t, client(), r.admin, r.admin, "/metrics")
	if out, err := runTool(t, 30*time.Second, body, "promtool", "check", "metrics"); err != nil {
		t.Fatalf("promtool check metrics: %v\n%s", err, out)
	}
}

// An --http listener also speaks HTTP/2 to a client with prior knowledge
// (h2c), and still HTTP/1.1 to everyone else.
func TestH2CPriorKnowledge(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "h2c.test", nodeOpts{id: "c"})
	waitForNodes(t, r, "h2c.test", 1)
	_, port, _ := net.SplitHostPort(r.http)

	c := h2Client(r.http, nil, nil)
	for _, path := range []string{"/", "/env"} {
		resp, body := doReq(t, c, "GET", "http://h2c.test:"+port+path, nil, 0)
		if resp.StatusCode != 200 || resp.ProtoMajor != 2 {
			t.Fatalf("Go h2c GET %s: %s %d %.100q; want HTTP/2.0 200", path, resp.Proto, resp.StatusCode, body)
		}
		if path == "/" && body != "node=c" {
			t.Fatalf("Go h2c GET /: %q; want node=c", body)
		}
		if path == "/env" {
			env := decodeEnv(t, body)
			if env["SERVER_PROTOCOL"] != "HTTP/2.0" || env["REQUEST_SCHEME"] != "http" || env["HTTPS"] != "" ||
				env["SERVER_PORT"] != port || env["HTTP_HOST"] != "h2c.test:"+port {
				t.Fatalf("h2c vars: SERVER_PROTOCOL=%q REQUEST_SCHEME=%q HTTPS=%q SERVER_PORT=%q HTTP_HOST=%q",
					env["SERVER_PROTOCOL"], env["REQUEST_SCHEME"], env["HTTPS"], env["SERVER_PORT"], env["HTTP_HOST"])
			}
		}
	}

	resolve := "h2c.test:" + port + ":127.0.0.1"
	body, version, code := curlGet(t, "--http2-prior-knowledge", "--resolve", resolve, "http://h2c.test:"+port+"/")
	if version != "2" || code != 200 || body != "node=c" {
		t.Fatalf("curl --http2-prior-knowledge: HTTP/%s %d %q; want HTTP/2 200 node=c", version, code, body)
	}
	body, version, code = curlGet(t, "--http1.1", "--resolve", resolve, "http://h2c.test:"+port+"/env")
	if version != "1.1" || code != 200 || decodeEnv(t, body)["SERVER_PROTOCOL"] != "HTTP/1.1" {
		t.Fatalf("curl --http1.1 on the same listener: HTTP/%s %d %.100q", version, code, body)
	}
	if code, body := get(t, client(), r.http, "h2c.test", "/"); code != 200 || body != "node=c" {
		t.Fatalf("Go HTTP/1.1 on the same listener: %d %q", code, body)
	}
}

// --https negotiates h2 or http/1.1 by ALPN, and the node sees the request
// as HTTPS whatever the protocol.
func TestHTTPSALPN(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p, r := startTLSPool(t, "default.test", nodeOpts{id: "a"})

	url := "https://default.test:" + r.port + "/env?x=1"
	for _, tc := range []struct{ flag, version, proto string }{
		{"--http2", "2", "HTTP/2.0"},
		{"--http1.1", "1.1", "HTTP/1.1"},
	} {
		body, version, code := curlGet(t, tc.flag, "--cacert", p.caFile, "--resolve", "default.test:"+r.port+":127.0.0.1", url)
		if version != tc.version || code != 200 {
			t.Fatalf("curl %s: HTTP/%s %d %.200q; want HTTP/%s 200", tc.flag, version, code, body, tc.version)
		}
		env := decodeEnv(t, body)
		want := map[string]string{
			"HTTPS": "on", "REQUEST_SCHEME": "https", "SERVER_PORT": r.port, "SERVER_PROTOCOL": tc.proto,
			"HTTP_HOST": "default.test:" + r.port, "QUERY_STRING": "x=1", "PATH_INFO": "/env",
		}
		for k, v := range want {
			if env[k] != v {
				t.Errorf("curl %s: %s=%q; want %q", tc.flag, k, env[k], v)
			}
		}
	}
	// Go's client: h2 by ALPN.
	resp, body := doReq(t, h2Client(r.https, &tls.Config{RootCAs: p.pool}, nil), "GET", url, nil, 0)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || resp.TLS == nil || resp.TLS.NegotiatedProtocol != "h2" {
		t.Fatalf("Go client: %s %d; want HTTP/2.0 200 over TLS with ALPN h2", resp.Proto, resp.StatusCode)
	}
	if env := decodeEnv(t, body); env["HTTPS"] != "on" || env["SERVER_PROTOCOL"] != "HTTP/2.0" {
		t.Fatalf("Go client: HTTPS=%q SERVER_PROTOCOL=%q", env["HTTPS"], env["SERVER_PROTOCOL"])
	}
}

// The certificate follows the SNI name: an exact --tls-dir file, then the
// _wildcard file of the parent domain, then --tls-cert; only TLS 1.2 and
// 1.3 are spoken.
func TestSNICertificates(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startTLSRouter(t, p)

	sClient := func(args ...string) (string, error) {
		args = append([]string{"s_client", "-connect", r.https, "-CAfile", p.caFile}, args...)
		return runTool(t, 20*time.Second, "", "openssl", args...)
	}
	for _, tc := range []struct {
		name        string
		args        []string
		subject     string
		verifyAsked string
	}{
		// Go writes O before CN in the subject.
		{"exact name", []string{"-servername", "sni.test"}, "subject=O = fastrouter tests, CN = sni.test\n", "sni.test"},
		{"wildcard", []string{"-servername", "foo.wild.test"}, "subject=O = fastrouter tests, CN = *.wild.test\n", "foo.wild.test"},
		{"no SNI: default", []string{"-noservername"}, "subject=O = fastrouter tests, CN = default.test\n", "default.test"},
		{"unknown name: default", []string{"-servername", "other.test"}, "subject=O = fastrouter tests, CN = default.test\n", "default.test"},
	} {
		// -verify_hostname: return code 0 also means the name matches.
		out, err := sClient(append(tc.args, "-verify_hostname", tc.verifyAsked)...)
		if err != nil || !strings.Contains(out, tc.subject) || !strings.Contains(out, "Verify return code: 0 (ok)") {
			t.Errorf("%s: err %v; want %q and \"Verify return code: 0 (ok)\" in:\n%s", tc.name, err, tc.subject, tail([]byte(out), 1500))
		}
	}
	for _, v := range []string{"-tls1_2", "-tls1_3"} {
		out, err := sClient(v, "-servername", "sni.test")
		want := "Protocol  : TLSv1." + v[len(v)-1:]
		if err != nil || !strings.Contains(out, want) || !strings.Contains(out, "Verify return code: 0 (ok)") {
			t.Errorf("%s: err %v; want %q in:\n%s", v, err, want, tail([]byte(out), 1500))
		}
	}
	// TLS 1.1: OpenSSL 3 refuses it on its own at the default security
	// level, so lower the client's to 0 to make sure the refusal is the
	// router's (alert 70, protocol_version).
	out, err := sClient("-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-servername", "sni.test")
	if err == nil || !strings.Contains(out, "alert protocol version") {
		t.Errorf("-tls1_1: err %v; want a failed handshake with a protocol_version alert:\n%s", err, tail([]byte(out), 1500))
	}
	// The same with Go's client, which still offers TLS 1.0/1.1 when asked.
	c, err := tls.Dial("tcp", r.https, &tls.Config{RootCAs: p.pool, ServerName: "sni.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	if err == nil {
		c.Close()
		t.Errorf("TLS 1.1 handshake with Go's client succeeded (%x); want refused", c.ConnectionState().Version)
	}
}

// A certificate dropped into --tls-dir is served within a poll or two, and
// a renewed one replaces it, without a restart; SIGHUP keeps HTTP/2
// connections open.
func TestTLSDirPicksUpNewCertificate(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startTLSRouter(t, p)
	pid := r.pid()

	leafFor := func(name string) *x509.Certificate {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.https,
			&tls.Config{ServerName: name, InsecureSkipVerify: true})
		if err != nil {
			t.Fatalf("handshake for %s: %v", name, err)
		}
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0]
	}
	if l := leafFor("new.test"); l.Subject.CommonName != "default.test" {
		t.Fatalf("before new.test.crt exists: served %q; want the default certificate", l.Subject.CommonName)
	}

	first := p.writePair(t, p.tlsDir, "new.test", "new.test", "new.test")
	start := time.Now()
	eventually(t, 10*time.Second, "new.test.crt to be served", func() bool {
		return leafFor("new.test").SerialNumber.Cmp(first.SerialNumber) == 0
	})
	t.Logf("new certificate served after %s", time.Since(start).Round(10*time.Millisecond))
	if _, err := leafFor("new.test").Verify(x509.VerifyOptions{Roots: p.pool, DNSName: "new.test"}); err != nil {
		t.Fatalf("the served new.test certificate does not verify: %v", err)
	}

	second := p.writePair(t, p.tlsDir, "new.test", "new.test", "new.test")
	eventually(t, 10*time.Second, "the renewed new.test.crt to be served", func() bool {
		return leafFor("new.test").SerialNumber.Cmp(second.SerialNumber) == 0
	})
	if r.exited() || r.pid() != pid || syscall.Kill(pid, 0) != nil {
		t.Fatal("the router restarted or exited while certificates changed")
	}

	// SIGHUP with an HTTP/2 connection open, and a request in flight on it.
	startNode(t, r.router, "new.test", nodeOpts{id: "n"})
	waitForNodes(t, r.router, "new.test", 1)
	var dials atomic.Int32
	c := h2Client(r.https, &tls.Config{RootCAs: p.pool}, &dials)
	base := "https://new.test:" + r.port
	if resp, body := doReq(t, c, "GET", base+"/", nil, 0); resp.StatusCode != 200 || resp.ProtoMajor != 2 || body != "node=n" {
		t.Fatalf("before SIGHUP: %s %d %q", resp.Proto, resp.StatusCode, body)
	}
	slow := make(chan string, 1)
	go func() {
		resp, err := c.Get(base + "/slow?ms=1500")
		if err != nil {
			slow <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		slow <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	eventually(t, 5*time.Second, "the slow request to be in flight", func() bool {
		return r.pool(t, "new.test").Nodes[0].Inflight == 1
	})
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the router to log the reload", func() bool {
		b, _ := os.ReadFile(r.log)
		return bytes.Contains(b, []byte("configuration reloaded"))
	})
	if resp, body := doReq(t, c, "GET", base+"/", nil, 0); resp.StatusCode != 200 || body != "node=n" {
		t.Fatalf("after SIGHUP: %d %q", resp.StatusCode, body)
	}
	select {
	case got := <-slow:
		if got != "200 slow node=n" {
			t.Fatalf("request in flight across SIGHUP: %s; want 200 slow node=n", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("request in flight across SIGHUP did not finish")
	}
	if n := dials.Load(); n != 1 {
		t.Fatalf("the client dialed %d connections; want 1 (SIGHUP must not drop the h2 connection)", n)
	}
	if leafFor("new.test").SerialNumber.Cmp(second.SerialNumber) != 0 || r.exited() {
		t.Fatal("after SIGHUP the renewed certificate is no longer served")
	}
}

var (
	h2loadRequests = regexp.MustCompile(`requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout`)
	h2loadStatus   = regexp.MustCompile(`status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx`)
	h2loadRate     = regexp.MustCompile(`finished in ([0-9.]+m?s), ([0-9.]+) req/s`)
	h2loadProto    = regexp.MustCompile(`Application protocol: (\S+)`)
)

// h2load over TLS (ALPN h2) and over h2c prior knowledge: 2000 requests, 10
// connections, 10 streams each, every answer a 2xx.
func TestH2Load(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	// 100 streams in flight: enough workers that the node's listen queue
	// (100) never overflows.
	_, r := startTLSPool(t, "h2.test", nodeOpts{id: "h", processes: 4, threads: 4})

	for _, tc := range []struct{ url, proto string }{
		{"https://" + r.https + "/", "h2"},
		{"http://" + r.http + "/", "h2c"},
	} {
		out, err := runTool(t, 120*time.Second, "", "h2load", "-n", "2000", "-c", "10", "-m", "10",
			"-H", ":authority: h2.test", tc.url)
		if err != nil {
			t.Fatalf("h2load %s: %v\n%s", tc.url, err, out)
		}
		req, st, rate, proto := h2loadRequests.FindStringSubmatch(out), h2loadStatus.FindStringSubmatch(out),
			h2loadRate.FindStringSubmatch(out), h2loadProto.FindStringSubmatch(out)
		if req == nil || st == nil || rate == nil || proto == nil {
			t.Fatalf("h2load %s: unexpected output:\n%s", tc.url, out)
		}
		if proto[1] != tc.proto || req[1] != "2000" || req[3] != "2000" || req[4] != "2000" || req[5] != "0" ||
			req[6] != "0" || req[7] != "0" || st[1] != "2000" {
			t.Fatalf("h2load %s: protocol %s, %s, %s; want %s, 2000 succeeded, 2000 2xx", tc.url, proto[1], req[0], st[0], tc.proto)
		}
		t.Logf("h2load %s (%s): %s req/s, finished in %s", tc.url, proto[1], rate[2], rate[1])
	}
	if n := r.pool(t, "h2.test").Nodes[0].Requests; n != 4000 {
		t.Fatalf("the node got %d requests; want 4000", n)
	}
}

// seededReader yields pseudo-random bytes from a fixed seed.
type seededReader struct{ rng *mrand.ChaCha8 }

func (s seededReader) Read(p []byte) (int, error) { return s.rng.Read(p) }

// 32 MiB each way over TLS h2, streamed: the bytes arrive intact and the
// router's memory does not grow with the body.
func TestLargeBodiesOverH2(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p, r := startTLSPool(t, "big.wild.test", nodeOpts{id: "b"})
	idle := r.peakRSS(t)
	c := h2Client(r.https, &tls.Config{RootCAs: p.pool}, nil)
	base := "https://big.wild.test:" + r.port
	const size = 32 << 20

	// Upload from a generator; the hash is taken as the bytes are produced.
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(seededReader{mrand.NewChaCha8([32]byte{1, 2, 3})}, size), h)
	resp, body := doReq(t, c, "POST", base+"/upload", io.NopCloser(src), size)
	if resp.ProtoMajor != 2 {
		t.Fatalf("upload went over %s; want HTTP/2", resp.Proto)
	}
	if want := fmt.Sprintf("%d %s", size, hex.EncodeToString(h.Sum(nil))); resp.StatusCode != 200 || body != want {
		t.Fatalf("upload: %d %q; want 200 %q", resp.StatusCode, body, want)
	}

	wantSum := patternSum(size)
	for _, q := range []string{"", "&cl=1"} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("%s/download?size=%d%s", base, size, q), nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("download%s: %v", q, err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 || n != size || !bytes.Equal(h.Sum(nil), wantSum) {
			t.Fatalf("download%s: %d, %d bytes, err %v, sha256 match %v; want 200, %d bytes intact",
				q, resp.StatusCode, n, err, bytes.Equal(h.Sum(nil), wantSum), size)
		}
		if q != "" && resp.ContentLength != size {
			t.Errorf("download%s: ContentLength %d; want %d", q, resp.ContentLength, size)
		}
	}
	// The router peaks at ~10-15 MiB RSS before any traffic (logged). One
	// 32 MiB body held in memory would take it past 40 MiB; streaming keeps
	// it near that footprint plus flow-control windows (1 MiB per
	// connection upstream, the client's window downstream) and 32 KiB copy
	// buffers. 40 MiB fails a buffered body and leaves GC slack.
	rss := r.peakRSS(t)
	t.Logf("router peak RSS: %.1f MiB before traffic, %.1f MiB after 32 MiB up + 2×32 MiB down over TLS h2",
		float64(idle)/(1<<20), float64(rss)/(1<<20))
	if rss > 40<<20 {
		t.Fatalf("router peak RSS %.1f MiB; want < 40 MiB (bodies must stream)", float64(rss)/(1<<20))
	}
}

// --http-to-https answers 301 to the same host and URI on the first --https
// port; no usable Host is a 400 with a body, never an empty reply.
func TestHTTPToHTTPSRedirect(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	p := newTestPKI(t)
	redir := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startTLSRouter(t, p, "--http-to-https", redir)

	for _, tc := range []struct{ host, uri, want string }{
		{"example.test", "/path/a?q=1&b=two", "https://example.test:" + r.port + "/path/a?q=1&b=two"},
		{"example.test:8080", "/", "https://example.test:" + r.port + "/"},
		{"EXAMPLE.test", "/x%20y?z", "https://EXAMPLE.test:" + r.port + "/x%20y?z"},
	} {
		resp, body := uwsgitest.Do(t, redir, "GET "+tc.uri+" HTTP/1.1\r\nHost: "+tc.host+"\r\n\r\n")
		if resp.StatusCode != 301 || resp.Header.Get("Location") != tc.want || body == "" {
			t.Errorf("Host %s, %s: %d Location %q body %q; want 301 Location %q", tc.host, tc.uri,
				resp.StatusCode, resp.Header.Get("Location"), body, tc.want)
		}
	}
	// The Location works: curl follows it to the TLS listener.
	_, version, code := curlGet(t, "-o", "/dev/null", "-L", "--cacert", p.caFile,
		"--resolve", "default.test:"+r.port+":127.0.0.1", "--connect-to", "default.test:80:"+redir,
		"http://default.test/nowhere")
	if code != 404 || version != "2" { // no pool default.test: the router's 404, over h2
		t.Errorf("curl -L through the redirect: HTTP/%s %d; want HTTP/2 404 from the https listener", version, code)
	}
	for _, req := range []string{
		"GET / HTTP/1.1\r\nHost: bad host\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: evil.test/x\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: \r\n\r\n",
		"GET / HTTP/1.1\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\n",
	} {
		resp, body := uwsgitest.Do(t, redir, req)
		if resp.StatusCode != 400 || body == "" || resp.Header.Get("Location") != "" {
			t.Errorf("%q: %d Location %q body %q; want 400 with a body", req, resp.StatusCode, resp.Header.Get("Location"), body)
		}
	}
}

// With --tls-client-ca, a client certificate is optional; a verified one
// reaches the node as HTTPS_DN, one from another CA fails the handshake.
func TestClientCertificate(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startTLSRouter(t, p, "--tls-client-ca", p.caFile)
	startNode(t, r.router, "default.test", nodeOpts{id: "cc"})
	waitForNodes(t, r.router, "default.test", 1)
	url := "https://default.test:" + r.port + "/env"

	goodCert := p.ca.Client(t, "client.test")
	good, goodCrt, goodKey := goodCert.TLS(t), goodCert.CertPEM, goodCert.KeyPEM
	bad := testcert.NewCA(t, "another CA").Client(t, "intruder.test").TLS(t)
	// Go's client sends only a certificate issued by a CA the server
	// names in its CertificateRequest; the callback makes it send the
	// foreign one anyway, as an attacker would.
	sendBad := func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &bad, nil }

	// h2 with a good certificate.
	resp, body := doReq(t, h2Client(r.https, &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{good}}, nil), "GET", url, nil, 0)
	env := decodeEnv(t, body)
	if resp.StatusCode != 200 || resp.ProtoMajor != 2 || !strings.Contains(env["HTTPS_DN"], "CN=client.test") {
		t.Fatalf("h2 with a client certificate: %s %d HTTPS_DN=%q; want CN=client.test in it", resp.Proto, resp.StatusCode, env["HTTPS_DN"])
	}
	t.Logf("HTTPS_DN over h2: %q", env["HTTPS_DN"])
	// HTTP/1.1 with a good certificate (curl).
	dir := t.TempDir()
	crtFile, keyFile := filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	writeFileAtomic(t, crtFile, goodCrt)
	writeFileAtomic(t, keyFile, goodKey)
	body, version, code := curlGet(t, "--http1.1", "--cacert", p.caFile, "--cert", crtFile, "--key", keyFile,
		"--resolve", "default.test:"+r.port+":127.0.0.1", url)
	if env := decodeEnv(t, body); code != 200 || version != "1.1" || !strings.Contains(env["HTTPS_DN"], "CN=client.test") {
		t.Fatalf("HTTP/1.1 with a client certificate: HTTP/%s %d HTTPS_DN=%q", version, code, env["HTTPS_DN"])
	}

	// HTTP/1.1 keep-alive with the certificate, idling past the park delay
	// (router/park.go, 100 ms) between requests: the same connection
	// serves each, still with its certificate's subject, and stays counted.
	reused := 0
	ka := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1,
		TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{good}, NextProtos: []string{"http/1.1"}},
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", r.https)
		},
	}}
	open := `fastrouter_client_connections{listener="` + r.https + `",proto="http/1.1"}`
	for i := range 3 {
		req, _ := http.NewRequest("GET", url, nil)
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) {
				if i.Reused {
					reused++
				}
			},
		}))
		resp, err := ka.Do(req)
		if err != nil {
			t.Fatalf("keep-alive request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if env := decodeEnv(t, string(b)); resp.StatusCode != 200 || resp.ProtoMajor != 1 || !strings.Contains(env["HTTPS_DN"], "CN=client.test") {
			t.Fatalf("keep-alive request %d: %s %d HTTPS_DN=%q", i, resp.Proto, resp.StatusCode, env["HTTPS_DN"])
		}
		time.Sleep(300 * time.Millisecond)
		if v := metricValue(t, r.router, open); v != 1 {
			t.Fatalf("idle %d: %s = %v; want 1 (the idle connection)", i, open, v)
		}
	}
	if reused != 2 {
		t.Fatalf("HTTPS connection reused %d times over 3 requests; want 2", reused)
	}
	ka.CloseIdleConnections()

	// A certificate from another CA: the handshake fails (over TLS 1.3 the
	// client learns it from the alert on its first read).
	req, _ := http.NewRequest("GET", url, nil)
	if resp, err := h2Client(r.https, &tls.Config{RootCAs: p.pool, GetClientCertificate: sendBad}, nil).Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("h2 with a certificate from another CA: %d; want a failed handshake", resp.StatusCode)
	} else {
		t.Logf("certificate from another CA: %v", err)
	}
	for _, maxV := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		c, err := tls.Dial("tcp", r.https, &tls.Config{RootCAs: p.pool, ServerName: "default.test", MaxVersion: maxV, GetClientCertificate: sendBad})
		if err == nil {
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = c.Read(make([]byte, 1))
			c.Close()
		}
		if err == nil || os.IsTimeout(err) {
			t.Errorf("TLS %x handshake with a certificate from another CA: %v; want an alert", maxV, err)
		}
	}

	// No certificate: served, and no HTTPS_DN.
	for _, c := range []*http.Client{
		h2Client(r.https, &tls.Config{RootCAs: p.pool}, nil),
		{Timeout: 30 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: p.pool},
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "tcp", r.https)
			},
		}},
	} {
		resp, body := doReq(t, c, "GET", url, nil, 0)
		env := decodeEnv(t, body)
		if _, has := env["HTTPS_DN"]; resp.StatusCode != 200 || has || env["HTTPS"] != "on" {
			t.Fatalf("%s without a client certificate: %d HTTPS_DN=%q HTTPS=%q; want 200, no HTTPS_DN", resp.Proto, resp.StatusCode, env["HTTPS_DN"], env["HTTPS"])
		}
	}
}

// h2Conn is a raw client HTTP/2 connection over TLS.
type h2Conn struct {
	net.Conn
	bw  *bufio.Writer
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialH2(t *testing.T, r *tlsRouter) *h2Conn {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", r.https,
		&tls.Config{RootCAs: r.pki.pool, ServerName: "default.test", NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("ALPN: %q; want h2", p)
	}
	return newH2Conn(t, c)
}

// newH2Conn starts HTTP/2 on c: the preface and an empty SETTINGS are
// sent; frames read come back with their header blocks decoded
// (MetaHeadersFrame).
func newH2Conn(t *testing.T, c net.Conn) *h2Conn {
	t.Helper()
	h := &h2Conn{Conn: c, bw: bufio.NewWriterSize(c, 64<<10)}
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.fr.MaxHeaderListSize = 1 << 20
	h.enc = hpack.NewEncoder(&h.hb)
	if _, err := io.WriteString(h.bw, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := h.bw.Flush(); err != nil {
		t.Fatal(err)
	}
	return h
}

// SIGTERM sends GOAWAY to an idle HTTP/2 connection, lets a request in
// flight on another finish, and exits 0.
func TestH2GoawayOnShutdown(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p, r := startTLSPool(t, "default.test", nodeOpts{id: "g"})

	idle := dialH2(t, r)
	_ = idle.SetDeadline(time.Now().Add(20 * time.Second))
	// The server's SETTINGS: the connection is being served as HTTP/2.
	if f, err := idle.fr.ReadFrame(); err != nil {
		t.Fatal(err)
	} else if _, ok := f.(*http2.SettingsFrame); !ok {
		t.Fatalf("first frame %v; want SETTINGS", f)
	}
	if err := idle.fr.WriteSettingsAck(); err != nil || idle.bw.Flush() != nil {
		t.Fatalf("SETTINGS ack: %v", err)
	}

	c := h2Client(r.https, &tls.Config{RootCAs: p.pool}, nil)
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
	eventually(t, 5*time.Second, "the slow request to be in flight", func() bool {
		return r.pool(t, "default.test").Nodes[0].Inflight == 1
	})
	if err := syscall.Kill(r.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var goaway *http2.GoAwayFrame
	for goaway == nil {
		f, err := idle.fr.ReadFrame()
		if err != nil {
			t.Fatalf("idle h2 connection after SIGTERM: %v before any GOAWAY", err)
		}
		goaway, _ = f.(*http2.GoAwayFrame)
	}
	if goaway.ErrCode != http2.ErrCodeNo {
		t.Errorf("GOAWAY %v; want NO_ERROR", goaway.ErrCode)
	}
	select {
	case got := <-slow:
		if got != "HTTP/2.0 200 slow node=g <nil>" {
			t.Fatalf("h2 request in flight during shutdown: %s; want HTTP/2.0 200 slow node=g", got)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("h2 request in flight during shutdown did not finish")
	}
	// After GOAWAY the idle connection is closed by the server.
	for {
		if _, err := idle.fr.ReadFrame(); err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				t.Errorf("idle connection after GOAWAY: %v; want it closed", err)
			}
			break
		}
	}
	if code := r.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("router exit code %d after SIGTERM; want 0", code)
	}
}

// /metrics stays valid Prometheus text with HTTPS and HTTP/2 traffic, and
// fastrouter_client_connections counts h2 connections per listener.
func TestH2Metrics(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p, r := startTLSPool(t, "default.test", nodeOpts{id: "m"})
	_, httpPort, _ := net.SplitHostPort(r.http)

	tlsC := h2Client(r.https, &tls.Config{RootCAs: p.pool}, nil)
	h2cC := h2Client(r.http, nil, nil)
	for i := 0; i < 3; i++ {
		for _, u := range []struct {
			c   *http.Client
			url string
		}{{tlsC, "https://default.test:" + r.port + "/"}, {h2cC, "http://default.test:" + httpPort + "/"}} {
			if resp, body := doReq(t, u.c, "GET", u.url, nil, 0); resp.StatusCode != 200 || resp.ProtoMajor != 2 {
				t.Fatalf("%s: %s %d %q", u.url, resp.Proto, resp.StatusCode, body)
			}
		}
	}
	// Plain HTTP to the TLS port is a failed handshake, counted.
	if pc, err := net.Dial("tcp", r.https); err == nil {
		_ = pc.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = io.WriteString(pc, "GET / HTTP/1.1\r\nHost: default.test\r\n\r\n")
		_, _ = io.Copy(io.Discard, pc)
		pc.Close()
	}
	eventually(t, 5*time.Second, "fastrouter_tls_handshake_errors_total to count the plain-HTTP client", func() bool {
		return metricValue(t, r.router, "fastrouter_tls_handshake_errors_total") >= 1
	})
	// Both h2 connections are still open (keep-alive).
	for _, l := range []string{r.https, r.http} {
		lines := metricLines(t, r.router, "fastrouter_client_connections", `listener="`+l+`"`, `proto="h2"`)
		if len(lines) != 1 || sampleValue(t, lines[0]) != 1 {
			t.Errorf("fastrouter_client_connections for %s, h2: %q; want one series at 1", l, lines)
		}
	}
	if v := metricValue(t, r.router, `fastrouter_requests_total{code="200",pool="default.test"}`); v != 6 {
		t.Errorf(`fastrouter_requests_total{code="200",pool="default.test"} = %v; want 6`, v)
	}
	promtoolCheck(t, r.router)
	tlsC.CloseIdleConnections()
	h2cC.CloseIdleConnections()
	eventually(t, 5*time.Second, "h2 client connections to drop to 0", func() bool {
		for _, l := range []string{r.https, r.http} {
			lines := metricLines(t, r.router, "fastrouter_client_connections", `listener="`+l+`"`, `proto="h2"`)
			if len(lines) != 1 || sampleValue(t, lines[0]) != 0 {
				return false
			}
		}
		return true
	})
}
