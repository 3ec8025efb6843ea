package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
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
	nodes := startAnsweringNodes(t, r, key)

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

// TestNodeKilledUnderLoadEveryFront: as TestNodeKilledUnderLoad, with the
// GETs coming through the uwsgi front (as from nginx uwsgi_pass) and, on
// the HTTP front, with a body the router buffers (over the 16 KiB that go
// with the head, under --request-buffering). Both go on to another node
// when the killed one had read them and not answered, or refuses the
// connect: no GET fails, and the retried body arrives whole.
func TestNodeKilledUnderLoadEveryFront(t *testing.T) {
	requireUWSGI(t)
	uw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--uwsgi", uw)
	const key = "killfront.test"
	nodes := startAnsweringNodes(t, r, key)

	body := strings.Repeat("b", 20_000)
	wantBody := regexp.MustCompile(`^20000 bytes, slow node=[abc]$`)
	wantBare := regexp.MustCompile(`^slow node=[abc]$`)
	const total, workers, killAt = 800, 8, 150
	var next, done atomic.Int64
	var mu sync.Mutex
	var failures []string
	fail := func(s string) {
		mu.Lock()
		failures = append(failures, s)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	c := client()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if w%2 == 0 {
					if resp, err := uwsgiFrontGet(uw, key, "/slow", "ms=20"); err != nil {
						fail(fmt.Sprintf("uwsgi front: %v", err))
					} else if !strings.HasPrefix(resp, "HTTP/1.1 200 ") || !wantBare.MatchString(resp[strings.Index(resp, "\r\n\r\n")+4:]) {
						fail(fmt.Sprintf("uwsgi front: %q", resp))
					}
				} else {
					req, _ := http.NewRequest("GET", "http://"+r.http+"/slow?ms=20", strings.NewReader(body))
					req.Host = key
					resp, err := c.Do(req)
					if err != nil {
						fail(fmt.Sprintf("GET with a body: %v", err))
					} else {
						b, err := io.ReadAll(resp.Body)
						resp.Body.Close()
						if err != nil || resp.StatusCode != 200 || !wantBody.Match(b) {
							fail(fmt.Sprintf("GET with a body: %d %q %v", resp.StatusCode, b, err))
						}
					}
				}
				done.Add(1)
			}
		}()
	}
	eventually(t, 60*time.Second, fmt.Sprintf("%d requests done", killAt), func() bool { return done.Load() >= killAt })
	nodes[0].kill(t)
	t.Logf("node a killed after %d requests", done.Load())
	wg.Wait()

	closed := metricValue(t, r, `fastrouter_backend_errors_total{pool="`+key+`",reason="closed"}`)
	t.Logf("%d GETs, %d failed; node a closed %v requests without answering", total, len(failures), closed)
	if len(failures) > 0 {
		t.Errorf("%d GETs failed: %v", len(failures), failures)
	}
}

// uwsgiFrontGet sends a GET of path?query for host to the uwsgi front at
// addr, as nginx's uwsgi_pass would, and returns the whole answer.
func uwsgiFrontGet(addr, host, path, query string) (string, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	p := uwsgitest.Packet("REQUEST_METHOD", "GET", "REQUEST_URI", path+"?"+query, "PATH_INFO", path,
		"QUERY_STRING", query, "SERVER_PROTOCOL", "HTTP/1.1", "HTTP_HOST", host, "SERVER_NAME", host)
	if _, err := conn.Write(p); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	return string(b), err
}

// startAnsweringNodes starts three uWSGI nodes a, b and c in pool key and
// returns once each has answered a request through r.
func startAnsweringNodes(t *testing.T, r *router, key string) []*node {
	t.Helper()
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
	return nodes
}
