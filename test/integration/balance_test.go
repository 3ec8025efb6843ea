package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// send sends GET path with the given Host and extra headers; unlike get it
// returns an error instead of failing the test, so goroutines may call it.
func send(c *http.Client, addr, host, path string, hdr map[string]string) (int, string, error) {
	req, err := http.NewRequest("GET", "http://"+addr+path, nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// mustSend is send for the test goroutine: any error or non-200 fails.
func mustSend(t *testing.T, c *http.Client, addr, host, path string, hdr map[string]string) string {
	t.Helper()
	code, body, err := send(c, addr, host, path, hdr)
	if err != nil || code != 200 {
		t.Fatalf("GET %s%s %v: %d %q %v; want 200", host, path, hdr, code, body, err)
	}
	return body
}

// nodeID extracts <id> from "node=<id>" or "slow node=<id>".
func nodeID(body string) string {
	if i := strings.LastIndex(body, "node="); i >= 0 {
		return body[i+len("node="):]
	}
	return ""
}

// startBareNode starts a uWSGI node that does not subscribe: the test
// announces it itself (announce), with the extensions uWSGI 2.0 cannot send
// (its --subscribe2 drops backup= and algo=).
func startBareNode(t *testing.T, id string) *node {
	t.Helper()
	sock := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	p := startProc(t, "uwsgi",
		"--plugin", "python3", "--master", "--socket", sock, "--wsgi-file", appPath,
		"--processes", "2", "--threads", "2", "--die-on-term", "--env", "NODE_ID="+id,
		"--disable-logging")
	return &node{proc: p, addr: sock}
}

// announce sends s to the router's subscription server every 500ms until
// the test ends, as a node's --subscribe-freq would.
func announce(t *testing.T, r *router, s uwsgi.Subscription) {
	t.Helper()
	c, err := net.Dial("udp", r.sub)
	if err != nil {
		t.Fatal(err)
	}
	dgram := uwsgi.AppendSubscription(nil, &s)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tk := time.NewTicker(500 * time.Millisecond)
		defer tk.Stop()
		for {
			_, _ = c.Write(dgram)
			select {
			case <-stop:
				return
			case <-tk.C:
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-done; c.Close() })
}

// Weights announced by uWSGI's own --weight drive wrr: 2:1 over 300 requests.
func TestWeightsFromUWSGI(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "weights.balance.test"
	r := startRouter(t)
	two := startNode(t, r, key, nodeOpts{id: "two", weight: 2})
	one := startNode(t, r, key, nodeOpts{id: "one", weight: 1})
	waitForNodes(t, r, key, 2)
	p := r.pool(t, key)
	if p.Algo != "wrr" {
		t.Fatalf("pool algo %q; want wrr", p.Algo)
	}
	if n := p.node(two.addr); n == nil || n.Weight != 2 {
		t.Fatalf("node two: %+v; want weight 2", n)
	}
	if n := p.node(one.addr); n == nil || n.Weight != 1 {
		t.Fatalf("node one: %+v; want weight 1", n)
	}
	c := client()
	counts := map[string]int{}
	for i := 0; i < 300; i++ {
		counts[nodeID(mustSend(t, c, r.http, key, "/", nil))]++
	}
	t.Logf("wrr 2:1 over 300: %v", counts)
	// ±5% of the 2:1 share: two gets 200±15.
	if c2 := counts["two"]; c2 < 185 || c2 > 215 || c2+counts["one"] != 300 {
		t.Fatalf("wrr 2:1 over 300 requests: %v; want two in [185, 215]", counts)
	}
}

// lrc sends concurrent slow requests to the node with fewer in flight.
func TestLRCSplitsSlowRequests(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "lrc.balance.test"
	r := startRouter(t, "--algo", "lrc")
	// 12 workers each: no request waits in a node's backlog.
	startNode(t, r, key, nodeOpts{id: "a", processes: 4, threads: 3})
	startNode(t, r, key, nodeOpts{id: "b", processes: 4, threads: 3})
	waitForNodes(t, r, key, 2)
	if p := r.pool(t, key); p.Algo != "lrc" {
		t.Fatalf("pool algo %q; want lrc", p.Algo)
	}
	c := client()
	// Warm both nodes (the first request to a uWSGI worker may be slower).
	for i := 0; i < 4; i++ {
		mustSend(t, c, r.http, key, "/", nil)
	}
	const n = 20
	var (
		mu     sync.Mutex
		counts = map[string]int{}
		errs   []string
		wg     sync.WaitGroup
	)
	start := time.Now()
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body, err := send(c, r.http, key, "/slow?ms=300", nil)
			mu.Lock()
			defer mu.Unlock()
			if err != nil || code != 200 {
				errs = append(errs, fmt.Sprintf("%d %q %v", code, body, err))
				return
			}
			counts[nodeID(body)]++
		}()
	}
	wg.Wait()
	t.Logf("lrc: %d concurrent /slow?ms=300 in %s: %v", n, time.Since(start).Round(time.Millisecond), counts)
	if len(errs) > 0 {
		t.Fatalf("%d of %d requests failed: %v", len(errs), n, errs)
	}
	for _, id := range []string{"a", "b"} {
		if k := counts[id]; k < 7 || k > 13 {
			t.Fatalf("lrc split %v; want each node 10±3", counts)
		}
	}
}

