package integration

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Router clusters: three or four real router processes on loopback that
// join each other with --cluster-join, and real uWSGI nodes subscribed to
// one of them. Convergence times are logged (t.Logf) for the README.

// crouter is a router in a cluster.
type crouter struct {
	*router
	name, bind string
}

// freeClusterPort returns a loopback port free for both TCP and UDP
// (memberlist binds both).
func freeClusterPort(t *testing.T) int {
	t.Helper()
	for i := 0; i < 50; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		pc, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		ln.Close()
		if err == nil {
			pc.Close()
			return port
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return 0
}

// startClusterRouter starts a router named name, bound at bind (a fresh
// port when empty), joining the given routers.
func startClusterRouter(t *testing.T, name, bind string, join []*crouter, extra ...string) *crouter {
	t.Helper()
	if bind == "" {
		bind = fmt.Sprintf("127.0.0.1:%d", freeClusterPort(t))
	}
	args := []string{"--cluster-bind", bind, "--cluster-node-name", name, "--cluster-name", "integration", "--cluster-sync-interval", "2s"}
	for _, j := range join {
		args = append(args, "--cluster-join", j.bind)
	}
	return &crouter{router: startRouter(t, append(args, extra...)...), name: name, bind: bind}
}

// startCluster starts routers named names; every one after the first
// joins the first. It waits until all see each other.
func startCluster(t *testing.T, names []string, extra ...string) []*crouter {
	t.Helper()
	var rs []*crouter
	for i, n := range names {
		var join []*crouter
		if i > 0 {
			join = rs[:1]
		}
		rs = append(rs, startClusterRouter(t, n, "", join, extra...))
	}
	waitMembers(t, 20*time.Second, len(rs), rs...)
	return rs
}

type clusterStatus struct {
	Name    string `json:"name"`
	Members []struct {
		Name string `json:"name"`
	} `json:"members"`
	Drains []struct {
		Key      string           `json:"key"`
		Address  string           `json:"address"`
		Origin   string           `json:"origin"`
		Notifier string           `json:"notifier"`
		Inflight map[string]int64 `json:"inflight"`
		Waiting  []string         `json:"waiting"`
	} `json:"drains"`
}

// poller is a keep-alive client for fast admin polling.
var poller = &http.Client{Timeout: 5 * time.Second}

func (r *crouter) status(t *testing.T) clusterStatus {
	t.Helper()
	resp, err := poller.Get("http://" + r.admin + "/api/cluster")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st clusterStatus
	if resp.StatusCode != 200 {
		t.Fatalf("GET /api/cluster at %s: %d", r.name, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}

// nodeState returns the state of (key, addr) at r: "absent" when the node
// is not listed.
func (r *crouter) nodeState(t *testing.T, key, addr string) string {
	t.Helper()
	resp, err := poller.Get("http://" + r.admin + "/api/pools/" + url.PathEscape(key) + "/nodes/" + url.PathEscape(addr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 404 {
		return "absent"
	}
	var n nodeJSON
	if err := json.NewDecoder(resp.Body).Decode(&n); err != nil {
		t.Fatal(err)
	}
	return n.State
}

func waitMembers(t *testing.T, d time.Duration, n int, rs ...*crouter) time.Duration {
	t.Helper()
	start := time.Now()
	eventually(t, d, fmt.Sprintf("%d cluster members at every router", n), func() bool {
		for _, r := range rs {
			if got := metricValue(t, r.router, "fastrouter_cluster_members"); got != float64(n) {
				return false
			}
		}
		return true
	})
	return time.Since(start)
}

// converge polls every router (every 5ms) until cond holds at each, and
// returns how long after t0 the last one got there.
func converge(t *testing.T, t0 time.Time, d time.Duration, what string, rs []*crouter, cond func(*crouter) bool) time.Duration {
	t.Helper()
	deadline := t0.Add(d)
	pending := slices.Clone(rs)
	for len(pending) > 0 {
		pending = slices.DeleteFunc(pending, cond)
		if len(pending) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s at %s", d, what, pending[0].name)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return time.Since(t0)
}

// stats logs the median and max of samples.
func stats(t *testing.T, what string, samples []time.Duration) {
	t.Helper()
	s := slices.Clone(samples)
	slices.Sort(s)
	t.Logf("CONVERGENCE %s: n=%d median=%s max=%s", what, len(s), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// jitter sleeps 0-150ms, so that samples do not all start at the same
// phase of the gossip ticker.
func jitter() { time.Sleep(time.Duration(rand.IntN(150)) * time.Millisecond) }

// sendSub sends one subscription datagram to r.
func sendSub(t *testing.T, r *crouter, s uwsgi.Subscription) {
	t.Helper()
	c, err := net.Dial("udp", r.sub)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(uwsgi.AppendSubscription(nil, &s)); err != nil {
		t.Fatal(err)
	}
}

func sub(key, addr string) uwsgi.Subscription {
	return uwsgi.Subscription{Key: []byte(key), Address: []byte(addr), Weight: 1}
}

func unsub(key, addr string) uwsgi.Subscription {
	s := sub(key, addr)
	s.Unsubscribe = true
	return s
}

// A uWSGI node that subscribes to router a only is routed by b and c too;
// convergence of subscribes sent to a, measured at b and c.
func TestClusterSubscribeAtOneRouteEverywhere(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	rs := startCluster(t, []string{"a", "b", "c"})
	a := rs[0]
	n := startNode(t, a.router, "cl-sub.test", nodeOpts{id: "n1"})
	waitForNodes(t, a.router, "cl-sub.test", 1)
	t0 := time.Now()
	d := converge(t, t0, 10*time.Second, "the node everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, "cl-sub.test", n.addr) == "active"
	})
	t.Logf("uWSGI node seen at a, then everywhere within %s", d.Round(time.Millisecond))
	for _, r := range rs {
		if code, body := get(t, client(), r.http, "cl-sub.test", "/"); code != 200 || body != "node=n1" {
			t.Fatalf("GET via %s: %d %q; want 200 node=n1", r.name, code, body)
		}
	}

	// Convergence: a datagram to a, until b and c list the node.
	var samples []time.Duration
	for i := 0; i < 15; i++ {
		key, addr := fmt.Sprintf("conv%d.cl-sub.test", i), fmt.Sprintf("127.0.0.1:%d", 20000+i)
		jitter()
		t0 := time.Now()
		sendSub(t, a, sub(key, addr))
		samples = append(samples, converge(t, t0, 10*time.Second, key, rs[1:], func(r *crouter) bool {
			return r.nodeState(t, key, addr) != "absent"
		}))
	}
	stats(t, "subscribe (datagram to a, listed at b and c)", samples)
}

// A drain started through b's admin API applies at a and c; while c has a
// request in flight to the node, every router keeps it draining; when the
// request ends it is drained everywhere and the node is notified once.
func TestClusterDrainThroughOneRouter(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	rs := startCluster(t, []string{"a", "b", "c"})
	a, b, c := rs[0], rs[1], rs[2]
	const key = "cl-drain.test"
	n1 := startNode(t, a.router, key, nodeOpts{id: "n1", processes: 4})
	n2 := startNode(t, a.router, key, nodeOpts{id: "n2", processes: 4})
	for _, r := range rs {
		waitForNodes(t, r.router, key, 2)
	}

	// Slow requests through c until one is on n1.
	var wg sync.WaitGroup
	slowDone := make(chan string, 4)
	for i := 0; i < 2; i++ { // smooth wrr over two nodes: one on each
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := get(t, client(), c.http, key, "/slow?ms=6000")
			slowDone <- fmt.Sprint(code, " ", body)
		}()
	}
	eventually(t, 5*time.Second, "a request in flight to n1 at c", func() bool {
		n := c.pool(t, key).node(n1.addr)
		return n != nil && n.Inflight > 0
	})
	path := "/api/pools/" + key + "/nodes/" + url.PathEscape(n1.addr)
	t0 := time.Now()
	if code, body := adminPost(t, b.router, path+"/drain", `{"timeout":"30s"}`); code != 202 {
		t.Fatalf("drain at b: %d %s", code, body)
	}
	d := converge(t, t0, 10*time.Second, "draining at a and c", []*crouter{a, c}, func(r *crouter) bool {
		return r.nodeState(t, key, n1.addr) == "draining"
	})
	t.Logf("drain through b seen at a and c after %s", d.Round(time.Millisecond))
	for _, r := range rs {
		for i := 0; i < 6; i++ {
			if code, body := get(t, client(), r.http, key, "/"); code != 200 || body != "node=n2" {
				t.Fatalf("request via %s during the drain: %d %q; want 200 node=n2", r.name, code, body)
			}
		}
	}
	// c still has the slow request: nobody may call the node drained. (The
	// checks count only if the request is still in flight after them.)
	time.Sleep(500 * time.Millisecond)
	inflightAtC := func() bool { n := c.pool(t, key).node(n1.addr); return n != nil && n.Inflight > 0 }
	states := map[string]string{}
	for _, r := range rs {
		states[r.name] = r.nodeState(t, key, n1.addr)
	}
	st := a.status(t)
	if inflightAtC() {
		for name, s := range states {
			if s != "draining" {
				t.Fatalf("%s: n1 %s while c has a request in flight; want draining", name, s)
			}
		}
		if len(st.Drains) != 1 || !slices.Equal(st.Drains[0].Waiting, []string{"c"}) || st.Drains[0].Origin != "b" ||
			st.Drains[0].Inflight["c"] != 1 {
			t.Fatalf("a's /api/cluster drains: %+v; want one drain from b waiting for c (1 in flight)", st.Drains)
		}
	} else {
		t.Fatal("the slow request at c ended before the checks; the test proved nothing (machine too slow?)")
	}
	wg.Wait()
	close(slowDone)
	for res := range slowDone {
		if !strings.HasPrefix(res, "200 ") {
			t.Fatalf("slow request: %s; want 200", res)
		}
	}
	converge(t, time.Now(), 10*time.Second, "drained everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, n1.addr) == "drained"
	})

	// More samples: undrain at a, drain at b, measured at a and c.
	var samples []time.Duration
	for i := 0; i < 8; i++ {
		if code, body := adminPost(t, a.router, path+"/undrain", ""); code != 200 {
			t.Fatalf("undrain: %d %s", code, body)
		}
		converge(t, time.Now(), 10*time.Second, "active everywhere", rs, func(r *crouter) bool {
			return r.nodeState(t, key, n1.addr) == "active"
		})
		jitter()
		t0 := time.Now()
		if code, body := adminPost(t, b.router, path+"/drain", ""); code != 202 {
			t.Fatalf("drain: %d %s", code, body)
		}
		samples = append(samples, converge(t, t0, 10*time.Second, "draining at a and c", []*crouter{a, c}, func(r *crouter) bool {
			s := r.nodeState(t, key, n1.addr)
			return s == "draining" || s == "drained"
		}))
	}
	stats(t, "drain (admin POST at b, seen at a and c)", samples)
	_ = n2
}

// A node with a notify socket, drained through one router, is notified
// once, by the router where the drain started.
func TestClusterDrainNotifiesOnce(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	rs := startCluster(t, []string{"a", "b", "c"})
	a, b := rs[0], rs[1]
	const key = "cl-notify.test"
	bare := startBareNode(t, "nb")
	other := startBareNode(t, "no")
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := sub(key, bare.addr)
	s.Notify = []byte(sock)
	sendSub(t, a, s)
	sendSub(t, a, sub(key, other.addr))
	converge(t, time.Now(), 10*time.Second, "both nodes everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, bare.addr) == "active" && r.nodeState(t, key, other.addr) == "active"
	})
	if code, body := adminPost(t, b.router, "/api/pools/"+key+"/nodes/"+url.PathEscape(bare.addr)+"/drain", ""); code != 202 {
		t.Fatalf("drain: %d %s", code, body)
	}
	converge(t, time.Now(), 10*time.Second, "drained everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, bare.addr) == "drained"
	})
	// Count notices for 2s after the last router called it drained.
	var got []string
	buf := make([]byte, 4096)
	deadline := time.Now().Add(2 * time.Second)
	for {
		_ = ln.SetReadDeadline(deadline)
		n, err := ln.Read(buf)
		if err != nil {
			break
		}
		got = append(got, string(buf[:n]))
	}
	if len(got) != 1 {
		t.Fatalf("drain notices: %d %q; want exactly 1", len(got), got)
	}
	if !strings.Contains(got[0], `"event":"drained"`) || !strings.Contains(got[0], bare.addr) {
		t.Fatalf("notice %q", got[0])
	}
}

// uWSGI's unsubscribe (sent to a on SIGINT) removes the node at b and c.
func TestClusterUnsubscribePropagates(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	rs := startCluster(t, []string{"a", "b", "c"})
	a := rs[0]
	const key = "cl-unsub.test"
	n := startNode(t, a.router, key, nodeOpts{id: "u"})
	converge(t, time.Now(), 10*time.Second, "the node everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, n.addr) == "active"
	})
	t0 := time.Now()
	n.cmd.Process.Signal(syscall.SIGINT) // uWSGI unsubscribes on shutdown
	d := converge(t, t0, 10*time.Second, "the node gone everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, n.addr) == "absent"
	})
	t.Logf("uWSGI unsubscribe (SIGINT) to a: gone everywhere after %s", d.Round(time.Millisecond))

	var samples []time.Duration
	for i := 0; i < 15; i++ {
		k, addr := fmt.Sprintf("u%d.cl-unsub.test", i), fmt.Sprintf("127.0.0.1:%d", 21000+i)
		sendSub(t, a, sub(k, addr))
		converge(t, time.Now(), 10*time.Second, "subscribed everywhere", rs, func(r *crouter) bool {
			return r.nodeState(t, k, addr) == "active"
		})
		jitter()
		t0 := time.Now()
		sendSub(t, a, unsub(k, addr))
		samples = append(samples, converge(t, t0, 10*time.Second, "unsubscribed at b and c", rs[1:], func(r *crouter) bool {
			return r.nodeState(t, k, addr) == "absent"
		}))
	}
	stats(t, "unsubscribe (datagram to a, gone at b and c)", samples)
}

// A router that joins late gets every pool at once and routes; a router
// killed with SIGKILL leaves membership; restarted, it regains everything
// from its peers.
func TestClusterLateJoinerKillAndRestart(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	rs := startCluster(t, []string{"a", "b", "c"})
	a, b, c := rs[0], rs[1], rs[2]
	const key = "cl-late.test"
	n := startNode(t, a.router, key, nodeOpts{id: "l"})
	const pools = 30
	for i := 0; i < pools; i++ {
		sendSub(t, rs[i%3], sub(fmt.Sprintf("p%d.cl-late.test", i), fmt.Sprintf("127.0.0.1:%d", 22000+i)))
	}
	converge(t, time.Now(), 10*time.Second, "everything everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, n.addr) == "active" && r.nodeState(t, fmt.Sprintf("p%d.cl-late.test", pools-1), fmt.Sprintf("127.0.0.1:%d", 22000+pools-1)) == "active"
	})
	hasAll := func(r *crouter) bool {
		if r.nodeState(t, key, n.addr) != "active" {
			return false
		}
		for i := 0; i < pools; i++ {
			if r.nodeState(t, fmt.Sprintf("p%d.cl-late.test", i), fmt.Sprintf("127.0.0.1:%d", 22000+i)) == "absent" {
				return false
			}
		}
		return true
	}

	t0 := time.Now()
	d := startClusterRouter(t, "d", "", []*crouter{b})
	took := converge(t, t0, 15*time.Second, "everything at the late joiner", []*crouter{d}, hasAll)
	t.Logf("late joiner d: started and has all %d pools after %s", pools+1, took.Round(time.Millisecond))
	if code, body := get(t, client(), d.http, key, "/"); code != 200 || body != "node=l" {
		t.Fatalf("GET via d: %d %q", code, body)
	}
	waitMembers(t, 20*time.Second, 4, a, b, c, d)

	// kill -9 c: the others drop it from membership.
	t0 = time.Now()
	syscall.Kill(c.pid(), syscall.SIGKILL)
	c.wait(t, 5*time.Second)
	took = waitMembers(t, 60*time.Second, 3, a, b, d)
	t.Logf("kill -9 of c: members 4 → 3 at a, b, d after %s", time.Since(t0).Round(time.Millisecond))
	_ = took

	// Restarted under the same name and address, c regains the state.
	t0 = time.Now()
	c2 := startClusterRouter(t, "c", c.bind, []*crouter{a})
	took = converge(t, t0, 15*time.Second, "everything at the restarted c", []*crouter{c2}, hasAll)
	t.Logf("restarted c: started and has all %d pools after %s", pools+1, took.Round(time.Millisecond))
	waitMembers(t, 30*time.Second, 4, a, b, c2, d)
	if code, body := get(t, client(), c2.http, key, "/"); code != 200 || body != "node=l" {
		t.Fatalf("GET via the restarted c: %d %q", code, body)
	}
}

