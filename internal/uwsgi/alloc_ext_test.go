//go:build !race

package uwsgi_test

import (
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// The vars encoder's allocation gate (alloc_test.go), on
// uwsgitest.SampleRequest.

func TestAppendVarsAllocatesNothing(t *testing.T) {
	r := uwsgitest.SampleRequest()
	buf := make([]byte, 0, 4096)
	n := testing.AllocsPerRun(100, func() {
		buf, _ = uwsgi.AppendVars(buf[:0], r, 0, 0)
	})
	if n != 0 {
		t.Fatalf("appendVars: %v allocs/op; want 0", n)
	}
}
