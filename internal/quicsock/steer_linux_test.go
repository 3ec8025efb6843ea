package quicsock

import (
	"net"
	"testing"
	"time"
)

// received reads what arrives on c within d and returns the first byte
// after the header byte of each datagram (the tag the sender put there).
func received(t *testing.T, c *net.UDPConn, d time.Duration) map[byte]int {
	t.Helper()
	got := map[byte]int{}
	buf := make([]byte, 64)
	_ = c.SetReadDeadline(time.Now().Add(d))
	for {
		n, _, err := c.ReadFromUDP(buf)
		if err != nil {
			return got
		}
		if n >= 3 {
			got[buf[2]]++
		}
	}
}

// sendFromMany sends d, tagged, from n fresh source ports (the kernel's
// fallback hash spreads by 4-tuple: many ports make a wrong pick visible).
func sendFromMany(t *testing.T, to *net.UDPAddr, d []byte, n int) {
	t.Helper()
	for range n {
		c, err := net.DialUDP("udp", nil, to)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(d); err != nil {
			t.Fatal(err)
		}
		c.Close()
	}
}

// TestSteerKernel binds an old and a new socket on one address, as two
// processes across an upgrade do, and checks where the kernel delivers
// each kind of datagram: before the new socket joins, while both are
// there, and after the old one leaves.
func TestSteerKernel(t *testing.T) {
	const prefix, n = 0x2a, 40
	old, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	addr := old.LocalAddr().(*net.UDPAddr)
	if err := Steer(old, prefix); err != nil {
		t.Fatal(err)
	}
	long := []byte{0xc3, 0, 'L'}
	mine := []byte{0x41, prefix, 'M'}
	other := []byte{0x41, prefix + 1, 'O'}

	// Alone in the group, the old socket gets everything.
	for _, d := range [][]byte{long, mine, other} {
		sendFromMany(t, addr, d, n)
	}
	if got := received(t, old, 300*time.Millisecond); got['L'] != n || got['M'] != n || got['O'] != n {
		t.Fatalf("old socket alone received %v; want %d of each", got, n)
	}

	nw, err := Listen(addr.String())
	if err != nil {
		t.Fatalf("second socket on %s: %v", addr, err)
	}
	for _, d := range [][]byte{long, mine, other} {
		sendFromMany(t, addr, d, n)
	}
	gotOld := received(t, old, 300*time.Millisecond)
	gotNew := received(t, nw, 300*time.Millisecond)
	if gotOld['M'] != n || gotOld['L'] != 0 || gotOld['O'] != 0 {
		t.Errorf("old socket received %v; want only its %d short-header datagrams", gotOld, n)
	}
	if gotNew['L'] != n || gotNew['O'] != n || gotNew['M'] != 0 {
		t.Errorf("new socket received %v; want the %d long-header and %d other ones", gotNew, n, n)
	}

	// The old process leaves: the new socket is alone, and gets it all.
	old.Close()
	for _, d := range [][]byte{long, mine, other} {
		sendFromMany(t, addr, d, n)
	}
	if got := received(t, nw, 300*time.Millisecond); got['L'] != n || got['M'] != n || got['O'] != n {
		t.Errorf("new socket alone received %v; want %d of each", got, n)
	}
	nw.Close()
}
