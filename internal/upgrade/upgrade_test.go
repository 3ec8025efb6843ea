//go:build unix

package upgrade

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// The tests re-exec the test binary as the child: TestMain sees envChild
// and runs childMain instead of the tests.
const (
	envChild   = "UPGRADE_TEST_CHILD" // serve | exit2 | hang
	envTCP     = "UPGRADE_TEST_TCP"   // Listen("tcp", …) address, as configured
	envUDP     = "UPGRADE_TEST_UDP"   // ListenPacket("udp", …) address
	envUnix    = "UPGRADE_TEST_UNIX"  // optional Listen("unix", …) path
	envPIDFile = "UPGRADE_TEST_PIDFILE"

	// childLifetime bounds every child, whatever happens to the test.
	childLifetime = 60 * time.Second
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envChild); mode != "" {
		os.Exit(childMain(mode))
	}
	os.Exit(m.Run())
}

// info is what a server (parent or child) reports on GET /.
type info struct {
	PID     int      `json:"pid"`
	Child   bool     `json:"child"`
	TCPIno  uint64   `json:"tcp_ino"`  // inode of the listening socket: same inode, same socket
	UnixIno uint64   `json:"unix_ino"` // 0 without a unix listener
	Leaked  []string `json:"leaked"`   // hand-off variables still in the environment after New
}

// childMain is a tiny router: it takes over (or binds) a TCP listener, a
// UDP socket and optionally a unix listener, calls Ready, and serves
// GET / (info), GET /state (the state blob) and GET /upgrade (upgrade
// again, reply with the new pid, then stop serving), and answers each UDP
// datagram with "udp pid=N". It exits on SIGTERM, after /upgrade, or after
// childLifetime.
func childMain(mode string) int {
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "upgrade test child:", err); return 1 }
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	u, err := New(Config{Logger: log})
	if err != nil {
		return fail(err)
	}
	defer u.Close()
	if p := os.Getenv(envPIDFile); p != "" {
		if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
			return fail(err)
		}
	}
	switch mode {
	case "exit2":
		return 2
	case "hang":
		time.Sleep(childLifetime)
		return 0
	}
	var leaked []string
	for _, name := range envVars {
		if _, ok := os.LookupEnv(name); ok {
			leaked = append(leaked, name)
		}
	}
	ln, err := u.Listen("tcp", os.Getenv(envTCP))
	if err != nil {
		return fail(err)
	}
	pc, err := u.ListenPacket("udp", os.Getenv(envUDP))
	if err != nil {
		return fail(err)
	}
	var uln net.Listener
	if p := os.Getenv(envUnix); p != "" {
		if uln, err = u.Listen("unix", p); err != nil {
			return fail(err)
		}
	}
	if err := u.Ready(); err != nil {
		return fail(err)
	}
	me := info{PID: os.Getpid(), Child: u.IsChild(), Leaked: leaked}
	me.TCPIno, _ = sockIno(ln)
	if uln != nil {
		me.UnixIno, _ = sockIno(uln)
	}
	var state []byte
	if r := u.State(); r != nil {
		state, _ = io.ReadAll(r)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, childLifetime)
	defer cancel()
	handedOff := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(me) })
	mux.HandleFunc("/state", func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(state) })
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		uctx, cancel := context.WithTimeout(r.Context(), 20*time.Second)
		defer cancel()
		pid, err := u.Upgrade(uctx, fmt.Appendf(nil, "from %d", os.Getpid()))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Fprint(w, pid)
		once.Do(func() { close(handedOff) })
	})
	lns := []net.Listener{ln}
	if uln != nil {
		lns = append(lns, uln)
	}
	srv := serve(mux, lns...)
	go func() {
		buf := make([]byte, 1500)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = pc.WriteTo(fmt.Appendf(nil, "udp pid=%d", os.Getpid()), from)
		}
	}()
	select {
	case <-ctx.Done():
	case <-handedOff:
	}
	srv.drain() // stop accepting; finish the /upgrade response and anything accepted
	pc.Close()
	return 0
}

// server is an HTTP server that drains the way the router does: stop
// accepting, then let every accepted connection finish. (http.Server's
// Shutdown drops a connection whose request it reads after Shutdown began,
// which a client would see as EOF: not what a hand-off test can allow.)
type server struct {
	srv     *http.Server
	lns     []net.Listener
	serving sync.WaitGroup // one per Serve goroutine
	conns   atomic.Int64   // accepted and not yet closed
	once    sync.Once
}

