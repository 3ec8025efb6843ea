package integration

import (
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
