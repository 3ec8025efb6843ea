package router

import (
	"net"
	"net/netip"
	"slices"

	"github.com/fastrouter/fastrouter/balancer"
)

// Forwarding loops. A node whose address is one of the router's own
// listening sockets (an --http, --https or --uwsgi front, the admin or stats
// listener) makes every request to it come back as a new request:
//
//   - an http:// node on an HTTP front forwards the request to itself,
//     each hop adding its X-Forwarded-For entry, until the head passes
//     --max-header-bytes: one client request measured 5,941 hops, 11,883
//     file descriptors and 1.2 GB of RSS before the 431 came back;
//   - a uwsgi node on a --uwsgi front relays the packet verbatim, so nothing
//     grows and nothing stops the loop before the process runs out of file
//     descriptors (then nobody is served);
//   - a node on the admin listener puts the admin API, POST and DELETE
//     included, behind the public front.
//
// Anyone who can subscribe can announce such a node (--node-allow is the
// operator's defence; it is off by default), and a configuration can name
// one by mistake. So the router never dials its own sockets: connect treats
// such a node like one that refused the connection (marked failed, the next
// node tried), the request gets 502 when nothing else is left, and the
// failure counts as fastrouter_backend_errors_total{reason="loop"}.
//
// A loop through another process (router A → router B → router A) is not
// detected here; see SECURITY.md.

// selfSockets are the sockets this process listens on. Immutable once
// published (Router.self).
type selfSockets struct {
	tcp []netip.AddrPort // listeners bound to one address
	// anyPorts are the ports of listeners bound to every address
	// (0.0.0.0, ::): a node on such a port is the router when its IP is
	// one of this host's (local, loopback included).
	anyPorts []uint16
	local    []netip.Addr // this host's interface addresses, unmapped
	unix     []string     // unix socket paths ("@name": abstract)
}

// SetOwnAddrs tells the router which sockets it listens on (every front,
// the admin and stats listeners), so that it never forwards to them. The
// interface addresses of the host are read now, for listeners bound to
// every address; an address added later is not known. Safe for concurrent
// use; call it again when the listeners change.
func (rt *Router) SetOwnAddrs(addrs []net.Addr) {
	s := &selfSockets{}
	for _, a := range addrs {
		switch a := a.(type) {
		case *net.TCPAddr:
			ap := a.AddrPort()
			ip := ap.Addr().Unmap()
			if ip.IsUnspecified() {
				s.anyPorts = append(s.anyPorts, ap.Port())
				continue
			}
			s.tcp = append(s.tcp, netip.AddrPortFrom(ip, ap.Port()))
		case *net.UnixAddr:
			s.unix = append(s.unix, a.Name)
		}
	}
	if len(s.anyPorts) > 0 {
		if ifs, err := net.InterfaceAddrs(); err == nil {
			for _, ia := range ifs {
				if n, ok := ia.(*net.IPNet); ok {
					if ip, ok := netip.AddrFromSlice(n.IP); ok {
						s.local = append(s.local, ip.Unmap())
					}
				}
			}
		}
	}
	rt.self.Store(s)
}

// isSelf reports whether dialling n would reach one of the router's own
// sockets. It allocates nothing.
func (rt *Router) isSelf(n *balancer.Node) bool {
	s := rt.self.Load()
	if s == nil {
		return false
	}
	ep := &n.Endpoint
	if ep.Network == balancer.NetUnix {
		return slices.Contains(s.unix, ep.Dial)
	}
	ip, port := ep.AddrPort.Addr().Unmap(), ep.AddrPort.Port()
	if ip.IsUnspecified() {
		// Connecting to 0.0.0.0 or :: reaches this host (Linux: loopback).
		if ip.Is4() {
			ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
		} else {
			ip = netip.IPv6Loopback()
		}
	}
	if slices.Contains(s.tcp, netip.AddrPortFrom(ip, port)) {
		return true
	}
	if !slices.Contains(s.anyPorts, port) {
		return false
	}
	return ip.IsLoopback() || slices.Contains(s.local, ip)
}
