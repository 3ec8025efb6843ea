package router

import (
	"bufio"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus"
)

// TestClockReadsPerRequest: a keep-alive GET through the HTTP/1.1 front to
// a uwsgi node reads the router's clock once per phase (forward.go, proxy):
// the first connect attempt, the request's write to the node, the
// response head, the end. The keep-alive wait's park deadline (park.go)
// takes fasthttp's reading.
func TestClockReadsPerRequest(t *testing.T) {
	node := uwsgitest.NewNode(t, uwsgitest.Reply(benchResponse), uwsgitest.Lean()).Addr()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	table.AddStatic("bench.test", node, 1)
	var reads atomic.Int64
	rt, err := New(Config{Pools: table, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(),
		Now: func() time.Time { reads.Add(1); return time.Now() }})
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", serveUntilCleanup(t, rt, rt.Serve, "tcp", "clock"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	req := []byte("GET /items?id=42 HTTP/1.1\r\nHost: bench.test\r\n\r\n")
	get := func() {
		t.Helper()
		if _, err := c.Write(req); err != nil {
			t.Fatal(err)
		}
		if err := readResponse(br); err != nil {
			t.Fatal(err)
		}
	}
	get() // the first request of a connection takes the header timeout, not the keep-alive wait
	const n = 20
	before := reads.Load()
	for range n {
		get()
	}
	// The last response's end may still be running when its bytes arrive:
	// allow for it.
	time.Sleep(50 * time.Millisecond)
	if got, want := reads.Load()-before, int64(4*n); got != want {
		t.Errorf("%d readings of the clock for %d requests (%.1f each); want %d (4 each)", got, n, float64(got)/n, want)
	}
}
