package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// logOf is what the process has written so far.
func logOf(p *proc) string {
	b, _ := os.ReadFile(p.log)
	return string(b)
}

// healthz GETs /healthz with a short deadline: status and body, or 0.
func healthz(addr string) (int, string) {
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/healthz")
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// fastrouter health asks a running router's /healthz: exit 0 when it
// serves (admin address from --admin, from --config, or on every
// interface asked on loopback), 1 when nothing answers.
func TestHealthSubcommand(t *testing.T) {
	t.Parallel()
	r := startRouter(t)
	if code, out, stderr := runBinary(t, "health", "--admin", r.admin); code != 0 || out != r.admin+": ok\n" {
		t.Errorf("health: exit %d, %q %q; want 0 and ok", code, out, stderr)
	}
	cfg := filepath.Join(t.TempDir(), "fr.yaml")
	os.WriteFile(cfg, []byte("admin: "+r.admin+"\n"), 0o644)
	if code, _, stderr := runBinary(t, "health", "--config", cfg); code != 0 {
		t.Errorf("health --config: exit %d, %s", code, stderr)
	}
	_, port, _ := net.SplitHostPort(r.admin)
	if code, _, stderr := runBinary(t, "health", "--admin", "0.0.0.0:"+port); code != 0 {
		t.Errorf("health --admin 0.0.0.0:PORT: exit %d, %s; want it asked on loopback", code, stderr)
	}
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	code, out, stderr := runBinary(t, "health", "--admin", dead, "--timeout", "2s")
	if code != 1 || out != "" || !strings.HasPrefix(stderr, "fastrouter health: "+dead+" unreachable: ") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("health of nothing: exit %d, %q %q; want 1 and one line", code, out, stderr)
	}
}

// On SIGTERM with --shutdown-delay, /healthz answers 503 "shutting down"
// at once while requests still get 200 for the delay; then the router
// drains and exits 0. fastrouter health says 1 meanwhile. The shutdown
// deadline counts after the delay.
func TestShutdownDelayFailsHealthzFirst(t *testing.T) {
	t.Parallel()
	node := uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"))
	const delay = 4 * time.Second
	r := startRouter(t, "--to", "d.test="+node.Addr(), "--shutdown-delay", delay.String(), "--shutdown-timeout", "5s")
	if code, body := healthz(r.admin); code != 200 || body != "ok" {
		t.Fatalf("/healthz before: %d %q", code, body)
	}
	start := time.Now()
	if err := syscall.Kill(r.pid(), syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	eventually(t, delay/2, "/healthz 503 after SIGTERM", func() bool {
		code, body := healthz(r.admin)
		return code == 503 && body == "shutting down"
	})
	seen503 := time.Since(start)
	// A client of the router, and a new connection, still get answers.
	if code, body := get(t, client(), r.http, "d.test", "/"); code != 200 || body != "ok" {
		t.Fatalf("request during the delay: %d %q", code, body)
	}
	if code, _, _ := runBinary(t, "health", "--admin", r.admin); code != 1 {
		t.Errorf("fastrouter health during the delay: exit %d; want 1", code)
	}
	served := time.Since(start)
	if served >= delay {
		t.Fatalf("the checks took %s, past the %s delay: the machine is too slow for this test's order", served, delay)
	}
	if code := r.wait(t, delay+10*time.Second); code != 0 {
		t.Fatalf("exit %d after the delay; want 0", code)
	}
	if took := time.Since(start); took < delay {
		t.Errorf("exited %s after SIGTERM; want the %s delay first", took, delay)
	}
	t.Logf("503 after %s, a request served at %s, exit after %s", seen503, served, time.Since(start))
	if log := logOf(r.proc); !strings.Contains(log, "shutting down: /healthz answers 503") {
		t.Errorf("the delay is not logged:\n%s", log)
	}
}

// Without a delay, /healthz answers 503 from the moment the shutdown
// starts, for as long as requests drain (the admin API serves to the end).
func TestHealthzDuringDrain(t *testing.T) {
	t.Parallel()
	node := holdNode(t, false) // never answers: the request stays in flight
	r := startRouter(t, "--to", "h.test="+node.Addr(), "--shutdown-timeout", "6s")
	c, err := net.Dial("tcp", r.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: h.test\r\n\r\n")
	eventually(t, 5*time.Second, "the request in flight", func() bool {
		p := r.pool(t, "h.test")
		return p != nil && len(p.Nodes) == 1 && p.Nodes[0].Inflight == 1
	})
	syscall.Kill(r.pid(), syscall.SIGTERM)
	eventually(t, 4*time.Second, "/healthz 503 while draining", func() bool {
		code, body := healthz(r.admin)
		return code == 503 && body == "shutting down"
	})
	if r.exited() {
		t.Fatal("exited before the drain's deadline")
	}
	r.wait(t, 15*time.Second)
}

// An admin listener beyond loopback without a token refuses to start
// with one line naming --admin-insecure; with it, it starts and warns.
func TestAdminInsecure(t *testing.T) {
	t.Parallel()
	port := freePort(t)
	args := []string{"--http", fmt.Sprintf("127.0.0.1:%d", freePort(t)), "--subscription-server", fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)),
		"--admin", fmt.Sprintf("0.0.0.0:%d", port)}
	code, _, stderr := runBinary(t, args...)
	if lines := strings.Split(strings.TrimSpace(stderr), "\n"); code != 2 || len(lines) != 1 || !strings.Contains(stderr, "--admin-insecure") {
		t.Fatalf("open admin: exit %d, %q; want exit 2, one line naming --admin-insecure", code, stderr)
	}
	p := startProc(t, binary, append(args, "--admin-insecure")...)
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	eventually(t, 5*time.Second, "router /healthz", func() bool { code, _ := healthz(admin); return code == 200 })
	eventually(t, 5*time.Second, "the warning", func() bool {
		return strings.Contains(logOf(p), `level=WARN msg="SECURITY WARNING: the admin API listens beyond loopback without --admin-token-file`)
	})
	syscall.Kill(p.pid(), syscall.SIGTERM)
	p.wait(t, 10*time.Second)
}

