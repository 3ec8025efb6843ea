//go:build linux

package router

import (
	"context"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// dial connects to a uwsgi node n with raw socket calls instead of
// net.Dialer.
//
// Why: every request opens a fresh uwsgi connection, so the dial is on the
// hot path. net.Dialer spends 11 system calls on it (socket, connect,
// epoll_ctl, getsockopt, getpeername, getsockname, TCP_NODELAY and four
// keep-alive options) and ~17 allocations (address resolution, sockaddr
// conversions, a deadline context). Here a TCP dial takes a socket from
// rt.socks (sockpool_linux.go) and costs one connect, plus a second one
// that asks whether the first finished (await) unless the dial is lazy
// (dialNode); the disconnect at the end replaces the close. Only when the
// pool is empty does it open one (socket, the poller's fcntl and
// epoll_ctl). One small allocation: the backendConn. The node address is already parsed (balancer.Endpoint), a
// connection that lives for one request needs no keep-alive probes, and one
// request written in one write gains nothing from TCP_NODELAY.
//
// The socket is the runtime poller's through os.NewFile, so reads, writes
// and deadlines behave as on a net.Conn. A node with an IPv6 zone (rare; it
// needs an interface lookup) takes the net.Dialer path.
func (rt *Router) dial(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	return rt.dialNode(ctx, n, false)
}

// dialNode is dial, or with lazy a dial that does not wait to learn whether
// a connect in progress finished: the connection's first sendAwait (the
// only call allowed on it before finishConnect) writes the request at once,
// and the write reports a handshake still under way (EAGAIN: sendAwait
// returns errNotConnected; finishConnect then waits as dial would have) or
// failed (its error, returned by finishConnect). On loopback the handshake
// is over before the connect returns, so the write is all it costs.
func (rt *Router) dialNode(ctx context.Context, n *balancer.Node, lazy bool) (net.Conn, error) {
	if n.Endpoint.Network == balancer.NetHTTP {
		return rt.dialHTTP(ctx, n) // upstream_http.go: keep-alive, its own dialer
	}
	ep := n.Endpoint
	var family int
	switch {
	case ep.Network == balancer.NetUnix:
		family = syscall.AF_UNIX
	case ep.AddrPort.Addr().Is4():
		family = syscall.AF_INET
	case ep.AddrPort.Addr().Zone() == "":
		family = syscall.AF_INET6
	default:
		return rt.dialNet(ctx, n)
	}
	s := rt.socks.get(family) // nil for AF_UNIX: never pooled
	if s == nil {
		var err error
		if s, err = newNodeSock(family); err != nil {
			return nil, err
		}
	}
	c := &backendConn{s: s, addr: nodeAddr{n}, pool: &rt.socks}
	s.pending, s.pendingSA, s.rawErr = false, nil, nil // a pooled socket's last use may have left them
	sa := s.address(ep)
	// fd is ours alone until dial returns c: a raw call needs no RawConn.
	err := syscall.Connect(s.fd, sa)
	switch err {
	case nil:
		return c, nil
	case syscall.EINPROGRESS, syscall.EINTR:
	default:
		// ECONNREFUSED, ENOENT, and a unix listener's full backlog
		// (EAGAIN) all fail at once; the caller tries another node.
		s.abort(false)
		return nil, os.NewSyscallError("connect", err)
	}
	if lazy {
		s.pending, s.pendingSA = true, sa
		return c, nil
	}
	s.connecting = sa
	if err := c.await(ctx, rt.now().Add(rt.timeouts().Connect)); err != nil {
		s.abort(false)
		return nil, err
	}
	return c, nil
}

// address fills s's sockaddr for ep and returns it.
func (s *nodeSock) address(ep balancer.Endpoint) syscall.Sockaddr {
	switch s.family {
	case syscall.AF_UNIX:
		s.sun.Name = ep.Dial
		return &s.sun
	case syscall.AF_INET:
		s.sa4.Port = int(ep.AddrPort.Port())
		s.sa4.Addr = ep.AddrPort.Addr().As4()
		return &s.sa4
	}
	s.sa6.Port = int(ep.AddrPort.Port())
	s.sa6.Addr = ep.AddrPort.Addr().As16()
	return &s.sa6
}

// await waits for the connect in progress (to c.connecting) to finish,
// until deadline or the end of ctx.
func (c *backendConn) await(ctx context.Context, deadline time.Time) error {
	s := c.s
	if err := s.setWriteDeadline(deadline); err != nil {
		return err
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = s.f.SetWriteDeadline(aLongTimeAgo) })
		defer func() {
			if !stop() {
				// The hook ran, or runs still: the socket must not
				// serve another connection, whose deadline it could set.
				c.noPool = true
			}
		}()
	}
	// RawWrite clears the poller's write readiness before the first call, so
	// a connect that finished before it may have left no event to wait for:
	// every call, the first included, asks the socket itself (rawStep).
	err := s.rc.Write(s.raw)
	s.connecting = nil
	if err != nil {
		return err // os.ErrDeadlineExceeded: timeout or the client left
	}
	_ = s.setWriteDeadline(time.Time{})
	err, s.rawErr = s.rawErr, nil
	return err
}

