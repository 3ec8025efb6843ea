package lifecycle

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
)

// resumeManager is a Manager over a fresh table, with state file path (may
// be "") and its log in logs.
func resumeManager(t *testing.T, path string, logs *bytes.Buffer) (*Manager, *balancer.Table) {
	t.Helper()
	tb := newTable(t)
	m, err := New(Config{StateFile: path, Logger: slog.New(slog.NewTextHandler(logs, nil))}, tb)
	if err != nil {
		t.Fatal(err)
	}
	return m, tb
}

// A binary upgrade's hand-off wins over the state file; without one the
// state file is loaded; what cannot be restored is logged, never fatal.
func TestResume(t *testing.T) {
	dir := t.TempDir()
	src := newTable(t)
	src.Announce(&balancer.Announce{Key: []byte("live.test"), Address: []byte("10.0.0.1:1")})
	live, err := New(Config{}, src)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := live.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "state.json")
	old := newTable(t)
	old.Announce(&balancer.Announce{Key: []byte("file.test"), Address: []byte("10.0.0.2:1")})
	if m, _ := New(Config{StateFile: file}, old); m.Save() != nil {
		t.Fatal("saving the state file")
	}

	var logs bytes.Buffer
	m, tb := resumeManager(t, file, &logs)
	m.Resume(bytes.NewReader(snap))
	if tb.Pool("live.test") == nil || tb.Pool("file.test") != nil {
		t.Fatalf("after a hand-off: pools %v; want the previous process's, not the file's", tb.Pools())
	}
	if !strings.Contains(logs.String(), "restored nodes from the previous process") || !strings.Contains(logs.String(), "nodes=1") {
		t.Errorf("hand-off log: %s", logs.String())
	}

	logs.Reset()
	m, tb = resumeManager(t, file, &logs)
	m.Resume(nil)
	if tb.Pool("file.test") == nil {
		t.Fatal("without a hand-off the state file was not loaded")
	}
	if !strings.Contains(logs.String(), "restored nodes from the state file") {
		t.Errorf("state file log: %s", logs.String())
	}

	logs.Reset()
	m, tb = resumeManager(t, file, &logs)
	m.Resume(strings.NewReader("{"))
	if len(tb.Pools()) != 0 || !strings.Contains(logs.String(), "upgrade state not restored; nodes re-announce") {
		t.Errorf("a broken hand-off: pools %v, log %s", tb.Pools(), logs.String())
	}

	if err := os.WriteFile(file, []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	logs.Reset()
	m, tb = resumeManager(t, file, &logs)
	m.Resume(nil)
	if len(tb.Pools()) != 0 || !strings.Contains(logs.String(), "state file not loaded; starting empty") {
		t.Errorf("a broken state file: pools %v, log %s", tb.Pools(), logs.String())
	}

	logs.Reset()
	m, _ = resumeManager(t, "", &logs)
	m.Resume(nil)
	if logs.Len() != 0 {
		t.Errorf("no state file and no hand-off logged %q", logs.String())
	}
}

// Nodes restored from the state file are logged one by one as joining
// from "state"; those of an upgrade's hand-off are not (the new process
// takes over the same table, so nothing joined).
func TestRestoredNodesLogged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "state.json")
	src := newTable(t)
	src.Announce(&balancer.Announce{Key: []byte("a.test"), Address: []byte("10.0.0.1:1")})
	src.Announce(&balancer.Announce{Key: []byte("a.test"), Address: []byte("10.0.0.2:1")})
	saver, _ := New(Config{StateFile: file}, src)
	if err := saver.Save(); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	m, _ := resumeManager(t, file, &logs)
	m.Resume(nil)
	for _, a := range []string{"10.0.0.1:1", "10.0.0.2:1"} {
		if want := `level=INFO msg="node joined" pool=a.test node=` + a + ` source=state`; !strings.Contains(logs.String(), want) {
			t.Errorf("no %q in:\n%s", want, logs.String())
		}
	}
	snap, _ := saver.Snapshot()
	logs.Reset()
	m, _ = resumeManager(t, "", &logs)
	m.Resume(bytes.NewReader(snap))
	if strings.Contains(logs.String(), "node joined") {
		t.Errorf("a hand-off logged its nodes one by one:\n%s", logs.String())
	}
}
