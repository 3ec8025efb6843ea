package router

import (
	"net"
	"testing"
	"time"
)

func TestLazyKeep(t *testing.T) {
	now := time.Now()
	d := now.Add(64 * time.Second) // armed: 64 s away, so the slack is about 1 s
	cases := []struct {
		name string
		d, t time.Time
		keep bool
	}{
		{"renewed within the slack", d, d.Add(500 * time.Millisecond), true},
		{"the same deadline", d, d, true},
		{"renewed beyond the slack", d, d.Add(2 * time.Second), false},
		{"an earlier deadline", d, d.Add(-time.Millisecond), false},
		{"none armed", time.Time{}, d, false},
		{"cleared", d, time.Time{}, false},
		{"the armed one has passed", now.Add(-time.Millisecond), now.Add(64 * time.Second), false},
		{"a deadline in the past", now.Add(-2 * time.Second), now.Add(-time.Second), false},
	}
	for _, c := range cases {
		if got := lazyKeep(c.d, c.t); got != c.keep {
			t.Errorf("%s: lazyKeep = %v; want %v", c.name, got, c.keep)
		}
	}
}

// deadlineConn records the write deadlines set on it.
type deadlineConn struct {
	net.Conn
	set []time.Time
}

func (c *deadlineConn) SetWriteDeadline(t time.Time) error { c.set = append(c.set, t); return nil }
func (c *deadlineConn) SetDeadline(t time.Time) error      { c.set = append(c.set, t); return nil }

func TestParkConnWriteDeadlineLazy(t *testing.T) {
	dc := &deadlineConn{}
	p := &parkConn{Conn: dc}
	first := time.Now().Add(time.Minute)
	_ = p.SetWriteDeadline(first)
	_ = p.SetWriteDeadline(first.Add(time.Millisecond)) // kept: within 1/64 of a minute
	_ = p.SetWriteDeadline(first.Add(-time.Second))     // earlier: set
	_ = p.SetDeadline(time.Time{})                      // cleared
	_ = p.SetWriteDeadline(first)                       // none armed: set
	want := []time.Time{first, first.Add(-time.Second), {}, first}
	if len(dc.set) != len(want) {
		t.Fatalf("deadlines set %v; want %v", dc.set, want)
	}
	for i := range want {
		if !dc.set[i].Equal(want[i]) {
			t.Fatalf("deadlines set %v; want %v", dc.set, want)
		}
	}
}
