//go:build !linux

package router

// Off Linux idle connections stay in fasthttp (see park.go).
const canPark = false

func (p *parkConn) peek(uintptr) bool { return true }
