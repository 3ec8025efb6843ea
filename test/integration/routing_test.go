package integration

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Routing keys with real uWSGI nodes subscribing under each form: a wildcard,
// uWSGI's dotsplit form, mount points (host/path, longest prefix wins), the
// host's own pool, and --fallback-key for everything else.
func TestRoutingKeys(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--fallback-key", "fallback.keys.test")
	one := nodeOpts{processes: 1, threads: 1}
	for id, key := range map[string]string{
		"wild":     "*.wild.keys.test",
		"dot":      ".dot.keys.test",
		"host":     "app.keys.test",
		"api":      "app.keys.test/api",
		"apiv2":    "app.keys.test/api/v2",
		"fallback": "fallback.keys.test",
	} {
		o := one
		o.id = id
		startNode(t, r, key, o)
	}
	for _, key := range []string{"*.wild.keys.test", ".dot.keys.test", "app.keys.test", "app.keys.test/api", "app.keys.test/api/v2", "fallback.keys.test"} {
		waitForNodes(t, r, key, 1)
	}
	c := client()
	for _, tc := range []struct{ host, path, want string }{
		{"a.wild.keys.test", "/", "wild"},
		{"deep.er.wild.keys.test", "/", "wild"},
		{"wild.keys.test", "/", "fallback"}, // *.x does not match x itself
		{"x.dot.keys.test", "/", "dot"},
		{"A.DOT.keys.test:8080", "/", "dot"},
		{"app.keys.test", "/", "host"},
		{"app.keys.test", "/apix", "host"},
		{"app.keys.test", "/api", "api"},
		{"app.keys.test", "/api/users?id=1", "api"},
		{"App.Keys.Test:8080", "/api/users", "api"},
		{"app.keys.test", "/api/v2/users", "apiv2"},
		{"app.keys.test", "/api/v20", "api"},
		{"app.keys.test", "/%61pi/encoded", "api"},        // matched on the decoded path
		{"app.keys.test", "/api/v2/../v1/back", "api"},    // and after dot segments
		{"app.keys.test", "/static/../api/v2/x", "apiv2"}, // PATH_INFO the app sees
		{"unknown.test", "/", "fallback"},
	} {
		code, body, err := send(c, r.http, tc.host, tc.path, nil)
		if err != nil || code != 200 || nodeID(body) != tc.want {
			t.Errorf("Host %s path %s: %d %q %v; want node %s", tc.host, tc.path, code, body, err, tc.want)
		}
	}
	// The app behind a mount sees the full path (SCRIPT_NAME stays empty,
	// as with uWSGI's mountpoints).
	_, body, _ := send(c, r.http, "app.keys.test", "/api/env", nil)
	if !strings.Contains(body, `"PATH_INFO": "/api/env"`) || !strings.Contains(body, `"SCRIPT_NAME": ""`) {
		t.Errorf("mount app env: %s", body)
	}
}

