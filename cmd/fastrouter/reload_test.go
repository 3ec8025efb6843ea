package main

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// reloadApp builds (but does not bind) an app from the configuration file
// body plus args, and the options a reload of body2 plus args2 parses.
func reloadApp(t *testing.T, body string, args []string, body2 string, args2 []string) (*app, *options, *logBuffer) {
	t.Helper()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fastrouter.yaml")
	if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	a, logs := testApp(t, append([]string{"--config", cfg}, args...)...)
	if err := a.build(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.stop)
	if err := os.WriteFile(cfg, []byte(body2), 0o644); err != nil {
		t.Fatal(err)
	}
	no, _, err := parseArgs(append([]string{"--config", cfg, "--http", a.o.http[0], "--admin", a.o.admin,
		"--subscription-server", a.o.subscriptionServers[0]}, args2...))
	if err != nil {
		t.Fatal(err)
	}
	return a, no, logs
}

func announce(t *testing.T, tb *balancer.Table, key, addr string) {
	t.Helper()
	if _, err := tb.Announce(&balancer.Announce{Key: []byte(key), Address: []byte(addr)}); err != nil {
		t.Fatal(err)
	}
}

// A reload applies what can change in a running process: the default
// algorithm (for pools created from then on), pool policies (at once),
// static nodes (added and removed, the kept ones untouched), the log
// level, the shutdown deadline and the access log file; and it names the
// settings that wait for a restart, leaving the running ones as started.
func TestReloadApplies(t *testing.T) {
	dir := t.TempDir()
	accessLog := filepath.Join(dir, "access.log")
	a, no, logs := reloadApp(t,
		"pools:\n  capped.test:\n    max-inflight: 4\n",
		[]string{"--to", "a.test=127.0.0.1:1", "--to", "b.test=127.0.0.1:2", "--access-log", accessLog,
			"--log-level", "info", "--shutdown-timeout", "30s"},
		"pools:\n  capped.test:\n    max-inflight: 7\n",
		[]string{"--to", "a.test=127.0.0.1:1", "--to", "c.test=127.0.0.1:3", "--access-log", accessLog,
			"--log-level", "debug", "--shutdown-timeout", "5s", "--algo", "lrc", "--max-body-bytes", "1000"})
	kept := a.table.Pool("a.test").Node("127.0.0.1:1")
	announce(t, a.table, "capped.test", "10.0.0.1:1")
	announce(t, a.table, "old.test", "10.0.0.2:1")
	if err := os.Rename(accessLog, accessLog+".1"); err != nil { // logrotate
		t.Fatal(err)
	}
	startedWith := a.o.maxBodyBytes

	a.reload(no)

	if n := a.table.Pool("a.test").Node("127.0.0.1:1"); n == nil || n != kept {
		t.Errorf("a kept static node was replaced: %v", n)
	}
	if p := a.table.Pool("b.test"); p != nil && p.Node("127.0.0.1:2") != nil {
		t.Error("a static node no longer listed is still in the table")
	}
	if p := a.table.Pool("c.test"); p == nil || p.Node("127.0.0.1:3") == nil || !p.Node("127.0.0.1:3").Static {
		t.Error("a newly listed static node was not added")
	}
	if got := a.table.Pool("capped.test").Policy().MaxInflight; got != 7 {
		t.Errorf("capped.test max-inflight %d after the reload; want 7", got)
	}
	announce(t, a.table, "new.test", "10.0.0.3:1")
	if got, old := a.table.Pool("new.test").Algo(), a.table.Pool("old.test").Algo(); got != balancer.AlgoLRC || old != balancer.AlgoWRR {
		t.Errorf("algorithms: new pool %s, old pool %s; want lrc for the new one only", got, old)
	}
	if a.level.Level() != slog.LevelDebug {
		t.Errorf("log level %s; want debug", a.level.Level())
	}
	if a.o.shutdownTimeout != 5*time.Second {
		t.Errorf("shutdown deadline %s; want 5s", a.o.shutdownTimeout)
	}
	if a.o.maxBodyBytes != startedWith {
		t.Errorf("--max-body-bytes changed in the running options to %d", a.o.maxBodyBytes)
	}
	if _, err := os.Stat(accessLog); err != nil {
		t.Errorf("access log not reopened at its path: %v", err)
	}
	out := logs.String()
	for _, want := range []string{
		`msg="node left" pool=b.test node=127.0.0.1:2 source=config reason=reload`,
		`msg="reload: these settings changed but apply only after a restart or a SIGUSR2 upgrade" settings=[--max-body-bytes]`,
		`msg="configuration reloaded" static_nodes=2 log_level=debug algo=lrc`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
	if strings.Contains(out, "level=ERROR") {
		t.Errorf("a clean reload logged an error:\n%s", out)
	}
}

// A part of a reload that fails is logged, and the rest still applies.
func TestReloadPartFailureRestApplies(t *testing.T) {
	a, no, logs := reloadApp(t, "{}\n", []string{"--to", "a.test=127.0.0.1:1"},
		"{}\n", []string{"--to", "a.test=127.0.0.1:1", "--log-level", "debug", "--algo", "p2c"})
	no.to = append(no.to, "bad\x01key=127.0.0.1:2") // the table refuses the key

	a.reload(no)

	if !strings.Contains(logs.String(), `msg="reload: static nodes"`) {
		t.Errorf("refused static node not logged:\n%s", logs)
	}
	if a.table.Pool("a.test").Node("127.0.0.1:1") == nil {
		t.Error("the refused reload of static nodes removed a listed one")
	}
	if a.level.Level() != slog.LevelDebug {
		t.Errorf("log level %s; want the reloaded debug", a.level.Level())
	}
	announce(t, a.table, "new.test", "10.0.0.3:1")
	if got := a.table.Pool("new.test").Algo(); got != balancer.AlgoP2C {
		t.Errorf("new pool algorithm %s; want the reloaded p2c", got)
	}
	if !strings.Contains(logs.String(), "configuration reloaded") {
		t.Errorf("reload not completed:\n%s", logs)
	}
}

// The reload that run does on SIGHUP keeps the running configuration when
// the new one does not parse.
func TestRunRefusesBadReload(t *testing.T) {
	a, logs := testApp(t, "--to", "a.test=127.0.0.1:1")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hup := make(chan os.Signal, 1)
	sig := signals{hup: hup, reload: func() (*options, error) {
		defer cancel()
		_, _, err := parseArgs([]string{"--timeout", "x"})
		return nil, err
	}}
	hup <- os.Interrupt
	if err := serve(ctx, a, sig); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "reload refused; the running configuration stays") || strings.Contains(logs.String(), "configuration reloaded") {
		t.Errorf("log:\n%s", logs)
	}
}
