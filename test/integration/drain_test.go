package integration

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func adminPost(t *testing.T, r *router, path, body string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+r.admin+path, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A node drained through the admin API finishes its slow requests with 200
// while every new request goes to the other node; it then reports drained.
func TestDrainFinishesInFlightAndStopsNewRequests(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	a := startNode(t, r, "drain.test", nodeOpts{id: "a", processes: 4})
	startNode(t, r, "drain.test", nodeOpts{id: "b", processes: 4})
	waitForNodes(t, r, "drain.test", 2)

	type result struct {
		code int
		body string
	}
	var wg sync.WaitGroup
	results := make(chan result, 8)
	for i := 0; i < 4; i++ { // smooth WRR over two equal nodes: two land on a
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, body := get(t, client(), r.http, "drain.test", "/slow?ms=1500")
			results <- result{code, body}
		}()
	}
	eventually(t, 5*time.Second, "slow requests in flight on node a", func() bool {
		n := r.pool(t, "drain.test").node(a.addr)
		return n != nil && n.Inflight > 0
	})
	path := "/api/pools/drain.test/nodes/" + url.PathEscape(a.addr)
	if code, body := adminPost(t, r, path+"/drain", `{"timeout":"30s"}`); code != 202 {
		t.Fatalf("drain: %d %s", code, body)
	}
	if st := r.pool(t, "drain.test").node(a.addr).State; st != "draining" {
		t.Fatalf("state right after drain: %s; want draining", st)
	}
	for i := 0; i < 20; i++ {
		if code, body := get(t, client(), r.http, "drain.test", "/"); code != 200 || body != "node=b" {
			t.Fatalf("new request %d during the drain: %d %q; want 200 node=b", i, code, body)
		}
	}
	wg.Wait()
	close(results)
	onA := 0
	for res := range results {
		if res.code != 200 {
			t.Fatalf("slow request: %d %q; want 200", res.code, res.body)
		}
		if res.body == "slow node=a" {
			onA++
		}
	}
	if onA == 0 {
		t.Fatal("no slow request ran on the drained node; the test proved nothing")
	}
	eventually(t, 3*time.Second, "node a drained", func() bool {
		return r.pool(t, "drain.test").node(a.addr).State == "drained"
	})
	// Sticky: the node keeps announcing every second and stays drained.
	time.Sleep(1500 * time.Millisecond)
	if st := r.pool(t, "drain.test").node(a.addr).State; st != "drained" {
		t.Fatalf("after further announces: %s; want drained (sticky)", st)
	}
	if code, _ := adminPost(t, r, path+"/undrain", ""); code != 200 {
		t.Fatalf("undrain: %d", code)
	}
	seen := map[string]bool{}
	for i := 0; i < 10; i++ {
		_, body := get(t, client(), r.http, "drain.test", "/")
		seen[body] = true
	}
	if !seen["node=a"] {
		t.Fatalf("undrained node gets no traffic: %v", seen)
	}
	resp, err := http.Get("http://" + r.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `fastrouter_drains_total{result="completed"} 1`) {
		t.Fatalf("drain not counted:\n%s", grep(string(m), "drains_total"))
	}
}

// A restarted router with --state-file routes at once, before any node
// re-announces.
func TestRestartRoutesFromStateFile(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	state := t.TempDir() + "/state.json"
	r := startRouter(t, "--state-file", state)
	n := startNode(t, r, "state.test", nodeOpts{id: "s"})
	waitForNodes(t, r, "state.test", 1)
	// Stop the node's master (and so its announces); its workers keep
	// accepting on the inherited socket.
	syscall.Kill(n.pid(), syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(n.pid(), syscall.SIGCONT) })
	r.cmd.Process.Signal(syscall.SIGTERM)
	if code := r.wait(t, 10*time.Second); code != 0 {
		t.Fatalf("router exit %d", code)
	}
	r2 := startRouter(t, "--state-file", state)
	code, body := get(t, client(), r2.http, "state.test", "/")
	if code != 200 || body != "node=s" {
		t.Fatalf("first request after restart: %d %q; want 200 node=s from the state file", code, body)
	}
}

// A rolling deploy of three nodes under constant concurrent load: for each
// node, drain it, wait for drained, stop it, start the new version on the
// same address, wait for it to be active. Not one request may fail.
func TestRollingDeployUnderLoadLosesNothing(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--drain-timeout", "20s")
	nodes := make([]*node, 3)
	for i := range nodes {
		nodes[i] = startNode(t, r, "roll.test", nodeOpts{id: fmt.Sprintf("v1-%d", i)})
	}
	waitForNodes(t, r, "roll.test", 3)

	var (
		mu       sync.Mutex
		total    int
		failures []string
		versions = map[string]int{}
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 6; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second}
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+r.http+"/slow?ms=20", nil)
				req.Host = "roll.test"
				resp, err := c.Do(req)
				var code int
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
					resp.Body.Close()
					code = resp.StatusCode
				}
				mu.Lock()
				total++
				if err != nil || code != 200 {
					failures = append(failures, fmt.Sprintf("%d %v %.60q", code, err, body))
				} else {
					versions[strings.TrimPrefix(string(body), "slow node=")]++
				}
				mu.Unlock()
			}
		}()
	}

	start := time.Now()
	for i, old := range nodes {
		path := "/api/pools/roll.test/nodes/" + url.PathEscape(old.addr)
		began := time.Now()
		if code, body := adminPost(t, r, path+"/drain", ""); code != 202 {
			t.Fatalf("drain node %d: %d %s", i, code, body)
		}
		eventually(t, 20*time.Second, fmt.Sprintf("node %d drained", i), func() bool {
			n := r.pool(t, "roll.test").node(old.addr)
			return n != nil && n.State == "drained"
		})
		t.Logf("node %d drained in %s", i, time.Since(began).Round(time.Millisecond))
		old.stop(t) // uWSGI unsubscribes on shutdown
		nodes[i] = startNode(t, r, "roll.test", nodeOpts{id: fmt.Sprintf("v2-%d", i), socket: old.addr})
		eventually(t, 10*time.Second, fmt.Sprintf("new node %d active", i), func() bool {
			n := r.pool(t, "roll.test").node(old.addr)
			return n != nil && n.State == "active"
		})
	}
	time.Sleep(300 * time.Millisecond) // traffic on the new version only
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	t.Logf("rolling deploy of 3 nodes took %s: %d requests, %d failed, served by %v",
		time.Since(start).Round(time.Millisecond), total, len(failures), versions)
	if len(failures) > 0 {
		t.Fatalf("%d of %d requests failed, first: %s", len(failures), total, failures[0])
	}
	if total < 200 {
		t.Fatalf("only %d requests during the deploy; the test proved little", total)
	}
	for i := 0; i < 3; i++ {
		if versions[fmt.Sprintf("v2-%d", i)] == 0 {
			t.Errorf("new version v2-%d served nothing", i)
		}
	}
}
