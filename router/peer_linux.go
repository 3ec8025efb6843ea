//go:build linux && !386

package router

import (
	"syscall"
	"unsafe"
)

// connected reports whether the socket fd has a peer (getpeername succeeds;
// ENOTCONN while the handshake runs). Raw, so the address costs nothing.
func connected(fd uintptr) bool {
	var rsa syscall.RawSockaddrAny
	l := uint32(syscall.SizeofSockaddrAny)
	_, _, e := syscall.RawSyscall(syscall.SYS_GETPEERNAME, fd, uintptr(unsafe.Pointer(&rsa)), uintptr(unsafe.Pointer(&l)))
	return e == 0
}
