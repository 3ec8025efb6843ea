//go:build unix

package upgrade

import (
	"fmt"
	"os"
	"syscall"
)

// fdKind is the file type an inherited descriptor must have.
type fdKind uint32

const (
	kindSocket  fdKind = syscall.S_IFSOCK
	kindPipe    fdKind = syscall.S_IFIFO
	kindRegular fdKind = syscall.S_IFREG
)

func (k fdKind) String() string {
	switch k {
	case kindSocket:
		return "socket"
	case kindPipe:
		return "pipe"
	case kindRegular:
		return "regular file"
	}
	return fmt.Sprintf("file type %#o", uint32(k))
}

// checkFD reports an error unless fd is open and of kind k. It guards against
// a stale or hand-written environment pointing at a descriptor this process
// uses for something else (the runtime's epoll fd, say), which New would
// otherwise adopt and later close.
func checkFD(fd int, k fdKind) error {
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		return fmt.Errorf("fd %d: %w", fd, err)
	}
	if got := fdKind(uint32(st.Mode) & syscall.S_IFMT); got != k {
		return fmt.Errorf("fd %d: is a %s, want a %s", fd, got, k)
	}
	return nil
}

// setCloseOnExec marks an inherited descriptor close-on-exec: exec passes
// ExtraFiles without it, and anything the child spawns must not inherit them.
func setCloseOnExec(fd int) {
	syscall.CloseOnExec(fd)
}

// dupConn returns a close-on-exec duplicate of c's descriptor, for passing in
// ExtraFiles. It does not use (*net.TCPListener).File and friends: Fd on
// such a file switches the descriptor to blocking mode, and since a dup
// shares the open file description, that would make the caller's own
// listener blocking (an Accept that no Close can interrupt). os.NewFile on a
// non-blocking descriptor leaves the mode alone.
func dupConn(c syscall.Conn, name string) (*os.File, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, err
	}
	nfd := -1
	var derr error
	err = rc.Control(func(fd uintptr) {
		// ForkLock keeps a concurrent fork from inheriting the dup before
		// it is close-on-exec.
		syscall.ForkLock.RLock()
		defer syscall.ForkLock.RUnlock()
		if nfd, derr = syscall.Dup(int(fd)); derr == nil {
			syscall.CloseOnExec(nfd)
		}
	})
	if err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, os.NewSyscallError("dup", derr)
	}
	return os.NewFile(uintptr(nfd), name), nil
}
