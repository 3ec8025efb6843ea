package main

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// Listener addresses are checked when the flags are parsed (usage errors,
// exit 2), so that a typo fails before anything binds rather than as a
// bind failure (exit 1) after other listeners opened.

// checkTCPAddr checks a TCP listen address: host:port with a port from 0
// (any free port) to 65535 and a host that is empty (every interface), an
// IP address or a host name.
func checkTCPAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want host:port, e.g. 127.0.0.1:8000 or [::1]:8000")
	}
	if err := checkPort(port); err != nil {
		return err
	}
	if host == "" {
		return nil
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return nil
	}
	if !validHostName(host) {
		return fmt.Errorf("host %q is neither an IP address nor a host name", host)
	}
	return nil
}

// checkIPAddr is checkTCPAddr for the sockets whose host must be an IP
// address or empty (UDP subscriptions, the cluster).
func checkIPAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("want ip:port, e.g. 127.0.0.1:8000 or [::1]:8000")
	}
	if err := checkPort(port); err != nil {
		return err
	}
	if host != "" {
		if _, err := netip.ParseAddr(host); err != nil {
			return fmt.Errorf("host %q is not an IP address", host)
		}
	}
	return nil
}

func checkPort(port string) error {
	if port == "" {
		return fmt.Errorf("no port (0 picks a free one)")
	}
	n, err := strconv.ParseUint(port, 10, 64)
	if err != nil {
		return fmt.Errorf("port %q is not a number", port)
	}
	if n > 65535 {
		return fmt.Errorf("port %d is out of range (0-65535)", n)
	}
	return nil
}

// checkUnixPath checks a unix socket path or @name (abstract namespace).
func checkUnixPath(addr string) error {
	if addr == "@" || strings.IndexByte(addr, 0) >= 0 {
		return fmt.Errorf("bad unix socket name")
	}
	if len(addr) > 107 { // sun_path holds 108 bytes with the NUL
		return fmt.Errorf("unix socket path longer than 107 bytes")
	}
	return nil
}

// checkStreamAddr checks a --uwsgi or --stats address: with a colon TCP
// host:port, else a unix socket path or @name (internal/sockutil).
func checkStreamAddr(addr string) error {
	if strings.Contains(addr, ":") {
		return checkTCPAddr(addr)
	}
	if addr == "" {
		return fmt.Errorf("want host:port or a unix socket path")
	}
	return checkUnixPath(addr)
}

// checkDatagramAddr checks a --subscription-server address: a path (with
// a slash) or @name is a unix datagram socket, else UDP ip:port (as the
// subscription package reads it).
func checkDatagramAddr(addr string) error {
	if strings.Contains(addr, "/") || strings.HasPrefix(addr, "@") {
		return checkUnixPath(addr)
	}
	return checkIPAddr(addr)
}

func validHostName(h string) bool {
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range label {
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}

// isLoopback reports whether a TCP listen address binds loopback only: a
// loopback IP or "localhost". An empty host is every interface.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// parseCIDR parses a --trusted-proxy, --subscription-allow or --node-allow
// value, with an operator's message rather than net/netip's.
func parseCIDR(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err == nil {
		return p, nil
	}
	if ip, ierr := netip.ParseAddr(s); ierr == nil {
		return netip.Prefix{}, fmt.Errorf("not a CIDR: write %s/%d for this one address", s, ip.BitLen())
	}
	if strings.Contains(err.Error(), "length out of range") || strings.Contains(err.Error(), "bad bits") {
		return netip.Prefix{}, fmt.Errorf("prefix length out of range (IPv4 0-32, IPv6 0-128)")
	}
	return netip.Prefix{}, fmt.Errorf("not a CIDR (e.g. 10.0.0.0/8, fd00::/8)")
}
