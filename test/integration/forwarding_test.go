package integration

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// A node listening on a unix socket announces its path as address (uWSGI
// sends its socket name verbatim, core/subscription.c uwsgi_subscription_ub;
// balancer.ParseEndpoint reads anything that is not host:port as a path).
func TestUnixSocketNode(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n := startNode(t, r, "unix.test", nodeOpts{id: "u", unix: true})
	waitForNodes(t, r, "unix.test", 1)
	if p := r.pool(t, "unix.test"); p.node(n.addr) == nil {
		t.Fatalf("pool unix.test does not list %s: %+v", n.addr, p)
	}
	c := client()
	for i := 0; i < 5; i++ {
		if code, body := get(t, c, r.http, "unix.test", "/"); code != 200 || body != "node=u" {
			t.Fatalf("request %d: %d %q; want 200 node=u", i, code, body)
		}
	}
}

// uWSGI's --weight is announced in the subscription and drives wrr.
func TestWeightedSpread(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	heavy := startNode(t, r, "weight.test", nodeOpts{id: "heavy", weight: 3})
	startNode(t, r, "weight.test", nodeOpts{id: "light", weight: 1})
	waitForNodes(t, r, "weight.test", 2)
	if w := r.pool(t, "weight.test").node(heavy.addr); w == nil || w.Weight != 3 {
		t.Fatalf("heavy node in admin API: %+v; want weight 3", w)
	}
	c := client()
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		code, body := get(t, c, r.http, "weight.test", "/")
		if code != 200 {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		counts[body]++
	}
	if h := counts["node=heavy"]; h < 65 || h > 85 || h+counts["node=light"] != 100 {
		t.Fatalf("weights 3:1 over 100 requests: %v; want heavy in [65, 85]", counts)
	}
}

// The backend's own statuses pass through untouched: a 500 from the app is
// the app's answer, not a 502.
func TestBackendStatusPassthrough(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "status.test", nodeOpts{id: "s"})
	waitForNodes(t, r, "status.test", 1)
	c := client()
	for _, code := range []int{201, 404, 418, 500, 503} {
		got, body := get(t, c, r.http, "status.test", fmt.Sprintf("/status?code=%d", code))
		if got != code || body != "status" {
			t.Errorf("/status?code=%d: %d %q; want %d \"status\"", code, got, body, code)
		}
	}
}

// A backend slower than --timeout gets a 504 with a body, promptly.
func TestBackendTimeout504(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--timeout", "1500ms")
	startNode(t, r, "timeout.test", nodeOpts{id: "t"})
	waitForNodes(t, r, "timeout.test", 1)
	start := time.Now()
	resp, body := uwsgitest.Do(t, r.http, "GET /slow?ms=6000 HTTP/1.1\r\nHost: timeout.test\r\n\r\n")
	d := time.Since(start)
	if resp.StatusCode != 504 || body == "" {
		t.Fatalf("slow backend: %d %q; want 504 with a body", resp.StatusCode, body)
	}
	if d > 4500*time.Millisecond {
		t.Fatalf("504 after %s; --timeout is 1.5s", d)
	}
	// The router still serves the pool afterwards.
	if code, body := get(t, client(), r.http, "timeout.test", "/"); code != 200 || !strings.HasPrefix(body, "node=") {
		t.Fatalf("after the timeout: %d %q", code, body)
	}
}

