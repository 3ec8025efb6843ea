package main

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/upgrade"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// logBuffer is a log sink that the components' goroutines may write to
// while the test reads it.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func freeTCP(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func freeUDP(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// testApp is an app for args on top of fresh loopback addresses for the
// HTTP front, the admin API and the subscription server (later flags win),
// logging to the returned buffer at debug level.
func testApp(t *testing.T, args ...string) (*app, *logBuffer) {
	t.Helper()
	base := []string{"--http", freeTCP(t), "--admin", freeTCP(t), "--subscription-server", freeUDP(t)}
	o, _, err := parseArgs(append(base, args...))
	if err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	level := new(slog.LevelVar)
	level.Set(slog.LevelDebug)
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: level}))
	up, err := upgrade.New(upgrade.Config{Logger: log, Env: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { up.Close() })
	return newApp(o, log, level, up), logs
}

// ours matches the stack of a goroutine running this module's code.
var ours = regexp.MustCompile(`github\.com/fastrouter/fastrouter/(accesslog|admin|balancer|cluster|health|lifecycle|router|stats|subauth|subscription|tls)\.`)

// waitNoGoroutines fails unless every goroutine of the components has
// returned within a few seconds.
func waitNoGoroutines(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		var left []string
		for _, g := range strings.Split(string(buf), "\n\n") {
			if ours.MatchString(g) {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines of the components still run:\n%s", len(left), strings.Join(left, "\n\n"))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// released fails unless each TCP address in tcp, UDP address in udp, and
// unix socket path in files is free again.
func released(t *testing.T, tcp, udp, files []string) {
	t.Helper()
	for _, a := range tcp {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			t.Errorf("TCP %s still bound: %v", a, err)
			continue
		}
		ln.Close()
	}
	for _, a := range udp {
		c, err := net.ListenPacket("udp", a)
		if err != nil {
			t.Errorf("UDP %s still bound: %v", a, err)
			continue
		}
		c.Close()
	}
	for _, f := range files {
		if _, err := os.Lstat(f); !os.IsNotExist(err) {
			t.Errorf("socket file %s left behind (%v)", f, err)
		}
	}
}

// A start that fails at any phase leaves nothing running and nothing
// bound: every socket the failed start opened is free again, no socket
// file stays behind, and no component goroutine runs. A failed bind leaves
// the state file as it was (the lifecycle loop, which saves it, has not
// started). A cluster that could not bind used to leave the --stats
// listener open and its socket file behind.
func TestFailedStartReleasesEverything(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	busyUDP, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busyUDP.Close()
	for _, tc := range []struct {
		name string
		args []string // what makes the start fail
		want string   // in the error
	}{
		{"a second front", []string{"--uwsgi", busy.Addr().String()}, "--uwsgi listener"},
		{"admin", []string{"--admin", busy.Addr().String()}, "admin listener"},
		{"stats", []string{"--stats", busy.Addr().String()}, "--stats listener"},
		{"subscriptions", []string{"--subscription-server", busyUDP.LocalAddr().String()}, "subscription server"},
		{"cluster", []string{"--cluster-bind", busy.Addr().String()}, "--cluster-bind"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			state := filepath.Join(dir, "state.json")
			statsSock, uwsgiSock := filepath.Join(dir, "stats.sock"), filepath.Join(dir, "uwsgi.sock")
			httpAddr, adminAddr, subAddr := freeTCP(t), freeTCP(t), freeUDP(t)
			args := []string{"--http", httpAddr, "--admin", adminAddr, "--subscription-server", subAddr,
				"--uwsgi", uwsgiSock, "--stats", statsSock, "--state-file", state,
				"--access-log", filepath.Join(dir, "access.log"), "--to", "static.test=127.0.0.1:1"}
			// The failing setting is appended: a repeatable flag's first
			// use replaced the default, so its later uses add to it.
			a, logs := testApp(t, append(args, tc.args...)...)
			err := serve(context.Background(), a, signals{})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("serve = %v; want an error naming %s", err, tc.want)
			}
			if len(a.stops) != 0 {
				t.Errorf("stops left on the stack: %v", a.stops.names())
			}
			waitNoGoroutines(t)
			tcp := []string{httpAddr, adminAddr}
			if tc.name == "admin" {
				tcp = tcp[:1]
			}
			udp := []string{subAddr}
			if tc.name == "subscriptions" {
				udp = nil
			}
			released(t, tcp, udp, []string{statsSock, uwsgiSock})
			if _, err := os.Stat(state); tc.name != "cluster" && !os.IsNotExist(err) {
				t.Errorf("a failed start wrote the state file (%v)", err)
			}
			if strings.Contains(logs.String(), "fastrouter started") {
				t.Errorf("a failed start logged that it started:\n%s", logs)
			}
		})
	}
}

