package router

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// BenchmarkResponseHead is the per-response cost of reading a node's head:
// fasthttp's parse alone (what forward did before response.go) against
// readHead (raw status and framing scan, then the parse) plus
// stripHopByHop, on benchNode's response and on one with hop-by-hop
// headers to remove.
func BenchmarkResponseHead(b *testing.B) {
	rt := &Router{}
	for _, c := range []struct{ name, resp string }{
		{"plain", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"},
		{"hopbyhop", "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n" +
			"Keep-Alive: timeout=5\r\nX-A: 1\r\nX-B: 2\r\n\r\nhello, world\n"},
	} {
		var head fasthttp.ResponseHeader
		head.DisableNormalizing()
		sr := strings.NewReader(c.resp)
		br := bufio.NewReaderSize(sr, 16<<10)
		x := &exchange{}
		b.Run(c.name+"/fasthttp", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(c.resp)
				br.Reset(sr)
				if err := head.Read(br); err != nil {
					b.Fatal(err)
				}
				head.ResetConnectionClose()
			}
		})
		b.Run(c.name+"/readHead", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sr.Reset(c.resp)
				br.Reset(sr)
				f, err := rt.readHead(x, nil, br, &head)
				if err != nil {
					b.Fatal(err)
				}
				head.ResetConnectionClose()
				if f&hfHop != 0 {
					stripHopByHop(&head)
				}
			}
		})
	}
}
