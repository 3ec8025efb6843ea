package subscription

import (
	"net"
	"net/netip"
)

// datagramReader is how a reader goroutine takes datagrams off its socket:
// read fills a batch and returns how many datagrams are in it; datagram
// returns one of them, valid until the next read; overflowed returns how
// many datagrams the kernel dropped (socket buffer full) that read learnt
// of since the last call. Owned by the reader.
type datagramReader interface {
	read() (int, error)
	datagram(i int) ([]byte, netip.AddrPort)
	overflowed() uint32
}

// singleReader reads one datagram per call: unix sockets, and UDP where
// there is no batched read.
type singleReader struct {
	conn net.Conn
	udp  *net.UDPConn
	buf  []byte
	n    int
	src  netip.AddrPort
}

func newSingleReader(sk *socket) *singleReader {
	return &singleReader{conn: sk.conn, udp: sk.udp, buf: make([]byte, MaxDatagram+1)} // one spare byte detects truncation
}

func (r *singleReader) read() (int, error) {
	var err error
	if r.udp != nil {
		r.n, r.src, err = r.udp.ReadFromUDPAddrPort(r.buf)
	} else {
		// The sender of a unix datagram is usually unnamed; Read avoids
		// allocating the address ReadFrom would return.
		r.n, err = r.conn.Read(r.buf)
	}
	if err != nil {
		return 0, err
	}
	return 1, nil
}

func (r *singleReader) datagram(int) ([]byte, netip.AddrPort) { return r.buf[:r.n], r.src }

func (r *singleReader) overflowed() uint32 { return 0 } // not known here
