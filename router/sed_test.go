package router

import (
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// TestSEDMeasuresNodes: a sed pool's nodes are timed from the pick to the
// response head, a 5xx counts as slow, and the pool settles on the node
// that answers fastest once every node has been tried.
func TestSEDMeasuresNodes(t *testing.T) {
	fast := startFakeNode(t, okReply("fast"))
	slow := startFakeNode(t, func(map[string]string, []byte) string {
		time.Sleep(40 * time.Millisecond)
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nslow"
	})
	broken := startFakeNode(t, func(map[string]string, []byte) string {
		return "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"
	})
	r := startRouter(t, Config{})
	for _, a := range []string{fast.addr(), slow.addr(), broken.addr()} {
		if _, err := r.table.Announce(&balancer.Announce{Key: []byte("sed.test"), Address: []byte(a), Cores: 1, Algo: []byte("sed")}); err != nil {
			t.Fatal(err)
		}
	}
	got := map[string]int{}
	for range 20 {
		resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: sed.test\r\n\r\n")
		got[body+resp.Status[:3]]++
	}
	if got["fast200"] < 15 || got["slow200"] < 1 || got["500"] < 1 {
		t.Fatalf("20 sequential requests went %v; want each node tried and the fast one taking the rest", got)
	}
	p := r.table.Pool("sed.test")
	now := time.Now().UnixNano()
	lf, ls, lb := p.Node(fast.addr()).Latency(now), p.Node(slow.addr()).Latency(now), p.Node(broken.addr()).Latency(now)
	if lf <= 0 || lf >= 30*time.Millisecond || ls < 35*time.Millisecond || lb < 200*time.Millisecond {
		t.Fatalf("estimates fast %v, slow %v, 5xx %v; want fast < 30ms, slow ≥ 35ms, 5xx ≥ 200ms", lf, ls, lb)
	}
}
