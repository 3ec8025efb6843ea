//go:build linux && !386

package subscription

import (
	"syscall"
	"unsafe"
)

// SO_MEMINFO and its drop counter's index (linux/sock_diag.h); the syscall
// package has neither. 0x37 on every Linux port Go has.
const (
	soMeminfo      = 0x37
	skMeminfoDrops = 8
)

// socketDrops is the count of datagrams the kernel dropped on socket fd so
// far (0 if it cannot tell).
func socketDrops(fd uintptr) uint32 {
	var mi [skMeminfoDrops + 1]uint32
	l := uint32(unsafe.Sizeof(mi))
	_, _, e := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, syscall.SOL_SOCKET, soMeminfo,
		uintptr(unsafe.Pointer(&mi[0])), uintptr(unsafe.Pointer(&l)), 0)
	if e != 0 || l != uint32(unsafe.Sizeof(mi)) {
		return 0
	}
	return mi[skMeminfoDrops]
}
