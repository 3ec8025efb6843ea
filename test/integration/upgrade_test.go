package integration

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// readPID reads a --pid-file; 0 when it is missing or torn.
func readPID(path string) int {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// gone reports whether pid has exited (or is a zombie nobody reaped yet:
// the upgraded child's parent is init, which may be slow to reap).
func gone(pid int) bool {
	if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
		return true
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return true
	}
	// pid (comm) S …: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i >= 0 && i+2 < len(s) && s[i+2] == 'Z'
}

// upgradeAndWait sends SIGUSR2 to pid and waits until the pid file names a
// new process and the old one has exited. It returns the new pid.
func upgradeAndWait(t *testing.T, pidFile string, pid int) int {
	t.Helper()
	if err := syscall.Kill(pid, syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	var next int
	eventually(t, 15*time.Second, "the pid file names the new process", func() bool {
		next = readPID(pidFile)
		return next != 0 && next != pid
	})
	t.Cleanup(func() {
		// The upgraded process is not the test's child: stop it here.
		if !gone(next) {
			syscall.Kill(next, syscall.SIGKILL)
		}
	})
	eventually(t, 15*time.Second, "the old process exits after draining", func() bool { return gone(pid) })
	return next
}

// A binary upgrade (SIGUSR2) under constant keep-alive load, twice in a row
// (the new process upgrades in turn), fails no request, and the new process
// routes at once with the table the old one handed over (no state file).
func TestBinaryUpgradeUnderLoad(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	pidFile := filepath.Join(t.TempDir(), "fastrouter.pid")
	r := startRouter(t, "--pid-file", pidFile, "--shutdown-timeout", "10s")
	startNode(t, r, "up.test", nodeOpts{id: "a"})
	startNode(t, r, "up.test", nodeOpts{id: "b"})
	waitForNodes(t, r, "up.test", 2)
	pid := readPID(pidFile)
	if pid != r.pid() {
		t.Fatalf("pid file says %d, router is %d", pid, r.pid())
	}

	var ok, failed atomic.Int64
	var firstErr atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer c.CloseIdleConnections()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", "http://"+r.http+"/slow?ms=5", nil)
				req.Host = "up.test"
				resp, err := c.Do(req)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.HasPrefix(string(b), "slow node=") {
						err = fmt.Errorf("%d %q", resp.StatusCode, b)
					}
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					continue
				}
				ok.Add(1)
			}
		}()
	}

	time.Sleep(time.Second)
	before := ok.Load()
	start := time.Now()
	next := upgradeAndWait(t, pidFile, pid)
	if code := r.wait(t, 5*time.Second); code != 0 {
		t.Errorf("old process exit code %d, want 0", code)
	}
	first := time.Since(start)
	// The new process has the nodes before any re-announce could matter.
	if p := r.pool(t, "up.test"); len(p.Nodes) != 2 {
		t.Errorf("after the upgrade the pool has %d nodes, want 2", len(p.Nodes))
	}
	time.Sleep(time.Second)
	start = time.Now()
	third := upgradeAndWait(t, pidFile, next)
	second := time.Since(start)
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()

	t.Logf("requests: %d ok, %d failed (%d before the first upgrade); upgrade+drain took %s and %s; pids %d → %d → %d",
		ok.Load(), failed.Load(), before, first.Round(time.Millisecond), second.Round(time.Millisecond), pid, next, third)
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed during the upgrades; first: %v", failed.Load(), firstErr.Load())
	}
	if ok.Load() < 300 {
		t.Fatalf("only %d requests completed; the load did not run", ok.Load())
	}
	// Subscriptions reach the newest process: a third node joins.
	startNode(t, r, "up.test", nodeOpts{id: "c"})
	waitForNodes(t, r, "up.test", 3)
}

// An upgrade whose new process cannot start (here: the config file turned
// bad) is refused with a clear log line; the running router keeps serving.
func TestBinaryUpgradeFailureKeepsServing(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fastrouter.yaml")
	if err := os.WriteFile(cfg, []byte("algo: wrr\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := startRouter(t, "--config", cfg)
	startNode(t, r, "keep.test", nodeOpts{id: "k"})
	waitForNodes(t, r, "keep.test", 1)
	if err := os.WriteFile(cfg, []byte("algo: [nonsense\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(r.pid(), syscall.SIGUSR2); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "upgrade failure logged", func() bool {
		b, _ := os.ReadFile(r.log)
		return strings.Contains(string(b), "upgrade failed; this process keeps serving")
	})
	if r.exited() {
		t.Fatal("the router exited after a failed upgrade")
	}
	if code, body := get(t, client(), r.http, "keep.test", "/"); code != 200 || body != "node=k" {
		t.Fatalf("after the failed upgrade: %d %q", code, body)
	}
}
