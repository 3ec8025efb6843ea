package router

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// closeCounter is a connSet member that counts its closes.
type closeCounter struct{ n atomic.Int32 }

func (c *closeCounter) Close() error { c.n.Add(1); return nil }

func TestConnSetWaitAndCut(t *testing.T) {
	var s connSet
	select {
	case <-s.wait():
	default:
		t.Fatal("wait on an empty set: not ready")
	}
	a, b := &closeCounter{}, &closeCounter{}
	if !s.add(a) || !s.add(b) || s.size() != 2 {
		t.Fatalf("add: size %d; want 2", s.size())
	}
	w := s.wait()
	s.remove(a)
	s.remove(a) // idempotent
	select {
	case <-w:
		t.Fatal("wait ready with a member left")
	default:
	}
	if n := s.closeAll(); n != 1 || b.n.Load() != 1 || a.n.Load() != 0 {
		t.Fatalf("closeAll closed %d (a %d, b %d); want b only", n, a.n.Load(), b.n.Load())
	}
	if s.add(&closeCounter{}) {
		t.Fatal("add after closeAll: accepted")
	}
	s.remove(b)
	select {
	case <-w:
	case <-time.After(5 * time.Second):
		t.Fatal("wait not ready once the last member left")
	}
}

func TestConnSetShutdown(t *testing.T) {
	// Emptied in time: nil, nothing closed.
	var s connSet
	m := &closeCounter{}
	s.add(m)
	go func() { time.Sleep(10 * time.Millisecond); s.remove(m) }()
	if err := s.shutdown(context.Background()); err != nil || m.n.Load() != 0 {
		t.Fatalf("shutdown = %v, %d closes; want nil, 0", err, m.n.Load())
	}

	// At the deadline: the members are closed, and shutdown returns once
	// their owner let go, with ctx's error.
	var s2 connSet
	m2 := &ownedConn{set: &s2}
	s2.add(m2)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if err := s2.shutdown(ctx); err != context.Canceled {
		t.Fatalf("shutdown at the deadline = %v; want %v", err, context.Canceled)
	}
	if took := time.Since(start); took >= cutGrace {
		t.Errorf("shutdown waited %v for an owner that let go at the close", took)
	}
	if s2.size() != 0 {
		t.Fatalf("size after shutdown: %d", s2.size())
	}
}

// ownedConn is a member whose owner lets go of it as soon as it is closed.
type ownedConn struct{ set *connSet }

func (c *ownedConn) Close() error { go c.set.remove(c); return nil }