// A node announcing to a only stays alive at b (announces travel), and
// when it falls silent it expires at both at about the same time.
func TestClusterRefreshKeepsNodeAliveEverywhere(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const tolerance = 3 * time.Second
	rs := startCluster(t, []string{"a", "b"}, "--subscription-tolerance", tolerance.String())
	a, b := rs[0], rs[1]
	const key = "cl-refresh.test"
	n := startNode(t, a.router, key, nodeOpts{id: "r"})
	converge(t, time.Now(), 10*time.Second, "the node everywhere", rs, func(r *crouter) bool {
		return r.nodeState(t, key, n.addr) == "active"
	})
	time.Sleep(3 * tolerance)
	if s := b.nodeState(t, key, n.addr); s != "active" {
		t.Fatalf("after 3× the tolerance of announces to a only, the node at b is %s; want active", s)
	}
	syscall.Kill(-n.pid(), syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(-n.pid(), syscall.SIGCONT) })
	t0 := time.Now()
	gone := map[string]time.Duration{}
	converge(t, t0, 20*time.Second, "the node expired everywhere", rs, func(r *crouter) bool {
		if r.nodeState(t, key, n.addr) == "absent" {
			if _, ok := gone[r.name]; !ok {
				gone[r.name] = time.Since(t0)
			}
			return true
		}
		return false
	})
	diff := gone["a"] - gone["b"]
	if diff < 0 {
		diff = -diff
	}
	t.Logf("silent node expired at a after %s, at b after %s", gone["a"].Round(time.Millisecond), gone["b"].Round(time.Millisecond))
	// Both expire from the same last-seen time; the expiry sweeps run every
	// tolerance/4 on each router independently.
	if diff > tolerance/4+500*time.Millisecond {
		t.Fatalf("expiry at a and b %s apart; want within one sweep (%s)", diff, tolerance/4)
	}
	_ = a
}

