package router

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

// PROXY protocol (HAProxy's proxy-protocol.txt, versions 1 and 2): a load
// balancer in front of the router prefixes each connection with the
// client's real address. With Config.ProxyProtocol, a connection from a
// trusted peer (Config.TrustedProxies) MAY start with such a header; it is
// optional per connection, so health checks and direct clients still work.
// A header from any other peer is never believed: the connection is
// answered 400 (clear text) or closed (TLS), like any malformed request.
//
// The header comes before anything else, TLS included, and is read under
// the connection's header deadline (split sets it).
//
//	v1: "PROXY " ("TCP4" | "TCP6") " " src " " dst " " sport " " dport "\r\n"
//	    | "PROXY UNKNOWN" [anything] "\r\n"; 107 bytes at most.
//	v2: sig[12] = "\r\n\r\n\x00\r\nQUIT\n"
//	    ver_cmd[1]  high nibble 2; low nibble 0 LOCAL, 1 PROXY
//	    fam[1]      0x11 TCP4, 0x12 UDP4 → 12 address bytes;
//	                0x21 TCP6, 0x22 UDP6 → 36; others carry no usable address
//	    len[2]      big endian: bytes that follow (addresses + TLVs)
//	    src addr, dst addr, src port[2], dst port[2], TLVs (ignored)
//
// A LOCAL command, UNKNOWN or a non-IP family keeps the peer's own address.

const (
	proxyV1Prefix = "PROXY "
	proxyV2Sig    = "\r\n\r\n\x00\r\nQUIT\n"
	proxyV1Max    = 107
	proxyV2Head   = 16
)

var (
	errProxyShort     = errors.New("router: PROXY header incomplete")
	errProxyBad       = errors.New("router: malformed PROXY header")
	errProxyUntrusted = errors.New("router: PROXY header from an untrusted peer")
)

// proxyHeader is what a parsed PROXY header says. A zero src means "keep the
// connection's own peer address" (LOCAL, UNKNOWN, non-IP families).
type proxyHeader struct {
	src     netip.AddrPort
	version int
}

// proxyMatch classifies the first bytes of a connection: 0 no PROXY header,
// 1 undecided (b is a proper prefix of a signature), 2 v1, 3 v2.
func proxyMatch(b []byte) int {
	v1 := matchPrefix(b, proxyV1Prefix)
	v2 := matchPrefix(b, proxyV2Sig)
	switch {
	case v1 == 2:
		return 2
	case v2 == 2:
		return 3
	case v1 == 1 || v2 == 1:
		return 1
	}
	return 0
}

// matchPrefix: 0 b diverges from sig, 1 b is a proper prefix, 2 b starts
// with sig.
func matchPrefix(b []byte, sig string) int {
	if len(b) >= len(sig) {
		if string(b[:len(sig)]) == sig {
			return 2
		}
		return 0
	}
	if string(b) == sig[:len(b)] {
		return 1
	}
	return 0
}

// parseProxyHeader parses a PROXY header at the start of b and returns it
// with its length. errProxyShort: b ends before the header does (read more);
// errProxyBad: not a valid header. b is hostile input; nothing is retained.
func parseProxyHeader(b []byte) (proxyHeader, int, error) {
	switch proxyMatch(b) {
	case 2:
		return parseProxyV1(b)
	case 3:
		return parseProxyV2(b)
	case 1:
		return proxyHeader{}, 0, errProxyShort
	}
	return proxyHeader{}, 0, errProxyBad
}

func parseProxyV1(b []byte) (proxyHeader, int, error) {
	end := bytes.Index(b[:min(len(b), proxyV1Max)], []byte("\r\n"))
	if end < 0 {
		if len(b) >= proxyV1Max {
			return proxyHeader{}, 0, errProxyBad
		}
		// A bare '\n' or other control byte will never become valid.
		if bytes.IndexByte(b, '\n') >= 0 {
			return proxyHeader{}, 0, errProxyBad
		}
		return proxyHeader{}, 0, errProxyShort
	}
	h := proxyHeader{version: 1}
	line := b[len(proxyV1Prefix):end]
	n := end + 2
	if bytes.HasPrefix(line, []byte("UNKNOWN")) {
		return h, n, nil
	}
	var f [5][]byte
	for i := range f {
		sp := bytes.IndexByte(line, ' ')
		if i == len(f)-1 {
			if sp >= 0 {
				return proxyHeader{}, 0, errProxyBad
			}
			f[i] = line
			break
		}
		if sp < 0 {
			return proxyHeader{}, 0, errProxyBad
		}
		f[i], line = line[:sp], line[sp+1:]
	}
	var want4 bool
	switch string(f[0]) {
	case "TCP4":
		want4 = true
	case "TCP6":
	default:
		return proxyHeader{}, 0, errProxyBad
	}
	src, err1 := netip.ParseAddr(string(f[1]))
	dst, err2 := netip.ParseAddr(string(f[2]))
	sport, ok1 := ascii.ParsePort(f[3])
	_, ok2 := ascii.ParsePort(f[4])
	if err1 != nil || err2 != nil || !ok1 || !ok2 || src.Is4() != want4 || dst.Is4() != want4 || src.Zone() != "" || dst.Zone() != "" {
		return proxyHeader{}, 0, errProxyBad
	}
	h.src = netip.AddrPortFrom(src, sport)
	return h, n, nil
}

