package integration

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestNodeKilledUnderLoad: one of three real uWSGI nodes is killed with
// SIGKILL while a bounded stream of GETs runs. The requests it had read
// and not answered see their connections reset or closed before any byte
// of an answer, and go on to another node (docs/balancing.md, "Failures
// and retries"); the ones after it find its port refused and are retried
// as failed connects. No GET fails, beyond those whose answer had begun
// (a truncated body) when the node died.
func TestNodeKilledUnderLoad(t *testing.T) {
	requireUWSGI(t)
	r := startRouter(t)
	const key = "kill.test"
	nodes := []*node{
		startNode(t, r, key, nodeOpts{id: "a"}),
		startNode(t, r, key, nodeOpts{id: "b"}),
		startNode(t, r, key, nodeOpts{id: "c"}),
	}
	waitForNodes(t, r, key, 3)
	eventually(t, 10*time.Second, "every node answering", func() bool {
		seen := map[string]bool{}
		c := client()
		for i := 0; i < 12; i++ {
			if code, body, err := send(c, r.http, key, "/", nil); err == nil && code == 200 {
				seen[nodeID(body)] = true
			}
		}
		return len(seen) == 3
	})

	const total, workers, killAt = 1200, 8, 200
	var next, done, failed, truncated atomic.Int64
	var mu sync.Mutex
	var failures []string
	var wg sync.WaitGroup
	c := client()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				head, body, err := getSlow(c, r.http, key)
				switch {
				case head == 0:
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("no answer: %v", err))
					mu.Unlock()
				case err != nil:
					truncated.Add(1)
				case head != 200:
					failed.Add(1)
					mu.Lock()
					failures = append(failures, fmt.Sprintf("%d %q", head, body))
					mu.Unlock()
				}
				done.Add(1)
			}
		}()
	}
	eventually(t, 60*time.Second, fmt.Sprintf("%d requests done", killAt), func() bool { return done.Load() >= killAt })
	t.Logf("killing node a after %d requests", done.Load())
	nodes[0].kill(t)
	t.Logf("node a gone after %d requests", done.Load())
	wg.Wait()

	closed := metricValue(t, r, `fastrouter_backend_errors_total{pool="`+key+`",reason="closed"}`)
	t.Logf("%d GETs: %d failed, %d truncated; requests retried after node a closed without answering: %v",
		total, failed.Load(), truncated.Load(), closed)
	if failed.Load() > truncated.Load() {
		t.Fatalf("%d GETs failed (more than the %d whose answer had begun): %v", failed.Load(), truncated.Load(), failures)
	}
	if failed.Load() > 0 {
		t.Errorf("%d GETs failed: %v", failed.Load(), failures)
	}
}

// getSlow GETs /slow?ms=20 of host: status 0 when no response head came.
// err is set when the body was cut short.
func getSlow(c *http.Client, addr, host string) (int, string, error) {
	req, err := http.NewRequest("GET", "http://"+addr+"/slow?ms=20", nil)
	if err != nil {
		return 0, "", err
	}
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
