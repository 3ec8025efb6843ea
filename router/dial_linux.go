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
// fcntl, epoll_ctl and a second connect (await), and 4 small allocations: the node address is
// already parsed (balancer.Endpoint), a connection that lives for one
// request needs no keep-alive probes, and one request written in one write
// gains nothing from TCP_NODELAY.
//
// The socket is handed to the runtime poller through os.NewFile, so reads,
// writes and deadlines behave as on a net.Conn. A node with an IPv6 zone
// (rare; it needs an interface lookup) takes the net.Dialer path.
func (rt *Router) dial(ctx context.Context, n *balancer.Node) (net.Conn, error) {
	if n.Endpoint.Network == balancer.NetHTTP {
		return rt.dialHTTP(ctx, n) // httpnode.go: keep-alive, its own dialer
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
	if err == nil {
		return c, nil
	}
	if err := c.await(ctx, sa, rt.now().Add(rt.timeouts().Connect)); err != nil {
		c.f.Close()
		return nil, err
	}
	return c, nil
}

// await waits for a connect in progress to the address sa to finish, until
// deadline or the end of ctx (nil: none).
func (c *backendConn) await(ctx context.Context, sa syscall.Sockaddr, deadline time.Time) error {
	if err := c.f.SetWriteDeadline(deadline); err != nil {
		return err
	}
	if ctx != nil {
		stop := context.AfterFunc(ctx, func() { _ = c.f.SetWriteDeadline(aLongTimeAgo) })
		defer stop()
	}
	rc, err := c.f.SyscallConn()
	if err != nil {
		return err
	}
	var soErr error
	// RawWrite clears the poller's write readiness before the first call, so
	// a connect that finished before it may have left no event to wait for:
	// every call, the first included, asks the socket itself. It asks by
	// connecting again, one system call where SO_ERROR plus getpeername (what
	// net.Dialer does) take two: on Linux a second connect on a connecting
	// TCP socket returns 0 once it is established, EALREADY while the
	// handshake runs, and the error that ended it (ECONNREFUSED, ETIMEDOUT,
	// ...) otherwise. On loopback the handshake is usually over before the
	// first connect returns, so this first check is the only one.
	err = rc.Write(func(fd uintptr) bool {
		switch err := syscall.Connect(int(fd), sa); err {
		case nil, syscall.EISCONN:
			return true
		case syscall.EALREADY, syscall.EINPROGRESS, syscall.EINTR:
			return false
		default:
			soErr = os.NewSyscallError("connect", err)
			return true
		}
	})
	if err != nil {
		return err // os.ErrDeadlineExceeded: timeout or the client left
	}
	return soErr
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
	addr nodeAddr
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
	rc, err := c.f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
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
