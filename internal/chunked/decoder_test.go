package chunked

import (
	"bufio"
	"bytes"
	"io"
	"net/http/httputil"
	"strings"
	"testing"
)

// dechunkAll feeds body to a Decoder in pieces of at most step bytes
// (every split point is one the loop may see) and returns the data, and
// whether the body ended (done) or was refused (bad).
func dechunkAll(body []byte, step int) (data []byte, done, bad bool) {
	var d Decoder
	buf := append([]byte(nil), body...)
	for i := 0; i < len(buf); i += step {
		piece := buf[i:min(i+step, len(buf))]
		n, fin, err := d.Feed(piece)
		data = append(data, piece[:n]...)
		if err != nil {
			return data, false, true
		}
		if fin {
			return data, true, false
		}
	}
	return data, false, false
}

// goDechunk is what the goroutine path makes of body (relay.go: over
// readerPool's 16 KiB reader).
func goDechunk(body []byte) (data []byte, done bool) {
	br := bufio.NewReaderSize(bytes.NewReader(body), 16<<10)
	data, err := io.ReadAll(httputil.NewChunkedReader(br))
	return data, err == nil
}

func TestDecoder(t *testing.T) {
	for _, c := range []struct {
		in   string
		data string
		done bool
	}{
		{"5\r\nhello\r\n0\r\n\r\n", "hello", true},
		{"5;ext=1\r\nhello\r\n6 \t\r\n world\r\n0\r\nX-T: 1\r\n\r\n", "hello world", true},
		{"A\r\n0123456789\r\n0\r\n", "0123456789", true}, // the last chunk ends it: trailers unread
		{"0000000000000003\r\nabc\r\n0\r\n", "abc", true},
		{"00000000000000003\r\nabc\r\n0\r\n", "", false}, // 17 digits
		{"5\r\nhel", "hel", false},                       // truncated
		{"5\r\nhelloXX0\r\n\r\n", "hello", false},        // no CRLF after the data
		{"5\nhello\r\n0\r\n\r\n", "", false},             // bare LF
		{"5\r\rhello\r\n0\r\n\r\n", "", false},           // stray CR
		{" 5\r\nhello\r\n0\r\n\r\n", "", false},          // leading space
		{"5 ;x\r\nhello\r\n0\r\n\r\n", "", false},        // space before the extension
		{"5 5\r\nhello\r\n0\r\n\r\n", "", false},
		{";x\r\nhello\r\n0\r\n\r\n", "", false},
		{"\r\n", "", false},
		{"zz\r\nhi\r\n", "", false},
		{"1;" + strings.Repeat("e", 4093) + "\r\nx\r\n0\r\n\r\n", "x", true}, // a line of 4095
		{"1;" + strings.Repeat("e", 4094) + "\r\nx\r\n0\r\n\r\n", "", false}, // 4096: too long
		{strings.Repeat("1;"+strings.Repeat("e", 200)+"\r\nx\r\n", 100) + "0\r\n\r\n", strings.Repeat("x", 88), false}, // overhead
	} {
		gd, gdone := goDechunk([]byte(c.in))
		if string(gd) != c.data || gdone != c.done {
			t.Fatalf("%.60q: the goroutine path's decoder gives %.60q (%d bytes) done=%v; the table says %.60q %v", c.in, gd, len(gd), gdone, c.data, c.done)
		}
		for _, step := range []int{1, 2, 3, 7, len(c.in)} {
			data, done, bad := dechunkAll([]byte(c.in), step)
			if string(data) != c.data || done != c.done || done && bad {
				t.Errorf("%.60q in pieces of %d: %.60q (%d bytes) done=%v bad=%v; want %.60q done=%v", c.in, step, data, len(data), done, bad, c.data, c.done)
			}
		}
	}
}

// FuzzDecoder: the loop's decoder gives the goroutine path's data and
// end for any body, however the reads split it.
func FuzzDecoder(f *testing.F) {
	for _, s := range []string{"5\r\nhello\r\n0\r\n\r\n", "3;a=b\r\nabc\r\n0\r\n", "zz\r\nhi\r\n", "5 \r\nhello\r\n0\r\n", "1\r\nx\r\n1\r\ny"} {
		f.Add([]byte(s), uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, step uint8) {
		want, wantDone := goDechunk(body)
		data, done, bad := dechunkAll(body, int(step)+1)
		if !bytes.Equal(data, want) || done != wantDone || done && bad {
			t.Fatalf("%q (pieces of %d): %q done=%v bad=%v; the goroutine path: %q done=%v", body, int(step)+1, data, done, bad, want, wantDone)
		}
	})
}
