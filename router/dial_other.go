//go:build !linux

package router

import (
	"context"
	"net"

	"github.com/fastrouter/fastrouter/balancer"
)

func (rt *Router) dial(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	return rt.dialNet(ctx, n)
}
