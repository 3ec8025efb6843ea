//go:build linux

package router

import (
	"context"
	"net"
	"os"
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
// conversions, a deadline context). Here it is socket, SO_LINGER, connect,
// fcntl, epoll_ctl and a second connect (await), and 5 small allocations
// (the connection, os.File's two, its RawConn and the raw callback): the
// node address is already parsed (balancer.Endpoint), a connection that
// lives for one request needs no keep-alive probes, and one request written
// in one write gains nothing from TCP_NODELAY.
//
// The socket is handed to the runtime poller through os.NewFile, so reads,
// writes and deadlines behave as on a net.Conn. A node with an IPv6 zone
// (rare; it needs an interface lookup) takes the net.Dialer path.
func (rt *Router) dial(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	if n.Endpoint.Network == balancer.NetHTTP {
		return rt.dialHTTP(ctx, n) // upstream_http.go: keep-alive, its own dialer
	}
	c := &backendConn{addr: nodeAddr{n}}
	var (
		family int
		sa     syscall.Sockaddr
	)
	switch ep := n.Endpoint; {
	case ep.Network == balancer.NetUnix:
		family = syscall.AF_UNIX
		c.sun.Name = ep.Dial
		sa = &c.sun
	case ep.AddrPort.Addr().Is4():
		family = syscall.AF_INET
		c.sa4.Port = int(ep.AddrPort.Port())
		c.sa4.Addr = ep.AddrPort.Addr().As4()
		sa = &c.sa4
	case ep.AddrPort.Addr().Zone() == "":
		family = syscall.AF_INET6
		c.sa6.Port = int(ep.AddrPort.Port())
		c.sa6.Addr = ep.AddrPort.Addr().As16()
		sa = &c.sa6
	default:
		return rt.dialNet(ctx, n)
	}
	fd, err := syscall.Socket(family, syscall.SOCK_STREAM|syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, os.NewSyscallError("socket", err)
	}
	if family != syscall.AF_UNIX {
		// Close with a reset, not a FIN (HAProxy's "option nolinger" for
		// servers). A uwsgi node closes first, once its response is sent,
		// so by the time the router closes, the node has nothing left to
		// read and our FIN would only buy the handshake back and a
		// TIME_WAIT socket on the node: on loopback the reset saves 3-8%
		// of the router's CPU per request (A/B runs with wrk). An early
		// close (client gone, timeout) resets the node's connection at
		// once, which is what it should learn anyway. A connection that
		// becomes a tunnel closes gracefully again (closeGracefully).
		if err := syscall.SetsockoptLinger(fd, syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{Onoff: 1}); err != nil {
			syscall.Close(fd)
			return nil, os.NewSyscallError("setsockopt", err)
		}
	}
	err = syscall.Connect(fd, sa)
	switch err {
	case nil, syscall.EINPROGRESS, syscall.EINTR:
	default:
		// ECONNREFUSED, ENOENT, and a unix listener's full backlog
		// (EAGAIN) all fail at once; the caller tries another node.
		syscall.Close(fd)
		return nil, os.NewSyscallError("connect", err)
	}
	// Registers fd with the poller (non-blocking, so pollable).
	c.f = os.NewFile(uintptr(fd), n.Endpoint.Dial)
	c.rc, _ = c.f.SyscallConn() // fails only on a nil File
	c.raw = c.rawStep
	if err == nil {
		return c, nil
	}
	c.connecting = sa
	if err := c.await(ctx, rt.now().Add(rt.timeouts().Connect)); err != nil {
		c.f.Close()
		return nil, err
	}
	return c, nil
}

// await waits for the connect in progress (to c.connecting) to finish,
// until deadline or the end of ctx.
func (c *backendConn) await(ctx context.Context, deadline time.Time) error {
	if err := c.f.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if ctx.Done() != nil {
		stop := context.AfterFunc(ctx, func() { _ = c.f.SetWriteDeadline(aLongTimeAgo) })
		defer stop()
	}
	// RawWrite clears the poller's write readiness before the first call, so
	// a connect that finished before it may have left no event to wait for:
	// every call, the first included, asks the socket itself (rawStep).
	err := c.rc.Write(c.raw)
	c.connecting = nil
	if err != nil {
		return err // os.ErrDeadlineExceeded: timeout or the client left
	}
	err, c.rawErr = c.rawErr, nil
	return err
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
func (c *backendConn) sendAwait(p []byte, deadline time.Time) (n int, err error) {
	if err := c.f.SetReadDeadline(deadline); err != nil {
		return 0, err
	}
	c.out = p
	err = c.rc.Read(c.raw)
	n, c.sent = c.sent, 0
	c.out = nil
	if n < len(p) {
		err, c.rawErr = c.rawErr, nil
	}
	return n, err
}

// rawStep is the callback of c's raw calls, made a func value once per
// connection (c.raw): a closure per call would allocate per request. Its
// inputs and results live in c. Returns whether the call is done.
//
// In await (c.connecting set) it asks whether the connect finished by
// connecting again, one system call where SO_ERROR plus getpeername (what
// net.Dialer does) take two: on Linux a second connect on a connecting TCP
// socket returns 0 once it is established, EALREADY while the handshake
// runs, and the error that ended it (ECONNREFUSED, ETIMEDOUT, ...)
// otherwise. On loopback the handshake is usually over before the first
// connect returns, so this first check is the only one.
//
// In sendAwait (c.out set) its first call writes c.out and, if all of it
// went, asks for a wait; the call after a wakeup ends it.
func (c *backendConn) rawStep(fd uintptr) bool {
	if sa := c.connecting; sa != nil {
		switch err := syscall.Connect(int(fd), sa); err {
		case nil, syscall.EISCONN:
			return true
		case syscall.EALREADY, syscall.EINPROGRESS, syscall.EINTR:
			return false
		default:
			c.rawErr = os.NewSyscallError("connect", err)
			return true
		}
	}
	if c.out == nil {
		return true // woken: the answer is readable (or a spurious wakeup, which the read then waits out)
	}
	p := c.out
	c.out = nil
	n, err := syscall.Write(int(fd), p)
	if n > 0 {
		c.sent = n
	}
	switch {
	case err == syscall.EAGAIN || err == syscall.EINTR:
		return true // the caller writes it the usual way
	case err != nil:
		c.rawErr = os.NewSyscallError("write", err)
		return true
	}
	return n < len(p) // all of it went: wait for the answer
}

// aLongTimeAgo is a deadline in the past: it wakes a waiting call at once.
var aLongTimeAgo = time.Unix(1, 0)

// backendConn is a node connection made by dial. It shows only net.Conn's
// methods: the *os.File inside would offer io.Copy splice and sendfile paths
// meant for files.
//
// Not recycled: a Close may come late from a drain cut or a client-abort
// hook (Node.Track, context.AfterFunc), and must never hit a reused value.
type backendConn struct {
	f    *os.File
	rc   syscall.RawConn // f's, fetched once (each SyscallConn allocates)
	addr nodeAddr

	// State of the raw calls (await, sendAwait; see rawStep). Used only by
	// the goroutine that owns the exchange, one call at a time.
	raw        func(fd uintptr) bool // c.rawStep
	connecting syscall.Sockaddr      // await: the address being connected to
	out        []byte                // sendAwait: the request, until written
	sent       int                   // sendAwait: bytes written
	rawErr     error                 // the system call's error
	// One of these is the connect address; held here so the syscall
	// package's sockaddr conversion writes into memory of this connection.
	sa4 syscall.SockaddrInet4
	sa6 syscall.SockaddrInet6
	sun syscall.SockaddrUnix
}

// closeGracefully turns the reset on close back into a FIN after what was
// written: for a tunnel (websocket), where the router closes the node's
// side when the client ends, with the client's last bytes possibly still
// in the send buffer, which a reset would throw away.
func (c *backendConn) closeGracefully() {
	_ = c.rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptLinger(int(fd), syscall.SOL_SOCKET, syscall.SO_LINGER, &syscall.Linger{})
	})
}

func (c *backendConn) Read(p []byte) (int, error)         { return c.f.Read(p) }
func (c *backendConn) Write(p []byte) (int, error)        { return c.f.Write(p) }
func (c *backendConn) Close() error                       { return c.f.Close() }
func (c *backendConn) LocalAddr() net.Addr                { return c.addr }
func (c *backendConn) RemoteAddr() net.Addr               { return c.addr }
func (c *backendConn) SetDeadline(t time.Time) error      { return c.f.SetDeadline(t) }
func (c *backendConn) SetReadDeadline(t time.Time) error  { return c.f.SetReadDeadline(t) }
func (c *backendConn) SetWriteDeadline(t time.Time) error { return c.f.SetWriteDeadline(t) }

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
