package integration

import (
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// fastrouter check on a good configuration: exit 0, "configuration OK"
// and a one-line summary, and nothing bound, started or written: the
// HTTP port it names is busy, and neither the access log nor the state
// file is touched.
func TestCheckGoodConfig(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	dir := t.TempDir()
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	state := filepath.Join(dir, "state.json")
	stateBody := `{"version":1,"pools":[{"key":"saved.test","algo":"wrr","nodes":[{"address":"10.0.0.9:3031","weight":1,"state":"active"}]}]}`
	if err := os.WriteFile(state, []byte(stateBody), 0o644); err != nil {
		t.Fatal(err)
	}
	access := filepath.Join(dir, "access.log")
	cfg := filepath.Join(dir, "fr.yaml")
	os.WriteFile(cfg, []byte(`http: [`+busy.Addr().String()+`]
https: [127.0.0.1:0]
tls-cert: `+filepath.Join(p.dir, "default.crt")+`
tls-key: `+filepath.Join(p.dir, "default.key")+`
tls-dir: `+p.tlsDir+`
to: [app.test=127.0.0.1:3031, app.test=/run/app.sock]
state-file: `+state+`
access-log: `+access+`
pools:
  app.test:
    algo: lrc
    health-check: {type: tcp, interval: 2s}
`), 0o644)
	code, stdout, stderr := runBinary(t, "check", "--config", cfg)
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if code != 0 || len(lines) != 2 || lines[0] != "configuration OK" || stderr != "" {
		t.Fatalf("check: exit %d, stdout %q, stderr %q; want 0, configuration OK and a summary", code, stdout, stderr)
	}
	for _, want := range []string{"http " + busy.Addr().String(), "https 127.0.0.1:0", "3 nodes (2 static)", "2 pools",
		"pools section: 1 key", "state file: " + state, "tls: cert "} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("summary %q lacks %q", lines[1], want)
		}
	}
	if _, err := os.Stat(access); !os.IsNotExist(err) {
		t.Errorf("check created the access log (%v)", err)
	}
	if b, _ := os.ReadFile(state); string(b) != stateBody {
		t.Errorf("check rewrote the state file: %s", b)
	}
	// The example configuration is good too.
	if code, _, stderr := runBinary(t, "check", "--config", "../../configs/fastrouter.yaml"); code != 0 {
		t.Errorf("configs/fastrouter.yaml: exit %d, %s", code, stderr)
	}
}

// fastrouter check on each kind of bad configuration: exit 2 and the
// problem on a line of its own; several problems are all listed. What the
// router would only warn about is a warning, exit 0.
func TestCheckBadConfigs(t *testing.T) {
	t.Parallel()
	p := newTestPKI(t)
	dir := t.TempDir()
	write := func(name, body string) string {
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	crt, key := filepath.Join(p.dir, "default.crt"), filepath.Join(p.dir, "default.key")
	otherKey := filepath.Join(p.tlsDir, "sni.test.key")
	noDir := filepath.Join(dir, "missing", "x")
	base := []string{"check", "--admin", "127.0.0.1:0"}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"flag value", []string{"--timeout", "5"}, `fastrouter check: --timeout: "5" is not a duration (e.g. 5s, 1m)`},
		{"unknown flag", []string{"--bogus"}, `fastrouter check: unknown flag --bogus (see fastrouter --help)`},
		{"yaml syntax", []string{"--config", write("syntax.yaml", "http: [\n")}, `did not find expected node content`},
		{"unknown setting", []string{"--config", write("unknown.yaml", "listen: :80\n")}, `line 1: unknown setting "listen"`},
		{"pool field", []string{"--config", write("pool.yaml", "pools:\n  a.test:\n    algoo: wrr\n")}, `pools: a.test: line 3: unknown setting "algoo"`},
		{"cidr", []string{"--trusted-proxy", "10.0.0.0/33"}, `--trusted-proxy "10.0.0.0/33": prefix length out of range`},
		{"address", []string{"--http", "127.0.0.1:99999"}, `--http "127.0.0.1:99999": port 99999 is out of range (0-65535)`},
		{"node", []string{"--to", "a.test=example.com:80"}, `--to "a.test=example.com:80": node address must be`},
		{"missing cert", []string{"--https", "127.0.0.1:0", "--tls-cert", noDir, "--tls-key", key}, `fastrouter check: --https: default certificate: open ` + noDir},
		{"key of another cert", []string{"--https", "127.0.0.1:0", "--tls-cert", crt, "--tls-key", otherKey}, `fastrouter check: --https: default certificate:`},
		{"client ca", []string{"--https", "127.0.0.1:0", "--tls-cert", crt, "--tls-key", key, "--tls-client-ca", noDir}, `client CA`},
		{"key directory", []string{"--subscriptions-sign-check", "SHA256:" + noDir}, `--subscriptions-sign-check: key directory: stat ` + noDir},
		{"state dir", []string{"--state-file", noDir}, `--state-file ` + noDir + `: directory ` + filepath.Dir(noDir) + `: no such file or directory`},
		{"access log dir", []string{"--access-log", noDir}, `--access-log ` + noDir + `: directory`},
		{"access log is a dir", []string{"--access-log", dir}, `--access-log ` + dir + `: not a regular file`},
		{"admin open", []string{"--admin", "0.0.0.0:9191"}, `set --admin-token-file (or --admin-insecure to run it open anyway)`},
		{"cluster secret", []string{"--cluster-bind", "127.0.0.1:0", "--cluster-secret-file", write("short.key", "0123")}, `--cluster-secret-file:`},
	} {
		code, stdout, stderr := runBinary(t, append(base, c.args...)...)
		if code != 2 || stdout != "" || !strings.Contains(stderr, c.want) || strings.Contains(stderr, "level=") {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 2 naming %q", c.name, code, stdout, stderr, c.want)
		}
	}
	// Everything wrong at once: every problem, one per line.
	code, stdout, stderr := runBinary(t, "check", "--timeout", "5", "--http", "127.0.0.1:99999", "--node-allow", "10.1.0.0/99",
		"--state-file", noDir, "--config", write("many.yaml", "pools:\n  a.test:\n    algoo: wrr\n    queue-size: many\n"))
	got := strings.Split(strings.TrimSpace(stderr), "\n")
	if code != 2 || stdout != "" || len(got) != 6 {
		t.Errorf("six problems: exit %d, %d lines:\n%s", code, len(got), stderr)
	}
	// A corrupt state file only costs the restore: a warning, exit 0.
	code, stdout, stderr = runBinary(t, append(base, "--state-file", write("corrupt.json", "{"),
		"--subscription-server", "0.0.0.0:0")...)
	if code != 0 || !strings.HasPrefix(stdout, "configuration OK\n") ||
		!strings.Contains(stderr, "fastrouter check: warning: state file not loaded; starting empty") ||
		!strings.Contains(stderr, "fastrouter check: warning: SECURITY WARNING: the subscription server listens beyond loopback") {
		t.Errorf("warnings: exit %d, stdout %q, stderr %q; want 0 and both warnings", code, stdout, stderr)
	}
}