func parseProxyV2(b []byte) (proxyHeader, int, error) {
	if len(b) < proxyV2Head {
		return proxyHeader{}, 0, errProxyShort
	}
	verCmd, fam := b[12], b[13]
	n := proxyV2Head + int(binary.BigEndian.Uint16(b[14:16]))
	if verCmd>>4 != 2 || verCmd&0xf > 1 {
		return proxyHeader{}, 0, errProxyBad
	}
	var need int
	switch fam {
	case 0x11, 0x12:
		need = 12
	case 0x21, 0x22:
		need = 36
	}
	if n-proxyV2Head < need {
		return proxyHeader{}, 0, errProxyBad
	}
	if len(b) < n {
		return proxyHeader{}, 0, errProxyShort
	}
	h := proxyHeader{version: 2}
	if verCmd&0xf == 0 { // LOCAL: the proxy's own connection (health check)
		return h, n, nil
	}
	a := b[proxyV2Head:n]
	switch need {
	case 12:
		ip := netip.AddrFrom4([4]byte(a[0:4]))
		h.src = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(a[8:10]))
	case 36:
		ip := netip.AddrFrom16([16]byte(a[0:16]))
		h.src = netip.AddrPortFrom(ip, binary.BigEndian.Uint16(a[32:34]))
	}
	return h, n, nil
}

// readProxyHeader reads an optional PROXY header from c. It reads only as
// far as needed to decide, so a client that sends a short request and waits
// is not held up; whatever was read past the header is replayed by the
// returned conn. trusted is whether c's peer may send one: a header from an
// untrusted peer is errProxyUntrusted. The caller owns c's deadline.
func readProxyHeader(c net.Conn, trusted bool) (net.Conn, error) {
	buf := make([]byte, 0, 256)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		m, err := c.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+m]
		switch proxyMatch(buf) {
		case 0:
			if len(buf) == 0 && err != nil {
				return nil, err
			}
			return newPrefixConn(c, buf), nil
		case 1:
		default:
			if !trusted {
				return nil, errProxyUntrusted
			}
			h, n, perr := parseProxyHeader(buf)
			switch perr {
			case nil:
				pc := &proxiedConn{prefixConn: prefixConn{Conn: c, pre: buf[n:]}}
				if h.src.IsValid() {
					pc.remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(h.src.Addr().Unmap(), h.src.Port()))
				}
				return pc, nil
			case errProxyShort:
				if len(buf) > proxyV2Head+0xffff {
					return nil, errProxyBad // cannot happen: the length field bounds it
				}
			default:
				return nil, perr
			}
		}
		if err != nil {
			if err == io.EOF {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
}

// proxiedConn is a connection whose peer address came from a PROXY header.
// It replays the bytes read past the header.
type proxiedConn struct {
	prefixConn
	remote net.Addr // nil: the connection's own peer
}

func (p *proxiedConn) RemoteAddr() net.Addr {
	if p.remote != nil {
		return p.remote
	}
	return p.Conn.RemoteAddr()
}

// acceptProxy runs the PROXY step of split for c (Config.ProxyProtocol).
// On failure c has been answered or closed and ok is false.
func (l *frontListener) acceptProxy(c net.Conn) (net.Conn, bool) {
	rt := l.rt
	peer := netip.AddrPort{}
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		peer = ta.AddrPort()
	}
	pc, err := readProxyHeader(c, rt.trusted(peer.Addr()))
	if err == nil {
		return pc, true
	}
	rt.log.Debug("PROXY header refused", "listener", l.name, "remote", c.RemoteAddr(), "err", err)
	if (err == errProxyUntrusted || err == errProxyBad) && l.tls == nil {
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n")
		rt.metrics.none.count(400)
	}
	c.Close()
	return nil, false
}