// finishConnect ends a lazy dial that sendAwait found unconnected: the
// handshake's error, or the wait for it (await) until deadline or the end
// of ctx.
func (c *backendConn) finishConnect(ctx context.Context, deadline time.Time) error {
	s := c.s
	s.pending = false
	if err := s.rawErr; err != nil {
		s.rawErr = nil
		return err
	}
	s.connecting, s.pendingSA = s.pendingSA, nil
	return c.await(ctx, deadline)
}

// sendAwait writes a whole request p and waits until the node's answer can
// be read or the deadline (also set for the reads that follow) passes.
//
// Why: a node answers only once it has been scheduled, so a read right
// after the write finds the socket empty (EAGAIN) and then waits anyway;
// here the wait comes first, saving that system call and a poller round.
// The write runs inside the read wait (RawRead): a wait entered after the
// write would first clear the readiness of an answer that came in between,
// and with it the only event announcing it.
//
// If n < len(p), err is the write's error, or nil if the socket took only
// part (the caller writes the rest); else it is the wait's
// (os.ErrDeadlineExceeded, or the connection closed under it).
func (c *backendConn) sendAwait(p []byte, now, deadline time.Time) (n int, err error) {
	s := c.s
	if err := c.live(); err != nil {
		return 0, err
	}
	if err := s.setReadDeadline(deadline, now); err != nil {
		return 0, err
	}
	s.out = p
	err = s.rc.Read(s.raw)
	n, s.sent = s.sent, 0
	s.out = nil
	if s.pending {
		// Nothing went: the write found no connection (yet), or the
		// poller refused the wait before the write was tried (a deadline
		// already past; an error event the socket's failing handshake
		// raised, which internal/poll keeps as "not pollable" for reads).
		// finishConnect learns which from the socket.
		return 0, errNotConnected
	}
	if n < len(p) {
		err, s.rawErr = s.rawErr, nil
	}
	return n, err
}

// rawStep is the callback of s's raw calls, made a func value once per
// socket (s.raw): a closure per call would allocate per request. Its
// inputs and results live in s. Returns whether the call is done.
//
// In await (s.connecting set) it asks whether the connect finished by
// connecting again, one system call where SO_ERROR plus getpeername (what
// net.Dialer does) take two: on Linux a second connect on a connecting TCP
// socket returns 0 once it is established, EALREADY while the handshake
// runs, and the error that ended it (ECONNREFUSED, ETIMEDOUT, ...)
// otherwise. On loopback the handshake is usually over before the first
// connect returns, so this first check is the only one.
//
// In sendAwait (s.out set) its first call writes s.out and, if all of it
// went, asks for a wait; the call after a wakeup ends it. On a lazy dial's
// connection (s.pending) a write that finds the handshake unfinished
// (EAGAIN) or failed (its error) ends the call with nothing written.
func (s *nodeSock) rawStep(fd uintptr) bool {
	if sa := s.connecting; sa != nil {
		switch err := syscall.Connect(int(fd), sa); err {
		case nil, syscall.EISCONN:
			return true
		case syscall.EALREADY, syscall.EINPROGRESS, syscall.EINTR:
			return false
		default:
			s.rawErr = os.NewSyscallError("connect", err)
			return true
		}
	}
	if s.out == nil {
		return true // woken: the answer is readable (or a spurious wakeup, which the read then waits out)
	}
	p := s.out
	s.out = nil
	n, err := syscall.Write(int(fd), p)
	if n > 0 {
		s.sent = n
		s.pending = false // connected, then
	}
	switch {
	case s.pending && (err == syscall.EAGAIN || err == syscall.EINTR):
		return true // the handshake is still under way: finishConnect
	case s.pending && err != nil:
		// The handshake failed (ECONNREFUSED, ETIMEDOUT, ...): the
		// connect's error, for finishConnect.
		s.rawErr = os.NewSyscallError("connect", err)
		return true
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return true // the caller writes it the usual way
	case err != nil:
		s.rawErr = os.NewSyscallError("write", err)
		return true
	}
	return n < len(p) // all of it went: wait for the answer
}

// aLongTimeAgo is a deadline in the past: it wakes a waiting call at once.
var aLongTimeAgo = time.Unix(1, 0)

