//go:build linux

package subscription

import (
	"fmt"
	"net"
	"net/netip"
	"testing"
)

// recvmmsg returns queued datagrams in batches, each with its own length
// and sender, over IPv4 and IPv6.
func TestMmsgReaderBatches(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "udp6" {
				addr = "[::1]:0"
			}
			pc, err := net.ListenPacket(network, addr)
			if err != nil {
				t.Skipf("no %s here: %v", network, err)
			}
			c := pc.(*net.UDPConn)
			defer c.Close()
			_ = c.SetReadBuffer(1 << 20)
			r, ok := newDatagramReader(&socket{conn: c, udp: c}).(*mmsgReader)
			if !ok {
				t.Fatal("a UDP socket did not get the recvmmsg reader")
			}
			senders := make([]net.Conn, 2)
			for i := range senders {
				if senders[i], err = net.Dial(network, c.LocalAddr().String()); err != nil {
					t.Fatal(err)
				}
				defer senders[i].Close()
			}
			const total = batch*2 + 3
			for i := range total {
				if _, err := fmt.Fprintf(senders[i%2], "datagram %d%s", i, make([]byte, i)); err != nil {
					t.Fatal(err)
				}
			}
			got, calls := 0, 0
			for got < total {
				n, err := r.read()
				if err != nil {
					t.Fatal(err)
				}
				calls++
				for i := range n {
					b, src := r.datagram(i)
					want := fmt.Sprintf("datagram %d%s", got, make([]byte, got))
					if string(b) != want {
						t.Fatalf("datagram %d = %q; want %q", got, b, want)
					}
					if wantSrc := netip.MustParseAddrPort(senders[got%2].LocalAddr().String()); src != wantSrc {
						t.Fatalf("datagram %d from %v; want %v", got, src, wantSrc)
					}
					got++
				}
			}
			if calls >= total {
				t.Errorf("%d datagrams took %d reads; want batches", total, calls)
			}
		})
	}
}