func serve(h http.Handler, lns ...net.Listener) *server {
	s := &server{lns: lns}
	s.srv = &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				s.conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				s.conns.Add(-1)
			}
		},
	}
	for _, ln := range lns {
		s.serving.Go(func() { _ = s.srv.Serve(ln) })
	}
	return s
}

// drain closes the listeners, waits for Serve to return and for the
// accepted connections to finish (at most 5s), then closes the server. It
// reports whether it finished in time.
func (s *server) drain() (ok bool) {
	ok = true
	s.once.Do(func() {
		for _, ln := range s.lns {
			ln.Close()
		}
		deadline := time.Now().Add(5 * time.Second)
		done := make(chan struct{})
		go func() { s.serving.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			ok = false
		}
		for s.conns.Load() > 0 && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		ok = ok && s.conns.Load() == 0
		s.srv.Close()
	})
	return ok
}

// sockIno returns the inode of c's socket.
func sockIno(c any) (uint64, error) {
	rc, err := c.(syscall.Conn).SyscallConn()
	if err != nil {
		return 0, err
	}
	var st syscall.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = syscall.Fstat(int(fd), &st) }); err != nil {
		return 0, err
	}
	return uint64(st.Ino), serr
}

// parent is the test process acting as a running router.
type parent struct {
	u      *Upgrader
	ln     net.Listener
	pc     net.PacketConn
	uln    net.Listener // nil unless asked for
	unix   string       // unix listener path
	tcpIno uint64
	srv    *server
}

type parentOpts struct {
	mode         string // the child's envChild
	unix         bool
	readyTimeout time.Duration
	pidFile      string
}

func startParent(t *testing.T, o parentOpts) *parent {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := &parent{}
	env := append(os.Environ(),
		envChild+"="+o.mode, envTCP+"=127.0.0.1:0", envUDP+"=127.0.0.1:0", envPIDFile+"="+o.pidFile)
	if o.unix {
		// Short path: sun_path holds 108 bytes, t.TempDir can be longer.
		dir, err := os.MkdirTemp("", "upg")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		p.unix = filepath.Join(dir, "s")
		env = append(env, envUnix+"="+p.unix)
	}
	p.u, err = New(Config{Env: env, Executable: exe, Args: []string{"-test.run=^$"}, ReadyTimeout: o.readyTimeout})
	if err != nil {
		t.Fatal(err)
	}
	if p.u.IsChild() {
		t.Fatal("IsChild() = true in the test process")
	}
	if p.ln, err = p.u.Listen("tcp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if p.pc, err = p.u.ListenPacket("udp", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if o.unix {
		if p.uln, err = p.u.Listen("unix", p.unix); err != nil {
			t.Fatal(err)
		}
	}
	if p.tcpIno, err = sockIno(p.ln); err != nil {
		t.Fatal(err)
	}
	me := info{PID: os.Getpid(), TCPIno: p.tcpIno}
	lns := []net.Listener{p.ln}
	if p.uln != nil {
		lns = append(lns, p.uln)
	}
	p.srv = serve(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _ = json.NewEncoder(w).Encode(me) }), lns...)
	t.Cleanup(func() { p.stop(t); p.u.Close() })
	return p
}

// stop makes the parent stop accepting, drain and close its sockets, as the
// router does after a successful Upgrade. It must not hang: a listener
// whose descriptor went blocking during the hand-off would.
func (p *parent) stop(t *testing.T) {
	t.Helper()
	if !p.srv.drain() {
		t.Error("parent did not stop serving within 5s")
	}
	p.pc.Close()
}

func (p *parent) url(path string) string { return "http://" + p.ln.Addr().String() + path }

// killLater stops a released child (or grandchild) when the test ends.
func killLater(t *testing.T, pid int) {
	t.Cleanup(func() { _ = syscall.Kill(pid, syscall.SIGTERM) })
}

func newClient(unixPath string) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true} // a new connection (an accept) per request
	if unixPath != "" {
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", unixPath)
		}
	}
	return &http.Client{Transport: tr, Timeout: 5 * time.Second}
}

func get(c *http.Client, url string) ([]byte, error) {
	resp, err := c.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s: %s", resp.Status, b)
	}
	return b, err
}

