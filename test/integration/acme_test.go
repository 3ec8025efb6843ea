package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// Automatic HTTPS against a real ACME CA: Debian's pebble, with
// pebble-challtestsrv answering its DNS queries with 127.0.0.1, and its
// validation ports (httpPort, tlsPort) pointed at a router's --http and
// --https listeners on loopback. Nothing reaches the internet.

// pebble is a running pebble CA.
type pebble struct {
	dir    string // ACME directory URL
	caRoot string // PEM file the router trusts pebble's HTTPS with (--acme-ca-root)
	root   string // PEM file of pebble's issuing root (GET /roots/0), to verify issued chains
	log    string
	listen string // host:port of the ACME listener
}

type pebbleOpts struct {
	httpPort, tlsPort int
	validity          time.Duration // certificateValidityPeriod; 0: pebble's default (5 years)
	listen            string        // ACME listener; default a free port
	certs             *pebbleCerts  // pebble's HTTPS certificate; default new ones
}

// pebbleCerts are pebble's own HTTPS certificate and the CA that signed it
// (what the router gets as --acme-ca-root).
type pebbleCerts struct{ cert, key, ca string }

func newPebbleCerts(t *testing.T) *pebbleCerts {
	t.Helper()
	c, k, ca := writeServerCert(t, t.TempDir())
	return &pebbleCerts{cert: c, key: k, ca: ca}
}

func requirePebble(t *testing.T) {
	t.Helper()
	skipIfDisabled(t)
	for _, b := range []string{"pebble", "pebble-challtestsrv", "openssl"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Fatalf("%s not installed (scripts/test.sh installs pebble and openssl)", b)
		}
	}
}

// startPebble starts pebble-challtestsrv (DNS only) and pebble.
func startPebble(t *testing.T, o pebbleOpts) *pebble {
	t.Helper()
	dir := t.TempDir()
	if o.certs == nil {
		o.certs = newPebbleCerts(t)
	}
	dns := fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t))
	startProc(t, "pebble-challtestsrv", "-http01", "", "-https01", "", "-tlsalpn01", "", "-dns01", dns,
		"-management", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "-defaultIPv4", "127.0.0.1", "-defaultIPv6", "")
	if o.listen == "" {
		o.listen = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	mgmt := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": o.listen, "managementListenAddress": mgmt,
		"certificate": o.certs.cert, "privateKey": o.certs.key,
		"httpPort": o.httpPort, "tlsPort": o.tlsPort, "ocspResponderURL": "", "externalAccountBindingRequired": false,
		"certificateValidityPeriod": int(o.validity / time.Second),
	}}
	b, _ := json.Marshal(conf)
	cfgPath := filepath.Join(dir, "pebble.json")
	if err := os.WriteFile(cfgPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	// No random validation sleeps, no rejected nonces, no reused
	// authorizations: every order is validated, at once.
	p := startProc(t, "env", "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0",
		"pebble", "-config", cfgPath, "-dnsserver", dns)
	pb := &pebble{dir: "https://" + o.listen + "/dir", caRoot: o.certs.ca, log: p.log, listen: o.listen, root: filepath.Join(dir, "root.pem")}
	pb.waitUp(t, mgmt)
	return pb
}

