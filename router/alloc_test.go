//go:build !race

package router

import (
	"io"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

func TestRouteAndEncodeAllocatesNothing(t *testing.T) {
	tb := routedTable(t)
	r := sampleRequest()
	buf := make([]byte, 0, 4096)
	now := time.Now().UnixNano()
	if n := testing.AllocsPerRun(100, func() { buf = routeAndEncode(tb, r, buf, now) }); n != 0 {
		t.Fatalf("lookup+pick+encode: %v allocs/op; want 0", n)
	}
}

func TestRequestIDAllocatesNothing(t *testing.T) {
	rt, err := New(Config{Pools: emptyPools{}})
	if err != nil {
		t.Fatal(err)
	}
	x := getExchange()
	defer putExchange(x)
	base := sampleRequest()
	for _, tc := range []struct {
		name string
		id   []byte // nil: no X-Request-Id header
	}{{"generated", nil}, {"client's", []byte("7f9c2ba4e88f827d")}, {"replaced", []byte("bad id")}} {
		hs := make([]hdr, 0, 16)
		n := testing.AllocsPerRun(100, func() {
			x.req = *base
			x.req.Headers = append(hs[:0], base.Headers[:len(base.Headers)-1]...)
			if tc.id != nil {
				x.req.Headers = append(x.req.Headers, hdr{xRequestID, tc.id})
			}
			x.obs = obsInfo{}
			rt.assignRequestID(x)
		})
		if n != 0 {
			t.Errorf("assignRequestID (%s id): %v allocs/op; want 0", tc.name, n)
		}
	}
}

func TestAccessLineAllocatesNothing(t *testing.T) {
	rt, err := New(Config{Pools: emptyPools{}, AccessLog: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	x := getExchange()
	defer putExchange(x)
	x.req = *sampleRequest()
	rt.observe(x)
	x.obs.pool = "shop.example.com"
	rt.logAccess(x, 200, nil, 512) // warm the record pool
	if n := testing.AllocsPerRun(100, func() { rt.logAccess(x, 200, nil, 512) }); n != 0 {
		t.Fatalf("access-log line: %v allocs/op; want 0", n)
	}
	x.obs.tried = &balancer.Node{Address: "10.0.0.9:3031"} // a 502's line names the node tried
	if n := testing.AllocsPerRun(100, func() { rt.logAccess(x, 502, nil, 64) }); n != 0 {
		t.Fatalf("access-log line of a 502: %v allocs/op; want 0", n)
	}
}