// The stack unwinds in the order shutdown must run (start's comment): the
// fronts drain first, the cluster leaves after the subscriptions stop, the
// state file is saved before the admin API goes, and so on down to what
// build made.
func TestStopOrder(t *testing.T) {
	dir := t.TempDir()
	a, _ := testApp(t, "--stats", filepath.Join(dir, "stats.sock"), "--access-log", filepath.Join(dir, "access.log"),
		"--cluster-bind", freeTCP(t), "--cluster-node-name", "r1")
	if err := a.build(); err != nil {
		t.Fatal(err)
	}
	if err := a.bind(); err != nil {
		a.stop()
		t.Fatal(err)
	}
	if err := a.start(context.Background()); err != nil {
		a.stop()
		t.Fatal(err)
	}
	got := a.stops.names()
	a.stop()
	want := []string{"fronts", "subscription server", "cluster", "lifecycle", "admin server", "stats server",
		"metrics pruner", "server goroutines", "pid file", "health checks",
		"subscription server (bind)", "listeners", "admin handler", "access log"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("stops unwind as\n%v\nwant\n%v", got, want)
	}
	waitNoGoroutines(t)
}

// serve runs until its context ends, routing requests to the nodes: a
// SIGHUP reloads on the way (a refused reload keeps the running
// configuration), and the stop saves the state file, frees every socket
// and leaves no goroutine behind.
func TestServeUntilStopped(t *testing.T) {
	dir := t.TempDir()
	state, pid := filepath.Join(dir, "state.json"), filepath.Join(dir, "fr.pid")
	node := uwsgitest.NewNode(t, uwsgitest.Reply("HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnode"))
	a, logs := testApp(t, "--state-file", state, "--pid-file", pid, "--to", "s.test="+node.Addr())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	reloads := 0
	sig := signals{hup: hup, reload: func() (*options, error) {
		reloads++
		if reloads == 1 {
			return nil, fmt.Errorf("bad config")
		}
		o := *a.o
		o.algo = "lrc"
		return &o, nil
	}}
	done := make(chan error, 1)
	go func() { done <- serve(ctx, a, sig) }()
	waitLog := func(what string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !strings.Contains(logs.String(), what) {
			if time.Now().After(deadline) {
				t.Fatalf("no %q in the log:\n%s", what, logs)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLog("fastrouter started")
	if b, err := os.ReadFile(pid); err != nil || strings.TrimSpace(string(b)) != fmt.Sprint(os.Getpid()) {
		t.Fatalf("pid file %q, %v; want this process", b, err)
	}
	if resp, body := uwsgitest.Do(t, a.o.http[0], "GET /x HTTP/1.1\r\nHost: s.test\r\n\r\n"); resp.StatusCode != 200 || body != "node" {
		t.Fatalf("request through the router: %d %q", resp.StatusCode, body)
	}
	if r := node.Last(); r == nil || r.Vars["PATH_INFO"] != "/x" || r.Vars["HTTP_HOST"] != "s.test" {
		t.Fatalf("the node received %+v", r)
	}
	hup <- os.Interrupt
	waitLog("reload refused; the running configuration stays")
	hup <- os.Interrupt
	waitLog("configuration reloaded")
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve = %v; want nil after a plain stop", err)
		}
	case <-time.After(40 * time.Second):
		t.Fatal("serve did not return after its context ended")
	}
	if b, err := os.ReadFile(state); err != nil || !bytes.Contains(b, []byte(`"version": 1`)) {
		t.Errorf("state file after the stop: %q, %v", b, err)
	}
	if _, err := os.Stat(pid); !os.IsNotExist(err) {
		t.Errorf("pid file left after a plain stop (%v)", err)
	}
	if !strings.Contains(logs.String(), "shutting down") || !strings.Contains(logs.String(), "stopped") {
		t.Errorf("stop not logged:\n%s", logs)
	}
	waitNoGoroutines(t)
	released(t, []string{a.o.http[0], a.o.admin}, a.o.subscriptionServers, nil)
}

func TestStackUnwindsInReverse(t *testing.T) {
	var s stack
	var ran []string
	for _, n := range []string{"a", "b", "c"} {
		s.push(n, func(context.Context) { ran = append(ran, n) })
	}
	if got := s.names(); !reflect.DeepEqual(got, []string{"c", "b", "a"}) {
		t.Fatalf("names %v", got)
	}
	s.unwind(context.Background())
	if !reflect.DeepEqual(ran, []string{"c", "b", "a"}) || len(s) != 0 {
		t.Fatalf("ran %v, %d left; want c b a and none", ran, len(s))
	}
	s.unwind(context.Background())
	if len(ran) != 3 {
		t.Fatal("a second unwind ran stops again")
	}
}
