package integration

import (
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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

// Every usage error names the flag with its "--", says what was wrong and
// what was expected, names no Go type or function, and is printed once:
// exit 2, nothing on stdout, one line per problem and no log line.
func TestUsageMessages(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	misspelt := write("misspelt.yaml", "pools:\n  app.test:\n    algoo: wrr\n")
	ecKey := filepath.Join(dir, "ec.pem")
	openssl(t, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", ecKey)
	for _, c := range []struct {
		args []string
		want []string
	}{
		{[]string{"--timeout", "5"}, []string{`fastrouter: --timeout: "5" is not a duration (e.g. 5s, 1m)`}},
		{[]string{"--bogus"}, []string{`fastrouter: unknown flag --bogus (see fastrouter --help)`}},
		{[]string{"--http", "127.0.0.1:99999"}, []string{`fastrouter: --http "127.0.0.1:99999": port 99999 is out of range (0-65535)`}},
		{[]string{"--trusted-proxy", "10.0.0.0/33"}, []string{`fastrouter: --trusted-proxy "10.0.0.0/33": prefix length out of range (IPv4 0-32, IPv6 0-128)`}},
		{[]string{"--node-allow", "10.0.0.1"}, []string{`fastrouter: --node-allow "10.0.0.1": not a CIDR: write 10.0.0.1/32 for this one address`}},
		{[]string{"--config", misspelt}, []string{`fastrouter: config ` + misspelt + `: pools: app.test: line 3: unknown setting "algoo" (want algo, max-inflight, queue-size, queue-timeout, health-check)`}},
		{[]string{"--admin", "0.0.0.0:9191"}, []string{`fastrouter: --admin 0.0.0.0:9191 is reachable beyond this host and can change every pool: set --admin-token-file (or --admin-insecure to run it open anyway)`}},
		{[]string{"--timeout", "5", "--max-conns", "x", "--subscription-server", "localhost:2626"}, []string{
			`fastrouter: --timeout: "5" is not a duration (e.g. 5s, 1m)`,
			`fastrouter: --max-conns: "x" is not a whole number`,
			`fastrouter: --subscription-server "localhost:2626": host "localhost" is not an IP address`}},
		{[]string{"subscribe", "--bogus"}, []string{`fastrouter subscribe: unknown flag --bogus (see fastrouter subscribe --help)`,
			`fastrouter subscribe: --key is required (1 to 255 bytes)`}},
		{[]string{"subscribe", "--key", "k", "--address", "127.0.0.1:1", "--every", "soon"}, []string{`fastrouter subscribe: --every: "soon" is not a duration (e.g. 5s, 1m)`}},
		{[]string{"subscribe", "--key", "k", "--address", "127.0.0.1:1", "--sign", "SHA256:" + ecKey},
			[]string{`fastrouter subscribe: --sign: unsupported private key type ECDSA (want RSA or Ed25519)`}},
		{[]string{"health", "--timeout", "x"}, []string{`fastrouter health: --timeout: "x" is not a duration (e.g. 5s, 1m)`}},
		{[]string{"check", "--bogus"}, []string{`fastrouter check: unknown flag --bogus (see fastrouter --help)`}},
		{[]string{"completion", "fish"}, []string{`fastrouter completion: want bash or zsh (see fastrouter completion --help)`}},
	} {
		code, stdout, stderr := runBinary(t, c.args...)
		got := strings.Split(strings.TrimSpace(stderr), "\n")
		if code != 2 || stdout != "" || strings.Join(got, "\n") != strings.Join(c.want, "\n") {
			t.Errorf("%v: exit %d, stdout %q, stderr:\n%s\nwant exit 2 and:\n%s", c.args, code, stdout, stderr, strings.Join(c.want, "\n"))
		}
		if strings.Contains(stderr, "main.") || strings.Contains(stderr, "netip.") || strings.Contains(stderr, "level=") {
			t.Errorf("%v: Go internals or a log line in %q", c.args, stderr)
		}
	}
}

// A fatal error is printed once: a listener that cannot bind is one log
// line (exit 1); a certificate that does not load is one usage line
// (exit 2). Both used to come twice, through the log and on stderr.
func TestFatalErrorPrintedOnce(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	code, _, stderr := runBinary(t, "--http", ln.Addr().String(), "--admin", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0")
	if n := strings.Count(stderr, "address already in use"); code != 1 || n != 1 || !strings.Contains(stderr, "level=ERROR") {
		t.Errorf("bind failure: exit %d, %d mentions in:\n%s\nwant exit 1 and one error line", code, n, stderr)
	}
	missing := filepath.Join(t.TempDir(), "none.crt")
	code, _, stderr = runBinary(t, "--https", "127.0.0.1:0", "--tls-cert", missing, "--tls-key", missing,
		"--admin", "127.0.0.1:0", "--subscription-server", "127.0.0.1:0")
	lines := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 2 || len(lines) != 1 || !strings.HasPrefix(lines[0], "fastrouter: --https: default certificate: ") || !strings.Contains(lines[0], missing) {
		t.Errorf("missing certificate: exit %d, stderr:\n%s\nwant exit 2 and one line naming the file", code, stderr)
	}
}

// --help is grouped by section; each subcommand has its own --help;
// --version names the version, the commit and the Go version.
func TestHelpAndVersion(t *testing.T) {
	t.Parallel()
	_, out, _ := runBinary(t, "--help")
	last := -1
	for _, s := range []string{"Listeners:", "Routing:", "Nodes and balancing:", "TLS:", "Security:", "Cluster:", "Observability:", "Lifecycle:"} {
		i := strings.Index(out, "\n"+s+"\n")
		if i < 0 || i < last {
			t.Errorf("--help: section %q missing or out of order", s)
		}
		last = i
	}
	if !strings.Contains(out, "  --max-conns N\n") || strings.Contains(out, "(default 0) (default") || strings.Contains(out, "--max-conns listener") {
		t.Error("--help: wrong placeholder or a default stated twice")
	}
	for _, sub := range []string{"check", "health", "subscribe", "completion"} {
		code, out, stderr := runBinary(t, sub, "--help")
		if code != 0 || !strings.HasPrefix(out, "Usage: fastrouter "+sub) || stderr != "" {
			t.Errorf("%s --help: exit %d, %q %q", sub, code, out, stderr)
		}
	}
	code, out, _ := runBinary(t, "--version")
	if code != 0 || !regexp.MustCompile(`^fastrouter \S+ \(commit \S+, go1\.\d+\S*, \w+/\w+\)\n$`).MatchString(out) {
		t.Errorf("--version: exit %d, %q; want version, commit, Go version and platform", code, out)
	}
}
