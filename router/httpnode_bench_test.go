package router

import (
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
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
	rt := benchRouter(b, node)
	benchGET(b, rt)
}
