//go:build !race

package router

import (
	"testing"
	"time"
)

func TestAppendVarsAllocatesNothing(t *testing.T) {
	r := sampleRequest()
	buf := make([]byte, 0, 4096)
	n := testing.AllocsPerRun(100, func() {
		buf, _ = appendVars(buf[:0], r, 0, 0)
	})
	if n != 0 {
		t.Fatalf("appendVars: %v allocs/op; want 0", n)
	}
}

func TestRouteAndEncodeAllocatesNothing(t *testing.T) {
	tb := routedTable(t)
	r := sampleRequest()
	buf := make([]byte, 0, 4096)
	now := time.Now().UnixNano()
	if n := testing.AllocsPerRun(100, func() { buf = routeAndEncode(tb, r, buf, now) }); n != 0 {
		t.Fatalf("lookup+pick+encode: %v allocs/op; want 0", n)
	}
}
