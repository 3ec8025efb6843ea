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
// takes fasthttp's reading. This is the goroutine path's count (the event
// loop's is TestH1LoopClockReadsPerRequest).
func TestClockReadsPerRequest(t *testing.T) {
	if got, want := clockReadsPerRequest(t, Config{DisableH1EventLoop: true}), 4.0; got != want {
		t.Errorf("%.2f readings of the clock per request; want %v", got, want)
	}
}

// clockReadsPerRequest is how many times a Router of cfg reads its clock
// for each of a run of keep-alive GETs to a uwsgi node.
func clockReadsPerRequest(t *testing.T, cfg Config) float64 {
	node := uwsgitest.NewNode(t, uwsgitest.Reply(benchResponse), uwsgitest.Lean()).Addr()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	table.AddStatic("bench.test", node, 1)
	var reads atomic.Int64
	cfg.Pools, cfg.Logger, cfg.Registerer = table, slog.New(slog.DiscardHandler), prometheus.NewRegistry()
	cfg.Now = func() time.Time { reads.Add(1); return time.Now() }
	rt, err := New(cfg)
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
	return float64(reads.Load()-before) / n
}
