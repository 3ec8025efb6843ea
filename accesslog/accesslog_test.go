package accesslog

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus"
)

var waitFor = uwsgitest.WaitFor

func readFile(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestWritesReachTheFileWithoutClose(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w, err := New(Config{Path: path, FlushInterval: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("one\n"))
	w.Write([]byte("two\n"))
	waitFor(t, "both lines in the file", func() bool { return readFile(t, path) == "one\ntwo\n" })
}

func TestCloseFlushesAndLaterLinesAreDropped(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w, err := New(Config{Path: path, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("kept\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, path); got != "kept\n" {
		t.Fatalf("after Close the file holds %q; want %q", got, "kept\n")
	}
	w.Write([]byte("late\n"))
	if w.Dropped() != 1 {
		t.Fatalf("Dropped() = %d after a write past Close; want 1", w.Dropped())
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// blockingWriter stands in for a hung disk: Write blocks until release.
type blockingWriter struct {
	entered chan struct{}
	release chan struct{}
	mu      sync.Mutex
	buf     bytes.Buffer
}

func (b *blockingWriter) Write(p []byte) (int, error) {
	select {
	case b.entered <- struct{}{}:
	default:
	}
	<-b.release
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func TestSlowDiskDropsInsteadOfBlocking(t *testing.T) {
	out := &blockingWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	reg := prometheus.NewRegistry()
	w, err := New(Config{Path: "-", Stdout: out, BufferSize: 100, FlushInterval: time.Millisecond, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	line := []byte(strings.Repeat("x", 39) + "\n") // 40 bytes
	w.Write(line)
	<-out.entered // the goroutine is now stuck writing the first line

	// The buffer takes two more lines (80 of 100 bytes); the rest drop,
	// and no Write waits for the disk.
	start := time.Now()
	for range 10 {
		w.Write(line)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("10 writes against a hung disk took %s; they must not block", d)
	}
	if got := w.Dropped(); got != 8 {
		t.Fatalf("Dropped() = %d; want 8 (two of ten fit the buffer)", got)
	}
	if got := counterValue(t, reg, "fastrouter_access_log_dropped_lines_total"); got != 8 {
		t.Fatalf("fastrouter_access_log_dropped_lines_total = %v; want 8", got)
	}
	close(out.release)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := out.buf.Len(); got != 3*len(line) {
		t.Fatalf("wrote %d bytes; want %d (the three lines that were not dropped)", got, 3*len(line))
	}
}

func counterValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}

func TestReopenAfterRotation(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	w, err := New(Config{Path: path, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	w.Write([]byte("before\n"))
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	// Reopen flushes into the renamed file first (the descriptor follows
	// it), then starts a new one.
	if err := w.Reopen(); err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("after\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, rotated); got != "before\n" {
		t.Errorf("rotated file: %q; want %q", got, "before\n")
	}
	if got := readFile(t, path); got != "after\n" {
		t.Errorf("new file: %q; want %q", got, "after\n")
	}
}

func TestConcurrentWritersKeepLinesWhole(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	w, err := New(Config{Path: path, FlushInterval: time.Millisecond, BufferSize: 8 << 20})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				fmt.Fprintf(w, "writer=%d line=%d %s\n", g, i, strings.Repeat("p", 100))
			}
		}()
	}
	wg.Wait()
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(readFile(t, path), "\n"), "\n")
	if len(lines) != 8*500 {
		t.Fatalf("%d lines; want %d", len(lines), 8*500)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "writer=") || !strings.HasSuffix(l, strings.Repeat("p", 100)) {
			t.Fatalf("torn line %q", l)
		}
	}
}

func TestNewFailsOnAnUnwritablePath(t *testing.T) {
	if _, err := New(Config{Path: filepath.Join(t.TempDir(), "missing", "dir", "access.log")}); err == nil {
		t.Fatal("New with a path in a missing directory succeeded")
	}
	if _, err := New(Config{}); err == nil {
		t.Fatal("New without a path succeeded")
	}
}
