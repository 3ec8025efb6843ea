//go:build linux

package evloop

import (
	"net/netip"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The calls here go straight to the kernel (unix.RawSyscall), not through
// the runtime's entersyscall/exitsyscall (unix.Read, unix.Connect, …): on
// a non-blocking descriptor none of them waits, and the runtime's
// bookkeeping of a system call is what costs the loop its context
// switches. With few Ps (GOMAXPROCS=1 above all) each entersyscall while
// the scheduler's sysmon thread sleeps on its note wakes it
// (runtime/proc.go, reentersyscall → entersyscallWakeSysmon), sysmon then
// polls every 20 µs again, and a call it sees twice (a loopback connect,
// which does the handshake and wakes the node) has its P retaken and
// handed to another thread (retake, handoffp). A raw call is invisible to
// sysmon: to the scheduler the loop's goroutine is running Go code. The
// one call that blocks, Locked mode's epoll_wait once a raw one found
// nothing ready, stays a runtime one.

// errno converts a raw call's error number; nil for 0, and the common
// values without an allocation (unix.Errno boxes them itself).
func errno(e unix.Errno) error {
	if e == 0 {
		return nil
	}
	return e
}

// Read reads from a non-blocking fd. It retries EINTR; n == 0 with a nil
// error is the peer's end of stream; unix.EAGAIN means nothing is there yet.
func Read(fd int, p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for {
		n, _, e := unix.RawSyscall(unix.SYS_READ, uintptr(fd), uintptr(unsafe.Pointer(&p[0])), uintptr(len(p)))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	}
}

// Write writes as much of p as a non-blocking fd takes now: n < len(p) with
// unix.EAGAIN means wait for Out. It retries EINTR and short writes.
func Write(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, _, e := unix.RawSyscall(unix.SYS_WRITE, uintptr(fd), uintptr(unsafe.Pointer(&p[done])), uintptr(len(p)-done))
		if e == unix.EINTR {
			continue
		}
		if e != 0 {
			return done, e
		}
		if n == 0 {
			return done, unix.EAGAIN
		}
		done += int(n)
	}
	return done, nil
}

// Socket opens a non-blocking, close-on-exec stream socket of family.
func Socket(family int) (int, error) {
	fd, _, e := unix.RawSyscall(unix.SYS_SOCKET, uintptr(family), unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if e != 0 {
		return -1, e
	}
	return int(fd), nil
}

// Sockaddr is a socket address in the kernel's layout, built once and
// passed to Connect as it is (no conversion, no allocation per call).
type Sockaddr struct {
	raw unix.RawSockaddrAny
	len uintptr
}

// SetAddrPort makes sa the TCP address ap (IPv4, or IPv6 with its zone
// ignored: the caller refuses zones).
func (sa *Sockaddr) SetAddrPort(ap netip.AddrPort) {
	a, port := ap.Addr(), ap.Port()
	if a.Is4() || a.Is4In6() {
		r := (*unix.RawSockaddrInet4)(unsafe.Pointer(&sa.raw))
		*r = unix.RawSockaddrInet4{Family: unix.AF_INET, Addr: a.Unmap().As4()}
		setPort(&r.Port, port)
		sa.len = unix.SizeofSockaddrInet4
		return
	}
	r := (*unix.RawSockaddrInet6)(unsafe.Pointer(&sa.raw))
	*r = unix.RawSockaddrInet6{Family: unix.AF_INET6, Addr: a.As16()}
	setPort(&r.Port, port)
	sa.len = unix.SizeofSockaddrInet6
}

// SetUnix makes sa the unix socket address path; false when path is too
// long for one.
func (sa *Sockaddr) SetUnix(path string) bool {
	r := (*unix.RawSockaddrUnix)(unsafe.Pointer(&sa.raw))
	if len(path) == 0 || len(path) >= len(r.Path) {
		return false
	}
	*r = unix.RawSockaddrUnix{Family: unix.AF_UNIX}
	for i := 0; i < len(path); i++ {
		r.Path[i] = int8(path[i])
	}
	n := len(path)
	if path[0] == '@' { // abstract: a leading NUL, no trailing one
		r.Path[0] = 0
		sa.len = uintptr(unsafe.Offsetof(r.Path)) + uintptr(n)
		return true
	}
	sa.len = uintptr(unsafe.Offsetof(r.Path)) + uintptr(n) + 1
	return true
}

// Family is sa's address family (AF_INET, AF_INET6, AF_UNIX).
func (sa *Sockaddr) Family() int { return int(sa.raw.Addr.Family) }

// setPort stores a port in network byte order.
func setPort(p *uint16, port uint16) {
	b := (*[2]byte)(unsafe.Pointer(p))
	b[0], b[1] = byte(port>>8), byte(port)
}

// Connect starts connecting non-blocking socket fd to sa: nil or
// unix.EINPROGRESS (the first write, or Out, tells how it ended).
func Connect(fd int, sa *Sockaddr) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&sa.raw)), sa.len)
	return errno(e)
}

