package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// SIGHUP reloads the config file: static nodes, timeouts and the default
// algorithm change without dropping an open keep-alive connection; a bad
// file is refused with one log line and the running config stays.
func TestSIGHUPReload(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	dir := t.TempDir()
	cfg := filepath.Join(dir, "fastrouter.yaml")
	write := func(s string) { t.Helper(); writeFileAtomic(t, cfg, []byte(s)) }
	write("timeout: 60s\nalgo: wrr\n")
	r := startRouter(t, "--config", cfg)
	n := startNode(t, r, "hup.test", nodeOpts{id: "h"})
	waitForNodes(t, r, "hup.test", 1)

	// One keep-alive connection, used before and after every reload.
	kept := uwsgitest.Dial(t, r.http)
	ask := func(host, path string) (int, string) {
		t.Helper()
		resp, body := kept.Do(fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, host))
		if resp.Close {
			t.Fatalf("%s%s: the router closed the kept connection", host, path)
		}
		return resp.StatusCode, body
	}
	hup := func(want string) {
		t.Helper()
		before := countLines(t, r.log, want)
		if err := syscall.Kill(r.pid(), syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "log line "+want, func() bool { return countLines(t, r.log, want) > before })
	}

	if code, body := ask("hup.test", "/slow?ms=1500"); code != 200 {
		t.Fatalf("before reload: %d %q", code, body)
	}

	// Shorter timeout, lrc for new pools, one static node.
	write(fmt.Sprintf("timeout: 1s\nalgo: lrc\nto:\n  - static.test=%s\n", n.addr))
	hup("configuration reloaded")
	if code, _ := ask("hup.test", "/slow?ms=1800"); code != 504 {
		t.Fatalf("after reloading timeout: 1s, a 1.8 s response got %d; want 504", code)
	}
	// The 504 did not close the connection: the next request on it works.
	if code, body := ask("static.test", "/"); code != 200 || body != "node=h" {
		t.Fatalf("static node added by reload: %d %q", code, body)
	}
	if p := r.pool(t, "static.test"); p.Algo != "lrc" {
		t.Fatalf("pool created after the reload has algo %q; want lrc", p.Algo)
	}
	if p := r.pool(t, "hup.test"); p.Algo != "wrr" {
		t.Fatalf("existing pool changed algo to %q; want wrr kept", p.Algo)
	}

	// A bad file is refused; the running configuration (timeout 1s) stays.
	write("timeout: [\n")
	hup("reload refused; the running configuration stays")
	if code, _ := ask("hup.test", "/slow?ms=1800"); code != 504 {
		t.Fatalf("after a refused reload: %d; want 504 (timeout 1s kept)", code)
	}
	if r.exited() {
		t.Fatal("the router exited on a bad reload")
	}

	// A setting fixed at start is named as needing a restart.
	write("timeout: 60s\nmax-header-bytes: 4096\n")
	hup("apply only after a restart or a SIGUSR2 upgrade")
	if code, body := ask("hup.test", "/slow?ms=1500"); code != 200 {
		t.Fatalf("after reloading timeout: 60s: %d %q", code, body)
	}
}

func countLines(t *testing.T, path, substr string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), substr)
}
