package main

import (
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	o, _, err := parseArgs(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.http, []string{"127.0.0.1:8080"}) || o.admin != "127.0.0.1:9191" ||
		!reflect.DeepEqual(o.subscriptionServers, []string{"127.0.0.1:2626"}) || o.algo != "wrr" ||
		o.tolerance != 30*time.Second || o.timeout != 60*time.Second || o.drainTimeout != 30*time.Second ||
		o.maxHeaderBytes != 65536 || len(o.trustedProxies) != 2 {
		t.Fatalf("defaults: %+v", o)
	}
}

func TestConfigFileAndOverride(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	os.WriteFile(path, []byte("http: [127.0.0.1:1, 127.0.0.1:2]\nto:\n  - a=127.0.0.1:3\ntimeout: 5s\nmax-header-bytes: 4096\nalgo: lrc\n"), 0o644)
	o, _, err := parseArgs([]string{"--config", path, "--timeout", "7s", "--to", "b=/run/b.sock"})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.http, []string{"127.0.0.1:1", "127.0.0.1:2"}) || o.timeout != 7*time.Second ||
		!reflect.DeepEqual(o.to, []string{"b=/run/b.sock"}) || o.maxHeaderBytes != 4096 || o.algo != "lrc" {
		t.Fatalf("merged: %+v", o)
	}
}

func TestBadInput(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		return p
	}
	cases := map[string][]string{
		"unknown flag":      {"--nope"},
		"bad duration":      {"--timeout", "x"},
		"zero duration":     {"--drain-timeout", "0s"},
		"bad algo":          {"--algo", "random"},
		"bad --to":          {"--to", "k"},
		"hostname node":     {"--to", "k=example.com:80"},
		"bad cidr":          {"--trusted-proxy", "10.0.0.0/33"},
		"bad level":         {"--log-level", "loud"},
		"header bytes":      {"--max-header-bytes", "10"},
		"stray argument":    {"extra"},
		"yaml syntax":       {"--config", write("a.yaml", "http: [\n")},
		"unknown key":       {"--config", write("b.yaml", "nope: 1\n")},
		"list for a scalar": {"--config", write("c.yaml", "timeout: [1s, 2s]\n")},
		"missing file":      {"--config", filepath.Join(dir, "none.yaml")},
		"empty token":       {"--admin-token-file", write("tok", "\n")},
	}
	for name, args := range cases {
		if _, _, err := parseArgs(args); err == nil || errors.Is(err, flag.ErrHelp) {
			t.Errorf("%s: %v accepted", name, args)
		} else if strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: error spans lines: %q", name, err)
		}
	}
}

func TestHelpIsNotAnError(t *testing.T) {
	if _, _, err := parseArgs([]string{"--help"}); !errors.Is(err, flag.ErrHelp) {
		t.Fatalf("--help: %v", err)
	}
}

// The example configuration shipped in configs/ must stay valid.
func TestExampleConfigParses(t *testing.T) {
	if _, _, err := parseArgs([]string{"--config", "../../configs/fastrouter.yaml"}); err != nil {
		t.Fatal(err)
	}
}

// leaksGo reports whether an operator's message names a Go type, package
// or function instead of saying what was wrong.
func leaksGo(s string) bool {
	for _, w := range []string{"main.", "netip.", "strconv.", "time.Duration", "interface {}", "map[", "!!str", "!!int", "!!seq", "!!map", "!!bool", "!!float",
		"yaml: unmarshal errors", "flag provided but not defined", "parse error", "balancer:", "subauth:"} {
		if strings.Contains(s, w) {
			return true
		}
	}
	return false
}

// The HTTP/1.1 event loop is on by default; the flag and the config file
// key turn it off, and the flag wins over the file.
func TestH1EventLoopDefaultAndOff(t *testing.T) {
	dir := t.TempDir()
	off := filepath.Join(dir, "off.yaml")
	on := filepath.Join(dir, "on.yaml")
	os.WriteFile(off, []byte("h1-event-loop: false\n"), 0o644)
	os.WriteFile(on, []byte("h1-event-loop: true\n"), 0o644)
	for _, c := range []struct {
		args []string
		want bool
	}{
		{nil, true},
		{[]string{"--h1-event-loop=false"}, false},
		{[]string{"--config", off}, false},
		{[]string{"--config", on, "--h1-event-loop=false"}, false},
		{[]string{"--config", off, "--h1-event-loop"}, true},
	} {
		o, _, err := parseArgs(c.args)
		if err != nil {
			t.Fatalf("%q: %v", c.args, err)
		}
		if o.h1EventLoop != c.want {
			t.Errorf("%q: event loop %v; want %v", c.args, o.h1EventLoop, c.want)
		}
	}
}

// With several event loops the router runs one P more than loops (spareP);
// with the loop off, or one loop, GOMAXPROCS stays as it is.
func TestSpareP(t *testing.T) {
	prev := runtime.GOMAXPROCS(2)
	defer runtime.GOMAXPROCS(prev)
	for _, c := range []struct {
		loop      bool
		procs     int
		wantProcs int
	}{{true, 2, 3}, {false, 2, 2}, {true, 1, 1}} {
		runtime.GOMAXPROCS(c.procs)
		want := c.procs
		if runtime.GOOS != "linux" {
			c.wantProcs = c.procs
		}
		if n := spareP(&options{h1EventLoop: c.loop}); n != want || runtime.GOMAXPROCS(0) != c.wantProcs {
			t.Errorf("loop %v, GOMAXPROCS %d: %d loops and GOMAXPROCS %d, want %d and %d",
				c.loop, c.procs, n, runtime.GOMAXPROCS(0), want, c.wantProcs)
		}
	}
}
