package router

import "syscall"

const canPark = true

// peek is the RawConn.Read callback of a parked connection: true once there
// is something to read (bytes, EOF or an error), which MSG_PEEK leaves in
// place for fasthttp; false (nothing yet) to keep waiting.
func (p *parkConn) peek(fd uintptr) bool {
	// Always look first: RawConn.Read clears the poller's readiness
	// before calling, so bytes that came since the park must be found here.
	for {
		_, _, err := syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != syscall.EINTR {
			return err != syscall.EAGAIN && err != syscall.EWOULDBLOCK
		}
	}
}
