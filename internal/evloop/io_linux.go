//go:build linux

package evloop

import "golang.org/x/sys/unix"

// Read reads from a non-blocking fd. It retries EINTR; n == 0 with a nil
// error is the peer's end of stream; unix.EAGAIN means nothing is there yet.
func Read(fd int, p []byte) (int, error) {
	for {
		n, err := unix.Read(fd, p)
		if err == unix.EINTR {
			continue
		}
		if n < 0 {
			n = 0
		}
		return n, err
	}
}

// Write writes as much of p as a non-blocking fd takes now: n < len(p) with
// unix.EAGAIN means wait for Out. It retries EINTR and short writes.
func Write(fd int, p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Write(fd, p[done:])
		if err == unix.EINTR {
			continue
		}
		if n > 0 {
			done += n
		}
		if err != nil {
			return done, err
		}
		if n == 0 {
			return done, unix.EAGAIN
		}
	}
	return done, nil
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
// non-blocking and close-on-exec; unix.EAGAIN when none is waiting.
func Accept(fd int) (int, unix.Sockaddr, error) {
	for {
		nfd, sa, err := unix.Accept4(fd, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC)
		if err == unix.EINTR || err == unix.ECONNABORTED {
			continue
		}
		return nfd, sa, err
	}
}
