//go:build linux

package router

import (
	"os"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// Reusing node sockets.
//
// A uwsgi node gets a connection of its own for every request (uWSGI's
// framing), and opening and closing a socket costs more system calls than
// the connection itself: socket, the poller's fcntl (os.NewFile) and
// epoll_ctl, and at the end epoll_ctl again and close. A TCP socket can
// instead be disconnected and connected again: connect with an AF_UNSPEC
// address (connect(2); Linux's tcp_disconnect in net/ipv4/tcp.c) aborts the
// connection with a reset, as SO_LINGER 0 makes close do (the node, which
// closed first, keeps no TIME_WAIT socket, and neither does the router),
// empties the socket's queues and leaves it unconnected, its port
// released, still registered with the poller. So a connection whose
// exchange ended is disconnected and its socket kept in a small pool, and
// the next dial of the same address family takes it: one system call (the
// disconnect) in place of five. The kernel clears the reset's error at the
// next connect (tcp_connect_init in net/ipv4/tcp_output.c).
//
// Why a reset rather than a FIN (HAProxy's "option nolinger" for servers):
// a uwsgi node closes first, once its response is sent, so by the time the
// router is done the node has nothing left to read, and a FIN would only
// cost the rest of the handshake and a TIME_WAIT socket. An early end
// (client gone, timeout) resets the node's connection at once, which is
// what it should learn anyway. A connection that became a tunnel closes
// with a FIN after what is queued (backendConn.closeGracefully).
//
// Unix sockets cannot be disconnected; they are closed as before.

// maxPooledSocks bounds the idle sockets kept per address family: about
// the most exchanges in flight at once that the pool serves without
// opening new sockets. An idle one costs a file descriptor and ~2 KiB of
// kernel memory.
const maxPooledSocks = 512

// sockIdle is how long a socket may stay unused in the pool before it is
// closed. Under load a socket is taken again within microseconds; what
// stays longer is what a past peak opened, and goes back to the kernel
// once the load is gone, so a router at rest holds no node sockets.
const sockIdle = time.Second

// sockPool holds disconnected TCP sockets, by family, most recently used
// last (a dial takes that one, so the ones at the front are those unused
// longest, and expire). Safe for concurrent use; the zero value is empty.
// The Router owns it; Shutdown closes it. Its expiry timer runs only while
// the pool holds sockets.
type sockPool struct {
	mu     sync.Mutex
	free   [2][]idleSock // guarded by mu; [0] AF_INET, [1] AF_INET6; oldest first
	closed bool          // guarded by mu: closeAll ran; put refuses
	timer  *time.Timer   // guarded by mu: sweep, armed while free is not empty
	armed  bool          // guarded by mu
	idle   time.Duration // sockIdle; tests shorten it
}

// idleSock is a pooled socket and when it went idle.
type idleSock struct {
	s     *nodeSock
	since time.Time
}

func familyIndex(family int) int {
	if family == syscall.AF_INET6 {
		return 1
	}
	return 0
}

// get returns the idle socket of family used last, or nil when there is
// none.
func (p *sockPool) get(family int) *nodeSock {
	i := familyIndex(family)
	p.mu.Lock()
	defer p.mu.Unlock()
	n := len(p.free[i])
	if n == 0 {
		return nil
	}
	s := p.free[i][n-1].s
	p.free[i][n-1] = idleSock{}
	p.free[i] = p.free[i][:n-1]
	return s
}

// put keeps s, disconnected, for a later dial; false (the caller closes
// it) when the pool is full or closed. now is when s went idle: the
// caller's reading of the clock at the end of its request.
func (p *sockPool) put(s *nodeSock, now time.Time) bool {
	i := familyIndex(s.family)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.free[i]) >= maxPooledSocks {
		return false
	}
	p.free[i] = append(p.free[i], idleSock{s, now})
	if !p.armed {
		p.armed = true
		if p.timer == nil {
			p.timer = time.AfterFunc(p.idleTime(), p.sweep)
		} else {
			p.timer.Reset(p.idleTime())
		}
	}
	return true
}

func (p *sockPool) idleTime() time.Duration {
	if p.idle > 0 {
		return p.idle
	}
	return sockIdle
}

// sweep closes the sockets idle for longer than the idle time and re-arms
// the timer for the oldest one left.
func (p *sockPool) sweep() {
	var expired []*nodeSock
	p.mu.Lock()
	now := time.Now()
	idle := p.idleTime()
	next := time.Duration(-1)
	for i := range p.free {
		k := 0
		for k < len(p.free[i]) && now.Sub(p.free[i][k].since) >= idle {
			expired = append(expired, p.free[i][k].s)
			k++
		}
		n := copy(p.free[i], p.free[i][k:])
		clear(p.free[i][n:])
		p.free[i] = p.free[i][:n]
		if n > 0 {
			if d := idle - now.Sub(p.free[i][0].since); next < 0 || d < next {
				next = d
			}
		}
	}
	p.armed = next >= 0 && !p.closed
	if p.armed {
		p.timer.Reset(max(next, time.Millisecond))
	}
	p.mu.Unlock()
	for _, s := range expired {
		_ = s.f.Close()
	}
}

