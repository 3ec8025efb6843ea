package router

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

func sampleRequest() *request {
	return &request{
		Method: []byte("GET"), URI: []byte("/app/items?id=42"), Proto: []byte("HTTP/1.1"),
		Host: []byte("shop.example.com"), Scheme: "http",
		Remote: netip.MustParseAddrPort("192.0.2.7:51234"), ServerPort: []byte("8080"),
		Headers: []hdr{
			{[]byte("Host"), []byte("shop.example.com")},
			{[]byte("User-Agent"), []byte("wrk/4.2")},
			{[]byte("Accept"), []byte("*/*")},
			{[]byte("Accept-Encoding"), []byte("gzip, deflate")},
			{[]byte("Cookie"), []byte("session=abcdef0123456789")},
			{[]byte("X-Request-Id"), []byte("7f9c2ba4e88f827d616045507605853e")},
		},
	}
}

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
