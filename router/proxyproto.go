package router

import (
	"errors"
	"io"
	"net"
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/proxyproto"
)

// PROXY protocol (parsed by internal/proxyproto): a load balancer in front
// of the router prefixes each connection with the client's real address. With Config.ProxyProtocol, a connection from a
// trusted peer (Config.TrustedProxies) MAY start with such a header; it is
// optional per connection, so health checks and direct clients still work.
// A header from any other peer is never believed: the connection is
// answered 400 (clear text) or closed (TLS), like any malformed request.
//
// The header comes before anything else, TLS included, and is read under
// the connection's header deadline (split sets it).

// errProxyUntrusted is a PROXY header from a peer not in TrustedProxies.
var errProxyUntrusted = errors.New("router: PROXY header from an untrusted peer")

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
		switch proxyproto.Match(buf) {
		case proxyproto.None:
			if len(buf) == 0 && err != nil {
				return nil, err
			}
			return newPrefixConn(c, buf), nil
		case proxyproto.Undecided:
		default:
			if !trusted {
				return nil, errProxyUntrusted
			}
			h, n, perr := proxyproto.Parse(buf)
			switch perr {
			case nil:
				pc := &proxiedConn{prefixConn: prefixConn{Conn: c, pre: buf[n:]}}
				if h.Src.IsValid() {
					pc.remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(h.Src.Addr().Unmap(), h.Src.Port()))
				}
				return pc, nil
			case proxyproto.ErrShort:
				if len(buf) > proxyproto.MaxLen {
					return nil, proxyproto.ErrBad // cannot happen: the length field bounds it
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
	if (err == errProxyUntrusted || err == proxyproto.ErrBad) && l.tls == nil {
		_, _ = io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: 16\r\nConnection: close\r\n\r\n400 Bad Request\n")
		rt.metrics.none.count(400)
	}
	c.Close()
	return nil, false
}
