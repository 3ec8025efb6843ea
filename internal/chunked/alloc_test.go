//go:build !race

package chunked

import (
	"strings"
	"testing"
)

// Decoding a chunked body, extensions and trailers included, allocates
// nothing: it runs for every chunked request.
func TestReaderAllocs(t *testing.T) {
	body := "5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n"
	var src strings.Reader
	var r Reader
	buf := make([]byte, 64)
	n := testing.AllocsPerRun(100, func() {
		src.Reset(body)
		r.Reset(&src, 1<<20, 1<<10)
		for {
			if _, err := r.Read(buf); err != nil {
				break
			}
		}
	})
	if n != 0 {
		t.Errorf("%v allocs per body; want 0", n)
	}
}