// backendConn is one use of a nodeSock: a node connection made by dial.
// It shows only net.Conn's methods: the *os.File inside would offer io.Copy
// splice and sendfile paths meant for files.
//
// Ownership: the exchange that dialled it uses it and ends it with recycle
// (keepOrClose), which puts a TCP socket back in the pool. Anyone may Close
// it at any time, more than once (a drain cut, the shutdown deadline, a
// client-abort hook: Node.Track, context.AfterFunc): the first Close or
// recycle wins, and after it the socket is no longer this connection's, so
// a late Close must never touch it. Not recycled itself for the same
// reason: a late Close must never hit a reused value.
type backendConn struct {
	s    *nodeSock
	addr nodeAddr
	pool *sockPool

	mu       sync.Mutex
	done     bool        // guarded by mu: Close or recycle ran; s is not ours
	graceful atomic.Bool // closeGracefully: close with a FIN, never pool
	noPool   bool        // owner's: await's client-abort hook fired; close, never pool
}

// live returns os.ErrClosed once c was closed.
func (c *backendConn) live() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return os.ErrClosed
	}
	return nil
}

// end marks c done; false if it already was.
func (c *backendConn) end() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.done {
		return false
	}
	c.done = true
	return true
}

// Close closes c's socket: a reset for TCP (see sockpool_linux.go), or a
// FIN after closeGracefully. Safe from any goroutine, at any time; reads
// and writes in progress fail.
func (c *backendConn) Close() error {
	if c.end() {
		c.s.abort(c.graceful.Load())
	}
	return nil
}

// recycle ends the owner's use of c once its exchange is over: a TCP
// socket is disconnected (the reset that ends the connection) and goes
// back to the pool; anything else is closed. A no-op if c was closed. now
// is the end of the exchange (the pool's idle time starts there).
func (c *backendConn) recycle(now time.Time) {
	if !c.end() {
		return
	}
	s := c.s
	if !s.pooled || c.noPool || c.graceful.Load() {
		s.abort(c.graceful.Load())
		return
	}
	// The owner's own socket now (c is done): a raw call on fd is safe.
	// The disconnect leaves the reset's error (ECONNRESET) on the socket
	// until the next connect clears it; reading SO_ERROR clears it now.
	// Else an epoll scan that meets the socket while that connect is
	// under way sees an error alone (SYN_SENT: neither readable nor
	// writable), which the runtime poller keeps as a sticky "not
	// pollable" on the socket (internal/poll, netpollcheckerr) and the
	// next use's read fails with.
	if disconnect(s.fd) != nil {
		_ = s.f.Close()
		return
	}
	if _, err := syscall.GetsockoptInt(s.fd, syscall.SOL_SOCKET, syscall.SO_ERROR); err != nil {
		_ = s.f.Close()
		return
	}
	// The read deadline stays: the next use renews it, which is then
	// mostly no update at all (setReadDeadline); a deadline that passes
	// while the socket is pooled wakes no one. No write deadline may stay
	// (await's waits for a connect do not set one first).
	if s.wset {
		_ = s.setWriteDeadline(time.Time{})
	}
	if !c.pool.put(s, now) {
		_ = s.f.Close()
	}
}

// closeGracefully turns the reset on close back into a FIN after what was
// written: for a tunnel (websocket), where the router closes the node's
// side when the client ends, with the client's last bytes possibly still
// in the send buffer, which a reset would throw away.
func (c *backendConn) closeGracefully() { c.graceful.Store(true) }

func (c *backendConn) Read(p []byte) (int, error)        { return c.s.f.Read(p) }
func (c *backendConn) Write(p []byte) (int, error)       { return c.s.f.Write(p) }
func (c *backendConn) LocalAddr() net.Addr               { return c.addr }
func (c *backendConn) RemoteAddr() net.Addr              { return c.addr }
func (c *backendConn) SetDeadline(t time.Time) error     { return c.s.setDeadline(t) }
func (c *backendConn) SetReadDeadline(t time.Time) error { return c.s.setReadDeadline(t, time.Now()) }

// renewReadDeadline is SetReadDeadline(t) with t computed from now
// (readRenewer): the request's own reading of the clock.
func (c *backendConn) renewReadDeadline(t, now time.Time) error { return c.s.setReadDeadline(t, now) }
func (c *backendConn) SetWriteDeadline(t time.Time) error       { return c.s.setWriteDeadline(t) }

// nodeAddr names a backend connection's node (both ends: the local address
// is of no use to anyone and would cost a getsockname per dial).
type nodeAddr struct{ n *balancer.Node }

func (a nodeAddr) Network() string {
	if a.n.Endpoint.Network == balancer.NetUnix {
		return "unix"
	}
	return "tcp"
}

func (a nodeAddr) String() string { return a.n.Endpoint.Dial }
