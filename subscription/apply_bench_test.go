package subscription

import (
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// BenchmarkApplyRefresh is the steady state of a subscription server: every
// node re-announcing. One op is parse + apply + count of one refresh.
func BenchmarkApplyRefresh(b *testing.B) {
	for _, bc := range []struct {
		name     string
		datagram []byte
	}{
		{"captured", captured(b)},
		{"port", encode(uwsgi.Subscription{Key: []byte("example.com"), Address: []byte(":3031"), Cores: 1})},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tbl, _ := newTable(b)
			s := newServer(b, Config{}, tbl)
			s.handle(bc.datagram, localSrc, nil) // subscribe
			b.ReportAllocs()
			b.SetBytes(int64(len(bc.datagram)))
			for b.Loop() {
				s.handle(bc.datagram, localSrc, nil)
			}
			if count(s, resRefresh) == 0 || count(s, resInvalid) != 0 {
				b.Fatalf("refresh %d, invalid %d", count(s, resRefresh), count(s, resInvalid))
			}
		})
	}
}

// BenchmarkEnqueue is the reader's share: copy into a pooled buffer and hand
// it to the queue (and the applier's receive and release).
func BenchmarkEnqueue(b *testing.B) {
	tbl, _ := newTable(b)
	s := newServer(b, Config{}, tbl)
	d := captured(b)
	b.ReportAllocs()
	for b.Loop() {
		s.enqueue(d, localSrc, nil)
		p := <-s.queue
		s.release(p.buf)
	}
}
