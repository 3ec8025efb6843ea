package integration

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// openssl runs openssl and fails the test on error.
func openssl(t *testing.T, args ...string) []byte {
	t.Helper()
	out, err := exec.Command("openssl", args...).CombinedOutput()
	if err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// genRSA makes an RSA key pair with openssl genrsa: dir/name.key (private,
// what a node signs with) and the PEM public key at pub.
func genRSA(t *testing.T, dir, name, pub string) string {
	t.Helper()
	priv := filepath.Join(dir, name+".key")
	openssl(t, "genrsa", "-out", priv, "2048")
	openssl(t, "rsa", "-in", priv, "-pubout", "-out", pub)
	return priv
}

// genEd25519 makes an Ed25519 key pair with openssl genpkey.
func genEd25519(t *testing.T, dir, name, pub string) string {
	t.Helper()
	priv := filepath.Join(dir, name+".key")
	openssl(t, "genpkey", "-algorithm", "ed25519", "-out", priv)
	openssl(t, "pkey", "-in", priv, "-pubout", "-out", pub)
	return priv
}

// startUWSGI starts a uWSGI 2.0 node on socket with extra arguments (its
// subscriptions).
func startUWSGI(t *testing.T, id, socket string, extra ...string) *node {
	t.Helper()
	args := append([]string{
		"--plugin", "python3", "--master", "--socket", socket, "--wsgi-file", appPath,
		"--subscribe-freq", "1", "--processes", "1", "--threads", "2", "--die-on-term",
		"--env", "NODE_ID=" + id, "--disable-logging",
	}, extra...)
	return &node{proc: startProc(t, "uwsgi", args...), addr: socket}
}

// udpCapture records the datagrams sent to it: a stand-in for a host on the
// network path that sees the subscriptions.
type udpCapture struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
}

func listenCapture(t *testing.T) *udpCapture {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	u := &udpCapture{conn: c}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			u.mu.Lock()
			u.got = append(u.got, bytes.Clone(buf[:n]))
			u.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close(); <-done })
	return u
}

func (u *udpCapture) addr() string { return u.conn.LocalAddr().String() }

// last returns the last datagram captured with command cmd (0 subscribe,
// 1 unsubscribe), or nil.
func (u *udpCapture) last(unsubscribe bool) []byte {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i := len(u.got) - 1; i >= 0; i-- {
		if (u.got[i][3] != 0) == unsubscribe {
			return u.got[i]
		}
	}
	return nil
}

func sendUDP(t *testing.T, addr string, d []byte) {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(d); err != nil {
		t.Fatal(err)
	}
}

func denied(t *testing.T, r *router, reason string) float64 {
	t.Helper()
	return max(metricValue(t, r, `fastrouter_subscription_denied_total{reason="`+reason+`"}`), 0)
}

// subscribeCmd runs `fastrouter subscribe` and returns its exit code and
// output.
func subscribeCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binary, append([]string{"subscribe"}, args...)...)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, string(out)
}

