//go:build linux

package subscription

import (
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
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

func TestCtlSpace(t *testing.T) {
	if ctlSpace < syscall.CmsgSpace(4) {
		t.Fatalf("ctlSpace = %d; SO_RXQ_OVFL needs %d", ctlSpace, syscall.CmsgSpace(4))
	}
}

// The kernel walks the batch with C's struct mmsghdr stride.
func TestMmsghdrSize(t *testing.T) {
	want := uintptr(64) // struct msghdr (56) + unsigned int, padded to 8
	if unsafe.Sizeof(uintptr(0)) == 4 {
		want = 32 // msghdr (28) + unsigned int
	}
	if got := unsafe.Sizeof(mmsghdr{}); got != want {
		t.Fatalf("sizeof(mmsghdr) = %d; C's is %d", got, want)
	}
}

// Datagrams the kernel drops because the socket buffer is full are counted
// as dropped, like those the queue refuses: the reader learns the count
// from the next datagram it receives.
func TestSocketOverflowCounted(t *testing.T) {
	t.Parallel()
	const flood = 300
	tbl, _ := newTable(t)
	var sender net.Conn
	hook := func(network, addr string) (net.PacketConn, error) {
		c, err := net.ListenPacket(network, addr)
		if err != nil {
			return nil, err
		}
		_ = c.(*net.UDPConn).SetReadBuffer(4096) // the kernel's minimum: a few datagrams
		if sender, err = net.Dial("udp", c.LocalAddr().String()); err != nil {
			c.Close()
			return nil, err
		}
		for i := range flood {
			if _, err := sender.Write(encode(uwsgi.Subscription{Key: []byte("flood.test"), Address: fmt.Appendf(nil, "127.0.0.1:%d", 20000+i)})); err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, ListenPacket: hook}, tbl)
	defer sender.Close()
	eventually(t, "the datagrams that fitted applied", func() bool { return count(s, resSubscribe) > 0 })
	time.Sleep(20 * time.Millisecond)
	// The socket has room again; this one brings the final count.
	send(t, sender, encode(uwsgi.Subscription{Key: []byte("flood.test"), Address: []byte("127.0.0.1:19999")}))
	eventually(t, "every datagram applied or counted dropped", func() bool {
		return count(s, resSubscribe)+count(s, resDropped) == flood+1
	})
	if count(s, resDropped) == 0 {
		t.Fatal("no drops counted; the flood should have overflowed a 4 KiB socket buffer")
	}
}