// The completion scripts parse in their shells, and bash completes
// flags, subcommands, choices and file names from them.
func TestCompletionScripts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	for _, sh := range []string{"bash", "zsh"} {
		code, script, stderr := runBinary(t, "completion", sh)
		if code != 0 || stderr != "" || !strings.Contains(script, "--shutdown-delay") || !strings.Contains(script, "--admin-insecure") {
			t.Fatalf("completion %s: exit %d, stderr %q", sh, code, stderr)
		}
		path := filepath.Join(dir, "fastrouter."+sh)
		os.WriteFile(path, []byte(script), 0o644)
		if out, err := exec.Command(sh, "-n", path).CombinedOutput(); err != nil {
			t.Fatalf("%s -n: %v\n%s", sh, err, out)
		}
	}
	os.WriteFile(filepath.Join(dir, "router.yaml"), nil, 0o644)
	for _, c := range []struct{ words, want string }{
		{"fastrouter --tim", "--timeout"},
		{"fastrouter --shutdown-d", "--shutdown-delay"},
		{"fastrouter ch", "check"},
		{"fastrouter check --conf", "--config"},
		{"fastrouter health --ad", "--admin"},
		{"fastrouter subscribe --ke", "--key"},
		{"fastrouter completion z", "zsh"},
		{"fastrouter --algo p", "p2c"},
		{"fastrouter --algo s", "sed"},
		{"fastrouter --log-level wa", "warn"},
		{"fastrouter --config " + filepath.Join(dir, "rou"), filepath.Join(dir, "router.yaml")},
	} {
		script := `source "$1"; read -ra COMP_WORDS <<< "$2"; [[ "$2" == *" " ]] && COMP_WORDS+=(""); ` +
			`COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 )); _fastrouter; printf '%s\n' "${COMPREPLY[@]}"`
		out, err := exec.Command("bash", "-c", script, "bash", filepath.Join(dir, "fastrouter.bash"), c.words).CombinedOutput()
		if err != nil || !strings.Contains("\n"+string(out), "\n"+c.want+"\n") {
			t.Errorf("completing %q: %v %q; want %q offered", c.words, err, out, c.want)
		}
	}
}

// The image's defaults are safe and checked: the Dockerfile's CMD passes
// fastrouter check (its admin API on loopback, so no token is needed),
// and its HEALTHCHECK runs the binary's own health subcommand (the
// distroless image has no curl), which reaches that admin listener.
func TestDockerfileDefaults(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile("../../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var cmd, health []string
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(l, "CMD "):
			if err := json.Unmarshal([]byte(strings.TrimPrefix(l, "CMD ")), &cmd); err != nil {
				t.Fatalf("CMD: %v", err)
			}
		case strings.HasPrefix(l, "HEALTHCHECK "):
			_, js, ok := strings.Cut(l, " CMD ")
			if !ok || json.Unmarshal([]byte(js), &health) != nil {
				t.Fatalf("HEALTHCHECK without an exec-form CMD: %q", l)
			}
		}
	}
	if len(health) != 2 || health[0] != "/usr/local/bin/fastrouter" || health[1] != "health" {
		t.Fatalf("HEALTHCHECK CMD %q; want the binary's health subcommand", health)
	}
	for i, a := range cmd {
		if a == "/etc/fastrouter/fastrouter.yaml" {
			cmd[i] = "../../configs/fastrouter.yaml" // COPY configs/fastrouter.yaml /etc/fastrouter/fastrouter.yaml
		}
	}
	code, stdout, stderr := runBinary(t, append([]string{"check"}, cmd...)...)
	if code != 0 || !strings.Contains(stdout, "admin: 127.0.0.1:9191;") {
		t.Fatalf("check %q: exit %d, %q %q; want 0 with the admin API on loopback", cmd, code, stdout, stderr)
	}
}
