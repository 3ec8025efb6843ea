package chunked

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http/httputil"
	"strings"
	"testing"
)

// decode reads all of in with a Reader (body limit max, trailers 1 KiB) and
// returns the data, what is left of in, and the error that ended it (nil
// for io.EOF).
func decode(in string, max int64) (data, rest string, err error) {
	src := strings.NewReader(in)
	var r Reader
	r.Reset(src, max, 1<<10)
	b, err := io.ReadAll(&r)
	rest = in[len(in)-src.Len():]
	return string(b), rest, err
}

var cases = []struct {
	name, in string
	max      int64
	data     string
	err      error
	rest     string
}{
	{"one chunk", "5\r\nhello\r\n0\r\n\r\n", 100, "hello", nil, ""},
	{"two chunks, a request after", "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nGET / HTTP/1.1\r\n", 100, "hello world", nil, "GET / HTTP/1.1\r\n"},
	{"empty body", "0\r\n\r\n", 100, "", nil, ""},
	{"leading zeros", "0005\r\nhello\r\n000\r\n\r\n", 100, "hello", nil, ""},
	{"hex upper and lower", "A\r\n0123456789\r\na\r\n0123456789\r\n0\r\n\r\n", 100, strings.Repeat("0123456789", 2), nil, ""},
	{"15 digits", "000000000000005\r\nhello\r\n0\r\n\r\n", 100, "hello", nil, ""},
	{"16 digits", "0000000000000005\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "\r\nhello\r\n0\r\n\r\n"},
	{"space after the size", "5 \r\nhello\r\n0\r\n\r\n", 100, "hello", nil, ""},
	{"tab after the size", "5\t\r\nhello\r\n0\r\n\r\n", 100, "hello", nil, ""},
	{"space before an extension", "5 ;a=b\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "a=b\r\nhello\r\n0\r\n\r\n"},
	{"extension", "5;a=b\r\nhello\r\n0;last\r\n\r\n", 100, "hello", nil, ""},
	{"quoted extension", "5;a=\"x;y\"\r\nhello\r\n0\r\n\r\n", 100, "hello", nil, ""},
	{"bare CR in an extension", "5;a\rb\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "\r\nhello\r\n0\r\n\r\n"},
	{"NUL in an extension", "5;a\x00\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "\r\nhello\r\n0\r\n\r\n"},
	{"0x5", "0x5\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "5\r\nhello\r\n0\r\n\r\n"},
	{"-5", "-5\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "5\r\nhello\r\n0\r\n\r\n"},
	{"no size", "\r\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "\nhello\r\n0\r\n\r\n"},
	{"size above the data", "7\r\nhello\r\n0\r\n\r\n", 100, "hello\r\n", ErrSyntax, "\r\n\r\n"},
	{"bare LF after the size", "5\nhello\r\n0\r\n\r\n", 100, "", ErrSyntax, "hello\r\n0\r\n\r\n"},
	{"bare LF after the data", "5\r\nhello\n0\r\n\r\n", 100, "hello", ErrSyntax, "0\r\n\r\n"},
	{"bare LF after the last chunk", "5\r\nhello\r\n0\n\n", 100, "hello", ErrSyntax, "\n"},
	{"lone LF ending the trailers", "5\r\nhello\r\n0\r\n\n", 100, "hello", ErrSyntax, ""},
	{"trailer", "5\r\nhello\r\n0\r\nX-T: 1\r\nX-U:\t2 \r\n\r\nnext", 100, "hello", nil, "next"},
	{"Content-Length as a trailer", "5\r\nhello\r\n0\r\nContent-Length: 50\r\n\r\n", 100, "hello", ErrTrailer, " 50\r\n\r\n"},
	{"Transfer-Encoding as a trailer", "5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n", 100, "hello", ErrTrailer, " chunked\r\n\r\n"},
	{"Host as a trailer", "5\r\nhello\r\n0\r\nHOST: x\r\n\r\n", 100, "hello", ErrTrailer, " x\r\n\r\n"},
	{"NUL in a trailer", "5\r\nhello\r\n0\r\nX-T: a\x00b\r\n\r\n", 100, "hello", ErrSyntax, "b\r\n\r\n"},
	{"request line as a trailer", "5\r\nhello\r\n0\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 100, "hello", ErrSyntax, "/smuggled HTTP/1.1\r\nHost: x\r\n\r\n"},
	{"folded trailer", "5\r\nhello\r\n0\r\nX-T: 1\r\n 2\r\n\r\n", 100, "hello", ErrSyntax, "2\r\n\r\n"},
	{"empty trailer name", "5\r\nhello\r\n0\r\n: 1\r\n\r\n", 100, "hello", ErrSyntax, " 1\r\n\r\n"},
	{"cut in the data", "5\r\nhel", 100, "hel", io.ErrUnexpectedEOF, ""},
	{"cut in a size line", "5", 100, "", io.ErrUnexpectedEOF, ""},
	{"cut before the trailers end", "5\r\nhello\r\n0\r\n", 100, "hello", io.ErrUnexpectedEOF, ""},
	// The limit is known from the size line, before its data.
	{"one chunk over the limit", "80000000\r\nabc", 1000, "", ErrTooLarge, "\nabc"},
	{"chunks adding up over the limit", "3e8\r\n" + strings.Repeat("a", 1000) + "\r\n1\r\nb", 1000, strings.Repeat("a", 1000), ErrTooLarge, "\nb"},
	{"exactly the limit", "3e8\r\n" + strings.Repeat("a", 1000) + "\r\n0\r\n\r\n", 1000, strings.Repeat("a", 1000), nil, ""},
	{"a size line at the bound", "5;" + strings.Repeat("a", MaxLine-4) + "\r\nhello\r\n0\r\n\r\n", 100, "hello", nil, ""},
	{"a size line over the bound", "5;" + strings.Repeat("a", MaxLine-3) + "\r\nhello\r\n0\r\n\r\n", 100, "", ErrLineTooLong, "\nhello\r\n0\r\n\r\n"},
	{"whitespace over the bound", "5" + strings.Repeat(" ", MaxLine) + "\r\nhello", 100, "", ErrLineTooLong, " \r\nhello"},
	{"trailers over the bound", "0\r\nX: " + strings.Repeat("a", 1<<10) + "\r\n\r\n", 100, "", ErrTrailer, strings.Repeat("a", 3) + "\r\n\r\n"},
}

func TestReader(t *testing.T) {
	for _, tc := range cases {
		data, rest, err := decode(tc.in, tc.max)
		if data != tc.data || !errors.Is(err, tc.err) || rest != tc.rest {
			t.Errorf("%s: %.40q, %v, rest %.40q; want %.40q, %v, rest %.40q", tc.name, data, err, rest, tc.data, tc.err, tc.rest)
		}
	}
}

// A byte per chunk is legitimate streaming; kilobytes of extension per
// byte of data are not.
func TestOverhead(t *testing.T) {
	var b strings.Builder
	for range 100000 {
		b.WriteString("1\r\nx\r\n")
	}
	b.WriteString("0\r\n\r\n")
	if data, _, err := decode(b.String(), 1<<20); err != nil || len(data) != 100000 {
		t.Errorf("100,000 one-byte chunks: %d bytes, %v", len(data), err)
	}
	b.Reset()
	ext := ";" + strings.Repeat("e", 4000)
	for range 10 {
		b.WriteString("1" + ext + "\r\nx\r\n")
	}
	b.WriteString("0\r\n\r\n")
	if data, _, err := decode(b.String(), 1<<20); err != ErrOverhead || len(data) > 4 {
		t.Errorf("one-byte chunks with 4 KB extensions: %d bytes, %v; want ErrOverhead within 4 chunks", len(data), err)
	}
	// An S3-style signed upload: an 80-byte extension per 64 KiB chunk.
	b.Reset()
	sig := ";chunk-signature=" + strings.Repeat("0", 64)
	for range 20 {
		b.WriteString("10000" + sig + "\r\n" + strings.Repeat("d", 1<<16) + "\r\n")
	}
	b.WriteString("0" + sig + "\r\n\r\n")
	if data, _, err := decode(b.String(), 1<<30); err != nil || len(data) != 20<<16 {
		t.Errorf("signed 64 KiB chunks: %d bytes, %v", len(data), err)
	}
}

// A timeout from the source comes back as it is (the router answers 408),
// and sticks.
func TestSourceErrorsPassThrough(t *testing.T) {
	errTimeout := errors.New("timeout")
	var r Reader
	r.Reset(io.MultiReader(strings.NewReader("5\r\nhel"), errReader{errTimeout}), 100, 100)
	b, err := io.ReadAll(&r)
	if string(b) != "hel" || err != errTimeout {
		t.Fatalf("%q, %v; want hel, the timeout", b, err)
	}
	if _, err := r.Read(make([]byte, 1)); err != errTimeout {
		t.Errorf("then %v; want the timeout again", err)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

func FuzzReader(f *testing.F) {
	for _, tc := range cases {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		const max = 1 << 16
		data, rest, err := decode(in, max)
		if !strings.HasSuffix(in, rest) {
			t.Fatalf("rest %q is not a suffix of the input", rest)
		}
		if len(data) > max {
			t.Fatalf("%d bytes decoded over the %d limit", len(data), max)
		}
		if err != nil {
			return
		}
		// What it accepts, Go's own decoder (more lenient: bare LF in size
		// lines) reads as the same data.
		consumed := in[:len(in)-len(rest)]
		want, gerr := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(strings.NewReader(consumed))))
		if gerr != nil && !strings.Contains(gerr.Error(), "non-data") {
			t.Fatalf("accepted %q; Go's decoder: %v", consumed, gerr)
		}
		if gerr == nil && !bytes.Equal(want, []byte(data)) {
			t.Fatalf("%q decoded to %q; Go's decoder: %q", consumed, data, want)
		}
	})
}
