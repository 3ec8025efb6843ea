package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/subauth"
)

// Every rule that decides whether a node may enter applies whatever path
// the node takes: a datagram, the admin API, the configuration, the state
// file, a binary upgrade's hand-off, a cluster peer. And the replay memory
// of signed datagrams survives restarts, upgrades and joins.

// signingKeys makes a key directory with an Ed25519 public key for each of
// keys (openssl genpkey) and returns it with the signer of that key.
func signingKeys(t *testing.T, keys ...string) (string, *subauth.Signer) {
	t.Helper()
	dir := t.TempDir()
	kd := filepath.Join(dir, "keys")
	if err := os.Mkdir(kd, 0o755); err != nil {
		t.Fatal(err)
	}
	pub := filepath.Join(dir, "node.pub")
	priv := genEd25519(t, dir, "node", pub)
	b, err := os.ReadFile(pub)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := os.WriteFile(filepath.Join(kd, subauth.KeyFile([]byte(k))), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s, err := subauth.LoadSigner("SHA256:" + priv)
	if err != nil {
		t.Fatal(err)
	}
	return kd, s
}

// signedAt is a subscribe (or unsubscribe) of key at addr signed by s at
// time at.
func signedAt(t *testing.T, s *subauth.Signer, key, addr string, at time.Time, unsubscribe bool) []byte {
	t.Helper()
	d, err := subauth.AppendSigned(nil, &uwsgi.Subscription{Key: []byte(key), Address: []byte(addr), Weight: 1,
		Unsubscribe: unsubscribe}, s, at)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// --node-allow 10.0.0.0/8 stops an admin POST of the cloud metadata
// address (it answered 201): 403, naming the rule, and no pool appears.
func TestAdminAddNodeMeetsNodeAllow(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	r := startRouter(t, "--node-allow", "10.0.0.0/8")
	post := func(key, addr string) (int, string) {
		resp, err := http.Post("http://"+r.admin+"/api/pools/"+key+"/nodes", "application/json",
			strings.NewReader(`{"address":"`+addr+`","weight":1}`))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct{ Error string }
		_ = json.NewDecoder(resp.Body).Decode(&body)
		return resp.StatusCode, body.Error
	}
	if code, msg := post("meta.test", "169.254.169.254:80"); code != 403 || !strings.Contains(msg, "--node-allow 10.0.0.0/8") {
		t.Fatalf("POST of 169.254.169.254:80: %d %q; want 403 naming --node-allow", code, msg)
	}
	if p := r.pool(t, "meta.test"); p != nil {
		t.Fatalf("refused node's pool exists: %+v", p)
	}
	if code, msg := post("meta.test", "10.1.2.3:3031"); code != 201 {
		t.Fatalf("POST of an allowed address: %d %q", code, msg)
	}
}

// A configured node the router would refuse from a datagram stops the
// start: exit 2, one line naming the rule.
func TestConfigNodeMeetsAdmission(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	code, _, stderr := runBinary(t, "--node-allow", "10.0.0.0/8", "--to", "meta.test=169.254.169.254:80",
		"--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0")
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--node-allow") {
		t.Fatalf("--to outside --node-allow: exit %d, stderr %q; want 2 and one line naming --node-allow", code, stderr)
	}
	keys, _ := signingKeys(t, "signed.test")
	code, _, stderr = runBinary(t, "--subscriptions-sign-check", "SHA256:"+keys, "--to", "unsigned.test=10.0.0.1:3031",
		"--http", "127.0.0.1:0", "--admin", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0")
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "unsigned.test.pem") {
		t.Fatalf("--to of a pool without a key: exit %d, stderr %q; want 2 naming the missing key file", code, stderr)
	}
}

// Router b has --node-allow, router a does not: a node outside b's list
// that announces to a is routed by a only; b refuses it and counts it.
// Nodes inside the list still reach b through a.
func TestClusterPeerMeetsNodeAllow(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	a := startClusterRouter(t, "a", "", nil)
	b := startClusterRouter(t, "b", "", []*crouter{a}, "--node-allow", "127.0.0.0/8")
	waitMembers(t, 20*time.Second, 2, a, b)
	n := startNode(t, a.router, "na.test", nodeOpts{id: "in"})
	sendSub(t, a, sub("na.test", "192.0.2.1:80"))
	converge(t, time.Now(), 15*time.Second, "the allowed node at b", []*crouter{b}, func(r *crouter) bool {
		return r.nodeState(t, "na.test", n.addr) == "active"
	})
	eventually(t, 10*time.Second, "b counts the refused node", func() bool {
		return metricValue(t, b.router, `fastrouter_cluster_denied_total{reason="node_address"}`) >= 1
	})
	if st := a.nodeState(t, "na.test", "192.0.2.1:80"); st != "active" {
		t.Fatalf("a (no --node-allow): node 192.0.2.1:80 is %s; want active", st)
	}
	if st := b.nodeState(t, "na.test", "192.0.2.1:80"); st != "absent" {
		t.Fatalf("b (--node-allow 127.0.0.0/8): node 192.0.2.1:80 is %s; want absent", st)
	}
	if code, body := get(t, client(), b.http, "na.test", "/"); code != 200 || body != "node=in" {
		t.Fatalf("GET via b: %d %q", code, body)
	}
}

// Router b checks signatures, router a does not. Real uWSGI nodes announce
// to a only: the one that signs with the pool's key is routed by b too (b
// verifies the datagram a relays); an unsigned one, one signed with
// another key and one for a pool without a key file are refused at b and
// counted by reason.
func TestClusterPeerMeetsSignatures(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dir := t.TempDir()
	keys := filepath.Join(dir, "keys")
	if err := os.Mkdir(keys, 0o755); err != nil {
		t.Fatal(err)
	}
	const key = "csigned.test"
	priv := genRSA(t, dir, "node", filepath.Join(keys, key+".pem"))
	otherPriv := genRSA(t, dir, "other", filepath.Join(dir, "other.pub"))
	a := startClusterRouter(t, "a", "", nil)
	b := startClusterRouter(t, "b", "", []*crouter{a}, "--subscriptions-sign-check", "SHA256:"+keys)
	waitMembers(t, 20*time.Second, 2, a, b)

	socket := func() string { return fmt.Sprintf("127.0.0.1:%d", freePort(t)) }
	good := startUWSGI(t, "signed", socket(), "--subscribe-to", a.sub+":"+key+",0,SHA256:"+priv)
	unsigned := startUWSGI(t, "unsigned", socket(), "--subscribe-to", a.sub+":"+key)
	forged := startUWSGI(t, "otherkey", socket(), "--subscribe-to", a.sub+":"+key+",0,SHA256:"+otherPriv)
	startUWSGI(t, "nokey", socket(), "--subscribe-to", a.sub+":cnokey.test,0,SHA256:"+priv)
	converge(t, time.Now(), 20*time.Second, "the signed node at b", []*crouter{b}, func(r *crouter) bool {
		return r.nodeState(t, key, good.addr) == "active"
	})
	reason := func(r string) float64 {
		return metricValue(t, b.router, `fastrouter_cluster_denied_total{reason="`+r+`"}`)
	}
	eventually(t, 20*time.Second, "b refuses the unsigned, forged and keyless nodes", func() bool {
		return reason("unsigned") >= 1 && reason("signature") >= 1 && reason("no_key") >= 1
	})
	for _, n := range []*node{unsigned, forged} {
		if st := a.nodeState(t, key, n.addr); st != "active" {
			t.Errorf("a (no signatures): node %s is %s; want active", n.addr, st)
		}
		if st := b.nodeState(t, key, n.addr); st != "absent" {
			t.Errorf("b: node %s is %s; want refused", n.addr, st)
		}
	}
	if p := b.pool(t, "cnokey.test"); p != nil {
		t.Errorf("b: pool without a key file created from a peer: %+v", p)
	}
	for range 6 { // b's pool holds the signed node only, whatever wrr picks
		if code, body := get(t, client(), b.http, key, "/"); code != 200 || body != "node=signed" {
			t.Fatalf("GET via b: %d %q; want the signed node", code, body)
		}
	}
}

// subscribeThenLeave has a signed node join and leave r, and returns the
// subscribe, which a captor replays later.
func subscribeThenLeave(t *testing.T, r *router, s *subauth.Signer, key, addr string) []byte {
	t.Helper()
	now := time.Now()
	subscribe := signedAt(t, s, key, addr, now.Add(-3*time.Second), false)
	sendUDP(t, r.sub, subscribe)
	waitForNodes(t, r, key, 1)
	sendUDP(t, r.sub, signedAt(t, s, key, addr, now.Add(-2*time.Second), true))
	waitForNodes(t, r, key, 0)
	return subscribe
}

// replayRefused sends a captured subscribe to r and checks that it is
// counted as a replay and brings no node back.
func replayRefused(t *testing.T, r *router, key string, d []byte) {
	t.Helper()
	var s uwsgi.Subscription
	if err := uwsgi.ParseSubscription(d, &s); err != nil {
		t.Fatal(err)
	}
	addr := string(s.Address)
	before := denied(t, r, "replay")
	sendUDP(t, r.sub, d)
	eventually(t, 10*time.Second, "the replay handled", func() bool {
		return denied(t, r, "replay") > before || r.pool(t, key).node(addr) != nil
	})
	if n := r.pool(t, key).node(addr); n != nil {
		t.Fatalf("the replayed subscribe brought the node back: %+v", *n)
	}
}

// A signed subscribe captured before a SIGUSR2 upgrade cannot be replayed
// after it: the new process inherits the replay memory with the table.
func TestSignedReplayAfterUpgrade(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	const key = "up-replay.test"
	keys, s := signingKeys(t, key)
	pidFile := filepath.Join(t.TempDir(), "fastrouter.pid")
	r := startRouter(t, "--subscriptions-sign-check", "SHA256:"+keys, "--pid-file", pidFile, "--shutdown-timeout", "5s")
	d := subscribeThenLeave(t, r, s, key, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	eventually(t, 5*time.Second, "pid file", func() bool { return readPID(pidFile) == r.pid() })
	upgradeAndWait(t, pidFile, r.pid())
	replayRefused(t, r, key, d)
}

// A signed subscribe captured before a restart with --state-file cannot be
// replayed after it: the file keeps the replay memory.
func TestSignedReplayAfterRestartWithStateFile(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	const key = "restart-replay.test"
	keys, s := signingKeys(t, key)
	state := filepath.Join(t.TempDir(), "state.json")
	args := []string{"--subscriptions-sign-check", "SHA256:" + keys, "--state-file", state}
	r1 := startRouter(t, args...)
	d := subscribeThenLeave(t, r1, s, key, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	_ = syscall.Kill(r1.pid(), syscall.SIGTERM)
	if code := r1.wait(t, 15*time.Second); code != 0 {
		t.Fatalf("exit %d", code)
	}
	r2 := startRouter(t, args...)
	replayRefused(t, r2, key, d)
}

// A router that joins a cluster learns the replay memory with the state:
// a subscribe that another router accepted before the node left cannot be
// replayed to the newcomer. A node still there is routed by the newcomer:
// the datagram relayed with it is the one whose time it learnt.
func TestClusterJoinerRefusesReplay(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "join-replay.test"
	keys, s := signingKeys(t, key)
	sign := []string{"--subscriptions-sign-check", "SHA256:" + keys}
	a := startClusterRouter(t, "a", "", nil, sign...)
	d := subscribeThenLeave(t, a.router, s, key, fmt.Sprintf("127.0.0.1:%d", freePort(t)))
	live := startBareNode(t, "live")
	sendUDP(t, a.sub, signedAt(t, s, key, live.addr, time.Now(), false))
	waitForNodes(t, a.router, key, 1)
	c := startClusterRouter(t, "c", "", []*crouter{a}, sign...)
	waitMembers(t, 20*time.Second, 2, a, c)
	eventually(t, 10*time.Second, "c merged a's state on join", func() bool {
		b, _ := os.ReadFile(c.log)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `msg="cluster: state merged"`) && strings.Contains(l, "join=true") &&
				!strings.Contains(l, "entries=0") {
				return true
			}
		}
		return false
	})
	converge(t, time.Now(), 10*time.Second, "the live signed node at c", []*crouter{c}, func(r *crouter) bool {
		return r.nodeState(t, key, live.addr) == "active"
	})
	if code, body := get(t, client(), c.http, key, "/"); code != 200 || body != "node=live" {
		t.Fatalf("GET via c: %d %q", code, body)
	}
	replayRefused(t, c.router, key, d)
}
