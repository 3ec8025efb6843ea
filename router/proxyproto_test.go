package router

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/proxyproto"
)

// proxyV2 builds a v2 header: command, family, addresses and tlv bytes of
// TLVs.
func proxyV2(cmd, fam byte, addrs []byte, tlv int) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n")
	b = append(b, 0x20|cmd, fam)
	b = binary.BigEndian.AppendUint16(b, uint16(len(addrs)+tlv))
	b = append(b, addrs...)
	return append(b, make([]byte, tlv)...)
}

func v4addrs() []byte {
	return []byte{192, 0, 2, 7, 10, 0, 0, 1, 0x30, 0x39, 0, 80} // 192.0.2.7:12345 → 10.0.0.1:80
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
		{"v1 bad", "PROXY TCP4 x y 1 2\r\nGET", true, "", "", proxyproto.ErrBad},
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