// unspec is the AF_UNSPEC address whose connect disconnects a TCP socket.
var unspec = unix.RawSockaddr{Family: unix.AF_UNSPEC}

// Disconnect aborts TCP socket fd's connection with a reset and leaves
// the socket unconnected, its queues empty, ready for another Connect
// (connect(2) with AF_UNSPEC; tcp_disconnect in Linux's net/ipv4/tcp.c).
// It stays in the epoll sets it is in.
func Disconnect(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CONNECT, uintptr(fd), uintptr(unsafe.Pointer(&unspec)), unsafe.Sizeof(unspec))
	return errno(e)
}

// Close closes fd.
func Close(fd int) error {
	_, _, e := unix.RawSyscall(unix.SYS_CLOSE, uintptr(fd), 0, 0)
	return errno(e)
}

// SetsockoptInt sets an integer socket option.
func SetsockoptInt(fd, level, opt, value int) error {
	v := int32(value)
	_, _, e := unix.RawSyscall6(unix.SYS_SETSOCKOPT, uintptr(fd), uintptr(level), uintptr(opt),
		uintptr(unsafe.Pointer(&v)), 4, 0)
	return errno(e)
}

// SocketError is the pending error of socket fd (SO_ERROR): how a
// non-blocking connect ended.
func SocketError(fd int) error {
	var v int32
	l := uint32(4)
	_, _, e := unix.RawSyscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.SOL_SOCKET, unix.SO_ERROR,
		uintptr(unsafe.Pointer(&v)), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 {
		return e
	}
	return errno(unix.Errno(v))
}

// Listen opens a non-blocking TCP listening socket on sa with SO_REUSEPORT,
// so that one per loop can share an address and the kernel spreads the
// connections among them.
func Listen(family int, sa unix.Sockaddr, backlog int) (int, error) {
	fd, err := unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, err
	}
	for _, opt := range [...]int{unix.SO_REUSEADDR, unix.SO_REUSEPORT} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			unix.Close(fd)
			return -1, err
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if err := unix.Listen(fd, backlog); err != nil {
		unix.Close(fd)
		return -1, err
	}
	return fd, nil
}

// Accept takes one connection from a non-blocking listening socket, itself
// non-blocking and close-on-exec, and its peer's address (the zero
// AddrPort for a unix socket's); unix.EAGAIN when none is waiting.
func Accept(fd int) (int, netip.AddrPort, error) {
	var rsa unix.RawSockaddrAny
	for {
		l := uint32(unix.SizeofSockaddrAny)
		nfd, _, e := unix.RawSyscall6(unix.SYS_ACCEPT4, uintptr(fd), uintptr(unsafe.Pointer(&rsa)),
			uintptr(unsafe.Pointer(&l)), unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0, 0)
		if e == unix.EINTR || e == unix.ECONNABORTED {
			continue
		}
		if e != 0 {
			return -1, netip.AddrPort{}, e
		}
		return int(nfd), peer(&rsa), nil
	}
}

// peer is the TCP address in rsa.
func peer(rsa *unix.RawSockaddrAny) netip.AddrPort {
	switch rsa.Addr.Family {
	case unix.AF_INET:
		r := (*unix.RawSockaddrInet4)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom4(r.Addr), port(r.Port))
	case unix.AF_INET6:
		r := (*unix.RawSockaddrInet6)(unsafe.Pointer(rsa))
		return netip.AddrPortFrom(netip.AddrFrom16(r.Addr), port(r.Port))
	}
	return netip.AddrPort{}
}

func port(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}
