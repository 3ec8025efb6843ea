package main

import (
	"bytes"
	"crypto"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/subauth"
)

func TestExposedSubscriptionServers(t *testing.T) {
	got := exposedSubscriptionServers([]string{"127.0.0.1:2626", "[::1]:2626", "/run/sub.sock", "@abs",
		":2626", "0.0.0.0:2626", "[::]:2626", "10.0.0.1:2626", "[::ffff:127.0.0.1]:1"})
	want := []string{":2626", "0.0.0.0:2626", "[::]:2626", "10.0.0.1:2626"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("exposed = %v; want %v", got, want)
	}
}

func TestWarnIfExposed(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    options
		warn bool
	}{
		{"loopback only", options{subscriptionServers: []string{"127.0.0.1:2626"}}, false},
		{"all interfaces, open", options{subscriptionServers: []string{":2626"}}, true},
		{"all interfaces, signed", options{subscriptionServers: []string{":2626"}, signCheck: "SHA256:/k"}, false},
		{"all interfaces, allow-list", options{subscriptionServers: []string{":2626"}, subscriptionAllow: []string{"10.0.0.0/8"}}, false},
	} {
		var buf bytes.Buffer
		warnIfExposed(slog.New(slog.NewTextHandler(&buf, nil)), &tc.o)
		if got := strings.Contains(buf.String(), "SECURITY WARNING") && strings.Contains(buf.String(), "level=WARN"); got != tc.warn {
			t.Errorf("%s: warned %v (%q); want %v", tc.name, got, buf.String(), tc.warn)
		}
	}
}

func TestSecurityFlags(t *testing.T) {
	dir := t.TempDir()
	o, _, err := parseArgs([]string{"--subscriptions-sign-check", "sha384:" + dir, "--subscriptions-sign-tolerance", "2m",
		"--subscription-allow", "10.0.0.0/8", "--subscription-allow", "::1/128", "--node-allow", "192.0.2.0/24", "--max-conns", "100"})
	if err != nil {
		t.Fatal(err)
	}
	cfg := o.guardConfig(nil, nil, nil)
	if cfg.Hash != crypto.SHA384 || cfg.KeyDir != dir || cfg.Tolerance != 2*time.Minute || len(cfg.Sources) != 2 ||
		len(cfg.Nodes) != 1 || o.maxConns != 100 {
		t.Fatalf("guard config %+v, max-conns %d", cfg, o.maxConns)
	}
	o, _, err = parseArgs(nil)
	if err != nil || o.signCheck != "" || o.signTolerance != 60*time.Second || o.subscriptionAllow != nil || o.nodeAllow != nil || o.maxConns != 0 {
		t.Fatalf("defaults: %+v %v", o, err)
	}
	if c := o.guardConfig(nil, nil, nil); c.Hash != 0 || c.KeyDir != "" {
		t.Fatalf("default guard config signs: %+v", c)
	}
	for _, args := range [][]string{
		{"--subscriptions-sign-check", dir},
		{"--subscriptions-sign-check", "SHA256:" + filepath.Join(dir, "missing")},
		{"--subscriptions-sign-tolerance", "0s"},
		{"--subscription-allow", "10.0.0.1"},
		{"--node-allow", "10.0.0.0/40"},
		{"--max-conns", "-5"},
	} {
		if _, _, err := parseArgs(args); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: %v; want a one-line error", args, err)
		}
	}
}

// The subcommand's datagrams are what a uWSGI node sends, and signed ones
// pass a Guard holding the matching public key.
func TestSubscribeDatagram(t *testing.T) {
	o := subscribeOptions{key: "app.test", address: "127.0.0.1:3031", weight: 4, modifier1: 5, backup: 1,
		algo: "lrc", drain: true, drainTimeout: 7 * time.Second}
	d, err := o.datagram(false, nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var s uwsgi.Subscription
	if err := uwsgi.ParseSubscription(d, &s); err != nil {
		t.Fatal(err)
	}
	if s.Unsubscribe || string(s.Key) != "app.test" || string(s.Address) != "127.0.0.1:3031" || s.Weight != 4 ||
		s.Modifier1 != 5 || s.Backup != 1 || string(s.Algo) != "lrc" || !s.Drain || s.DrainTimeout != 7 || s.Sign != nil || d[0] != 224 {
		t.Fatalf("datagram: %+v", s)
	}

	keys := t.TempDir()
	pub, err := os.ReadFile("../../subauth/testdata/ed25519.pub")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(keys, "app.test.pem"), pub, 0o644)
	signer, err := subauth.LoadSigner("SHA256:../../subauth/testdata/ed25519.key")
	if err != nil {
		t.Fatal(err)
	}
	g, err := subauth.New(subauth.Config{Hash: crypto.SHA256, KeyDir: keys})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, unsub := range []bool{false, true} {
		d, err := o.datagram(unsub, signer, now)
		if err != nil {
			t.Fatal(err)
		}
		if err := uwsgi.ParseSubscription(d, &s); err != nil {
			t.Fatal(err)
		}
		if s.Unsubscribe != unsub || s.Drain == unsub {
			t.Fatalf("unsubscribe %v: %+v", unsub, s)
		}
		if err := g.Admit(&s, d, s.Address); err != nil {
			t.Fatalf("signed datagram (unsubscribe %v) denied: %v", unsub, err)
		}
	}
}

