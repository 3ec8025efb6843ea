//go:build linux

package subscription

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"syscall"
	"testing"
	"time"
	"unsafe"
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

// Datagrams the kernel drops because the socket buffer is full are counted:
// the reader learns the count from the next datagram it receives, and
// readLoop adds it to the dropped datagrams.
func TestSocketOverflowCounted(t *testing.T) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	_ = c.SetReadBuffer(4096) // the kernel's minimum: a few datagrams
	r := newDatagramReader(&socket{conn: c, udp: c}).(*mmsgReader)
	snd, err := net.Dial("udp4", c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	const flood = 300
	for range flood {
		snd.Write(make([]byte, 200))
	}
	received, dropped := 0, uint32(0)
	read := func() {
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		for {
			n, err := r.read()
			dropped += r.overflowed()
			if err != nil {
				return
			}
			received += n
		}
	}
	read()
	snd.Write(make([]byte, 200)) // room again: this one brings the final count
	read()
	if dropped == 0 || received+int(dropped) != flood+1 {
		t.Fatalf("received %d, counted %d dropped; want them to add up to %d with some dropped", received, dropped, flood+1)
	}
}

// A reader that starts on a socket which already dropped datagrams (a
// restarted reader, a socket handed over by a predecessor) does not count
// those again.
func TestOverflowBaseline(t *testing.T) {
	if runtime.GOARCH == "386" {
		t.Skip("socketDrops cannot read SO_MEMINFO on 386")
	}
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := pc.(*net.UDPConn)
	defer c.Close()
	_ = c.SetReadBuffer(4096)
	snd, err := net.Dial("udp4", c.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer snd.Close()
	for range 300 {
		snd.Write(make([]byte, 200))
	}
	first := newDatagramReader(&socket{conn: c, udp: c}).(*mmsgReader)
	if first.drops == 0 {
		t.Fatal("300 datagrams into a 4 KiB buffer dropped none; the test cannot tell")
	}
	// Drain, then one more datagram that carries the running count.
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	for {
		if _, err := first.read(); err != nil {
			break
		}
	}
	_ = c.SetReadDeadline(time.Time{})
	second := newDatagramReader(&socket{conn: c, udp: c}).(*mmsgReader)
	snd.Write(make([]byte, 200))
	if _, err := second.read(); err != nil {
		t.Fatal(err)
	}
	if d := second.overflowed(); d != 0 {
		t.Fatalf("a new reader reported %d old drops as new", d)
	}
}
