package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func runBinary(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			return ee.ExitCode(), o.String(), e.String()
		} else if err != nil {
			t.Fatal(err)
		}
		return 0, o.String(), e.String()
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("fastrouter %v did not exit", args)
		return
	}
}

func TestHelpListsFlags(t *testing.T) {
	t.Parallel()
	code, out, _ := runBinary(t, "--help")
	if code != 0 {
		t.Fatalf("--help exit %d", code)
	}
	for _, f := range []string{"--http", "--subscription-server", "--admin", "--to", "--algo",
		"--subscription-tolerance", "--connect-timeout", "--timeout", "--header-timeout",
		"--max-header-bytes", "--config", "--log-level", "--version", "--shutdown-timeout",
		"--fallback-key", "--trusted-proxy"} {
		if !strings.Contains(out, "  "+f+" ") && !strings.Contains(out, "  "+f+"\n") {
			t.Errorf("--help does not list %s", f)
		}
	}
	// That --help and docs/configuration.md list the same flags, with the
	// same defaults, is cmd/fastrouter/docs_test.go's job.
	if code, out, _ := runBinary(t, "--version"); code != 0 || !strings.HasPrefix(out, "fastrouter ") {
		t.Errorf("--version: exit %d, %q", code, out)
	}
}

func TestBadFlagsAndConfigExit2(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("http: [unclosed\n"), 0o644)
	unknownKey := filepath.Join(dir, "unknown.yaml")
	os.WriteFile(unknownKey, []byte("no-such-setting: 1\n"), 0o644)
	for _, args := range [][]string{
		{"--no-such-flag"},
		{"--timeout", "soon"},
		{"--algo", "random"},
		{"--to", "missing-equals"},
		{"--to", "k=localhost:3031"},
		{"--config", badYAML},
		{"--config", unknownKey},
		{"--config", filepath.Join(dir, "absent.yaml")},
	} {
		code, _, stderr := runBinary(t, args...)
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "fastrouter: ") {
			t.Errorf("%v: exit %d, stderr %q; want exit 2 and one line", args, code, stderr)
		}
	}
}

func TestConfigFileAndFlagOverride(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fr.yaml")
	deadPort := freePort(t)
	os.WriteFile(cfg, []byte("to:\n  - cfg.test=127.0.0.1:1\nheader-timeout: 3s\n"), 0o644)
	// --to on the command line replaces the file's list.
	r := startRouter(t, "--config", cfg, "--to", "flag.test=127.0.0.1:"+strconv.Itoa(deadPort))
	if r.pool(t, "cfg.test") != nil {
		t.Error("pool from the config file present although --to overrides it")
	}
	if r.pool(t, "flag.test") == nil {
		t.Error("pool from --to missing")
	}
}

// A start that fails late, once the fronts, the subscription server and
// the health checks run (here: the cluster port is taken), releases every
// socket it opened: no unix socket file stays behind. The --stats socket
// used to.
func TestFailedStartLeavesNoSocketFile(t *testing.T) {
	t.Parallel()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	dir := t.TempDir()
	code, _, stderr := runBinary(t, "--http", "127.0.0.1:0", "--admin", "127.0.0.1:0",
		"--uwsgi", filepath.Join(dir, "uwsgi.sock"), "--stats", filepath.Join(dir, "stats.sock"),
		"--subscription-server", filepath.Join(dir, "sub.sock"), "--cluster-bind", busy.Addr().String())
	if code != 1 || !strings.Contains(stderr, "--cluster-bind") {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming --cluster-bind", code, stderr)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range ents {
		left = append(left, e.Name())
	}
	if len(left) > 0 {
		t.Errorf("socket files left behind by the failed start: %v", left)
	}
}

func TestBindFailureExit1(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	addr := ln.Addr().String()
	code, _, stderr := runBinary(t, "--http", addr, "--admin", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, addr) {
		t.Fatalf("exit %d, stderr %q; want exit 1 naming %s", code, stderr, addr)
	}
}
