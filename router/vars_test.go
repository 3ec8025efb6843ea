package router

import (
	"fmt"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// sampleRequest is uwsgitest.SampleRequest, the request of the encoder's
// benchmarks and allocation gates.
func sampleRequest() *request { return uwsgitest.SampleRequest() }

// routedTable is a table of 10k pools with 16 nodes in the one under test.
func routedTable(tb testing.TB) *balancer.Table {
	tb.Helper()
	t, err := balancer.New(balancer.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 10_000; i++ {
		t.AddStatic(fmt.Sprintf("host%d.example.com", i), "10.0.0.1:3031", 1)
	}
	for i := 0; i < 16; i++ {
		t.AddStatic("shop.example.com", fmt.Sprintf("10.0.1.%d:3031", i+1), uint64(i%3+1))
	}
	return t
}

// routeAndEncode is the request path's own work before the dial: route
// lookup, node pick and vars encoding.
func routeAndEncode(t *balancer.Table, r *request, buf []byte, now int64) []byte {
	p := t.Lookup(r.Host)
	n := p.Pick(now, nil)
	buf, _ = uwsgi.AppendVars(buf[:0], r, n.Modifier1, n.Modifier2)
	n.Done()
	return buf
}

func BenchmarkRouteAndEncode(b *testing.B) {
	t := routedTable(b)
	r := sampleRequest()
	buf := make([]byte, 0, 4096)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		buf = routeAndEncode(t, r, buf, now)
	}
}
