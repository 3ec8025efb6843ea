package router

import (
	"errors"
	"net"
	"os"
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
		if got := lazyKeep(c.d, c.t, now); got != c.keep {
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

// readDeadlineConn records the read deadlines armed on it; its Read
// returns data unless timeout is set, then a timeout once.
type readDeadlineConn struct {
	net.Conn
	armed   []time.Time
	timeout bool
	reads   int
}

func (c *readDeadlineConn) SetReadDeadline(t time.Time) error {
	c.armed = append(c.armed, t)
	return nil
}

func (c *readDeadlineConn) Read(b []byte) (int, error) {
	c.reads++
	if c.timeout {
		c.timeout = false
		return 0, os.ErrDeadlineExceeded
	}
	return copy(b, "x"), nil
}

// TestParkConnReadDeadlineDeferred: a read deadline is armed by the read it
// is for, one never read under is never armed, and a later one waits until
// the read under the armed one times out.
func TestParkConnReadDeadlineDeferred(t *testing.T) {
	rc := &readDeadlineConn{}
	p := &parkConn{Conn: rc}
	base := time.Now()
	head, body := base.Add(10*time.Second), base.Add(60*time.Second)
	buf := make([]byte, 8)
	check := func(step string, want ...time.Time) {
		t.Helper()
		if len(rc.armed) != len(want) {
			t.Fatalf("%s: armed %v; want %v", step, rc.armed, want)
		}
		for i := range want {
			if !rc.armed[i].Equal(want[i]) {
				t.Fatalf("%s: armed %v; want %v", step, rc.armed, want)
			}
		}
	}
	_ = p.SetReadDeadline(head)
	check("set, not read yet")
	if _, err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	check("first read", head)
	_ = p.SetReadDeadline(body) // later: the read with bytes waiting goes under head
	if _, err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	check("later deadline, bytes waiting", head)
	rc.timeout = true // head passed: body is armed and the read retried
	if n, err := p.Read(buf); n != 1 || err != nil {
		t.Fatalf("read after the armed deadline passed = %d, %v; want 1, nil", n, err)
	}
	check("later deadline, armed one passed", head, body)
	early := base.Add(time.Second)
	_ = p.SetReadDeadline(early) // earlier: armed before the read
	rc.timeout = true
	if _, err := p.Read(buf); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read under an earlier deadline = %v; want its timeout", err)
	}
	check("earlier deadline", head, body, early)
	_ = p.SetReadDeadline(body)
	_ = p.SetReadDeadline(time.Time{}) // never read under: never armed
	_ = p.SetReadDeadline(early)
	if _, err := p.Read(buf); err != nil {
		t.Fatal(err)
	}
	check("only the last one set", head, body, early)
}
