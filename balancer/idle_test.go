package balancer

import (
	"sync/atomic"
	"testing"
	"time"
)

// fakeConn counts its closes.
type fakeConn struct{ closed atomic.Int32 }

func (c *fakeConn) Close() error { c.closed.Add(1); return nil }

func httpNode(t *testing.T) (*Table, *fakeClock, *Node) {
	t.Helper()
	tb, clk := newTable(t, Config{})
	announce(t, tb, "k", "http://127.0.0.1:8000", 1)
	announce(t, tb, "k", "http://127.0.0.1:8001", 1)
	n := tb.Pool("k").Node("http://127.0.0.1:8000")
	if n == nil || n.Endpoint.Network != NetHTTP {
		t.Fatalf("node = %+v", n)
	}
	return tb, clk, n
}

func TestIdleReuseLIFOAndLimit(t *testing.T) {
	_, clk, n := httpNode(t)
	until := clk.Now().Add(time.Minute)
	a, b, c := &fakeConn{}, &fakeConn{}, &fakeConn{}
	if !n.PutIdle(a, until, 2) || !n.PutIdle(b, until, 2) {
		t.Fatal("PutIdle refused under the limit")
	}
	if n.PutIdle(c, until, 2) {
		t.Fatal("PutIdle took a third connection with max 2")
	}
	if got := n.TakeIdle(clk.Now()); got != b {
		t.Fatalf("TakeIdle = %p; want the last put %p", got, b)
	}
	if got := n.TakeIdle(clk.Now()); got != a {
		t.Fatalf("TakeIdle = %p; want %p", got, a)
	}
	if got := n.TakeIdle(clk.Now()); got != nil {
		t.Fatalf("TakeIdle on an empty pool = %v", got)
	}
	if a.closed.Load()+b.closed.Load() != 0 {
		t.Error("a reused connection was closed")
	}
}

func TestIdleExpiry(t *testing.T) {
	tb, clk, n := httpNode(t)
	old, fresh := &fakeConn{}, &fakeConn{}
	n.PutIdle(old, clk.Now().Add(time.Second), 8)
	n.PutIdle(fresh, clk.Now().Add(time.Minute), 8)
	clk.Add(2 * time.Second)
	tb.Tick() // reaps old only
	if old.closed.Load() != 1 || fresh.closed.Load() != 0 || n.IdleConns() != 1 {
		t.Fatalf("after Tick: old closed %d, fresh closed %d, idle %d", old.closed.Load(), fresh.closed.Load(), n.IdleConns())
	}
	clk.Add(time.Minute)
	if got := n.TakeIdle(clk.Now()); got != nil {
		t.Fatal("TakeIdle returned an expired connection")
	}
	if fresh.closed.Load() != 1 || n.IdleConns() != 0 {
		t.Fatalf("expired connection met by TakeIdle: closed %d, idle %d", fresh.closed.Load(), n.IdleConns())
	}
}

// Idle connections go when the node can no longer use them: drain, health
// down, removal, pool deletion. None is accepted afterwards.
func TestIdleClosedWithTheNode(t *testing.T) {
	cases := map[string]func(tb *Table, n *Node){
		"drain":       func(tb *Table, n *Node) { tb.Drain("k", n.Address, time.Minute, false) },
		"health down": func(tb *Table, n *Node) { n.SetHealthy(false) },
		"remove":      func(tb *Table, n *Node) { tb.RemoveNode("k", n.Address) },
		"delete pool": func(tb *Table, n *Node) { tb.DeletePool("k") },
		"unsubscribe": func(tb *Table, n *Node) { tb.Unsubscribe([]byte("k"), []byte(n.Address), 0) },
	}
	for name, leave := range cases {
		t.Run(name, func(t *testing.T) {
			tb, clk, n := httpNode(t)
			c := &fakeConn{}
			n.PutIdle(c, clk.Now().Add(time.Minute), 8)
			leave(tb, n)
			if c.closed.Load() != 1 || n.IdleConns() != 0 {
				t.Fatalf("idle connection closed %d times, %d idle left", c.closed.Load(), n.IdleConns())
			}
			if n.PutIdle(&fakeConn{}, clk.Now().Add(time.Minute), 8) {
				t.Fatal("PutIdle accepted a connection after the node left rotation")
			}
		})
	}
}

// A connection in flight (tracked) is not touched by CloseIdle, and idle
// connections are not tracked: a forced drain counts only requests.
func TestIdleNotTracked(t *testing.T) {
	_, clk, n := httpNode(t)
	busy, idle := &fakeConn{}, &fakeConn{}
	n.Track(busy)
	n.PutIdle(idle, clk.Now().Add(time.Minute), 8)
	if got := n.closeTracked(); got != 1 || idle.closed.Load() != 0 {
		t.Fatalf("closeTracked closed %d, idle closed %d; want 1, 0", got, idle.closed.Load())
	}
	n.Untrack(busy)
	if n.CloseIdle() != 1 || busy.closed.Load() != 1 {
		t.Fatal("CloseIdle closed the wrong connections")
	}
}

func TestIdleAllocs(t *testing.T) {
	_, clk, n := httpNode(t)
	c := &fakeConn{}
	now := clk.Now()
	until := now.Add(time.Minute)
	n.PutIdle(c, until, 8)
	n.TakeIdle(now)
	if a := testing.AllocsPerRun(100, func() {
		n.PutIdle(c, until, 8)
		n.TakeIdle(now)
	}); a != 0 {
		t.Errorf("PutIdle+TakeIdle allocate %.1f times", a)
	}
}
