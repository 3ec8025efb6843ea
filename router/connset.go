package router

import (
	"context"
	"io"
	"sync"
)

// connSet is a set of open connections, or of anything one Close cuts (a
// tunnel closes both its sides), owned by whoever serves them: each front
// tracks its client connections in one (serve.go, park.go, tunnel.go,
// uwsgifront.go), the router its node connections (shutdown.go). It is net/http's
// Server.trackConn with the wait of its Shutdown: an owner adds a member when
// it starts serving it and removes it when it lets go, so that shutdown can
// wait for the set to empty and, at its deadline, close every member at once
// (closeAll) and refuse new ones.
//
// Safe for concurrent use; the zero value is an empty set.
type connSet struct {
	mu    sync.Mutex
	m     map[io.Closer]struct{} // guarded by mu
	cut   bool                   // guarded by mu: closeAll ran; add refuses
	empty chan struct{}          // guarded by mu: closed when m empties (wait)
}

// add registers c; false (c not registered: the caller closes it) once the
// set has been cut.
func (s *connSet) add(c io.Closer) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cut {
		return false
	}
	if s.m == nil {
		s.m = make(map[io.Closer]struct{}, 64)
	}
	s.m[c] = struct{}{}
	return true
}

// remove forgets c (idempotent). The owner calls it last, once it is done
// with c: wait reports an empty set only when every owner has let go.
func (s *connSet) remove(c io.Closer) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.m, c)
	if len(s.m) == 0 && s.empty != nil {
		close(s.empty)
		s.empty = nil
	}
}

// size is how many members the set has.
func (s *connSet) size() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.m)
}

// closedChan is a channel that is always closed (wait on an empty set).
var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// wait returns a channel closed once the set is empty (at once if it is).
// A member added after that does not reopen it.
func (s *connSet) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.m) == 0 {
		return closedChan
	}
	if s.empty == nil {
		s.empty = make(chan struct{})
	}
	return s.empty
}

// closeAll closes every member (outside the lock: a Close may block
// briefly) and refuses new ones. It returns how many it closed. Members stay
// registered until their owners remove them.
func (s *connSet) closeAll() int {
	s.mu.Lock()
	s.cut = true
	cs := make([]io.Closer, 0, len(s.m))
	for c := range s.m {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, c := range cs {
		_ = c.Close()
	}
	return len(cs)
}

// shutdown waits until the set is empty or ctx ends. Then it closes the
// members left (closeAll) and waits at most cutGrace for their owners to let
// go (shutdown.go), and returns ctx's error; nil when the set emptied in time.
func (s *connSet) shutdown(ctx context.Context) error {
	done := s.wait()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.closeAll()
	waitBounded(done, cutGrace)
	return ctx.Err()
}
