//go:build !race

package router

import (
	"bufio"
	"strings"
	"testing"

	"github.com/valyala/fasthttp"
)

// Reading a node's response head (raw checks, fasthttp's parse, the
// hop-by-hop strip) allocates nothing once the reader and head are warm,
// with or without hop-by-hop headers to remove.
func TestReadHeadAllocatesNothing(t *testing.T) {
	rt := &Router{}
	for _, resp := range []string{
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n",
		"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive, X-A\r\nKeep-Alive: timeout=5\r\n" +
			"Trailer: X-T\r\nX-A: 1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
	} {
		var head fasthttp.ResponseHeader
		head.DisableNormalizing()
		sr := strings.NewReader(resp)
		br := bufio.NewReaderSize(sr, 16<<10)
		x := &exchange{}
		run := func() {
			sr.Reset(resp)
			br.Reset(sr)
			if _, err := rt.readHead(x, nil, br, &head); err != nil {
				t.Fatal(err)
			}
			stripHopByHop(&head)
		}
		run()
		if n := testing.AllocsPerRun(100, run); n != 0 {
			t.Errorf("%.40q: %.1f allocations per head; want 0", resp, n)
		}
	}
}