// Real uWSGI 2.0 nodes sign with --subscribe-to SERVER:PORT:KEY,0,SHA256:priv.pem
// and the router verifies with KEYDIR/<sanitised key>.pem: the signed node
// routes; unsigned, wrongly signed and keyless datagrams are denied and
// counted. A captured subscribe replayed after the node left, and a captured
// unsubscribe replayed after it came back, are both refused (uWSGI 2.0
// accepts both).
func TestSignedSubscriptionsFromUWSGI(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	// The key has a ':' so the file name shows uWSGI's sanitising.
	const key = "signed.test:8080"
	pubFile := filepath.Join(keys, "signed.test_8080.pem")
	priv := genRSA(t, dir, "node", pubFile)
	otherPriv := genRSA(t, dir, "other", filepath.Join(dir, "other.pub"))

	r := startRouter(t, "--subscriptions-sign-check", "SHA256:"+keys)
	capture := listenCapture(t)
	socket := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	signedTo := func(server string) string { return server + ":" + key + ",0,SHA256:" + priv }
	n := startUWSGI(t, "signed", socket, "--subscribe-to", signedTo(r.sub), "--subscribe-to", signedTo(capture.addr()))
	waitForNodes(t, r, key, 1)
	if code, body := get(t, client(), r.http, key, "/"); code != 200 || body != "node=signed" {
		t.Fatalf("signed node: %d %q", code, body)
	}

	// What uWSGI sent is what the router verified: openssl agrees on the
	// captured datagram (signature over the vars before the sign record).
	eventually(t, 10*time.Second, "a captured subscribe", func() bool { return capture.last(false) != nil })
	d := capture.last(false)
	var sub uwsgi.Subscription
	if err := uwsgi.ParseSubscription(d, &sub); err != nil || sub.Sign == nil || !sub.HasUnix {
		t.Fatalf("captured datagram: %v, sign %d bytes, unix %v", err, len(sub.Sign), sub.HasUnix)
	}
	base, sig := filepath.Join(dir, "base"), filepath.Join(dir, "sig")
	os.WriteFile(base, d[4:4+sub.SignedLen], 0o644)
	os.WriteFile(sig, sub.Sign, 0o644)
	if out := openssl(t, "dgst", "-sha256", "-verify", pubFile, "-signature", sig, base); !bytes.Contains(out, []byte("Verified OK")) {
		t.Fatalf("openssl on uWSGI's datagram: %s", out)
	}

	// Datagrams the router must deny, from real uWSGI nodes.
	startUWSGI(t, "unsigned", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--subscribe-to", r.sub+":"+key)
	startUWSGI(t, "otherkey", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--subscribe-to", r.sub+":"+key+",0,SHA256:"+otherPriv)
	startUWSGI(t, "sha1", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--subscribe-to", r.sub+":"+key+",0,SHA1:"+priv)
	startUWSGI(t, "nokey", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--subscribe-to", r.sub+":nokey.test,0,SHA256:"+priv)
	eventually(t, 20*time.Second, "unsigned, wrong-key, wrong-digest and keyless datagrams denied", func() bool {
		return denied(t, r, "unsigned") >= 2 && denied(t, r, "signature") >= 4 && denied(t, r, "no_key") >= 2
	})
	if p := r.pool(t, key); p == nil || len(p.Nodes) != 1 || p.Nodes[0].Address != socket {
		t.Fatalf("pool %s: %+v; want only the signed node", key, p)
	}
	if p := r.pool(t, "nokey.test"); p != nil {
		t.Fatalf("pool without a key file created: %+v", p)
	}

	// The node leaves with a signed unsubscribe; its last subscribe,
	// replayed, does not bring it back.
	replaySub := capture.last(false)
	n.stop(t) // uWSGI unsubscribes on shutdown
	waitForNodes(t, r, key, 0)
	before := denied(t, r, "replay")
	sendUDP(t, r.sub, replaySub)
	eventually(t, 10*time.Second, "replayed subscribe denied", func() bool { return denied(t, r, "replay") > before })
	if p := r.pool(t, key); p != nil && len(p.Nodes) != 0 {
		t.Fatalf("replayed subscribe re-created the node: %+v", p.Nodes)
	}
	replayUnsub := capture.last(true)
	if replayUnsub == nil {
		t.Fatal("no unsubscribe captured")
	}

	// The node comes back (fresh unix times); its old unsubscribe, replayed,
	// does not remove it.
	startUWSGI(t, "signed2", socket, "--subscribe-to", signedTo(r.sub))
	waitForNodes(t, r, key, 1)
	before = denied(t, r, "replay")
	sendUDP(t, r.sub, replayUnsub)
	eventually(t, 10*time.Second, "replayed unsubscribe denied", func() bool { return denied(t, r, "replay") > before })
	if code, body := get(t, client(), r.http, key, "/"); code != 200 || body != "node=signed2" {
		t.Fatalf("after the replayed unsubscribe: %d %q", code, body)
	}
	t.Logf("denied: unsigned=%v signature=%v no_key=%v replay=%v", denied(t, r, "unsigned"),
		denied(t, r, "signature"), denied(t, r, "no_key"), denied(t, r, "replay"))
}

// `fastrouter subscribe` announces a node that is not uWSGI, signed with an
// Ed25519 key the router finds in the same key layout; it drains and
// unsubscribes it; with --every it keeps announcing and unsubscribes on
// SIGTERM. Unsigned, it is denied.
func TestSubscribeCommandEd25519(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	os.Mkdir(keys, 0o755)
	priv := genEd25519(t, dir, "ed", filepath.Join(keys, "ed.test.pem"))
	r := startRouter(t, "--subscriptions-sign-check", "SHA256:"+keys)
	socket := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	startUWSGI(t, "ed", socket) // serves, announces nothing itself

	// Signed datagrams carry whole seconds (an unsubscribe now+1) and must
	// be newer than the last one accepted: wait for a later second between
	// two sends.
	lastUnix := time.Now().Unix()
	waitNewer := func() {
		for time.Now().Unix() <= lastUnix {
			time.Sleep(50 * time.Millisecond)
		}
	}
	send := func(args ...string) {
		t.Helper()
		waitNewer()
		lastUnix = time.Now().Unix()
		if len(args) > 0 && args[0] == "--unsubscribe" {
			lastUnix++
		}
		base := []string{"--server", r.sub, "--key", "ed.test", "--address", socket, "--sign", "SHA256:" + priv}
		if code, out := subscribeCmd(t, append(base, args...)...); code != 0 {
			t.Fatalf("fastrouter subscribe %v: exit %d %s", args, code, out)
		}
	}
	send("--weight", "3")
	waitForNodes(t, r, "ed.test", 1)
	if code, body := get(t, client(), r.http, "ed.test", "/"); code != 200 || body != "node=ed" {
		t.Fatalf("Ed25519-signed node: %d %q", code, body)
	}
	if w := r.pool(t, "ed.test").Nodes[0].Weight; w != 3 {
		t.Fatalf("weight %d; want 3", w)
	}
	send("--drain")
	eventually(t, 10*time.Second, "node drained", func() bool {
		p := r.pool(t, "ed.test")
		return p != nil && len(p.Nodes) == 1 && (p.Nodes[0].State == "drained" || p.Nodes[0].State == "draining")
	})
	send("--unsubscribe")
	waitForNodes(t, r, "ed.test", 0)

	// Unsigned: denied.
	if code, out := subscribeCmd(t, "--server", r.sub, "--key", "ed.test", "--address", socket); code != 0 {
		t.Fatalf("unsigned send: exit %d %s", code, out)
	}
	eventually(t, 10*time.Second, "unsigned datagram denied", func() bool { return denied(t, r, "unsigned") >= 1 })

	// --every: announces until SIGTERM, then unsubscribes (signed).
	waitNewer()
	p := startProc(t, binary, "subscribe", "--server", r.sub, "--key", "ed.test", "--address", socket,
		"--sign", "SHA256:"+priv, "--every", "1s")
	waitForNodes(t, r, "ed.test", 1)
	time.Sleep(1500 * time.Millisecond) // at least one refresh
	_ = syscall.Kill(p.pid(), syscall.SIGTERM)
	if code := p.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("subscribe --every exit %d", code)
	}
	waitForNodes(t, r, "ed.test", 0)
	if n := denied(t, r, "replay") + denied(t, r, "signature") + denied(t, r, "stale"); n != 0 {
		t.Fatalf("%v signed datagrams from the command were denied (replay %v, signature %v, stale %v)", n, denied(t, r, "replay"), denied(t, r, "signature"), denied(t, r, "stale"))
	}
}

// --subscription-allow drops datagrams from other sources before they are
// parsed; --node-allow keeps a datagram from pointing the router at an
// address outside the allowed networks (a metadata service, a unix socket).
func TestSubscriptionAllowLists(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	t.Run("source", func(t *testing.T) {
		t.Parallel()
		r := startRouter(t, "--subscription-allow", "10.0.0.0/8", "--subscription-allow", "192.0.2.0/24")
		startNode(t, r, "src.test", nodeOpts{id: "src"})
		eventually(t, 15*time.Second, "datagrams from loopback denied", func() bool { return denied(t, r, "source") >= 2 })
		if p := r.pool(t, "src.test"); p != nil {
			t.Fatalf("denied source created pool %+v", p)
		}
		if v := metricValue(t, r, `fastrouter_subscription_packets_total{result="denied"}`); v < 2 {
			t.Fatalf("packets{denied} = %v", v)
		}
	})
	t.Run("node", func(t *testing.T) {
		t.Parallel()
		r := startRouter(t, "--node-allow", "127.0.0.0/8")
		startNode(t, r, "node.test", nodeOpts{id: "ok"})
		waitForNodes(t, r, "node.test", 1)
		for _, addr := range []string{"169.254.169.254:80", "[::1]:9191", "/run/evil.sock", "10.1.2.3:3031"} {
			if code, out := subscribeCmd(t, "--server", r.sub, "--key", "node.test", "--address", addr); code != 0 {
				t.Fatalf("send %s: exit %d %s", addr, code, out)
			}
		}
		eventually(t, 10*time.Second, "datagrams pointing outside --node-allow denied", func() bool {
			return denied(t, r, "node_address") >= 4
		})
		if p := r.pool(t, "node.test"); p == nil || len(p.Nodes) != 1 {
			t.Fatalf("pool node.test: %+v; want only the allowed node", p)
		}
		if code, body := get(t, client(), r.http, "node.test", "/"); code != 200 || body != "node=ok" {
			t.Fatalf("allowed node: %d %q", code, body)
		}
	})
}

// Bad security flags are usage errors (exit 2, one line naming the flag).
func TestSecurityFlagErrors(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--subscriptions-sign-check", "SHA256:/nonexistent/keys"}, "--subscriptions-sign-check"},
		{[]string{"--subscriptions-sign-check", "MD5:" + t.TempDir()}, "--subscriptions-sign-check"},
		{[]string{"--subscriptions-sign-check", "SHA256:" + file}, "not a directory"},
		{[]string{"--subscriptions-sign-tolerance", "500ms"}, "--subscriptions-sign-tolerance"},
		{[]string{"--subscription-allow", "10.0.0.0/33"}, "--subscription-allow"},
		{[]string{"--node-allow", "nope"}, "--node-allow"},
		{[]string{"--max-conns", "-1"}, "--max-conns"},
	} {
		cmd := exec.Command(binary, tc.args...)
		out, err := cmd.CombinedOutput()
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), tc.want) || strings.Count(string(out), "\n") != 1 {
			t.Errorf("%v: %v %q; want exit 2 naming %s", tc.args, err, out, tc.want)
		}
	}
	for _, args := range [][]string{
		{"--key", "k"}, // no --address
		{"--address", "127.0.0.1:1"},
		{"--key", "k", "--address", "127.0.0.1:1", "--every", "100ms"},
		{"--key", "k", "--address", "127.0.0.1:1", "--sign", "SHA256:/nonexistent"},
		{"--key", "k", "--address", "not an address:x"},
	} {
		if code, out := subscribeCmd(t, args...); code != 2 {
			t.Errorf("subscribe %v: exit %d %q; want 2", args, code, out)
		}
	}
	if code, out := subscribeCmd(t, "--help"); code != 0 || !strings.Contains(out, "--sign") {
		t.Errorf("subscribe --help: %d %q", code, out)
	}
}