// A router frozen (SIGSTOP) long enough to be declared dead, then thawed,
// rejoins and catches up with what changed meanwhile (a partition that heals).
func TestClusterFrozenRouterRejoins(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	rs := startCluster(t, []string{"a", "b", "c"})
	a, b, c := rs[0], rs[1], rs[2]
	syscall.Kill(c.pid(), syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(c.pid(), syscall.SIGCONT) })
	t0 := time.Now()
	waitMembers(t, 60*time.Second, 2, a, b)
	t.Logf("frozen c dropped from membership after %s", time.Since(t0).Round(time.Millisecond))
	bare := startBareNode(t, "f")
	sendSub(t, a, sub("cl-frozen.test", bare.addr))
	converge(t, time.Now(), 10*time.Second, "the node at a and b", rs[:2], func(r *crouter) bool {
		return r.nodeState(t, "cl-frozen.test", bare.addr) == "active"
	})
	syscall.Kill(c.pid(), syscall.SIGCONT)
	t0 = time.Now()
	waitMembers(t, 60*time.Second, 3, a, b, c)
	converge(t, t0, 30*time.Second, "the node at the thawed c", []*crouter{c}, func(r *crouter) bool {
		return r.nodeState(t, "cl-frozen.test", bare.addr) == "active"
	})
	t.Logf("thawed c back in membership with the new node after %s", time.Since(t0).Round(time.Millisecond))
	if code, body := get(t, client(), c.http, "cl-frozen.test", "/"); code != 200 || body != "node=f" {
		t.Fatalf("GET via c: %d %q", code, body)
	}
}

