package router

import (
	"log/slog"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus"
)

// benchHTTPNode is an in-process keep-alive HTTP/1.1 node on TCP that
// answers every request head (no bodies in this benchmark) with
// benchResponse.
func benchHTTPNode(b *testing.B) string {
	b.Helper()
	return "http://" + uwsgitest.NewNode(b, uwsgitest.Reply(benchResponse), uwsgitest.WithProto(uwsgitest.HTTP), uwsgitest.Lean()).Addr()
}

// BenchmarkProxyHTTPNode is BenchmarkProxy against an http:// node: the
// backend connection is reused (keep-alive) instead of dialled per request.
func BenchmarkProxyHTTPNode(b *testing.B) {
	node := benchHTTPNode(b)
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		b.Fatal(err)
	}
	table.AddStatic("bench.test", node, 1)
	rt, err := New(Config{Pools: table, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	benchGET(b, rt)
}
