//go:build linux

package router

import (
	"time"

	"github.com/fastrouter/fastrouter/internal/evloop"
	"golang.org/x/sys/unix"
)

// Node sockets of the event loop, reused as the goroutine path reuses its
// own (sockpool_linux.go): once an exchange ends, a TCP socket is
// disconnected (evloop.Disconnect: a reset, no TIME_WAIT on either side)
// and kept, still registered in its loop's epoll set, for the loop's next
// dial of the same family. A request then costs connect, write, read and
// the disconnect on the node's side, in place of socket, connect,
// epoll_ctl, write, read, setsockopt and close. Unix sockets cannot be
// disconnected and are closed after each use.

// loopSock is one node socket of a loop, registered with itself as the
// handler, and the connection it serves now (nil while pooled). Loop
// goroutine only.
type loopSock struct {
	fd     int
	family int
	c      *loopConn
	// taken is the loop's batch in which c took the socket: an event of
	// that batch was queued before (by the socket's previous use, its
	// disconnect) and is not c's.
	taken uint64
	idle  int64 // unix ns the socket went back to the pool
}

// Event forwards the socket's events to the connection it serves.
func (s *loopSock) Event(_ int, ev uint32) {
	if s.c == nil || s.taken == s.c.w.loop.Batch() {
		return
	}
	s.c.nodeEvent(ev)
}

// maxLoopSocks bounds the idle sockets a loop keeps per family: about the
// exchanges in flight at once on one loop that reuse rather than open.
const maxLoopSocks = 256

// loopSocks is a loop's idle TCP node sockets, by family (0 AF_INET, 1
// AF_INET6), oldest first: a dial takes the newest, and the oldest expire
// after sockIdle, so a loop at rest holds none. Loop goroutine only.
type loopSocks struct {
	free   [2][]*loopSock
	spare  []*loopSock // unregistered loopSock values, for reuse
	sweep  evloop.Timer
	sweepF func() // loopWorker.sweepSocks, made once
	armed  bool
}

// takeSock returns a socket of family for c, pooled or new (registered for
// the node's events); nil and the error when none could be had.
func (w *loopWorker) takeSock(family int, c *loopConn) (*loopSock, error) {
	if family != unix.AF_UNIX {
		f := &w.socks.free[familyIndex(family)]
		if n := len(*f); n > 0 {
			s := (*f)[n-1]
			(*f)[n-1] = nil
			*f = (*f)[:n-1]
			s.c, s.taken = c, w.loop.Batch()
			return s, nil
		}
	}
	fd, err := evloop.Socket(family)
	if err != nil {
		return nil, err
	}
	w.lf.opened.Add(1)
	var s *loopSock
	if k := len(w.socks.spare); k > 0 {
		s = w.socks.spare[k-1]
		w.socks.spare = w.socks.spare[:k-1]
	} else {
		s = new(loopSock)
	}
	*s = loopSock{fd: fd, family: family}
	if err := w.loop.Add(fd, evloop.In|evloop.Out|evloop.RDHup|unix.EPOLLET, s); err != nil {
		evloop.Close(fd)
		w.socks.spare = append(w.socks.spare, s)
		return nil, err
	}
	s.c, s.taken = c, w.loop.Batch()
	return s, nil
}

// putSock ends s's use: a TCP socket is disconnected and pooled when
// there is room, else (and a unix one always) closed.
func (w *loopWorker) putSock(s *loopSock) {
	s.c = nil
	if s.family != unix.AF_UNIX && !w.closing {
		f := &w.socks.free[familyIndex(s.family)]
		if len(*f) < maxLoopSocks && evloop.Disconnect(s.fd) == nil {
			s.idle = w.loop.NowNano()
			*f = append(*f, s)
			if !w.socks.armed {
				w.socks.armed = true
				w.loop.Reset(&w.socks.sweep, w.loop.Now().Add(sockIdle), w.socks.sweepF)
			}
			return
		}
	}
	w.closeSock(s)
}

// closeSock closes s for good; for TCP with a reset (SO_LINGER 0) when it
// is still connected, so neither side keeps it in TIME_WAIT.
func (w *loopWorker) closeSock(s *loopSock) {
	w.loop.Forget(s.fd) // the last reference: closing takes it out of the set
	if s.family != unix.AF_UNIX {
		_ = evloop.Disconnect(s.fd) // a no-op on one disconnected already
	}
	evloop.Close(s.fd)
	*s = loopSock{fd: -1}
	if len(w.socks.spare) < maxLoopSocks {
		w.socks.spare = append(w.socks.spare, s)
	}
}

// sweepSocks closes the sockets idle for sockIdle or longer and re-arms
// for the oldest one left.
func (w *loopWorker) sweepSocks() {
	now := w.loop.NowNano()
	next := int64(-1)
	for i := range w.socks.free {
		f := w.socks.free[i]
		k := 0
		for k < len(f) && now-f[k].idle >= int64(sockIdle) {
			w.closeSock(f[k])
			k++
		}
		n := copy(f, f[k:])
		clear(f[n:])
		w.socks.free[i] = f[:n]
		if n > 0 && (next < 0 || f[0].idle < next) {
			next = f[0].idle
		}
	}
	w.socks.armed = next >= 0
	if w.socks.armed {
		w.loop.Reset(&w.socks.sweep, time.Unix(0, next).Add(sockIdle), w.socks.sweepF)
	}
}

// closeSocks closes every pooled socket (shutdown).
func (w *loopWorker) closeSocks() {
	for i := range w.socks.free {
		for _, s := range w.socks.free[i] {
			w.closeSock(s)
		}
		w.socks.free[i] = nil
	}
	w.loop.Stop(&w.socks.sweep)
	w.socks.armed = false
}
