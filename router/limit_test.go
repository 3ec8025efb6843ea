package router

import (
	"io"
	"net"
	"testing"
	"time"
)

// Over the limit, a TLS connection is closed at once (answering would cost
// the handshake the limit protects); a freed slot is freed once however
// often Close is called.
func TestConnLimitSlots(t *testing.T) {
	l := &connLimit{max: 1}
	a, b := net.Pipe()
	defer b.Close()
	c, ok := l.admit(a)
	if !ok {
		t.Fatal("first connection refused")
	}
	x, y := net.Pipe()
	if _, ok := l.admit(x); ok {
		t.Fatal("second connection admitted over max 1")
	}
	l.refuse(x, true, time.Now())
	_ = y.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := y.Read(make([]byte, 1)); err != io.EOF || n != 0 {
		t.Fatalf("refused TLS connection: read %d, %v; want EOF at once", n, err)
	}
	c.Close()
	c.Close()
	if got := l.open.Load(); got != 0 {
		t.Fatalf("open = %d after closing twice; want 0", got)
	}
	if _, ok := l.admit(x); !ok {
		t.Fatal("slot not freed")
	}
}
