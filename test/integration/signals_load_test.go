package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// wrkResult is what wrk reports at the end of a run.
type wrkResult struct {
	requests                      int
	connect, read, write, timeout int // "Socket errors: connect N, read N, write N, timeout N"
	non2xx                        int // "Non-2xx or 3xx responses: N"
	out                           string
}

func (w wrkResult) errors() int { return w.connect + w.read + w.write + w.timeout + w.non2xx }

var (
	wrkRequests = regexp.MustCompile(`(\d+) requests in `)
	wrkSocket   = regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
)

func parseWrk(t *testing.T, out string) wrkResult {
	t.Helper()
	atoi := func(s string) int {
		n, err := strconv.Atoi(s)
		if err != nil {
			t.Fatalf("wrk output %q: %v", out, err)
		}
		return n
	}
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no request count in wrk's output:\n%s", out)
	}
	r := wrkResult{requests: atoi(m[1]), out: out}
	if m := wrkSocket.FindStringSubmatch(out); m != nil {
		r.connect, r.read, r.write, r.timeout = atoi(m[1]), atoi(m[2]), atoi(m[3]), atoi(m[4])
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		r.non2xx = atoi(m[1])
	}
	return r
}

// runWrk runs wrk with args against url for d, calls during once it has
// run for a second and a half, and returns wrk's counts.
func runWrk(t *testing.T, d time.Duration, during func(), args ...string) wrkResult {
	t.Helper()
	bin, err := exec.LookPath("wrk")
	if err != nil {
		t.Fatal("wrk not installed")
	}
	cmd := exec.Command(bin, append([]string{"-d", fmt.Sprintf("%ds", int(d.Seconds()))}, args...)...)
	done := make(chan struct{})
	var out []byte
	go func() { out, _ = cmd.CombinedOutput(); close(done) }()
	time.Sleep(1500 * time.Millisecond)
	during()
	select {
	case <-done:
	case <-time.After(d + 30*time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("wrk still running %s after its %s run:\n%s", d+30*time.Second, d, out)
	}
	r := parseWrk(t, string(out))
	t.Logf("wrk %v: %d requests, socket errors connect %d read %d write %d timeout %d, non-2xx %d",
		args[:len(args)-1], r.requests, r.connect, r.read, r.write, r.timeout, r.non2xx)
	return r
}

// stopOnClose is a wrk script for a client that stops sending on a
// connection the server answered "Connection: close" (as a load balancer
// takes a stopping router out of rotation). Run with as many threads as
// connections, stopping the thread stops just that connection; without it
// wrk would reconnect to a router that no longer listens, and count every
// refused connection as an error of the router's.
const stopOnClose = `response = function(status, headers, body)
  local c = headers["Connection"] or headers["connection"]
  if c and c:lower() == "close" then
    wrk.thread:stop()
  end
end
`

// SIGHUP (reloads that renew the listeners' servers), SIGUSR2 (a binary
// upgrade, then the new process) and SIGTERM while wrk holds 64 keep-alive
// connections on the router, with real uWSGI nodes: wrk counts no socket
// error (connect, read, write, timeout) and no failed response. At SIGTERM
// wrk stops a connection when told "Connection: close" (stopOnClose): every
// request it sent was answered, and none found its connection closed under
// it.
func TestSignalsUnderLoad(t *testing.T) {
	requireUWSGI(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fastrouter.yaml")
	write := func(s string) { t.Helper(); writeFileAtomic(t, cfg, []byte(s)) }
	write("timeout: 60s\n")
	script := filepath.Join(dir, "stop.lua")
	if err := os.WriteFile(script, []byte(stopOnClose), 0o644); err != nil {
		t.Fatal(err)
	}
	pidFile := filepath.Join(dir, "fastrouter.pid")
	r := startRouter(t, "--config", cfg, "--pid-file", pidFile, "--shutdown-timeout", "10s")
	for _, id := range []string{"a", "b"} {
		startNode(t, r, "load.test", nodeOpts{id: id, threads: 4})
	}
	waitForNodes(t, r, "load.test", 2)
	// 16 KiB bodies: a response takes several writes, so closes race with
	// bytes on the wire. wrk's --timeout counts a response slower than it
	// as an error: 10 s, as this machine is shared (a hung request still
	// shows).
	url := "http://" + r.http + "/download?size=16384&cl=1"
	load := []string{"-t8", "-c64", "--timeout", "10s", "-H", "Host: load.test", url}
	check := func(what string, w wrkResult) {
		t.Helper()
		if w.requests < 100 || w.errors() > 0 {
			t.Errorf("%s: %d requests, socket errors connect %d read %d write %d timeout %d, non-2xx %d; want 0 errors\n%s",
				what, w.requests, w.connect, w.read, w.write, w.timeout, w.non2xx, w.out)
		}
	}

	check("SIGHUP", runWrk(t, 6*time.Second, func() {
		for i, timeout := range []string{"30s", "45s", "60s"} {
			before := countLines(t, r.log, "configuration reloaded")
			write("timeout: " + timeout + "\n")
			if err := syscall.Kill(r.pid(), syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			eventually(t, 5*time.Second, fmt.Sprintf("reload %d", i), func() bool { return countLines(t, r.log, "configuration reloaded") > before })
			time.Sleep(time.Second)
		}
	}, load...))

	var next int
	check("SIGUSR2", runWrk(t, 8*time.Second, func() {
		next = upgradeAndWait(t, pidFile, r.pid())
	}, load...))

	var exited time.Duration
	check("SIGTERM", runWrk(t, 10*time.Second, func() {
		start := time.Now()
		if err := syscall.Kill(next, syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "the upgraded router to exit", func() bool { return gone(next) })
		exited = time.Since(start)
	}, "-t64", "-c64", "--timeout", "10s", "-s", script, "-H", "Host: load.test", url))
	t.Logf("the router exited %s after SIGTERM under load", exited.Round(time.Millisecond))
}
