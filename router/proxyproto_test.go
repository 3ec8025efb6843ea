package router

import (
	"encoding/binary"
	"io"
	"net"
	"net/netip"
	"testing"
	"time"
)

func proxyV2(cmd, fam byte, addrs []byte, tlv int) []byte {
	b := []byte(proxyV2Sig)
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+tlv))
	b = append(b, addrs...)
	return append(b, make([]byte, tlv)...)
}

func v4addrs() []byte {
	return []byte{192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0, 80} // 192.0.2.7:12345 → 10.0.0.1:80
}

func v6addrs() []byte {
	a := netip.MustParseAddr("2001:db8::5").As16()
	d := netip.MustParseAddr("2001:db8::1").As16()
	b := append(a[:], d[:]...)
	return append(b, 0x01, 0xbb, 0x01, 0xbb) // 443 → 443
}

var proxyCases = []struct {
	name string
	in   string
	src  string // "" = keep the peer
	n    int
	err  error
}{
	{"v1 tcp4", "PROXY TCP4 192.0.2.7 10.0.0.1 12345 80\r\nGET", "192.0.2.7:12345", 40, nil},
	{"v1 tcp6", "PROXY TCP6 2001:db8::5 2001:db8::1 443 443\r\n", "[2001:db8::5]:443", 44, nil},
	{"v1 unknown", "PROXY UNKNOWN ffff:f...f:ffff 1 2\r\nX", "", 35, nil},
	{"v1 bare unknown", "PROXY UNKNOWN\r\n", "", 15, nil},
	{"v1 short", "PROXY TCP4 192.0.2.7", "", 0, errProxyShort},
	{"prefix", "PRO", "", 0, errProxyShort},
	{"v1 family mismatch", "PROXY TCP4 2001:db8::5 10.0.0.1 1 2\r\n", "", 0, errProxyBad},
	{"v1 leading zero port", "PROXY TCP4 192.0.2.7 10.0.0.1 080 80\r\n", "", 0, errProxyBad},
	{"v1 port range", "PROXY TCP4 192.0.2.7 10.0.0.1 65536 80\r\n", "", 0, errProxyBad},
	{"v1 extra field", "PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n", "", 0, errProxyBad},
	{"v1 missing field", "PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n", "", 0, errProxyBad},
	{"v1 bad proto", "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n", "", 0, errProxyBad},
	{"v1 bare LF", "PROXY TCP4 192.0.2.7\n", "", 0, errProxyBad},
	{"v1 zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", "", 0, errProxyBad},
	{"v1 too long", "PROXY TCP4 " + string(make([]byte, 120)), "", 0, errProxyBad},
	{"v2 tcp4", string(proxyV2(1, 0x11, v4addrs(), 0)) + "GET", "192.0.2.7:12345", 28, nil},
	{"v2 tcp4 tlv", string(proxyV2(1, 0x11, v4addrs(), 5)), "192.0.2.7:12345", 33, nil},
	{"v2 tcp6", string(proxyV2(1, 0x21, v6addrs(), 0)), "[2001:db8::5]:443", 52, nil},
	{"v2 local", string(proxyV2(0, 0x00, nil, 0)), "", 16, nil},
	{"v2 unix", string(proxyV2(1, 0x31, make([]byte, 216), 0)), "", 232, nil},
	{"v2 short addrs", string(proxyV2(1, 0x11, v4addrs()[:8], 0)), "", 0, errProxyBad},
	{"v2 bad version", string(append([]byte(proxyV2Sig), 0x11, 0x11, 0, 12)), "", 0, errProxyBad},
	{"v2 bad command", string(append([]byte(proxyV2Sig), 0x22, 0x11, 0, 12)), "", 0, errProxyBad},
	{"v2 truncated", string(proxyV2(1, 0x11, v4addrs(), 0))[:20], "", 0, errProxyShort},
	{"not proxy", "GET / HTTP/1.1\r\n", "", 0, errProxyBad},
}

func TestParseProxyHeader(t *testing.T) {
	for _, tc := range proxyCases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := parseProxyHeader([]byte(tc.in))
			if err != tc.err {
				t.Fatalf("parseProxyHeader(%q) err = %v; want %v", tc.in, err, tc.err)
			}
			if err != nil {
				return
			}
			if n != tc.n {
				t.Errorf("n = %d; want %d", n, tc.n)
			}
			got := ""
			if h.src.IsValid() {
				got = h.src.String()
			}
			if got != tc.src {
				t.Errorf("src = %q; want %q", got, tc.src)
			}
		})
	}
}

// TestReadProxyHeader drives the connection reader byte by byte (the worst
// segmentation) and checks the replay and the untrusted refusal.
func TestReadProxyHeader(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		trusted bool
		remote  string // "" = the pipe's own
		rest    string
		err     error
	}{
		{"v1", "PROXY TCP4 192.0.2.7 10.0.0.1 12345 80\r\nGET / HTTP/1.1\r\n\r\n", true, "192.0.2.7:12345", "GET / HTTP/1.1\r\n\r\n", nil},
		{"v2", string(proxyV2(1, 0x11, v4addrs(), 3)) + "PRI", true, "192.0.2.7:12345", "PRI", nil},
		{"none", "GET / HTTP/1.1\r\n\r\n", true, "", "GET / HTTP/1.1\r\n\r\n", nil},
		{"none untrusted", "POST / HTTP/1.1\r\n\r\n", false, "", "POST / HTTP/1.1\r\n\r\n", nil},
		{"v1 untrusted", "PROXY TCP4 192.0.2.7 10.0.0.1 12345 80\r\n", false, "", "", errProxyUntrusted},
		{"v2 untrusted", string(proxyV2(1, 0x11, v4addrs(), 0)), false, "", "", errProxyUntrusted},
		{"v1 bad", "PROXY TCP4 x y 1 2\r\nGET", true, "", "", errProxyBad},
		{"cut", "PROXY TCP4 192.0.2.7", true, "", "", io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			go func() {
				for i := range len(tc.in) {
					if _, err := b.Write([]byte{tc.in[i]}); err != nil {
						return
					}
				}
				b.Close()
			}()
			_ = a.SetDeadline(time.Now().Add(5 * time.Second))
			c, err := readProxyHeader(a, tc.trusted)
			if err != tc.err {
				t.Fatalf("err = %v; want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			want := tc.remote
			if want == "" {
				want = a.RemoteAddr().String()
			}
			if got := c.RemoteAddr().String(); got != want {
				t.Errorf("RemoteAddr = %s; want %s", got, want)
			}
			rest, _ := io.ReadAll(c)
			if string(rest) != tc.rest {
				t.Errorf("rest = %q; want %q", rest, tc.rest)
			}
		})
	}
}

// FuzzParseProxyHeader: hostile input never panics, a header never claims
// more bytes than it was given, and a success is stable under appended
// bytes (the parser never reads past what it claims).
func FuzzParseProxyHeader(f *testing.F) {
	for _, tc := range proxyCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := parseProxyHeader(b)
		if err != nil {
			if n != 0 || h.src.IsValid() {
				t.Fatalf("error %v with n=%d src=%v", err, n, h.src)
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		h2, n2, err2 := parseProxyHeader(append(b[:n:n], "trailing junk\r\n"...))
		if err2 != nil || n2 != n || h2 != h {
			t.Fatalf("unstable: %v %d %v vs %d %v", err2, n2, h2, n, h)
		}
		if h.version != 1 && h.version != 2 {
			t.Fatalf("version %d", h.version)
		}
	})
}