// waitUp waits for pebble's directory and saves its root.
func (p *pebble) waitUp(t *testing.T, mgmt string) {
	t.Helper()
	c := pebbleClient(t, p.caRoot)
	eventually(t, 10*time.Second, "pebble's directory", func() bool {
		resp, err := c.Get(p.dir)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	resp, err := c.Get("https://" + mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	root, _ := io.ReadAll(resp.Body)
	if !bytes.Contains(root, []byte("BEGIN CERTIFICATE")) {
		t.Fatalf("pebble /roots/0: %q", root)
	}
	if err := os.WriteFile(p.root, root, 0o644); err != nil {
		t.Fatal(err)
	}
}

func pebbleClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	pool := x509.NewCertPool()
	b, err := os.ReadFile(caFile)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		t.Fatalf("CA file %s: %v", caFile, err)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// countOrders counts orders whose validation targeted name, plus orders
// pebble added (one "Added order" line each) when name is "".
func countOrders(log []byte, name string) int {
	if name == "" {
		return bytes.Count(log, []byte("Added order "))
	}
	// An order's first validation names its identifier; pebble validates
	// each challenge from 3 perspectives, so count distinct tokens.
	re := regexp.MustCompile(`Attempting to validate w/ [A-Z-]+: (\S+)`)
	seen := map[string]bool{}
	for _, m := range re.FindAllSubmatch(log, -1) {
		if bytes.Contains(m[1], []byte(name)) {
			seen[string(m[1])] = true
		}
	}
	return len(seen)
}

// writeServerCert issues pebble's own HTTPS certificate (127.0.0.1) from a
// throwaway CA; the CA file is what the router gets as --acme-ca-root.
func writeServerCert(t *testing.T, dir string) (certFile, keyFile, caFile string) {
	t.Helper()
	ca := testcert.NewCA(t, "pebble listener test CA")
	certFile, keyFile = ca.Server(t, "127.0.0.1").WriteFiles(t, dir, "srv")
	caFile = filepath.Join(dir, "ca.pem")
	writeFileAtomic(t, caFile, ca.PEM)
	return certFile, keyFile, caFile
}

// writeSelfSignedPair writes a certificate for name, from a CA of its own,
// and its key as dir/<name>.crt and .key (--tls-dir, --tls-cert).
func writeSelfSignedPair(t *testing.T, dir, name string) (crt, key string) {
	t.Helper()
	return testcert.NewCA(t, "file test CA").Server(t, name).WriteFiles(t, dir, name)
}

// startRouterAt starts a router with the given --http address (none when
// empty) and the usual admin and subscription ports.
func startRouterAt(t *testing.T, httpAddr string, extra ...string) *router {
	t.Helper()
	r := &router{
		http:  httpAddr,
		admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		sub:   fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)),
	}
	args := []string{"--admin", r.admin, "--subscription-server", r.sub, "--log-level", "debug"}
	if httpAddr != "" {
		args = append(args, "--http", httpAddr)
	}
	r.proc = startProc(t, binary, append(args, extra...)...)
	eventually(t, 10*time.Second, "router /healthz", func() bool {
		resp, err := http.Get("http://" + r.admin + "/healthz")
		if err != nil {
			return r.exited() && t.Failed()
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return r
}

// certJSON is one entry of GET /api/certificates.
type certJSON struct {
	Name        string     `json:"name"`
	Issuer      string     `json:"issuer"`
	NotAfter    *time.Time `json:"not_after"`
	NextRenewal *time.Time `json:"next_renewal"`
	OnDemand    bool       `json:"on_demand"`
	Orderer     string     `json:"orderer"`
	LastError   string     `json:"last_error"`
}

func (r *router) certificates(t *testing.T) map[string]certJSON {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + r.admin + "/api/certificates")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list []certJSON
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /api/certificates: %d %v", resp.StatusCode, err)
	}
	out := map[string]certJSON{}
	for _, c := range list {
		out[c.Name] = c
	}
	return out
}

// waitCert waits until r serves a certificate for name, and returns it.
func (r *router) waitCert(t *testing.T, name string, d time.Duration) certJSON {
	t.Helper()
	var c certJSON
	eventually(t, d, "a certificate for "+name, func() bool {
		c = r.certificates(t)[name]
		return c.NotAfter != nil
	})
	return c
}

// metric returns the value of one series on r's /metrics (0 if absent).
func (r *router) metric(t *testing.T, series string) float64 {
	t.Helper()
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Get("http://" + r.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// sClient runs openssl s_client against addr with SNI name, verifying the
// chain against caFile and the host name; it returns whether openssl
// verified it and the leaf's DER.
func sClient(t *testing.T, addr, name, caFile string, extra ...string) (bool, []byte) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	args := append([]string{"s_client", "-connect", addr, "-servername", name, "-CAfile", caFile,
		"-verify_hostname", name, "-showcerts"}, extra...)
	cmd := exec.CommandContext(ctx, "openssl", args...)
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	ok := bytes.Contains(out, []byte("Verify return code: 0 (ok)"))
	blk, _ := pem.Decode(out[max(bytes.Index(out, []byte("-----BEGIN CERTIFICATE-----")), 0):])
	if blk == nil {
		t.Logf("openssl s_client %s (%s): no certificate:\n%s", addr, name, tail(out, 2000))
		return false, nil
	}
	return ok, blk.Bytes
}

// storedLeaf is the first certificate of name's chain in an --acme-dir.
func storedLeaf(t *testing.T, acmeDir, name string) []byte {
	t.Helper()
	matches, _ := filepath.Glob(filepath.Join(acmeDir, "certificates", "*", name, name+".crt"))
	if len(matches) != 1 {
		t.Fatalf("stored certificate for %s: %v", name, matches)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		t.Fatalf("%s: no PEM", matches[0])
	}
	return blk.Bytes
}

func leafSerial(t *testing.T, der []byte) string {
	t.Helper()
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c.SerialNumber.Text(16)
}

func addrPort(t *testing.T) (string, int) {
	t.Helper()
	p := freePort(t)
	return fmt.Sprintf("127.0.0.1:%d", p), p
}

func acmeFlags(p *pebble, dir string, extra ...string) []string {
	return append([]string{"--acme-dir", dir, "--acme-ca", p.dir, "--acme-ca-root", p.caRoot, "--acme-email", "ops@example.test"}, extra...)
}

// TestACMEHTTP01 obtains a certificate by HTTP-01 on the --http listener,
// serves exactly the issued chain (openssl verifies it against pebble's
// root), keeps a --tls-dir file's priority for its name, and after a
// restart serves the stored certificate without ordering again.
func TestACMEHTTP01(t *testing.T) {
	requirePebble(t)
	httpAddr, httpPort := addrPort(t)
	httpsAddr, _ := addrPort(t)
	p := startPebble(t, pebbleOpts{httpPort: httpPort})
	acmeDir := filepath.Join(t.TempDir(), "acme")
	tlsDir := t.TempDir()
	writeSelfSignedPair(t, tlsDir, "prio.test")
	args := acmeFlags(p, acmeDir, "--https", httpsAddr, "--tls-dir", tlsDir,
		"--acme-domain", "web.test", "--acme-domain", "prio.test", "--acme-challenge", "http-01")
	r := startRouterAt(t, httpAddr, args...)
	c := r.waitCert(t, "web.test", 30*time.Second)
	if !strings.HasPrefix(c.Issuer, "Pebble Intermediate") || c.NextRenewal == nil || c.LastError != "" || c.OnDemand {
		t.Errorf("web.test: %+v", c)
	}
	ok, served := sClient(t, httpsAddr, "web.test", p.root)
	if !ok {
		t.Fatal("openssl did not verify web.test's chain against pebble's root")
	}
	if !bytes.Equal(served, storedLeaf(t, acmeDir, "web.test")) {
		t.Error("the served leaf is not the one stored in --acme-dir")
	}
	if got := r.metric(t, `fastrouter_acme_challenges_answered_total{type="http-01"}`); got < 1 {
		t.Errorf("http-01 challenges answered: %v", got)
	}
	// The --tls-dir file wins for its name, even once ACME has one.
	r.waitCert(t, "prio.test", 30*time.Second)
	if ok, leaf := sClient(t, httpsAddr, "prio.test", p.root); ok || leaf == nil {
		t.Error("prio.test was served the ACME certificate instead of the --tls-dir file")
	} else if c, _ := x509.ParseCertificate(leaf); c.Issuer.CommonName != "file test CA" {
		t.Errorf("prio.test issuer %q", c.Issuer.CommonName)
	}
	if fi, err := os.Stat(acmeDir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("--acme-dir mode: %v %v", fi.Mode(), err)
	}

	orders := countOrders(mustRead(t, p.log), "")
	if err := r.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	r.wait(t, 15*time.Second)
	r2 := startRouterAt(t, httpAddr, args...)
	if c := r2.certificates(t)["web.test"]; c.NotAfter == nil {
		t.Fatalf("after a restart web.test is not served at once: %+v", c)
	}
	if ok, leaf := sClient(t, httpsAddr, "web.test", p.root); !ok || !bytes.Equal(leaf, served) {
		t.Error("after a restart another certificate is served for web.test")
	}
	time.Sleep(500 * time.Millisecond) // an order would have started at once
	if got := countOrders(mustRead(t, p.log), ""); got != orders {
		t.Errorf("the restarted router ordered again: %d orders, %d before", got, orders)
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestACMETLSALPN01 obtains a certificate by TLS-ALPN-01 on the --https
// listener (no --http at all) and serves it over h2.
func TestACMETLSALPN01(t *testing.T) {
	requirePebble(t)
	httpsAddr, httpsPort := addrPort(t)
	p := startPebble(t, pebbleOpts{tlsPort: httpsPort})
	acmeDir := filepath.Join(t.TempDir(), "acme")
	r := startRouterAt(t, "", acmeFlags(p, acmeDir, "--https", httpsAddr, "--acme-domain", "alpn.test")...)
	r.waitCert(t, "alpn.test", 30*time.Second)
	ok, served := sClient(t, httpsAddr, "alpn.test", p.root, "-alpn", "h2")
	if !ok || !bytes.Equal(served, storedLeaf(t, acmeDir, "alpn.test")) {
		t.Fatal("alpn.test: the issued chain is not what is served")
	}
	if got := r.metric(t, `fastrouter_acme_challenges_answered_total{type="tls-alpn-01"}`); got < 1 {
		t.Errorf("tls-alpn-01 challenges answered: %v", got)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(mustRead(t, p.root))
	c, err := tls.Dial("tcp", httpsAddr, &tls.Config{RootCAs: pool, ServerName: "alpn.test", NextProtos: []string{"h2", "http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.ConnectionState().NegotiatedProtocol != "h2" {
		t.Errorf("ALPN %q; want h2", c.ConnectionState().NegotiatedProtocol)
	}
}

// TestACMERenewal: with 12-second certificates the router renews at two
// thirds of the lifetime, and serves the new certificate.
func TestACMERenewal(t *testing.T) {
	requirePebble(t)
	httpAddr, httpPort := addrPort(t)
	httpsAddr, _ := addrPort(t)
	p := startPebble(t, pebbleOpts{httpPort: httpPort, validity: 12 * time.Second})
	acmeDir := filepath.Join(t.TempDir(), "acme")
	r := startRouterAt(t, httpAddr, acmeFlags(p, acmeDir, "--https", httpsAddr, "--acme-domain", "renew.test")...)
	first := r.waitCert(t, "renew.test", 30*time.Second)
	// A third of the ~12s lifetime is left at the renewal.
	if left := first.NotAfter.Sub(*first.NextRenewal); left < 3*time.Second || left > 5*time.Second {
		t.Errorf("next renewal %v for a certificate ending %v: want two thirds into its 12s", first.NextRenewal, first.NotAfter)
	}
	_, leaf := sClient(t, httpsAddr, "renew.test", p.root)
	before := leafSerial(t, leaf)
	eventually(t, 30*time.Second, "a renewed certificate served", func() bool {
		ok, l := sClient(t, httpsAddr, "renew.test", p.root)
		return ok && leafSerial(t, l) != before
	})
	if got := r.metric(t, `fastrouter_acme_renewals_total{result="ok"}`); got < 1 {
		t.Errorf("renewals ok: %v", got)
	}
	if got := r.metric(t, `fastrouter_acme_orders_total{result="ok"}`); got != 1 {
		t.Errorf("orders ok: %v; want 1 (the rest are renewals)", got)
	}
}

// TestACMEOnDemand: a handshake for a pool a uWSGI node subscribed gets a
// certificate ordered on demand; a name without a pool, or outside
// --acme-allow, gets the default certificate at once and nothing is
// ordered.
func TestACMEOnDemand(t *testing.T) {
	requireUWSGI(t)
	requirePebble(t)
	httpAddr, httpPort := addrPort(t)
	httpsAddr, _ := addrPort(t)
	p := startPebble(t, pebbleOpts{httpPort: httpPort})
	files := t.TempDir()
	defCrt, defKey := writeSelfSignedPair(t, files, "default.test")
	acmeDir := filepath.Join(t.TempDir(), "acme")
	r := startRouterAt(t, httpAddr, acmeFlags(p, acmeDir, "--https", httpsAddr, "--tls-cert", defCrt, "--tls-key", defKey,
		"--acme-on-demand", "--acme-allow", "shop.test", "--acme-challenge", "http-01")...)
	startNode(t, r, "eu.shop.test", nodeOpts{id: "n1"})
	startNode(t, r, "other.test", nodeOpts{id: "n2"})
	waitForNodes(t, r, "eu.shop.test", 1)
	waitForNodes(t, r, "other.test", 1)

	eventually(t, 30*time.Second, "eu.shop.test served a pebble certificate", func() bool {
		ok, _ := sClient(t, httpsAddr, "eu.shop.test", p.root)
		return ok
	})
	if c := r.certificates(t)["eu.shop.test"]; !c.OnDemand || c.NotAfter == nil {
		t.Errorf("eu.shop.test in /api/certificates: %+v", c)
	}
	// Through the new certificate to the node.
	out, err := exec.Command("curl", "-sS", "--max-time", "10", "--cacert", p.root, "--resolve", "eu.shop.test:"+portOf(httpsAddr)+":127.0.0.1",
		"https://eu.shop.test:"+portOf(httpsAddr)+"/").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "n1") {
		t.Errorf("curl through the on-demand certificate: %v %q", err, out)
	}

	orders := countOrders(mustRead(t, p.log), "")
	for _, tc := range []struct{ name, series string }{
		{"nopool.shop.test", `fastrouter_acme_on_demand_total{result="not_pool"}`},
		{"other.test", `fastrouter_acme_on_demand_total{result="not_allowed"}`},
	} {
		start := time.Now()
		_, leaf := sClient(t, httpsAddr, tc.name, p.root)
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("%s: the handshake took %v; want the default certificate at once", tc.name, took)
		}
		if c, err := x509.ParseCertificate(leaf); err != nil || c.Subject.CommonName != "default.test" {
			t.Errorf("%s: not the default certificate", tc.name)
		}
		if got := r.metric(t, tc.series); got < 1 {
			t.Errorf("%s: %s = %v", tc.name, tc.series, got)
		}
	}
	time.Sleep(500 * time.Millisecond)
	if got := countOrders(mustRead(t, p.log), ""); got != orders {
		t.Errorf("pebble got %d orders after the refused names; %d before", got, orders)
	}
	if c := r.certificates(t); c["nopool.shop.test"].Name != "" || c["other.test"].Name != "" {
		t.Errorf("refused names listed: %+v", c)
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

// TestACMECluster: two routers in an encrypted cluster order a name once
// (router a, the lowest name, orders; the CA's challenge reaches router b,
// which answers with the token a shared); both serve the same certificate,
// and a router that joins later gets it in its state sync, without an
// order.
func TestACMECluster(t *testing.T) {
	requirePebble(t)
	secret := filepath.Join(t.TempDir(), "cluster.key")
	key := make([]byte, 32)
	rand.Read(key)
	if err := os.WriteFile(secret, []byte(base64.StdEncoding.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	aHTTP, _ := addrPort(t)
	bHTTP, bPort := addrPort(t)
	aHTTPS, _ := addrPort(t)
	bHTTPS, _ := addrPort(t)
	aBind, _ := addrPort(t)
	p := startPebble(t, pebbleOpts{httpPort: bPort}) // the CA validates at router b
	common := func(dir, https, bind, name string, more ...string) []string {
		return append(acmeFlags(p, dir, "--https", https, "--acme-domain", "shared.test", "--acme-challenge", "http-01",
			"--cluster-bind", bind, "--cluster-node-name", name, "--cluster-secret-file", secret), more...)
	}
	aDir, bDir, cDir := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b"), filepath.Join(t.TempDir(), "c")
	a := startRouterAt(t, aHTTP, common(aDir, aHTTPS, aBind, "a")...)
	bBind, _ := addrPort(t)
	b := startRouterAt(t, bHTTP, common(bDir, bHTTPS, bBind, "b", "--cluster-join", aBind)...)

	ca := a.waitCert(t, "shared.test", 30*time.Second)
	b.waitCert(t, "shared.test", 10*time.Second)
	if ca.Orderer != "a" {
		t.Errorf("orderer %q; want a (the lowest name)", ca.Orderer)
	}
	okA, leafA := sClient(t, aHTTPS, "shared.test", p.root)
	okB, leafB := sClient(t, bHTTPS, "shared.test", p.root)
	if !okA || !okB || !bytes.Equal(leafA, leafB) {
		t.Fatalf("both routers must serve the same verified certificate: a %v, b %v, same %v", okA, okB, bytes.Equal(leafA, leafB))
	}
	if got := countOrders(mustRead(t, p.log), "shared.test"); got != 1 {
		t.Errorf("pebble validated %d orders for shared.test; want 1", got)
	}
	if got, want := a.metric(t, `fastrouter_acme_orders_total{result="ok"}`), 1.0; got != want {
		t.Errorf("a's orders: %v; want %v", got, want)
	}
	if got := b.metric(t, `fastrouter_acme_orders_total{result="ok"}`) + b.metric(t, `fastrouter_acme_orders_total{result="error"}`); got != 0 {
		t.Errorf("b ordered %v times; want 0", got)
	}
	if got := b.metric(t, `fastrouter_acme_challenges_answered_total{type="http-01"}`); got < 1 {
		t.Errorf("b answered %v challenges; want the CA's validation of a's order", got)
	}
	if !bytes.Equal(storedLeaf(t, bDir, "shared.test"), leafA) {
		t.Error("b's --acme-dir does not hold the shared certificate")
	}

	cHTTP, _ := addrPort(t)
	cHTTPS, _ := addrPort(t)
	cBind, _ := addrPort(t)
	c := startRouterAt(t, cHTTP, common(cDir, cHTTPS, cBind, "c", "--cluster-join", bBind)...)
	c.waitCert(t, "shared.test", 15*time.Second)
	if ok, leaf := sClient(t, cHTTPS, "shared.test", p.root); !ok || !bytes.Equal(leaf, leafA) {
		t.Error("the late joiner does not serve the shared certificate")
	}
	if got := countOrders(mustRead(t, p.log), "shared.test"); got != 1 {
		t.Errorf("after c joined, %d orders for shared.test; want 1", got)
	}
	fi, err := os.Stat(filepath.Join(cDir, "certificates"))
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("c's certificates directory: %v %v", fi, err)
	}
}

// TestACMEUnencryptedCluster: without --cluster-secret-file no key travels,
// and the router says so at start.
func TestACMEUnencryptedCluster(t *testing.T) {
	requirePebble(t)
	httpAddr, httpPort := addrPort(t)
	httpsAddr, _ := addrPort(t)
	bind, _ := addrPort(t)
	p := startPebble(t, pebbleOpts{httpPort: httpPort})
	r := startRouterAt(t, httpAddr, acmeFlags(p, filepath.Join(t.TempDir(), "acme"), "--https", httpsAddr,
		"--acme-domain", "alone.test", "--acme-challenge", "http-01", "--cluster-bind", bind)...)
	eventually(t, 5*time.Second, "the warning", func() bool {
		return bytes.Contains(mustRead(t, r.log), []byte("the cluster is not encrypted"))
	})
	r.waitCert(t, "alone.test", 30*time.Second) // it still orders for itself
}

// TestACMECAUnreachable: while the CA cannot be reached the router keeps
// serving (the default certificate, requests to its pools), logs the
// failure and retries with back-off; once the CA answers, the certificate
// arrives without a restart.
func TestACMECAUnreachable(t *testing.T) {
	requirePebble(t)
	httpAddr, httpPort := addrPort(t)
	httpsAddr, _ := addrPort(t)
	caAddr, _ := addrPort(t) // nothing listens there yet
	certs := newPebbleCerts(t)
	files := t.TempDir()
	defCrt, defKey := writeSelfSignedPair(t, files, "default.test")
	r := startRouterAt(t, httpAddr, "--https", httpsAddr, "--tls-cert", defCrt, "--tls-key", defKey,
		"--acme-dir", filepath.Join(t.TempDir(), "acme"), "--acme-ca", "https://"+caAddr+"/dir", "--acme-ca-root", certs.ca,
		"--acme-domain", "later.test", "--acme-challenge", "http-01")
	eventually(t, 20*time.Second, "two failed attempts", func() bool {
		return r.metric(t, `fastrouter_acme_orders_total{result="error"}`) >= 2
	})
	if c := r.certificates(t)["later.test"]; c.LastError == "" || c.NotAfter != nil {
		t.Errorf("while the CA is down: %+v", c)
	}
	if !bytes.Contains(mustRead(t, r.log), []byte("certificate not obtained; retrying")) {
		t.Error("the failure was not logged")
	}
	// Still serving: the default certificate, and the admin API.
	_, leaf := sClient(t, httpsAddr, "later.test", certs.ca)
	if c, err := x509.ParseCertificate(leaf); err != nil || c.Subject.CommonName != "default.test" {
		t.Fatal("the router does not serve its default certificate while the CA is down")
	}
	p := startPebble(t, pebbleOpts{httpPort: httpPort, listen: caAddr, certs: certs})
	c := r.waitCert(t, "later.test", 40*time.Second)
	if c.LastError != "" {
		t.Errorf("after the CA came back: %+v", c)
	}
	if ok, _ := sClient(t, httpsAddr, "later.test", p.root); !ok {
		t.Error("later.test not served with pebble's certificate after the CA came back")
	}
}
