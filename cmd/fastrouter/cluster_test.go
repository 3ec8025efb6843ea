package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestClusterFlags(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	b64 := write("b64", []byte("  MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=\n"))
	raw := write("raw", []byte("0123456789abcdef01234567")) // 24 raw bytes
	bad := write("bad", []byte("0123456789"))

	o, _, err := parseArgs([]string{"--cluster-bind", "127.0.0.1:7946", "--cluster-join", "10.0.0.2:7946",
		"--cluster-join", "router-3:7946", "--cluster-secret-file", b64})
	if err != nil {
		t.Fatal(err)
	}
	host, _ := os.Hostname()
	if o.cluster.nodeName != host+":7946" || len(o.cluster.secret) != 32 || len(o.cluster.join) != 2 {
		t.Fatalf("cluster options: name %q, key %d bytes, join %v", o.cluster.nodeName, len(o.cluster.secret), o.cluster.join)
	}
	if o, _, err = parseArgs([]string{"--cluster-bind", ":7946", "--cluster-node-name", "r1", "--cluster-name", "prod", "--cluster-secret-file", raw}); err != nil ||
		o.cluster.nodeName != "r1" || o.cluster.name != "prod" || string(o.cluster.secret) != "0123456789abcdef01234567" {
		t.Fatalf("raw key: %v %+v", err, o)
	}
	if o, _, err = parseArgs(nil); err != nil || o.cluster.bind != "" {
		t.Fatalf("no cluster flags: %v %+v", err, o.cluster)
	}
	for name, args := range map[string][]string{
		"join without bind":   {"--cluster-join", "10.0.0.2:7946"},
		"name without bind":   {"--cluster-name", "x"},
		"secret without bind": {"--cluster-secret-file", b64},
		"hostname bind":       {"--cluster-bind", "localhost:7946"},
		"no port":             {"--cluster-bind", "127.0.0.1"},
		"join without port":   {"--cluster-bind", ":7946", "--cluster-join", "10.0.0.2"},
		"short key":           {"--cluster-bind", ":7946", "--cluster-secret-file", bad},
		"missing key":         {"--cluster-bind", ":7946", "--cluster-secret-file", filepath.Join(dir, "nope")},
		"zero sync":           {"--cluster-bind", ":7946", "--cluster-sync-interval", "0s"},
	} {
		if _, _, err := parseArgs(args); err == nil || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s: err %v; want one line", name, err)
		}
	}
}