// Routers sharing --cluster-secret-file form a cluster; one with another
// key cannot join it. Bad cluster flags exit 2.
func TestClusterSecret(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	dir := t.TempDir()
	key1 := filepath.Join(dir, "k1")
	key2 := filepath.Join(dir, "k2")
	os.WriteFile(key1, []byte("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"), 0o600) // base64 of 32 bytes
	os.WriteFile(key2, []byte("fedcba9876543210"), 0o600)                               // 16 raw bytes
	rs := startCluster(t, []string{"a", "b"}, "--cluster-secret-file", key1)
	x := startClusterRouter(t, "x", "", rs[:1], "--cluster-secret-file", key2)
	time.Sleep(3 * time.Second)
	if m := metricValue(t, x.router, "fastrouter_cluster_members"); m != 1 {
		t.Fatalf("router with another key: %v members; want 1 (alone)", m)
	}
	if m := metricValue(t, rs[0].router, "fastrouter_cluster_members"); m != 2 {
		t.Fatalf("a: %v members; want 2", m)
	}
	// A single router has no cluster metric at all.
	single := startRouter(t)
	if m := metricValue(t, single, "fastrouter_cluster_members"); m != -1 {
		t.Fatalf("single router exports fastrouter_cluster_members = %v", m)
	}

	short := filepath.Join(dir, "short")
	os.WriteFile(short, []byte("too short"), 0o600)
	for name, args := range map[string][]string{
		"bad key size":     {"--cluster-bind", "127.0.0.1:0", "--cluster-secret-file", short},
		"missing key file": {"--cluster-bind", "127.0.0.1:0", "--cluster-secret-file", filepath.Join(dir, "nope")},
		"join, no bind":    {"--cluster-join", "127.0.0.1:7946"},
		"hostname bind":    {"--cluster-bind", "localhost:7946"},
	} {
		code, _, stderr := runBinary(t, args...)
		if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%s: exit %d, stderr %q; want 2 and one line", name, code, stderr)
		}
	}
}

