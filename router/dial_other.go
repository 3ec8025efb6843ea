//go:build !linux

package router

import (
	"context"
	"net"

	"github.com/fastrouter/fastrouter/balancer"
)

// dialNode is dial; lazy dials exist on Linux only (dial_linux.go).
func (rt *Router) dialNode(ctx context.Context, n *balancer.Node, _ bool) (net.Conn, error) {
	return rt.dial(ctx, n)
}

func (rt *Router) dial(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	if n.Endpoint.Network == balancer.NetHTTP {
		return rt.dialHTTP(ctx, n) // upstream_http.go
	}
	return rt.dialNet(ctx, n)
}

// sockPool keeps idle node sockets on Linux (sockpool_linux.go); elsewhere
// every dial opens its own.
type sockPool struct{}

func (*sockPool) closeAll() {}
