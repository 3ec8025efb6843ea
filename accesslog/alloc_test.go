//go:build !race

package accesslog

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

func TestWriteAllocatesNothing(t *testing.T) {
	w, err := New(Config{Path: "-", Stdout: &bytes.Buffer{}, FlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	line := []byte(strings.Repeat("y", 200) + "\n")
	// 100 lines stay below flushAt: the buffer New made takes them all.
	if n := testing.AllocsPerRun(100, func() { w.Write(line) }); n != 0 {
		t.Fatalf("Write: %v allocs/op; want 0", n)
	}
}
