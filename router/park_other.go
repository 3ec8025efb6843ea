//go:build !linux

package router

// Off Linux idle connections stay in fasthttp (see park.go).
const canPark = false

// parker is Linux's (park_linux.go); nothing parks elsewhere.
type parker struct{}

func (k *parker) stop() {}

func (p *parkConn) wait()       { p.l.dropParked(p) }
func (p *parkConn) cancelPark() { p.closeNow() }