// iphash keeps a client (the right-most X-Forwarded-For address from a
// trusted proxy) on one node, and different clients spread.
func TestIPHashSticks(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "iphash.balance.test"
	r := startRouter(t, "--algo", "iphash", "--trusted-proxy", "127.0.0.0/8")
	startStickyPool(t, r, key, "iphash")
	stickyRounds(t, r, key, "client", func(n int) (string, map[string]string) {
		ip := "198.51.100." + strconv.Itoa(n)
		return ip, map[string]string{"X-Forwarded-For": ip}
	})
}

// startStickyPool starts nodes a, b and c in pool key of r and checks the
// pool balances with algo.
func startStickyPool(t *testing.T, r *router, key, algo string) {
	t.Helper()
	for _, id := range []string{"a", "b", "c"} {
		startNode(t, r, key, nodeOpts{id: id})
	}
	waitForNodes(t, r, key, 3)
	if p := r.pool(t, key); p.Algo != algo {
		t.Fatalf("pool algo %q; want %s", p.Algo, algo)
	}
}

// stickyRounds sends 5 rounds of a request from each of 20 clients (the
// nth's name and headers from who) to pool key of r, fails the test when
// one client's requests reach two nodes or all clients one node, and logs
// how many clients each node got.
func stickyRounds(t *testing.T, r *router, key, what string, who func(n int) (string, map[string]string)) {
	t.Helper()
	c := client()
	owner := map[string]string{} // client → node
	spread := map[string]int{}   // node → clients
	for round := 0; round < 5; round++ {
		for n := 1; n <= 20; n++ {
			name, hdr := who(n)
			id := nodeID(mustSend(t, c, r.http, key, "/", hdr))
			if prev, ok := owner[name]; !ok {
				owner[name] = id
				spread[id]++
			} else if prev != id {
				t.Fatalf("%s %s went to node %s, then %s (round %d)", what, name, prev, id, round)
			}
		}
	}
	t.Logf("%s: 20 %ss × 5 requests, %ss per node %v", r.pool(t, key).Algo, what, what, spread)
	if len(spread) < 2 {
		t.Fatalf("20 %ss all on one node: %v", what, spread)
	}
}

// hash with --hash-key cookie:sid keeps a session on one node; requests
// without the cookie are still served.
func TestHashOnCookieSticks(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "hash.balance.test"
	r := startRouter(t, "--algo", "hash", "--hash-key", "cookie:sid")
	startStickyPool(t, r, key, "hash")
	stickyRounds(t, r, key, "session", func(n int) (string, map[string]string) {
		user := "user" + strconv.Itoa(n)
		return user, map[string]string{"Cookie": "theme=dark; sid=" + user + "; lang=en"}
	})
	c := client()
	noCookie := map[string]int{}
	for i := 0; i < 12; i++ {
		noCookie[nodeID(mustSend(t, c, r.http, key, "/", nil))]++
		noCookie[nodeID(mustSend(t, c, r.http, key, "/", map[string]string{"Cookie": "other=1"}))]++
	}
	t.Logf("hash without sid: %v", noCookie)
}

