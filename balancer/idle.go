package balancer

import (
	"io"
	"time"
)

// Keep-alive connections of http:// nodes. The router owns what a
// connection is and when it may be reused; the node only keeps the idle ones
// between requests, because the node's lifecycle decides when they must go:
// a node that drains, fails its health checks or leaves its pool closes them
// at once (HAProxy #1236: idle connections kept to a server in maintenance),
// and Table.Tick closes those idle past their deadline, so a node without
// traffic does not sit on sockets its server has long given up.
//
// Idle connections are not tracked (Track): nothing is in flight on them.

type idleConn struct {
	c     io.Closer
	until int64 // unix ns after which c is not reused
}

// PutIdle offers c, whose last response was read to its exact end, for
// reuse until the given time, keeping at most max idle connections. It
// reports false when the node does not take it (not active, removed, down,
// or full); the caller then closes c.
func (n *Node) PutIdle(c io.Closer, until time.Time, max int) bool {
	n.connMu.Lock()
	defer n.connMu.Unlock()
	// Checked under connMu: closeIdle sets nothing but takes the lock after
	// the state change, so a connection is either refused here or closed
	// there, never left behind.
	if n.removed.Load() || n.down.Load() || n.stored() != StateActive || len(n.idle) >= max {
		return false
	}
	n.idle = append(n.idle, idleConn{c: c, until: until.UnixNano()})
	n.nIdle.Store(int32(len(n.idle)))
	if len(n.idle) == 1 {
		n.watch() // Tick expires it (watch.go); lock order connMu → watch.mu
	}
	return true
}

// TakeIdle returns the most recently used idle connection still within its
// deadline, or nil. Expired ones met on the way are closed. LIFO: the
// connection used last is the least likely to have been closed by the node.
func (n *Node) TakeIdle(now time.Time) io.Closer {
	if n.nIdle.Load() == 0 {
		return nil
	}
	t := now.UnixNano()
	n.connMu.Lock()
	var c io.Closer
	for len(n.idle) > 0 {
		last := len(n.idle) - 1
		ic := n.idle[last]
		n.idle[last] = idleConn{}
		n.idle = n.idle[:last]
		if t < ic.until {
			c = ic.c
			break
		}
		ic.c.Close() // expired: a local close, does not block
	}
	n.nIdle.Store(int32(len(n.idle)))
	n.connMu.Unlock()
	return c
}

// IdleConns returns how many idle keep-alive connections the node holds.
func (n *Node) IdleConns() int { return int(n.nIdle.Load()) }

// closeIdle closes the idle connections whose deadline is before cutoff
// (unix ns; 1<<63-1 closes all) and returns how many.
func (n *Node) closeIdle(cutoff int64) int {
	if n.nIdle.Load() == 0 {
		return 0
	}
	n.connMu.Lock()
	var victims []io.Closer
	kept := n.idle[:0]
	for _, ic := range n.idle {
		if ic.until <= cutoff {
			victims = append(victims, ic.c)
		} else {
			kept = append(kept, ic)
		}
	}
	clear(n.idle[len(kept):])
	n.idle = kept
	n.nIdle.Store(int32(len(kept)))
	n.connMu.Unlock()
	for _, c := range victims {
		c.Close()
	}
	return len(victims)
}

const closeAll = 1<<63 - 1

// CloseIdle closes every idle connection of the node.
func (n *Node) CloseIdle() int { return n.closeIdle(closeAll) }