// size is how many idle sockets the pool holds.
func (p *sockPool) size() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.free[0]) + len(p.free[1])
}

// closeAll closes every idle socket and keeps none from now on (Shutdown).
func (p *sockPool) closeAll() {
	p.mu.Lock()
	var all []*nodeSock
	for i := range p.free {
		for _, is := range p.free[i] {
			all = append(all, is.s)
		}
		p.free[i] = nil
	}
	p.closed = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.armed = false
	p.mu.Unlock()
	for _, s := range all {
		_ = s.f.Close()
	}
}

// nodeSock is one socket to uwsgi nodes, registered with the runtime's
// poller (os.File). A TCP one outlives its connections (pooled); each use
// is a backendConn, which owns it until it is recycled or closed.
//
// The raw-call state belongs to the goroutine of the exchange that holds
// the socket, one call at a time; fd may be used directly only by that
// owner, while no one else can close the socket (at dial, and once its
// backendConn is done: backendConn.recycle).
type nodeSock struct {
	f      *os.File
	rc     syscall.RawConn // f's, fetched once (each SyscallConn allocates)
	fd     int
	family int
	pooled bool // TCP: disconnected and reused rather than closed

	// State of the raw calls (await, sendAwait; see rawStep).
	raw        func(fd uintptr) bool // s.rawStep, made once
	connecting syscall.Sockaddr      // await: the address being connected to
	// A lazy dial's connect in progress, not checked yet: the first write
	// tells (rawStep), or finishConnect waits for it.
	pending   bool
	pendingSA syscall.Sockaddr
	out       []byte // sendAwait: the request, until written
	sent      int    // sendAwait: bytes written
	rawErr    error  // the system call's error
	// One of these is the connect address; held here so the syscall
	// package's sockaddr conversion writes into memory of this socket.
	sa4 syscall.SockaddrInet4
	sa6 syscall.SockaddrInet6
	sun syscall.SockaddrUnix

	// Deadlines, set by the owner only (setReadDeadline, setWriteDeadline,
	// setDeadline): the read deadline last given to f, and whether f may
	// hold a write deadline. A pooled socket keeps its read deadline
	// between uses (recycle).
	rdl  time.Time
	wset bool
}

// setReadDeadline is f.SetReadDeadline(t), unless the deadline armed may
// stand for t (lazyKeep), t computed from now.
func (s *nodeSock) setReadDeadline(t, now time.Time) error {
	if lazyKeep(s.rdl, t, now) {
		return nil
	}
	if err := s.f.SetReadDeadline(t); err != nil {
		return err
	}
	s.rdl = t
	return nil
}

// setWriteDeadline is f.SetWriteDeadline(t), noting whether one is set.
func (s *nodeSock) setWriteDeadline(t time.Time) error {
	s.wset = true // even if it fails: the state of f is then unknown
	if err := s.f.SetWriteDeadline(t); err != nil {
		return err
	}
	s.wset = !t.IsZero()
	return nil
}

// setDeadline is f.SetDeadline(t).
func (s *nodeSock) setDeadline(t time.Time) error {
	s.rdl, s.wset = time.Time{}, true
	if err := s.f.SetDeadline(t); err != nil {
		return err
	}
	s.rdl, s.wset = t, !t.IsZero()
	return nil
}

// newNodeSock opens a non-blocking socket of family (one system call:
// the flags ride in socket(2)) and registers it with the poller.
func newNodeSock(family int) (*nodeSock, error) {
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	s := &nodeSock{fd: fd, family: family, pooled: family != syscall.AF_UNIX}
	// Registers fd with the poller (non-blocking, so pollable). The name
	// is the one a pooled socket keeps whatever node it connects to.
	s.f = os.NewFile(uintptr(fd), "uwsgi node")
	s.rc, _ = s.f.SyscallConn() // fails only on a nil File
	s.raw = s.rawStep
	return s, nil
}

// unspec is the AF_UNSPEC address whose connect disconnects a TCP socket.
var unspec = syscall.RawSockaddr{Family: syscall.AF_UNSPEC}

// disconnect aborts the connection of TCP socket fd with a reset and
// leaves the socket unconnected, ready for another connect.
func disconnect(fd int) error {
	_, _, e := syscall.Syscall(syscall.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec))
	if e != 0 {
		return e
	}
	return nil
}

// abort closes s for good; a TCP connection with a reset (above), unless
// graceful, where close sends a FIN after what is still queued.
func (s *nodeSock) abort(graceful bool) {
	if s.pooled && !graceful {
		_ = s.rc.Control(func(fd uintptr) { _ = disconnect(int(fd)) })
	}
	_ = s.f.Close()
}
