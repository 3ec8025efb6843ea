//go:build linux

package subscription

import (
	"net"
	"net/netip"
	"os"
	"strconv"
	"syscall"
	"unsafe"
)

// batch is how many datagrams one recvmmsg may return. Past 16 the saving
// per datagram is small; each slot is a full-size buffer (64 KiB + 1, of
// which only the pages a datagram touches become resident).
const batch = 16

// ctlSpace holds one SO_RXQ_OVFL control message (a uint32): at least
// syscall.CmsgSpace(4), 24 bytes on 64-bit Linux (a test checks).
const ctlSpace = 32

// mmsghdr is struct mmsghdr (linux/socket.h); the syscall package has no
// recvmmsg. Go pads it to its alignment as C does: 64 bytes on 64-bit, 32
// on 32-bit (a test checks).
type mmsghdr struct {
	hdr syscall.Msghdr
	len uint32
}

// mmsgReader reads a UDP socket with recvmmsg: under a flood of
// announcements one system call returns up to batch datagrams, which is
// most of what a reader costs per datagram (see bench/ datagrams-1core).
// With SO_RXQ_OVFL every datagram also carries the socket's running count
// of datagrams the kernel dropped for want of buffer space, so those drops
// are counted like the queue's.
// Owned by the socket's reader goroutine.
type mmsgReader struct {
	rc    syscall.RawConn
	recv  func(fd uintptr) bool // r.recvmmsg, made once
	n     int
	err   error
	hdrs  [batch]mmsghdr
	iovs  [batch]syscall.Iovec
	names [batch]syscall.RawSockaddrInet6 // the larger of the two families
	ctls  [batch][ctlSpace]byte           // SO_RXQ_OVFL control messages
	bufs  [batch][]byte
	// The kernel's drop count as last seen, and the drops not yet
	// reported by overflowed. ovfl is false when the option is off.
	ovfl     bool
	drops    uint32
	newDrops uint32
	// Zones of scoped (link-local) IPv6 senders by interface index: the
	// names net.UDPConn would give, without a netlink lookup per datagram.
	zones map[uint32]string
}

func newDatagramReader(sk *socket) datagramReader {
	if sk.udp == nil {
		return newSingleReader(sk)
	}
	rc, err := sk.udp.SyscallConn()
	if err != nil {
		return newSingleReader(sk)
	}
	r := &mmsgReader{rc: rc}
	r.recv = r.recvmmsg
	_ = rc.Control(func(fd uintptr) {
		r.ovfl = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RXQ_OVFL, 1) == nil
		// Start from the socket's drops so far: they are not news to a
		// reader restarted after a panic, nor to a process that was
		// handed the socket by its predecessor.
		r.drops = socketDrops(fd)
	})
	for i := range r.hdrs {
		r.bufs[i] = make([]byte, MaxDatagram+1) // one spare byte detects truncation
		r.iovs[i].Base = &r.bufs[i][0]
		r.iovs[i].SetLen(len(r.bufs[i]))
		h := &r.hdrs[i].hdr
		h.Name = (*byte)(unsafe.Pointer(&r.names[i]))
		h.Iov = &r.iovs[i]
		h.Iovlen = 1
		if r.ovfl {
			h.Control = &r.ctls[i][0]
		}
	}
	return r
}

func (r *mmsgReader) read() (int, error) {
	r.n, r.err = 0, nil
	if err := r.rc.Read(r.recv); err != nil {
		return 0, err // net.ErrClosed once the server closes the socket
	}
	return r.n, r.err
}

// recvmmsg is the RawConn.Read callback: false (EAGAIN) waits for the
// poller.
func (r *mmsgReader) recvmmsg(fd uintptr) bool {
	for i := range r.hdrs {
		h := &r.hdrs[i].hdr
		h.Namelen = uint32(unsafe.Sizeof(r.names[i]))
		if r.ovfl {
			h.SetControllen(ctlSpace)
		}
	}
	for {
		n, _, e := syscall.Syscall6(syscall.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&r.hdrs[0])), batch,
			syscall.MSG_DONTWAIT, 0, 0)
		switch e {
		case 0:
			r.n = int(n)
			if r.ovfl && n > 0 {
				r.countDrops(&r.hdrs[n-1].hdr, &r.ctls[n-1])
			}
			return true
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		default:
			r.err = os.NewSyscallError("recvmmsg", e)
			return true
		}
	}
}

func (r *mmsgReader) datagram(i int) ([]byte, netip.AddrPort) {
	b := r.bufs[i][:r.hdrs[i].len]
	switch sa := &r.names[i]; sa.Family {
	case syscall.AF_INET:
		sa4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return b, netip.AddrPortFrom(netip.AddrFrom4(sa4.Addr), port(sa4.Port))
	case syscall.AF_INET6:
		ip := netip.AddrFrom16(sa.Addr)
		if sa.Scope_id != 0 {
			ip = ip.WithZone(r.zone(sa.Scope_id))
		}
		return b, netip.AddrPortFrom(ip, port(sa.Port))
	}
	return b, netip.AddrPort{}
}

// countDrops reads the kernel's drop count from the last datagram of a
// batch: it is cumulative, so the last one holds the whole news.
func (r *mmsgReader) countDrops(h *syscall.Msghdr, ctl *[ctlSpace]byte) {
	hl := syscall.CmsgLen(0)
	if int(h.Controllen) < hl+4 {
		return // no drop since the socket opened: the kernel sends none
	}
	c := (*syscall.Cmsghdr)(unsafe.Pointer(&ctl[0]))
	if c.Level != syscall.SOL_SOCKET || c.Type != syscall.SO_RXQ_OVFL || int(c.Len) < hl+4 {
		return
	}
	d := *(*uint32)(unsafe.Pointer(&ctl[hl]))
	r.newDrops += d - r.drops // wraps like the kernel's counter
	r.drops = d
}

func (r *mmsgReader) overflowed() uint32 {
	d := r.newDrops
	r.newDrops = 0
	return d
}

// port converts a sockaddr port (network byte order in memory).
func port(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

func (r *mmsgReader) zone(id uint32) string {
	if z, ok := r.zones[id]; ok {
		return z
	}
	z := strconv.FormatUint(uint64(id), 10)
	if ifi, err := net.InterfaceByIndex(int(id)); err == nil {
		z = ifi.Name
	}
	if r.zones == nil || len(r.zones) >= 64 { // interfaces come and go; bound it
		r.zones = make(map[uint32]string)
	}
	r.zones[id] = z
	return z
}
