package subscription

import (
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

func BenchmarkTmpLongKey(b *testing.B) {
	for _, n := range []int{32, 33, 64, 200} {
		d := encode(uwsgi.Subscription{Key: []byte(strings.Repeat("k", n)), Address: []byte("127.0.0.1:3031")})
		b.Run(strings.Repeat("x", 0)+string(rune('0'+n/10))+string(rune('0'+n%10)), func(b *testing.B) {
			tbl, _ := newTable(b)
			s := newServer(b, Config{}, tbl)
			s.handle(d, localSrc, nil)
			b.ReportAllocs()
			for b.Loop() {
				s.handle(d, localSrc, nil)
			}
		})
	}
}