// --max-inflight auto holds each node to the cores it announced plus one
// (a quarter, at least one): a burst of slow requests waits in the router's
// queue instead of in uWSGI's listen queue, every one is served, and the
// node never has more in flight than its workers and the one waiting for
// the next free worker. When the wait is too long, the client gets 503 +
// Retry-After.
func TestOverloadQueue(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "cap.overload.test"
	const short = "short.overload.test"
	cfg := filepath.Join(t.TempDir(), "fastrouter.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("pools:\n  %s:\n    queue-size: 2\n    queue-timeout: 300ms\n", short)), 0o644)
	r := startRouter(t, "--config", cfg, "--max-inflight", "auto", "--queue-timeout", "30s")
	n := startNode(t, r, key, nodeOpts{id: "capped", processes: 1, threads: 2})
	startNode(t, r, short, nodeOpts{id: "short", processes: 1, threads: 1})
	waitForNodes(t, r, key, 1)
	waitForNodes(t, r, short, 1)
	p := r.pool(t, key)
	if p.MaxInflight != "auto" || p.Nodes[0].Cores != 2 {
		t.Fatalf("pool %+v: want max_inflight auto and a node announcing 2 cores", p)
	}

	// Sample the node's in-flight count while 12 requests of 300 ms run.
	var peak, peakQueued atomic.Int64
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Add(1)
	go func() {
		defer sampler.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			p := r.pool(t, key)
			if nd := p.node(n.addr); nd != nil && int64(nd.Inflight) > peak.Load() {
				peak.Store(int64(nd.Inflight))
			}
			if int64(p.Queued) > peakQueued.Load() {
				peakQueued.Store(int64(p.Queued))
			}
		}
	}()
	c := &http.Client{Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	codes := make(chan int, 12)
	start := time.Now()
	for range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := send(c, r.http, key, "/slow?ms=300", nil)
			if err != nil {
				code = -1
			}
			codes <- code
		}()
	}
	wg.Wait()
	took := time.Since(start)
	close(stop)
	sampler.Wait()
	close(codes)
	for code := range codes {
		if code != 200 {
			t.Fatalf("a queued request got %d", code)
		}
	}
	t.Logf("12 × 300 ms on 2 workers: %s, peak in flight %d, peak queued %d", took, peak.Load(), peakQueued.Load())
	if peak.Load() > 3 {
		t.Fatalf("node had %d requests in flight; cap is its 2 cores + 1", peak.Load())
	}
	if peakQueued.Load() == 0 {
		t.Fatal("no request was ever queued")
	}

	// The short pool: 1 worker (cap 2), 2 queue places, 300 ms wait. Six
	// 1 s requests: one runs, one waits in uWSGI's listen queue for it, two
	// wait in the router's queue and time out, two find that queue full.
	var wg2 sync.WaitGroup
	type answer struct {
		code       int
		retryAfter string
	}
	answers := make(chan answer, 6)
	for i := range 6 {
		wg2.Add(1)
		go func() {
			defer wg2.Done()
			time.Sleep(time.Duration(i) * 30 * time.Millisecond) // the first one takes the worker
			req, _ := http.NewRequest("GET", "http://"+r.http+"/slow?ms=1000", nil)
			req.Host = short
			resp, err := c.Do(req)
			if err != nil {
				answers <- answer{code: -1}
				return
			}
			resp.Body.Close()
			answers <- answer{resp.StatusCode, resp.Header.Get("Retry-After")}
		}()
	}
	wg2.Wait()
	close(answers)
	got := map[int]int{}
	for a := range answers {
		got[a.code]++
		if a.code == 503 && a.retryAfter == "" {
			t.Error("503 without Retry-After")
		}
	}
	if got[200] != 2 || got[503] != 4 {
		t.Fatalf("short queue answers %v; want two 200 and four 503", got)
	}
	_, m := get(t, client(), r.admin, r.admin, "/metrics")
	for _, want := range []string{
		`fastrouter_overload_rejections_total{pool="short.overload.test",reason="queue_full"} 2`,
		`fastrouter_overload_rejections_total{pool="short.overload.test",reason="queue_timeout"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// An active uwsgi health check takes a node whose app answers 500 on the
// check path out of rotation before any client sees the error, and brings it
// back once it passes again.
func TestActiveHealthCheck(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const key = "checked.health.test"
	dir := t.TempDir()
	sick := filepath.Join(dir, "sick")
	cfg := filepath.Join(dir, "fastrouter.yaml")
	os.WriteFile(cfg, []byte(fmt.Sprintf(`pools:
  %s:
    health-check:
      path: /health
      interval: 200ms
      timeout: 200ms
      rise: 2
      fall: 2
`, key)), 0o644)
	r := startRouter(t, "--config", cfg)
	good := startNode(t, r, key, nodeOpts{id: "good", processes: 1, threads: 1})
	bad := startNode(t, r, key, nodeOpts{id: "bad", processes: 1, threads: 1, healthFail: sick})
	waitForNodes(t, r, key, 2)
	os.WriteFile(sick, nil, 0o644)
	marked := time.Now()
	eventually(t, 10*time.Second, "the sick node marked failed", func() bool {
		nd := r.pool(t, key).node(bad.addr)
		return nd != nil && nd.State == "failed" && !nd.Healthy
	})
	t.Logf("sick node out of rotation after %s", time.Since(marked))
	if nd := r.pool(t, key).node(good.addr); nd.State != "active" || !nd.Healthy {
		t.Fatalf("healthy node: %+v", nd)
	}
	c := client()
	for i := range 20 {
		if id := nodeID(mustSend(t, c, r.http, key, "/", nil)); id != "good" {
			t.Fatalf("request %d went to %q while it fails its checks", i, id)
		}
	}
	// The node keeps announcing: a refresh does not bring it back.
	time.Sleep(1500 * time.Millisecond)
	if nd := r.pool(t, key).node(bad.addr); nd.State != "failed" {
		t.Fatalf("after re-announces the sick node is %s", nd.State)
	}
	os.Remove(sick)
	eventually(t, 10*time.Second, "the node back in rotation", func() bool {
		nd := r.pool(t, key).node(bad.addr)
		return nd != nil && nd.State == "active" && nd.Healthy
	})
	seen := map[string]int{}
	for range 20 {
		seen[nodeID(mustSend(t, c, r.http, key, "/", nil))]++
	}
	if seen["bad"] == 0 || seen["good"] == 0 {
		t.Fatalf("after recovery: %v; want both nodes serving", seen)
	}
	_, m := get(t, client(), r.admin, r.admin, "/metrics")
	if !strings.Contains(m, `fastrouter_health_checks_total{pool="checked.health.test",result="fail"}`) {
		t.Error("no failed checks counted")
	}
}
