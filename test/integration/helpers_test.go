// Package integration drives the real fastrouter binary against real uWSGI
// 2.0 nodes (Debian's uwsgi-core + uwsgi-plugin-python3) that join by
// --subscribe-to. Everything listens on loopback; every process is killed
// in cleanup; every wait is bounded.
package integration

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var (
	binary  string // the fastrouter binary built by TestMain
	appPath string // test/apps/app.py
)

func TestMain(m *testing.M) {
	os.Exit(testMain(m))
}

func testMain(m *testing.M) int {
	// go test runs a package's tests in its directory: the module root is
	// two levels up (test/integration). runtime.Caller would break under
	// -trimpath.
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	root := filepath.Join(wd, "..", "..")
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		fmt.Fprintf(os.Stderr, "module root not found from %s: %v\n", wd, err)
		return 1
	}
	appPath = filepath.Join(root, "test", "apps", "app.py")
	dir, err := os.MkdirTemp("", "fastrouter-it-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	binary = filepath.Join(dir, "fastrouter")
	cmd := exec.Command("go", "build", "-o", binary, "./cmd/fastrouter")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building fastrouter: %v\n%s", err, out)
		return 1
	}
	return m.Run()
}

// skipIfDisabled skips a test that starts processes when
// FASTROUTER_SKIP_INTEGRATION=1.
func skipIfDisabled(t *testing.T) {
	t.Helper()
	if os.Getenv("FASTROUTER_SKIP_INTEGRATION") == "1" {
		t.Skip("FASTROUTER_SKIP_INTEGRATION=1")
	}
}

// requireUWSGI fails the test when uWSGI is missing: CI installs it, so a
// missing uWSGI is a broken setup, not a reason to skip (unless
// FASTROUTER_SKIP_INTEGRATION=1).
func requireUWSGI(t *testing.T) {
	t.Helper()
	skipIfDisabled(t)
	if _, err := exec.LookPath("uwsgi"); err != nil {
		t.Fatal("uwsgi not installed (scripts/test.sh installs uwsgi-core and uwsgi-plugin-python3)")
	}
	if _, err := os.Stat("/usr/lib/uwsgi/plugins/python3_plugin.so"); err != nil {
		t.Fatal("uwsgi python3 plugin not installed (uwsgi-plugin-python3)")
	}
}

// freePort returns a TCP port free on 127.0.0.1 for a process the test
// starts to listen on. The check closes its listener before the process
// binds, so the port must be one nothing else takes meanwhile: a port the
// kernel hands out for ":0" is also what it hands out to outgoing
// connections, and on a machine busy with other tests one of those took it
// now and then (a uWSGI node or a CA that could not bind). So the port is
// drawn below the ephemeral range (ip_local_port_range), where only
// explicit binds go, and never twice in one test binary.
func freePort(t *testing.T) int {
	t.Helper()
	return pickPort(t, func(p int) bool {
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			ln.Close()
		}
		return err == nil
	})
}

// freeUDPPort is freePort for a UDP port.
func freeUDPPort(t *testing.T) int {
	t.Helper()
	return pickPort(t, func(p int) bool {
		c, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", p))
		if err == nil {
			c.Close()
		}
		return err == nil
	})
}

var (
	portsMu     sync.Mutex
	portsHanded = map[int]bool{}
)

// pickPort draws ports in [10000, the ephemeral range's start) until free
// says one is free and it was not handed out before.
func pickPort(t *testing.T, free func(int) bool) int {
	t.Helper()
	lo := 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if v, err := strconv.Atoi(f[0]); err == nil && v > 11000 {
				lo = v
			}
		}
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		p := 10000 + rand.IntN(lo-10000)
		if !portsHanded[p] && free(p) {
			portsHanded[p] = true
			return p
		}
	}
	t.Fatal("no free port below the ephemeral range after 1000 tries")
	return 0
}

// proc is a started process whose output goes to a log file that is printed
// when the test fails.
type proc struct {
	cmd  *exec.Cmd
	log  string
	done chan struct{}
	err  error // valid after done
}

func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), filepath.Base(name)+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &proc{cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { p.err = cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-p.done
		}
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("--- %s log (%s):\n%s", filepath.Base(name), strings.Join(args, " "), tail(b, 4000))
		}
	})
	return p
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("process %d did not exit within %s", p.pid(), d)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("wait: %v", p.err)
	return -1
}

type router struct {
	*proc
	http, admin, sub string
}

func startRouter(t *testing.T, extra ...string) *router {
	t.Helper()
	r := &router{
		http:  fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		admin: fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		sub:   fmt.Sprintf("127.0.0.1:%d", freeUDPPort(t)),
	}
	args := append([]string{"--http", r.http, "--admin", r.admin, "--subscription-server", r.sub, "--log-level", "debug"}, extra...)
	// The HTTP/1.1 event loop is on by default; FASTROUTER_TEST_H1LOOP=0
	// runs the routers on the goroutine path (--h1-event-loop=false).
	if os.Getenv("FASTROUTER_TEST_H1LOOP") == "0" {
		args = append(args, "--h1-event-loop=false")
	}
	r.proc = startProc(t, binary, args...)
	eventually(t, 5*time.Second, "router /healthz", func() bool {
		resp, err := http.Get("http://" + r.admin + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return r
}

// peakRSS is the router's VmHWM in bytes.
func (r *router) peakRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", r.pid()))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	t.Fatal("no VmHWM")
	return 0
}

type nodeJSON struct {
	Address  string    `json:"address"`
	Weight   int       `json:"weight"`
	State    string    `json:"state"`
	Inflight int       `json:"inflight"`
	Requests int       `json:"requests"`
	Failures int       `json:"failures"`
	LastSeen time.Time `json:"last_seen"`
	Cores    int       `json:"cores"`
	Healthy  bool      `json:"healthy"`
}

type poolJSON struct {
	Key         string     `json:"key"`
	Algo        string     `json:"algo"`
	MaxInflight string     `json:"max_inflight"`
	Queued      int        `json:"queued"`
	Nodes       []nodeJSON `json:"nodes"`
}

// node returns the node with address addr, or nil.
func (p *poolJSON) node(addr string) *nodeJSON {
	if p == nil {
		return nil
	}
	for i := range p.Nodes {
		if p.Nodes[i].Address == addr {
			return &p.Nodes[i]
		}
	}
	return nil
}

// pool fetches one pool from the admin API; nil when it does not exist.
func (r *router) pool(t *testing.T, key string) *poolJSON {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + r.admin + "/api/pools/" + url.PathEscape(key))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == 404 {
		return nil
	}
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("GET /api/pools/%s: %d %q", key, resp.StatusCode, b)
	}
	var p poolJSON
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return &p
}