// FuzzConfigFile: any --config file either loads into options that pass
// validation or fails with its problems one per line, each naming no Go
// type or function; it never panics.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{
		"http: [127.0.0.1:1, 127.0.0.1:2]\nto:\n  - a=127.0.0.1:3\ntimeout: 5s\n",
		"subscriptions-sign-check: SHA256:/nonexistent\nsubscription-allow: [10.0.0.0/8]\nnode-allow: 10.0.0.0/8\n",
		"max-conns: 10\nmax-header-bytes: 4096\nalgo: lrc\n",
		"trusted-proxy:\n  - 127.0.0.0/8\n  - ::1/128\nlog-level: debug\n",
		"a: &x [*x]\n",
		"http: {a: b}\n",
		"timeout: [1s, 2s]\n",
		"version: true\n",
		"- just a list\n",
		"",
	} {
		f.Add([]byte(s))
	}
	path := filepath.Join(f.TempDir(), "c.yaml")
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 4096 {
			return
		}
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		o, _, err := parseArgs([]string{"--config", path})
		if err != nil {
			for _, l := range lines(err) {
				if leaksGo(operatorText(l)) {
					t.Fatalf("problem names Go internals: %q", l)
				}
			}
			return
		}
		if err := o.validate(); err != nil {
			t.Fatalf("accepted options fail validation: %v", err)
		}
	})
}

// Configured nodes and pools meet the rules a datagram meets: a --to
// outside --node-allow, and under signatures a --to or a pools: entry
// without a public key, are usage errors naming the rule (exit 2).
func TestConfigMeetsAdmission(t *testing.T) {
	keys := t.TempDir()
	pub, err := os.ReadFile(filepath.Join("..", "..", "subauth", "testdata", "rsa2048.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(keys, "app.test.pem"), pub, 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("pools:\n  other.test:\n    algo: lrc\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sign := []string{"--subscriptions-sign-check", "SHA256:" + keys}
	for _, tc := range []struct {
		name    string
		args    []string
		mention string // "" = valid
	}{
		{"allowed", []string{"--node-allow", "10.0.0.0/8", "--to", "a.test=10.1.1.1:3031"}, ""},
		{"metadata address", []string{"--node-allow", "10.0.0.0/8", "--to", "a.test=169.254.169.254:80"},
			`--to "a.test=169.254.169.254:80": node address "169.254.169.254:80" is not inside --node-allow 10.0.0.0/8`},
		{"unix node under a list", []string{"--node-allow", "10.0.0.0/8", "--to", "a.test=/run/a.sock"}, "--node-allow"},
		{"no list", []string{"--to", "a.test=169.254.169.254:80"}, ""},
		{"signed pool with its key", append([]string{"--to", "app.test=10.0.0.1:1"}, sign...), ""},
		{"signed pool without a key", append([]string{"--to", "nokey.test=10.0.0.1:1"}, sign...),
			`pool "nokey.test" has no usable public key ` + filepath.Join(keys, "nokey.test.pem")},
		{"pools: entry without a key", append([]string{"--config", cfg}, sign...), `pools: pool "other.test"`},
		{"pools: entry without signing", []string{"--config", cfg}, ""},
	} {
		_, _, err := parseArgs(tc.args)
		switch {
		case tc.mention == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.mention != "" && (err == nil || !strings.Contains(err.Error(), tc.mention) || strings.Contains(err.Error(), "\n")):
			t.Errorf("%s: error %v; want one line with %q", tc.name, err, tc.mention)
		}
	}
	var stderr bytes.Buffer
	if code := run([]string{"--node-allow", "10.0.0.0/8", "--to", "a.test=169.254.169.254:80"}, &bytes.Buffer{}, &stderr); code != 2 ||
		strings.Count(stderr.String(), "\n") != 1 {
		t.Errorf("run: exit %d, stderr %q; want 2 and one line", code, stderr.String())
	}
}

func TestWarnIfForgetful(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    options
		warn bool
	}{
		{"no signing", options{}, false},
		{"signing alone", options{signCheck: "SHA256:/k"}, true},
		{"signing with a state file", options{signCheck: "SHA256:/k", stateFile: "/s"}, false},
		{"signing in a cluster", options{signCheck: "SHA256:/k", cluster: clusterOptions{bind: "127.0.0.1:7946"}}, false},
	} {
		var buf bytes.Buffer
		warnIfForgetful(slog.New(slog.NewTextHandler(&buf, nil)), &tc.o)
		if got := strings.Contains(buf.String(), "--state-file"); got != tc.warn {
			t.Errorf("%s: warned %v; want %v", tc.name, got, tc.warn)
		}
	}
}