func getInfo(t *testing.T, c *http.Client, url string) info {
	t.Helper()
	b, err := get(c, url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	var in info
	if err := json.Unmarshal(b, &in); err != nil {
		t.Fatalf("GET %s: %v (%q)", url, err, b)
	}
	return in
}

func upgrade(t *testing.T, u *Upgrader, state []byte) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	pid, err := u.Upgrade(ctx, state)
	if err != nil {
		t.Fatalf("Upgrade: %v", err)
	}
	killLater(t, pid)
	if pid <= 0 || pid == os.Getpid() {
		t.Fatalf("Upgrade pid = %d", pid)
	}
	return pid
}

// (1), (4): once the parent has stopped accepting, the child answers on the
// very same socket (same inode), TCP and unix alike; the unix path survives
// the parent closing its listener; the state blob arrives byte for byte; and
// the hand-off variables are gone from the child's environment.
func TestChildServesSameSocket(t *testing.T) {
	p := startParent(t, parentOpts{mode: "serve", unix: true})
	c, uc := newClient(""), newClient(p.unix)
	if got := getInfo(t, c, p.url("/")); got.PID != os.Getpid() {
		t.Fatalf("before Upgrade: pid %d answered; want the parent %d", got.PID, os.Getpid())
	}
	unixIno, err := sockIno(p.uln)
	if err != nil {
		t.Fatal(err)
	}
	state := make([]byte, 300<<10) // every byte value, several pages
	for i := range state {
		state[i] = byte(i * 7)
	}

	pid := upgrade(t, p.u, state)
	p.stop(t)

	got := getInfo(t, c, p.url("/"))
	want := info{PID: pid, Child: true, TCPIno: p.tcpIno, UnixIno: unixIno}
	if got.PID != want.PID || !got.Child || got.TCPIno != want.TCPIno || got.UnixIno != want.UnixIno || len(got.Leaked) > 0 {
		t.Errorf("after hand-off GET / = %+v; want %+v", got, want)
	}
	if _, err := os.Stat(p.unix); err != nil {
		t.Errorf("unix socket path after the parent closed its listener: %v", err)
	}
	if got := getInfo(t, uc, "http://unix/"); got.PID != pid {
		t.Errorf("over unix: pid %d answered; want the child %d", got.PID, pid)
	}
	b, err := get(c, p.url("/state"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, state) {
		t.Errorf("state: child got %d bytes, not the %d sent (or different content)", len(b), len(state))
	}
}

// (2): clients hammering the address through the hand-off and the parent's
// shutdown see no error at all: the socket is never unbound.
func TestNoConnectionRefusedDuringHandoff(t *testing.T) {
	p := startParent(t, parentOpts{mode: "serve"})
	c := newClient("")
	var (
		stop                atomic.Bool
		errs, fromParent    atomic.Int64
		fromChild, childPID atomic.Int64
		firstErr            atomic.Value
		wg                  sync.WaitGroup
	)
	for range 4 {
		wg.Go(func() {
			for !stop.Load() {
				b, err := get(c, p.url("/"))
				var in info
				if err == nil {
					err = json.Unmarshal(b, &in)
				}
				switch {
				case err != nil:
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err)
				case in.PID == os.Getpid():
					fromParent.Add(1)
				case int64(in.PID) == childPID.Load():
					fromChild.Add(1)
				}
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	childPID.Store(int64(upgrade(t, p.u, nil)))
	p.stop(t)
	deadline := time.Now().Add(10 * time.Second)
	for fromChild.Load() < 200 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	stop.Store(true)
	wg.Wait()
	t.Logf("answers: %d from the parent, %d from the child; %d errors", fromParent.Load(), fromChild.Load(), errs.Load())
	if n := errs.Load(); n > 0 {
		t.Errorf("%d requests failed during the hand-off; first: %v", n, firstErr.Load())
	}
	if fromParent.Load() == 0 || fromChild.Load() < 200 {
		t.Errorf("want answers from both: parent %d, child %d (want ≥200)", fromParent.Load(), fromChild.Load())
	}
}

// (3): the UDP socket is shared: after the parent closes its copy, a
// datagram sent to the parent's address reaches the child.
func TestUDPSocketHandedOff(t *testing.T) {
	p := startParent(t, parentOpts{mode: "serve"})
	addr := p.pc.LocalAddr().(*net.UDPAddr)
	pid := upgrade(t, p.u, nil)
	p.stop(t) // closes the parent's packet conn

	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := fmt.Sprintf("udp pid=%d", pid)
	buf := make([]byte, 100)
	// Loopback does not drop, but resend rather than trust it.
	for try := 0; ; try++ {
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
		n, err := c.Read(buf)
		if err == nil {
			if got := string(buf[:n]); got != want {
				t.Fatalf("reply %q; want %q", got, want)
			}
			return
		}
		if try == 10 {
			t.Fatalf("no reply from the child on %s: %v", addr, err)
		}
	}
}

// (5): a child that exits before Ready fails the Upgrade with its exit
// status, is reaped, and the parent keeps serving; a later Upgrade is tried
// afresh.
func TestChildExitsBeforeReady(t *testing.T) {
	p := startParent(t, parentOpts{mode: "exit2"})
	c := newClient("")
	for range 2 {
		pid, err := p.u.Upgrade(t.Context(), []byte("x"))
		const want = "upgrade: child exited before ready: exit status 2"
		if err == nil || err.Error() != want {
			t.Fatalf("Upgrade = %d, %v; want error %q", pid, err, want)
		}
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 2 {
			t.Errorf("Upgrade error %v does not wrap an *exec.ExitError with code 2", err)
		}
		if got := getInfo(t, c, p.url("/")); got.PID != os.Getpid() {
			t.Fatalf("after the failed Upgrade pid %d answered; want the parent", got.PID)
		}
	}
}

// (6): ReadyTimeout and ctx bound the wait; the hung child is killed and
// reaped; a concurrent Upgrade is refused.
func TestReadyTimeout(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startParent(t, parentOpts{mode: "hang", readyTimeout: 300 * time.Millisecond, pidFile: pidFile})
	start := time.Now()
	_, err := p.u.Upgrade(t.Context(), nil)
	elapsed := time.Since(start)
	if err == nil || !strings.Contains(err.Error(), "not ready after 300ms") {
		t.Fatalf("Upgrade error = %v; want it to say not ready after 300ms", err)
	}
	if elapsed < 300*time.Millisecond || elapsed > 5*time.Second {
		t.Errorf("Upgrade took %s with ReadyTimeout 300ms", elapsed)
	}
	assertReaped(t, pidFile)
	if got := getInfo(t, newClient(""), p.url("/")); got.PID != os.Getpid() {
		t.Errorf("after the timeout pid %d answered; want the parent", got.PID)
	}
}

func TestUpgradeContextAndConcurrency(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pid")
	p := startParent(t, parentOpts{mode: "hang", pidFile: pidFile}) // default 30s ReadyTimeout
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { _, err := p.u.Upgrade(ctx, nil); done <- err }()
	waitFile(t, pidFile) // the child is running: the Upgrade is in progress
	if _, err := p.u.Upgrade(t.Context(), nil); !errors.Is(err, ErrInProgress) {
		t.Errorf("concurrent Upgrade = %v; want ErrInProgress", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("cancelled Upgrade = %v; want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Upgrade did not return within 5s of ctx being cancelled")
	}
	assertReaped(t, pidFile)
}

func waitFile(t *testing.T, path string) []byte {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if b, err := os.ReadFile(path); err == nil && len(b) > 0 {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not written within 10s", path)
		}
	}
}

// assertReaped checks that the child whose pid is in pidFile is gone, not
// even a zombie: Upgrade killed it and waited for it.
func assertReaped(t *testing.T, pidFile string) {
	t.Helper()
	pid, err := strconv.Atoi(string(waitFile(t, pidFile)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("child %d after a failed Upgrade: kill(0) = %v; want ESRCH (killed and reaped)", pid, err)
	}
}

// (7): the child upgrades in turn, to a grandchild that serves the same
// sockets, receives the child's state and sees only fresh hand-off
// variables.
func TestChainOfUpgrades(t *testing.T) {
	p := startParent(t, parentOpts{mode: "serve", unix: true})
	c := newClient("")
	child := upgrade(t, p.u, []byte("from parent"))
	p.stop(t)

	b, err := get(c, p.url("/upgrade"))
	if err != nil {
		t.Fatalf("child's Upgrade: %v", err)
	}
	grandchild, err := strconv.Atoi(string(b))
	if err != nil {
		t.Fatalf("child's Upgrade replied %q", b)
	}
	killLater(t, grandchild)
	if grandchild == child || grandchild == os.Getpid() {
		t.Fatalf("grandchild pid %d (child %d)", grandchild, child)
	}
	// The child stops accepting right after replying; until then it may
	// still answer. Require the grandchild to answer several times running.
	for run, deadline := 0, time.Now().Add(10*time.Second); run < 5; {
		in := getInfo(t, c, p.url("/"))
		switch {
		case in.PID == grandchild:
			run++
			if !in.Child || in.TCPIno != p.tcpIno || len(in.Leaked) > 0 {
				t.Fatalf("grandchild GET / = %+v; want child=true, tcp_ino %d, nothing leaked", in, p.tcpIno)
			}
		case in.PID == child && time.Now().Before(deadline):
			run = 0
			time.Sleep(10 * time.Millisecond)
		default:
			t.Fatalf("pid %d answered; want the grandchild %d", in.PID, grandchild)
		}
	}
	if b, err := get(c, p.url("/state")); err != nil || string(b) != fmt.Sprintf("from %d", child) {
		t.Errorf("grandchild state = %q, %v; want %q", b, err, fmt.Sprintf("from %d", child))
	}
	if got := getInfo(t, newClient(p.unix), "http://unix/"); got.PID != grandchild {
		t.Errorf("over unix: pid %d answered; want the grandchild %d", got.PID, grandchild)
	}
}

// In-process tests: the hand-off environment is injected through
// Config.Env with descriptors this test makes.

// rawDup returns a new descriptor for c that the Upgrader under test will
// own (and close).
func rawDup(t *testing.T, c syscall.Conn) int {
	t.Helper()
	f, err := dupConn(c, "test")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := syscall.Dup(int(f.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	return fd
}

func TestInjectedHandoff(t *testing.T) {
	ln0, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln0.Close()
	pc0, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc0.Close()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	readyFD, err := syscall.Dup(int(w.Fd()))
	if err != nil {
		t.Fatal(err)
	}
	w.Close() // the Upgrader's descriptor is now the only write end
	sf, err := stateFile([]byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	stateFD, err := syscall.Dup(int(sf.Fd()))
	sf.Close()
	if err != nil {
		t.Fatal(err)
	}
	tcpFD, udpFD := rawDup(t, ln0.(syscall.Conn)), rawDup(t, pc0.(syscall.Conn))
	env := []string{
		"PATH=/bin",
		EnvReadyFD + "=" + strconv.Itoa(readyFD),
		EnvStateFD + "=" + strconv.Itoa(stateFD),
		EnvFDs + "=" + fmt.Sprintf("%d tcp %q; %d udp %q", tcpFD, "127.0.0.1:0", udpFD, "127.0.0.1:99999"),
	}
	u, err := New(Config{Env: env})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if !u.IsChild() {
		t.Fatal("IsChild() = false with a hand-off environment")
	}
	if b, _ := io.ReadAll(u.State()); string(b) != "hello" {
		t.Errorf("State() = %q; want %q", b, "hello")
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ino0, _ := sockIno(ln0)
	if ino, _ := sockIno(ln); ln.Addr().String() != ln0.Addr().String() || ino != ino0 {
		t.Errorf("Listen = %s (inode %d); want the inherited %s (inode %d)", ln.Addr(), ino, ln0.Addr(), ino0)
	}
	// The key is used up: the same key again binds afresh.
	ln2, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln2.Close()
	if ln2.Addr().String() == ln0.Addr().String() {
		t.Error("second Listen with the same key got the inherited socket again")
	}
	if err := u.Ready(); err != nil {
		t.Fatal(err)
	}
	if err := u.Ready(); err != nil {
		t.Errorf("second Ready = %v; want nil", err)
	}
	_ = r.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(r); err != nil || len(b) != 1 {
		t.Errorf("ready pipe read %q, %v; want one byte then EOF (pipe closed)", b, err)
	}
	// The unclaimed UDP descriptor was closed by Ready: the key now binds
	// afresh ("127.0.0.1:99999" does not resolve, so that fails).
	if _, err := u.ListenPacket("udp", "127.0.0.1:99999"); err == nil || strings.Contains(err.Error(), "inherited") {
		t.Errorf("ListenPacket of the unclaimed key after Ready = %v; want a fresh-bind error", err)
	}
}

func TestNewRejectsMalformedEnv(t *testing.T) {
	reg, err := os.CreateTemp(t.TempDir(), "reg")
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	regFD := strconv.Itoa(int(reg.Fd()))
	for _, tc := range []struct {
		name string
		env  []string
		want string
	}{
		{"fds without ready", []string{EnvFDs + "="}, "set without " + EnvReadyFD},
		{"state without ready", []string{EnvStateFD + "=5"}, "set without " + EnvReadyFD},
		{"ready not a number", []string{EnvReadyFD + "=x"}, "not a number"},
		{"ready is stdio", []string{EnvReadyFD + "=2"}, "below 3"},
		{"ready closed", []string{EnvReadyFD + "=987654"}, "bad file descriptor"},
		{"ready not a pipe", []string{EnvReadyFD + "=" + regFD}, "is a regular file, want a pipe"},
		{"fd twice", []string{EnvReadyFD + "=9", EnvStateFD + "=9"}, "fd listed twice"},
		{"fds garbage", []string{EnvReadyFD + "=9", EnvFDs + "=garbage"}, "entries"},
		{"fds unquoted", []string{EnvReadyFD + "=9", EnvFDs + "=10 tcp :80"}, "not a quoted string"},
		{"fds bad separator", []string{EnvReadyFD + "=9", EnvFDs + `=10 tcp ":80",11 tcp ":81"`}, "between entries"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := New(Config{Env: tc.env})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("New(%q) = %v, %v; want an error containing %q", tc.env, u, err, tc.want)
			}
		})
	}
	if _, err := reg.Stat(); err != nil {
		t.Errorf("New closed a descriptor it rejected: %v", err)
	}
}

func TestFDsRoundTrip(t *testing.T) {
	keys := []key{{"tcp", ":8080"}, {"udp", "127.0.0.1:0"}, {"unixgram", "/tmp/a b; 7 tcp \"x\"\x00\xff"}, {"unix", ""}}
	got, err := decodeFDs(encodeFDs(keys, 2))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(keys) {
		t.Fatalf("decoded %d entries; want %d", len(got), len(keys))
	}
	for i, e := range got {
		if e.fd != firstFD+2+i || e.key != keys[i] {
			t.Errorf("entry %d = %d %q; want %d %q", i, e.fd, e.key, firstFD+2+i, keys[i])
		}
	}
	if got, err := decodeFDs(""); err != nil || len(got) != 0 {
		t.Errorf(`decodeFDs("") = %v, %v; want none`, got, err)
	}
}

func TestStripEnv(t *testing.T) {
	env := []string{"A=1", EnvFDs + "=x", EnvReadyFD + "=3", EnvStateFD + "=4", "FASTROUTER_UPGRADE_FDSX=keep", "B="}
	if got, want := strings.Join(stripEnv(env), " "), "A=1 FASTROUTER_UPGRADE_FDSX=keep B="; got != want {
		t.Errorf("stripEnv = %q; want %q", got, want)
	}
}

// Handing a socket on must leave the caller's descriptor non-blocking: exec
// calls Fd on each ExtraFile, which would switch a (*TCPListener).File dup,
// and with it the shared listener, to blocking mode.
func TestDupKeepsListenerNonBlocking(t *testing.T) {
	u, err := New(Config{Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	closed, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	keys, files, _, err := u.dupSockets()
	if err != nil {
		t.Fatal(err)
	}
	defer closeFiles(files)
	if len(keys) != 1 {
		t.Fatalf("dupSockets handed on %d sockets; want 1 (the closed one forgotten)", len(keys))
	}
	_ = files[0].Fd() // what exec does
	rc, _ := ln.(syscall.Conn).SyscallConn()
	var flags int
	_ = rc.Control(func(fd uintptr) {
		r, _, _ := syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_GETFL, 0)
		flags = int(r)
	})
	if flags&syscall.O_NONBLOCK == 0 {
		t.Error("the caller's listener became blocking after its dup's Fd()")
	}
}

func TestCloseLeavesCallerSockets(t *testing.T) {
	u, err := New(Config{Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := u.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", ln.Addr().String(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial after Upgrader.Close: %v", err)
	}
	c.Close()
	if _, err := u.Upgrade(t.Context(), nil); !errors.Is(err, ErrClosed) {
		t.Errorf("Upgrade after Close = %v; want ErrClosed", err)
	}
	if err := u.Ready(); err != nil {
		t.Errorf("Ready on a non-child = %v; want nil", err)
	}
}
