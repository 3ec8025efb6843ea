package router

import (
	"net"
	"syscall"
)

// aliveCheck tells whether an idle keep-alive connection is still worth
// sending on: a non-blocking MSG_PEEK finds nothing to read. EOF means the
// node closed it; bytes mean the node sent something unasked (a 408, say),
// which no request of ours may be paired with. Either way the connection
// is dropped before a request is risked on it. Allocation-free per check:
// the raw connection and the callback are made once, at dial.
type aliveCheck struct {
	rc   syscall.RawConn // nil: no check possible, assume alive
	fn   func(fd uintptr) bool
	buf  [1]byte
	live bool
}

func (a *aliveCheck) init(c net.Conn) {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return
	}
	a.rc = rc
	a.fn = a.peek
}

func (a *aliveCheck) peek(fd uintptr) bool {
	_, _, err := syscall.Recvfrom(int(fd), a.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	a.live = err == syscall.EAGAIN || err == syscall.EWOULDBLOCK // nothing to read: open and quiet
	return true                                                  // never wait for readability
}

func (a *aliveCheck) ok() bool {
	if a.rc == nil {
		return true
	}
	a.live = false
	if err := a.rc.Read(a.fn); err != nil {
		return false
	}
	return a.live
}