// A flood of subscriptions for new pools is not a flood of log lines:
// at info level the router writes the burst of "node joined" lines and
// then one line counting the ones it suppressed.
func TestSubscriptionFloodLogBounded(t *testing.T) {
	t.Parallel()
	r := startRouter(t, "--log-level", "info")
	c, err := net.Dial("udp", r.sub)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 3000
	for i := range n {
		sub := uwsgi.Subscription{Key: []byte(fmt.Sprintf("flood-%d.test", i)), Address: []byte("127.0.0.1:9")}
		if _, err := c.Write(uwsgi.AppendSubscription(nil, &sub)); err != nil {
			t.Fatal(err)
		}
		if i%200 == 199 {
			time.Sleep(5 * time.Millisecond) // stay within the socket buffer
		}
	}
	var applied int
	eventually(t, 10*time.Second, "the datagrams applied", func() bool {
		resp, err := http.Get("http://" + r.admin + "/api/pools")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		var pools []json.RawMessage
		json.NewDecoder(resp.Body).Decode(&pools)
		applied = len(pools)
		return applied >= n*9/10 // UDP: a few may drop, and are counted
	})
	// Every join is written or counted: the counts of the last ones come
	// with the next flush (every 5 s).
	var joined, suppressed int
	eventually(t, 15*time.Second, "every join written or counted", func() bool {
		joined, suppressed = 0, 0
		sc := bufio.NewScanner(strings.NewReader(logOf(r.proc)))
		for sc.Scan() {
			l := sc.Text()
			switch {
			case strings.Contains(l, `msg="node joined"`):
				joined++
			case strings.Contains(l, `msg="log lines suppressed" message="node joined"`):
				_, v, _ := strings.Cut(l, "suppressed=")
				k, _ := strconv.Atoi(strings.Fields(v)[0])
				suppressed += k
			}
		}
		return joined+suppressed >= applied
	})
	if joined > 250 || suppressed == 0 {
		t.Fatalf("%d join lines and %d suppressed for %d pools; want at most about the burst (100, then 10/s) written and the rest counted",
			joined, suppressed, applied)
	}
	t.Logf("%d pools: %d join lines written, %d suppressed", applied, joined, suppressed)
}

// With real uWSGI nodes: a node joining and leaving (its unsubscribe on
// shutdown) is one INFO line each, naming the pool, the node and the
// source; a request every node refused names the node in its access-log
// line.
func TestNodeEventsAndFailedNodeInLogs(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	access := filepath.Join(t.TempDir(), "access.log")
	dead := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := startRouter(t, "--log-level", "info", "--access-log", access, "--to", "dead.test="+dead)
	n := startNode(t, r, "ev.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "ev.test", 1)
	eventually(t, 5*time.Second, "the join line", func() bool {
		return strings.Contains(logOf(r.proc), `level=INFO msg="node joined" pool=ev.test node=`+n.addr+` source=datagram`)
	})
	n.stop(t) // uWSGI unsubscribes on shutdown
	eventually(t, 10*time.Second, "the leave line", func() bool {
		return strings.Contains(logOf(r.proc), `level=INFO msg="node left" pool=ev.test node=`+n.addr+` source=datagram reason=unsubscribe`)
	})
	if code, _ := get(t, client(), r.http, "dead.test", "/"); code != 502 {
		t.Fatalf("dead node: %d; want 502", code)
	}
	eventually(t, 5*time.Second, "the 502's access-log line", func() bool {
		b, _ := os.ReadFile(access)
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, `"status":502`) {
				return strings.Contains(l, `"node":"`+dead+`","upstream_connect":null`) && strings.Contains(l, `"user_agent":"Go-http-client/1.1"`)
			}
		}
		return false
	})
	if !strings.Contains(logOf(r.proc), `level=WARN msg="node failed" pool=dead.test node=`+dead+` reason=connect err=`) {
		t.Errorf("no WARN for the dead node:\n%s", logOf(r.proc))
	}
}
