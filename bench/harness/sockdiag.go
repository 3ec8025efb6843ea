package main

import (
	"encoding/binary"
	"errors"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Counting the requests a node holds when it dies. Every router here opens
// one TCP connection per request to a node, so the node's requests are its
// server-side connections, established or still in the handshake, being
// served or waiting in its listen queue. They are read with the kernel's
// sock_diag netlink interface (what ss(8) uses), which filters by state in
// the kernel: /proc/net/tcp lists every TIME_WAIT socket on this busy
// machine and takes tens of ms to read.

const (
	tcpEstablished = 1
	tcpSynRecv     = 3
	tcpListen      = 10
	inetDiagReqLen = 56 // struct inet_diag_req_v2
	inetDiagMsgLen = 72 // struct inet_diag_msg
)

// tcpConn is a connection's two ports, as a key.
type tcpConn struct{ local, remote uint16 }

// tcpSockets returns the IPv4 TCP sockets in the states of mask (bits
// 1<<state) whose local port is in ports, and whether one of them listens.
func tcpSockets(ports map[uint16]bool, mask uint32) (conns []tcpConn, listening bool, err error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.NETLINK_INET_DIAG)
	if err != nil {
		return nil, false, err
	}
	defer unix.Close(fd)
	tv := unix.NsecToTimeval(int64(time.Second))
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	// nlmsghdr + inet_diag_req_v2{family, protocol, ext, pad, states, id}
	req := make([]byte, unix.NLMSG_HDRLEN+inetDiagReqLen)
	binary.NativeEndian.PutUint32(req[0:], uint32(len(req)))
	binary.NativeEndian.PutUint16(req[4:], unix.SOCK_DIAG_BY_FAMILY)
	binary.NativeEndian.PutUint16(req[6:], unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req[16], req[17] = unix.AF_INET, unix.IPPROTO_TCP
	binary.NativeEndian.PutUint32(req[20:], mask)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, false, err
	}
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			return nil, false, err
		}
		msgs, err := syscall.ParseNetlinkMessage(buf[:n])
		if err != nil {
			return nil, false, err
		}
		for _, m := range msgs {
			switch m.Header.Type {
			case unix.NLMSG_DONE:
				return conns, listening, nil
			case unix.NLMSG_ERROR:
				return nil, false, errors.New("sock_diag: netlink error")
			}
			if len(m.Data) < inetDiagMsgLen {
				continue
			}
			// inet_diag_msg: family, state, timer, retrans, then the
			// sockid, whose ports are big-endian.
			state := m.Data[1]
			local := binary.BigEndian.Uint16(m.Data[4:])
			remote := binary.BigEndian.Uint16(m.Data[6:])
			if !ports[local] {
				continue
			}
			if state == tcpListen {
				listening = true
			} else {
				conns = append(conns, tcpConn{local, remote})
			}
		}
	}
}

// killCounting kills the process group pgid and returns how many requests
// (connections, see above) its node held as it died: those open just
// before the signal and those the kernel still queued on its listening
// sockets until the last of its processes exited and closed them, seen by
// polling until then (at most 2 s).
func killCounting(pgid int, ports map[uint16]bool, kill func(int) error) (int, error) {
	const mask = 1<<tcpEstablished | 1<<tcpSynRecv | 1<<tcpListen
	seen := map[tcpConn]bool{}
	add := func() (bool, error) {
		conns, listening, err := tcpSockets(ports, mask)
		for _, c := range conns {
			seen[c] = true
		}
		return listening, err
	}
	if _, err := add(); err != nil {
		return 0, err
	}
	if err := kill(pgid); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(2 * time.Second); time.Now().Before(deadline); {
		listening, err := add()
		if err != nil {
			return 0, err
		}
		if !listening {
			break
		}
	}
	return len(seen), nil
}
