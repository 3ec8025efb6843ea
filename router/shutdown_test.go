package router

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// startHeldNode starts a node that reads a request and then either never
// answers or streams a body without length, a byte every 50ms, until the
// router closes the connection (or 60s pass).
func startHeldNode(t *testing.T, stream bool) *uwsgitest.Node {
	t.Helper()
	h := uwsgitest.Hold()
	if stream {
		h = uwsgitest.Stream("HTTP/1.1 200 OK\r\n\r\n", "x", 50*time.Millisecond)
	}
	return uwsgitest.NewNode(t, h, uwsgitest.WithProto(uwsgitest.Raw), uwsgitest.Deadline(60*time.Second))
}

// At Shutdown's deadline the node connections of exchanges still in flight
// are closed, whatever their goroutine waits on: a response head that never
// comes (HTTP/1.1 and uwsgi fronts), an HTTP/1.0 body streamed until close
// (a hijacked connection no front tracks). Shutdown returns once every one
// is released, within cutGrace of its deadline.
func TestShutdownDeadlineCutsNodeConnections(t *testing.T) {
	silent, streamer := startHeldNode(t, false), startHeldNode(t, true)
	r := startRouter(t, Config{Timeout: 30 * time.Second})
	r.table.AddStatic("silent.test", silent.Addr(), 1)
	r.table.AddStatic("stream.test", streamer.Addr(), 1)
	front := startUwsgiFront(t, r)

	var clients []net.Conn
	dial := func(addr, req string) {
		c := uwsgitest.Dial(t, addr)
		c.Send(req)
		clients = append(clients, c.Conn())
	}
	dial(r.addr, "GET / HTTP/1.1\r\nHost: silent.test\r\n\r\n")
	dial(r.addr, "GET / HTTP/1.0\r\nHost: stream.test\r\n\r\n")
	dial(front, string(uwsgitest.Packet("HTTP_HOST", "silent.test", "REQUEST_METHOD", "GET", "REMOTE_ADDR", "127.0.0.1")))
	waitFor(t, "the nodes to have the requests", func() bool { return silent.Served() == 2 && streamer.Served() == 1 })
	if n := r.rt.backends.size(); n != 3 {
		t.Fatalf("node connections tracked: %d; want 3", n)
	}

	const deadline = 300 * time.Millisecond
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	start := time.Now()
	done := make(chan struct{})
	go func() { r.rt.Shutdown(ctx); close(done) }()
	select {
	case <-done:
	case <-time.After(deadline + cutGrace + 5*time.Second):
		t.Fatalf("Shutdown still blocked %v after SIGTERM with a %v deadline", time.Since(start), deadline)
	}
	took := time.Since(start)
	t.Logf("Shutdown returned after %v", took)
	if n := r.rt.backends.size(); n != 0 {
		t.Errorf("node connections still held after Shutdown: %d", n)
	}
	end := time.Now().Add(2 * time.Second)
	for silent.Open()+streamer.Open() > 0 {
		if time.Now().After(end) {
			t.Fatalf("%d of 3 node connections still open 2s after Shutdown returned", silent.Open()+streamer.Open())
		}
		time.Sleep(5 * time.Millisecond)
	}
	for i, c := range clients {
		_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := io.Copy(io.Discard, c); isTimeout(err) {
			t.Errorf("client %d: still open 2s after Shutdown returned (%v)", i, err)
		}
	}
}

// A uwsgi-front request still waiting for a node under its pool's in-flight
// cap when the shutdown deadline comes counts as a 503 and, as on the HTTP
// fronts, not as a backend error: the router cut it, not the node.
func TestShutdownCutIsNoBackendErrorOnUwsgiFront(t *testing.T) {
	held := startHeldNode(t, false)
	r := startRouter(t, Config{Timeout: 30 * time.Second})
	if err := r.table.SetPolicies(balancer.Policy{MaxInflight: 1}, nil); err != nil {
		t.Fatal(err)
	}
	r.table.AddStatic("cap.test", held.Addr(), 1)
	front := startUwsgiFront(t, r)
	pkt := string(uwsgitest.Packet("HTTP_HOST", "cap.test", "REQUEST_METHOD", "GET", "REMOTE_ADDR", "127.0.0.1"))
	send := func() { uwsgitest.Dial(t, front).Send(pkt) }
	send() // takes the node's one slot and waits for an answer that never comes
	waitFor(t, "the node to have the first request", func() bool { return held.Served() == 1 })
	send()
	pool := r.table.Pool("cap.test")
	waitFor(t, "the second request to wait under the cap", func() bool { return pool.Waiting() == 1 })

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	r.rt.Shutdown(ctx)
	// Its 503 races with the front closing its connection at the deadline;
	// the count does not. The held request, cut, may be counted 503 too:
	// the node closed under it, so it is tried again and refused (the
	// shutdown deadline). Both must be counted before the check below.
	count := func(code string) float64 {
		return testutil.ToFloat64(r.rt.metrics.requests.WithLabelValues("cap.test", code))
	}
	waitFor(t, "both requests to be counted, the queued one 503", func() bool {
		return count("503") >= 1 && count("503")+count("502") == 2
	})
	if got := testutil.ToFloat64(r.rt.metrics.backendErrs.WithLabelValues("cap.test", "other")); got != 0 {
		t.Errorf("backend_errors_total{reason=other} = %v after the shutdown cut; want 0", got)
	}
}