// uWSGI's pause (SIGTSTP to the master) sends the unsubscribe, lets the
// workers finish their current request, then suspends them; a second
// SIGTSTP resumes and re-subscribes (uWSGI's core/master.c
// suspend_resume_them_all). The request in
// flight through the router must finish; new ones stop at once; the node
// comes back when it announces again.
func TestPausedNodeDrainsAndReturns(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n := startNode(t, r, "pause.test", nodeOpts{id: "p"})
	waitForNodes(t, r, "pause.test", 1)

	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		req, _ := http.NewRequest("GET", "http://"+r.http+"/slow?ms=1500", nil)
		req.Host = "pause.test"
		resp, err := client().Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{resp.StatusCode, string(b), err}
	}()
	eventually(t, 3*time.Second, "the slow request to be in flight", func() bool {
		nd := r.pool(t, "pause.test").node(n.addr)
		return nd != nil && nd.Inflight == 1
	})
	if err := syscall.Kill(n.pid(), syscall.SIGTSTP); err != nil {
		t.Fatal(err)
	}
	paused := true
	t.Cleanup(func() {
		if paused {
			syscall.Kill(n.pid(), syscall.SIGTSTP)
		}
	})
	// The unsubscribe datagram may land after a request sent at once, which
	// the paused node would hold: wait for the router to have let go of it.
	eventually(t, 3*time.Second, "the paused node to leave the pool or drain", func() bool {
		nd := r.pool(t, "pause.test").node(n.addr)
		return nd == nil || nd.State == "draining" || nd.State == "drained"
	})
	c := client()
	if code, body := get(t, c, r.http, "pause.test", "/"); code != 404 && code != 503 {
		t.Fatalf("new request after the unsubscribe: %d %q; want 404 or 503", code, body)
	}
	select {
	case res := <-done:
		if res.err != nil || res.code != 200 || res.body != "slow node=p" {
			t.Fatalf("request in flight during the unsubscribe: %d %q %v; want 200", res.code, res.body, res.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("request in flight during the unsubscribe did not finish")
	}

	if err := syscall.Kill(n.pid(), syscall.SIGTSTP); err != nil { // resume
		t.Fatal(err)
	}
	paused = false
	eventually(t, 5*time.Second, "the resumed node to serve again", func() bool {
		code, body := get(t, c, r.http, "pause.test", "/")
		return code == 200 && body == "node=p"
	})
}

// A backend that answers garbage, or closes without a byte, is a 502 with a
// body — never an empty reply — and the router keeps serving.
func TestBrokenBackend502(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	// Broken nodes that uWSGI cannot be made to be.
	garbage := uwsgitest.NewNode(t, uwsgitest.Reply("\x00\x01garbage that is not HTTP\r\n\r\n"))
	silent := uwsgitest.NewNode(t, uwsgitest.Silent())
	good := uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nfake"))
	r := startRouter(t, "--to", "garbage.test="+garbage.Addr(), "--to", "silent.test="+silent.Addr(), "--to", "good.test="+good.Addr())
	for _, host := range []string{"garbage.test", "silent.test"} {
		for i := 0; i < 2; i++ {
			resp, body := uwsgitest.Do(t, r.http, "GET / HTTP/1.1\r\nHost: "+host+"\r\n\r\n")
			if resp.StatusCode != 502 || body == "" {
				t.Errorf("%s, request %d: %d %q; want 502 with a body", host, i, resp.StatusCode, body)
			}
		}
	}
	if resp, body := uwsgitest.Do(t, r.http, "GET / HTTP/1.1\r\nHost: good.test\r\n\r\n"); resp.StatusCode != 200 || body != "fake" {
		t.Errorf("good.test: %d %q", resp.StatusCode, body)
	}
}

// When the router answers before it has read a request's body (no pool, no
// node, a node that failed mid-body), the unread body must never be parsed
// as the next request on that connection: the router either consumes it or
// closes the connection. Otherwise a body smuggles a request past whatever
// sits in front (HTTP desync).
func TestUnreadBodyNeverBecomesARequest(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	deadPort := freePort(t)
	r := startRouter(t, "--to", fmt.Sprintf("dead.test=127.0.0.1:%d", deadPort))
	startNode(t, r, "live.test", nodeOpts{id: "live"})
	waitForNodes(t, r, "live.test", 1)

	smuggled := "GET /env?SMUGGLED HTTP/1.1\r\nHost: live.test\r\nConnection: close\r\n\r\n"
	cases := []struct {
		name, host, path string
		pad              int
	}{
		{"no pool (404)", "nowhere.test", "/", 16384},
		{"no pool (404), larger body", "nowhere.test", "/", 40000},
		{"every node refused (502/503)", "dead.test", "/", 16384},
		{"every node refused (502/503), larger body", "dead.test", "/", 40000},
		// "/" never reads wsgi.input: uWSGI closes with the body unread.
		{"node stops reading the body", "live.test", "/", 1 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			body := strings.Repeat("x", tc.pad) + smuggled
			req := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", tc.path, tc.host, len(body), body)
			c, err := net.Dial("tcp", r.http)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			go io.WriteString(c, req) // the router may stop reading early
			_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
			out, _ := io.ReadAll(c) // until close, reset or the deadline
			if len(out) == 0 {
				t.Fatal("empty reply")
			}
			if strings.Contains(string(out), "SMUGGLED") {
				t.Fatalf("the request inside the body was served as a request of its own:\n%.300q…\n…%.300q",
					out, out[max(0, len(out)-300):])
			}
			t.Logf("answer: %q", firstLine(out))
		})
	}
}
