package uwsgitest

import (
	"net"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// Unanswered returns an address on 127.0.0.1 whose connects get no answer:
// a listener with the smallest backlog that never accepts, its accept
// queue filled, so that the kernel drops a further SYN and the connect
// waits (a node too busy to accept). accept takes one queued connection
// off and closes it, making room for the next SYN the kernel resends. The
// test's cleanup closes everything.
func Unanswered(t testing.TB) (addr string, accept func()) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
	accept = func() {
		if nfd, _, err := syscall.Accept(fd); err == nil {
			syscall.Close(nfd)
		}
	}
	// Fill the queue: connects complete until it is full, then one hangs.
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			return addr, accept
		}
		t.Cleanup(func() { c.Close() })
	}
	t.Fatal("accept queue never filled (kernel answers SYNs past the backlog)")
	return "", nil
}
