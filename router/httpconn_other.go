//go:build !linux

package router

import "net"

// aliveCheck is a no-op off Linux: a stale idle connection is found by the
// request that fails on it and retried on a fresh one (upstream_http.go).
type aliveCheck struct{}

func (a *aliveCheck) init(net.Conn) {}
func (a *aliveCheck) ok() bool      { return true }