// A backup=1 node (announced with the extension uWSGI 2.0 cannot send) is
// held in reserve while the primary lives, takes every request once the
// primary dies, and hands back when a primary returns on the same address.
func TestBackupTakesOver(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "backup.balance.test"
	r := startRouter(t)
	primary := startNode(t, r, key, nodeOpts{id: "primary"})
	backup := startBareNode(t, "backup")
	eventually(t, 10*time.Second, "backup node to listen", func() bool {
		c, err := net.DialTimeout("tcp", backup.addr, time.Second)
		if err != nil {
			return false
		}
		c.Close()
		return true
	})
	announce(t, r, uwsgi.Subscription{Key: []byte(key), Address: []byte(backup.addr), Cores: 4, Weight: 1, Backup: 1})
	waitForNodes(t, r, key, 2)
	eventually(t, 5*time.Second, "primary active, backup in state backup", func() bool {
		p := r.pool(t, key)
		pn, bn := p.node(primary.addr), p.node(backup.addr)
		return pn != nil && bn != nil && pn.State == "active" && bn.State == "backup"
	})

	c := client()
	for i := 0; i < 30; i++ {
		if id := nodeID(mustSend(t, c, r.http, key, "/", nil)); id != "primary" {
			t.Fatalf("request %d with the primary alive went to %q", i, id)
		}
	}
	if bn := r.pool(t, key).node(backup.addr); bn.Requests != 0 || bn.State != "backup" {
		t.Fatalf("backup node while the primary lives: %+v; want 0 requests, state backup", bn)
	}

	primary.kill(t)
	counts := map[string]int{}
	var failed []string
	for i := 0; i < 40; i++ {
		code, body, err := send(c, r.http, key, "/", nil)
		if err != nil || code != 200 {
			failed = append(failed, fmt.Sprintf("%d %q %v", code, body, err))
			continue
		}
		counts[nodeID(body)]++
		time.Sleep(25 * time.Millisecond)
	}
	t.Logf("primary dead: %v, errors %d", counts, len(failed))
	if len(failed) > 0 {
		t.Fatalf("%d client errors after the primary died: %v", len(failed), failed)
	}
	if counts["backup"] != 40 {
		t.Fatalf("after the primary died: %v; want all 40 on backup", counts)
	}
	if bn := r.pool(t, key).node(backup.addr); bn.State != "active" {
		t.Fatalf("backup node while serving: %+v; want state active", bn)
	}

	// A primary comes back on the same address; once its backoff ends the
	// next probe finds it and traffic returns.
	startNode(t, r, key, nodeOpts{id: "primary2", socket: primary.addr})
	back := time.Now()
	var last string
	eventually(t, 45*time.Second, "traffic to return to the primary", func() bool {
		code, body, err := send(c, r.http, key, "/", nil)
		if err != nil || code != 200 {
			t.Fatalf("request while the primary returns: %d %q %v", code, body, err)
		}
		last = nodeID(body)
		return last == "primary2"
	})
	t.Logf("traffic back on the primary after %s", time.Since(back).Round(time.Millisecond))
	for i := 0; i < 20; i++ {
		if id := nodeID(mustSend(t, c, r.http, key, "/", nil)); id != "primary2" {
			t.Fatalf("request %d after the primary returned went to %q", i, id)
		}
	}
	eventually(t, 5*time.Second, "backup back in state backup", func() bool {
		return r.pool(t, key).node(backup.addr).State == "backup"
	})
}

// p2c never fails a client for a dead static node: the connect is retried on
// another node and the dead one is marked failed.
func TestP2CAvoidsDeadNode(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "p2c.balance.test"
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--algo", "p2c", "--to", key+"="+dead)
	startNode(t, r, key, nodeOpts{id: "a"})
	startNode(t, r, key, nodeOpts{id: "b"})
	waitForNodes(t, r, key, 3)
	if p := r.pool(t, key); p.Algo != "p2c" {
		t.Fatalf("pool algo %q; want p2c", p.Algo)
	}
	c := client()
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		counts[nodeID(mustSend(t, c, r.http, key, "/", nil))]++
	}
	p := r.pool(t, key)
	dn := p.node(dead)
	t.Logf("p2c over 100 requests: %v; dead node %+v", counts, dn)
	if counts["a"]+counts["b"] != 100 || counts["a"] == 0 || counts["b"] == 0 {
		t.Fatalf("p2c split %v; want 100 over a and b, both used", counts)
	}
	if dn == nil || dn.State != "failed" || dn.Failures == 0 {
		t.Fatalf("dead node %s: %+v; want state failed with failures", dead, dn)
	}
}

// sed measures each node: of two nodes, one five times slower, the slow
// one gets the probe every new node gets and little else, where lrc would
// split sequential requests evenly.
func TestSEDAvoidsSlowNode(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "sed.balance.test"
	r := startRouter(t, "--algo", "sed", "--max-inflight", "auto")
	startNode(t, r, key, nodeOpts{id: "a"})
	startNode(t, r, key, nodeOpts{id: "b", slowFactor: 5})
	waitForNodes(t, r, key, 2)
	if p := r.pool(t, key); p.Algo != "sed" {
		t.Fatalf("pool algo %q; want sed", p.Algo)
	}
	c := client()
	counts := map[string]int{}
	for i := 0; i < 40; i++ {
		counts[nodeID(mustSend(t, c, r.http, key, "/slow?ms=10", nil))]++
	}
	t.Logf("sed over 40 sequential /slow?ms=10 (node b 5× slower): %v", counts)
	if counts["a"]+counts["b"] != 40 || counts["b"] == 0 || counts["b"] > 4 {
		t.Fatalf("sed split %v; want b tried (at least once) and a taking all but a few", counts)
	}
}