// waitForNodes polls the admin API until pool key has exactly n nodes (n = 0:
// the pool is gone or empty).
func waitForNodes(t *testing.T, r *router, key string, n int) {
	t.Helper()
	eventually(t, 10*time.Second, fmt.Sprintf("%d nodes in pool %s", n, key), func() bool {
		p := r.pool(t, key)
		return (p == nil && n == 0) || (p != nil && len(p.Nodes) == n)
	})
}

type node struct {
	*proc
	addr string // the address the node announces (its --socket)
}

type nodeOpts struct {
	id         string
	weight     int    // --weight; 0 = not given
	unix       bool   // listen on a unix socket in a temp dir instead of TCP
	processes  int    // --processes; default 2
	threads    int    // --threads; default 2
	bufferSize int    // --buffer-size; default 32768
	socket     string // explicit --socket; default 127.0.0.1:<free port>
	healthFail string // /health answers 500 while this file exists
	slowFactor int    // /slow sleeps this many times its ms; 0 = 1
}

// startNode starts a uWSGI 2.0 node (master + workers) that subscribes to r
// under key, announcing every second.
//
// Signals (uWSGI 2.0 as packaged by Debian, see core/master.c master_loop,
// which maps them to kill_them_all and reap_them_all): with
// --die-on-term, SIGTERM and SIGINT both shut down and send the unsubscribe;
// without it SIGTERM is a brutal reload. SIGKILL of the process group sends
// nothing, SIGSTOP of the group silences the announces.
func startNode(t *testing.T, r *router, key string, o nodeOpts) *node {
	t.Helper()
	switch {
	case o.socket != "":
	case o.unix:
		o.socket = filepath.Join(t.TempDir(), "node.sock")
	default:
		o.socket = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	}
	if o.processes == 0 {
		o.processes = 2
	}
	if o.threads == 0 {
		o.threads = 2
	}
	if o.bufferSize == 0 {
		o.bufferSize = 32768
	}
	args := []string{
		"--plugin", "python3", "--master", "--socket", o.socket, "--wsgi-file", appPath,
		"--subscribe-to", r.sub + ":" + key, "--subscribe-freq", "1",
		"--processes", strconv.Itoa(o.processes), "--threads", strconv.Itoa(o.threads),
		"--die-on-term", "--env", "NODE_ID=" + o.id,
		"--buffer-size", strconv.Itoa(o.bufferSize), "--disable-logging",
	}
	if o.weight > 0 {
		args = append(args, "--weight", strconv.Itoa(o.weight))
	}
	if o.healthFail != "" {
		args = append(args, "--env", "HEALTH_FAIL_FILE="+o.healthFail)
	}
	if o.slowFactor > 0 {
		args = append(args, "--env", "SLOW_FACTOR="+strconv.Itoa(o.slowFactor))
	}
	return &node{proc: startProc(t, "uwsgi", args...), addr: o.socket}
}

// kill SIGKILLs the node's whole process group (no unsubscribe) and waits
// until its socket refuses connections, so that what follows does not race
// the kernel tearing the listener down.
func (n *node) kill(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(-n.pid(), syscall.SIGKILL)
	n.wait(t, 5*time.Second)
	eventually(t, 5*time.Second, "node process group to be gone", func() bool {
		return syscall.Kill(-n.pid(), 0) == syscall.ESRCH
	})
	network := "tcp"
	if strings.HasPrefix(n.addr, "/") {
		network = "unix"
	}
	eventually(t, 5*time.Second, "node socket to refuse connections", func() bool {
		c, err := net.DialTimeout(network, n.addr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
}

// stop shuts the node down the way an operator does (SIGINT: uWSGI sends
// its unsubscribe first, core/master.c kill_them_all), then waits for it to
// exit. uWSGI can take longer than any sensible wait to bury threaded
// workers on a loaded machine (its worker mercy is 60 s), and by then the
// unsubscribe has long been sent, so a node still alive after the grace is
// SIGKILLed and its socket awaited: callers depend on the unsubscribe and a
// free socket, not on how uWSGI's master ends.
func (n *node) stop(t *testing.T) {
	t.Helper()
	_ = syscall.Kill(n.pid(), syscall.SIGINT)
	select {
	case <-n.done:
		return
	case <-time.After(10 * time.Second):
	}
	t.Logf("uWSGI node %s still running 10s after SIGINT; SIGKILL", n.addr)
	n.kill(t)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// client does not reuse connections unless asked, and never hangs.
func client() *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
}

// get sends GET path with the given Host and returns status and body.
func get(t *testing.T, c *http.Client, addr, host, path string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+addr+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", host, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s%s body: %v", host, path, err)
	}
	return resp.StatusCode, string(b)
}