// After a SIGUSR2 binary upgrade the new process is a member under the
// same name with the same table, and keeps receiving the cluster's changes.
func TestClusterBinaryUpgrade(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "b.pid")
	a := startClusterRouter(t, "a", "", nil)
	b := startClusterRouter(t, "b", "", []*crouter{a}, "--pid-file", pidFile, "--shutdown-timeout", "5s")
	waitMembers(t, 20*time.Second, 2, a, b)
	n := startNode(t, a.router, "cl-up.test", nodeOpts{id: "u"})
	converge(t, time.Now(), 10*time.Second, "the node at b", []*crouter{b}, func(r *crouter) bool {
		return r.nodeState(t, "cl-up.test", n.addr) == "active"
	})
	eventually(t, 5*time.Second, "pid file", func() bool { return readPID(pidFile) == b.pid() })
	upgradeAndWait(t, pidFile, b.pid())
	if code, body := get(t, client(), b.http, "cl-up.test", "/"); code != 200 || body != "node=u" {
		t.Fatalf("GET via the upgraded b: %d %q", code, body)
	}
	eventually(t, 20*time.Second, "the upgraded b back in the cluster", func() bool {
		st := b.status(t)
		return len(st.Members) == 2
	})
	bare := startBareNode(t, "v")
	t0 := time.Now()
	sendSub(t, a, sub("cl-up2.test", bare.addr))
	d := converge(t, t0, 20*time.Second, "a new node at the upgraded b", []*crouter{b}, func(r *crouter) bool {
		return r.nodeState(t, "cl-up2.test", bare.addr) == "active"
	})
	t.Logf("subscribe at a reached the upgraded b after %s", d.Round(time.Millisecond))
}
