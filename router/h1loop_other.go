//go:build !linux

package router

import "context"

// loopFront is the HTTP/1.1 event loop (h1loop_linux.go); elsewhere the
// accept loop serves every listener.
type loopFront struct{}

func (l *frontListener) startLoops() *loopFront { return nil }
func (lf *loopFront) wait()                     {}
func (lf *loopFront) stopAccepting()            {}
func (lf *loopFront) shutdown(context.Context)  {}
