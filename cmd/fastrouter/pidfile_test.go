package main

import (
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

func readPIDFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if os.IsNotExist(err) {
		return ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// After a binary upgrade the old process leaves the pid file alone, even
// while it still names the old process: the new one writes it at any moment,
// and a read-then-remove by the old one raced that write and could delete
// the new process's file (TestClusterBinaryUpgrade timed out waiting for it).
func TestPIDFileAfterHandOff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fastrouter.pid")
	self := strconv.Itoa(os.Getpid())
	if err := writePIDFile(path); err != nil {
		t.Fatal(err)
	}
	releasePIDFile(path, true)
	if got := readPIDFile(t, path); got != self {
		t.Fatalf("pid file after a hand-off = %q; want it left as it was (%s)", got, self)
	}
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("files beside the pid file: %v; want none", ents)
	}
}

// Without a hand-off the exiting process removes the file if it names it,
// and keeps one that names another process; a failed upgrade writes this
// process's pid back.
func TestPIDFileRelease(t *testing.T) {
	path := filepath.Join(t.TempDir(), "fastrouter.pid")
	if err := writePIDFile(path); err != nil {
		t.Fatal(err)
	}
	releasePIDFile(path, false)
	if got := readPIDFile(t, path); got != "" {
		t.Fatalf("pid file after a plain exit = %q; want removed", got)
	}
	if err := os.WriteFile(path, []byte("1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	releasePIDFile(path, false)
	if got := readPIDFile(t, path); got != "1" {
		t.Fatalf("another process's pid file = %q after exit; want it kept", got)
	}
	reclaimPIDFile(path, slog.New(slog.DiscardHandler))
	if got, want := readPIDFile(t, path), strconv.Itoa(os.Getpid()); got != want {
		t.Fatalf("pid file after a failed upgrade = %q; want %s", got, want)
	}
}
