//go:build !race

package subscription

import (
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// The steady state (every node refreshing every few seconds) and the
// reader's hand-off allocate nothing in this package. Keys here are at most
// 32 bytes: the balancer's own refresh path is what is measured beyond that.
func TestRefreshAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name     string
		datagram []byte
	}{
		{"captured", captured(t)},
		{"port", encode(uwsgi.Subscription{Key: []byte("example.com"), Address: []byte(":3031")})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, _ := newTable(t)
			s := newServer(t, Config{}, tbl)
			s.handle(tc.datagram, localSrc, nil)
			if n := testing.AllocsPerRun(1000, func() { s.handle(tc.datagram, localSrc, nil) }); n != 0 {
				t.Fatalf("handle(refresh): %v allocs/op; want 0", n)
			}
			if count(s, resRefresh) == 0 {
				t.Fatal("no refresh counted")
			}
		})
	}
}

func TestEnqueueAllocatesNothing(t *testing.T) {
	tbl, _ := newTable(t)
	s := newServer(t, Config{}, tbl)
	d := captured(t)
	if n := testing.AllocsPerRun(1000, func() {
		s.enqueue(d, localSrc, nil)
		p := <-s.queue
		s.release(p.buf)
	}); n != 0 {
		t.Fatalf("enqueue+release: %v allocs/op; want 0", n)
	}
}
