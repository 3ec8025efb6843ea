package balancer

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestParseEndpoint(t *testing.T) {
	cases := []struct {
		name string
		in   string
		net  Network
		dial string
		err  error // nil: must succeed
	}{
		{"ipv4", "127.0.0.1:3031", NetTCP, "127.0.0.1:3031", nil},
		{"ipv6", "[::1]:3031", NetTCP, "[::1]:3031", nil},
		{"ipv6 zone", "[fe80::1%eth0]:3031", NetTCP, "[fe80::1%eth0]:3031", nil},
		{"unix path", "/tmp/a.sock", NetUnix, "/tmp/a.sock", nil},
		{"unix path with colon", "/tmp/a:b.sock", NetUnix, "/tmp/a:b.sock", nil},
		{"relative unix path", "./a.sock", NetUnix, "./a.sock", nil},
		{"bare name is a unix path", "a.sock", NetUnix, "a.sock", nil},
		{"abstract", "@abstract", NetUnix, "@abstract", nil},
		{"abstract with colon", "@abs:tract", NetUnix, "@abs:tract", nil},
		{"255-byte path", "/" + strings.Repeat("p", 254), NetUnix, "/" + strings.Repeat("p", 254), nil},
		{"http node", "http://127.0.0.1:8000", NetHTTP, "127.0.0.1:8000", nil},
		{"http node, trailing slash", "http://127.0.0.1:8000/", NetHTTP, "127.0.0.1:8000", nil},
		{"http node, default port", "http://10.0.0.7", NetHTTP, "10.0.0.7:80", nil},
		{"http node, ipv6", "http://[::1]:8000", NetHTTP, "[::1]:8000", nil},
		{"http node, ipv6 default port", "http://[2001:db8::1]/", NetHTTP, "[2001:db8::1]:80", nil},
		{"http node, upper-case scheme", "HTTP://127.0.0.1:8000", NetHTTP, "127.0.0.1:8000", nil},
		{"http node, host name", "http://localhost:8000", 0, "", ErrBadHTTPAddress},
		{"http node, path", "http://127.0.0.1:8000/app", 0, "", ErrBadHTTPAddress},
		{"http node, two slashes", "http://127.0.0.1:8000//", 0, "", ErrBadHTTPAddress},
		{"http node, query", "http://127.0.0.1:8000?x", 0, "", ErrBadHTTPAddress},
		{"http node, userinfo", "http://u:p@127.0.0.1:8000", 0, "", ErrBadHTTPAddress},
		{"http node, port 0", "http://127.0.0.1:0", 0, "", ErrBadHTTPAddress},
		{"http node, port too big", "http://127.0.0.1:65536", 0, "", ErrBadHTTPAddress},
		{"http node, empty port", "http://127.0.0.1:", 0, "", ErrBadHTTPAddress},
		{"http node, signed port", "http://127.0.0.1:+80", 0, "", ErrBadHTTPAddress},
		{"http node, ipv6 without brackets", "http://::1", 0, "", ErrBadHTTPAddress},
		{"http node, bracketed ipv4", "http://[127.0.0.1]:80", 0, "", ErrBadHTTPAddress},
		{"http node, zone", "http://[fe80::1%25eth0]:80", 0, "", ErrBadHTTPAddress},
		{"http node, empty", "http://", 0, "", ErrBadHTTPAddress},
		{"https node", "https://127.0.0.1:8443", 0, "", ErrBadAddress},
		{"host name", "localhost:3031", 0, "", ErrBadAddress},
		{"port only (the subscription layer resolves it first)", ":3031", 0, "", ErrBadAddress},
		{"empty", "", 0, "", ErrBadAddress},
		{"port 0", "127.0.0.1:0", 0, "", ErrBadAddress},
		{"port too big", "127.0.0.1:65536", 0, "", ErrBadAddress},
		{"ipv6 without brackets", "::1:3031", 0, "", ErrBadAddress},
		{"leading zeros", "127.000.0.1:3031", 0, "", ErrBadAddress},
		{"256-byte path", "/" + strings.Repeat("p", 255), 0, "", ErrBadAddress},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ep, err := ParseEndpoint(tc.in)
			if tc.err != nil {
				if !errors.Is(err, tc.err) {
					t.Fatalf("ParseEndpoint(%q) = %+v, %v; want error %v", tc.in, ep, err, tc.err)
				}
				return
			}
			if err != nil || ep.Network != tc.net || ep.Dial != tc.dial {
				t.Fatalf("ParseEndpoint(%q) = %+v, %v; want network %d dial %q", tc.in, ep, err, tc.net, tc.dial)
			}
			if (tc.net == NetTCP || tc.net == NetHTTP) && ep.AddrPort != netip.MustParseAddrPort(tc.dial) {
				t.Errorf("AddrPort = %v; want %s", ep.AddrPort, tc.dial)
			}
			if tc.net == NetUnix && ep.AddrPort.IsValid() {
				t.Errorf("unix endpoint has AddrPort %v", ep.AddrPort)
			}
		})
	}
}

func TestStateString(t *testing.T) {
	cases := map[State]string{
		StateActive: "active", StateDraining: "draining", StateDrained: "drained",
		StateFailed: "failed", StateBackup: "backup", State(99): "unknown",
	}
	for s, want := range cases {
		if got := s.String(); got != want {
			t.Errorf("State(%d).String() = %q; want %q", s, got, want)
		}
	}
}
