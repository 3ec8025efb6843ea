package proxyproto

import (
	"encoding/binary"
	"net/netip"
	"testing"
)

func proxyV2(cmd, fam byte, addrs []byte, tlv int) []byte {
	b := []byte(v2Sig)
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
	{"v1 short", "PROXY TCP4 192.0.2.7", "", 0, ErrShort},
	{"prefix", "PRO", "", 0, ErrShort},
	{"v1 family mismatch", "PROXY TCP4 2001:db8::5 10.0.0.1 1 2\r\n", "", 0, ErrBad},
	{"v1 leading zero port", "PROXY TCP4 192.0.2.7 10.0.0.1 080 80\r\n", "", 0, ErrBad},
	{"v1 port range", "PROXY TCP4 192.0.2.7 10.0.0.1 65536 80\r\n", "", 0, ErrBad},
	{"v1 extra field", "PROXY TCP4 192.0.2.7 10.0.0.1 1 2 3\r\n", "", 0, ErrBad},
	{"v1 missing field", "PROXY TCP4 192.0.2.7 10.0.0.1 1\r\n", "", 0, ErrBad},
	{"v1 bad proto", "PROXY UDP4 192.0.2.7 10.0.0.1 1 2\r\n", "", 0, ErrBad},
	{"v1 bare LF", "PROXY TCP4 192.0.2.7\n", "", 0, ErrBad},
	{"v1 zone", "PROXY TCP6 fe80::1%eth0 fe80::2 1 2\r\n", "", 0, ErrBad},
	{"v1 too long", "PROXY TCP4 " + string(make([]byte, 120)), "", 0, ErrBad},
	{"v2 tcp4", string(proxyV2(1, 0x11, v4addrs(), 0)) + "GET", "192.0.2.7:12345", 28, nil},
	{"v2 tcp4 tlv", string(proxyV2(1, 0x11, v4addrs(), 5)), "192.0.2.7:12345", 33, nil},
	{"v2 tcp6", string(proxyV2(1, 0x21, v6addrs(), 0)), "[2001:db8::5]:443", 52, nil},
	{"v2 local", string(proxyV2(0, 0x00, nil, 0)), "", 16, nil},
	{"v2 unix", string(proxyV2(1, 0x31, make([]byte, 216), 0)), "", 232, nil},
	{"v2 short addrs", string(proxyV2(1, 0x11, v4addrs()[:8], 0)), "", 0, ErrBad},
	{"v2 bad version", string(append([]byte(v2Sig), 0x11, 0x11, 0, 12)), "", 0, ErrBad},
	{"v2 bad command", string(append([]byte(v2Sig), 0x22, 0x11, 0, 12)), "", 0, ErrBad},
	{"v2 truncated", string(proxyV2(1, 0x11, v4addrs(), 0))[:20], "", 0, ErrShort},
	{"not proxy", "GET / HTTP/1.1\r\n", "", 0, ErrBad},
}

func TestParse(t *testing.T) {
	for _, tc := range proxyCases {
		t.Run(tc.name, func(t *testing.T) {
			h, n, err := Parse([]byte(tc.in))
			if err != tc.err {
				t.Fatalf("Parse(%q) err = %v; want %v", tc.in, err, tc.err)
			}
			if err != nil {
				return
			}
			if n != tc.n {
				t.Errorf("n = %d; want %d", n, tc.n)
			}
			got := ""
			if h.Src.IsValid() {
				got = h.Src.String()
			}
			if got != tc.src {
				t.Errorf("src = %q; want %q", got, tc.src)
			}
		})
	}
}

// FuzzParse: hostile input never panics, a header never claims
// more bytes than it was given, and a success is stable under appended
// bytes (the parser never reads past what it claims).
func FuzzParse(f *testing.F) {
	for _, tc := range proxyCases {
		f.Add([]byte(tc.in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, n, err := Parse(b)
		if err != nil {
			if n != 0 || h.Src.IsValid() {
				t.Fatalf("error %v with n=%d src=%v", err, n, h.Src)
			}
			return
		}
		if n <= 0 || n > len(b) {
			t.Fatalf("n = %d for %d bytes", n, len(b))
		}
		h2, n2, err2 := Parse(append(b[:n:n], "trailing junk\r\n"...))
		if err2 != nil || n2 != n || h2 != h {
			t.Fatalf("unstable: %v %d %v vs %d %v", err2, n2, h2, n, h)
		}
		if h.Version != 1 && h.Version != 2 {
			t.Fatalf("version %d", h.Version)
		}
	})
}
