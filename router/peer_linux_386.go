package router

import "syscall"

// connected reports whether the socket fd has a peer. On 386 getpeername
// goes through socketcall, so through the syscall package (it allocates the
// address).
func connected(fd uintptr) bool {
	_, err := syscall.Getpeername(int(fd))
	return err == nil
}
