package main

import "context"

// stack is the app's cleanup stack: the stop of each component, pushed
// before the component is started (or its socket bound), run last pushed
// first. Because a stop is on the stack before its component can be
// running, an error in any phase leaves nothing running: serve unwinds the
// whole stack whatever happened.
//
// A stop must be safe whether or not its component got as far as
// starting, and safe to run twice (the hand-off of a binary upgrade stops
// some servers early); it logs its own failure and returns within ctx's
// deadline plus what its component documents. Owned by the serve
// goroutine.
type stack []stop

type stop struct {
	name string // what it stops, for tests and for a reader of the order
	fn   func(ctx context.Context)
}

func (s *stack) push(name string, fn func(ctx context.Context)) {
	*s = append(*s, stop{name, fn})
}

// unwind runs and forgets every stop, last pushed first.
func (s *stack) unwind(ctx context.Context) {
	for len(*s) > 0 {
		top := (*s)[len(*s)-1]
		*s = (*s)[:len(*s)-1]
		top.fn(ctx)
	}
}

// names lists the stops in the order unwind runs them.
func (s stack) names() []string {
	out := make([]string, 0, len(s))
	for i := len(s) - 1; i >= 0; i-- {
		out = append(out, s[i].name)
	}
	return out
}
