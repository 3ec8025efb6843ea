// Package chunked decodes the chunked transfer coding (RFC 9112 §7.1).
// Reader decodes an HTTP/1.1 request body with bounds on everything that is
// not data, reading exactly the bytes of the body from its source and never
// one more, so that the request after it on a kept-alive connection is left
// where it starts. Decoder (decoder.go) decodes a node's response body fed
// to it in pieces, with Go's net/http rules.
//
// Wire layout, and what Reader allows of it:
//
//	chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
//	chunk-size = 1*15HEXDIG            more digits: ErrSyntax
//	chunk-ext  = ";" *( VCHAR / SP / HTAB / obs-text )
//	             (no CTL, no CR or LF; whitespace after the size only
//	             before CRLF, not before ";")
//	last-chunk = 1*("0") [ chunk-ext ] CRLF
//	trailers   = *( field-name ":" field-value CRLF ) CRLF
//
// Line ends are CRLF, never a bare LF. The bounds:
//
//   - a chunk-size line (size, extensions and CRLF) is at most MaxLine
//     bytes (ErrLineTooLong), the bound Go's net/http puts on it
//     (net/http/internal/chunked.go, maxLineLength). HAProxy's is its
//     buffer (h1_parse_chunk_size in include/haproxy/h1.h parses a line only
//     once it is whole in tune.bufsize, 16 KiB); nginx's parser
//     (ngx_http_parse_chunked in src/http/ngx_http_parse.c) skips extension
//     bytes as they come, without bound, as fasthttp v1.74 does. Clients do
//     not send extensions (a signed S3-style upload's is under 100 bytes),
//     so 4 KiB only refuses abuse;
//   - the framing may cost at most 16 bytes per chunk plus twice the
//     chunk's data, and 16 KiB beyond that over the whole body
//     (ErrOverhead): Go's net/http heuristic, which lets a client stream a
//     byte per chunk ("1\r\nX\r\n") but not make the router read kilobytes
//     of extension for every byte it forwards;
//   - the chunk sizes declared so far may not add up to more than the body
//     limit (ErrTooLarge): known as soon as a size is read, before any of
//     its data;
//   - the trailer section is at most the maxTrailer given to Reset
//     (ErrTrailer), its lines are fields (a token name, a colon, a value
//     without CTL but HTAB), and none of them may be Content-Length,
//     Transfer-Encoding or Host: a sender who puts framing or routing in a
//     trailer is confused about the message (RFC 9110 §6.5.1). Trailers are
//     read and dropped.
//
// Reader allocates nothing. The package depends on the standard library
// and internal/ascii only; its input is hostile and fuzzed (FuzzReader).
package chunked

import (
	"errors"
	"io"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

// MaxLine bounds a chunk-size line: the size, its extensions and CRLF.
const MaxLine = 4 << 10

// maxDigits: at most 15 hex digits (2^60 - 1), so a size never overflows.
const maxDigits = 15

// Errors, preallocated: input is hostile. ErrTooLarge is the client's
// body being too large (413); the others are malformed framing (400).
var (
	ErrSyntax      = errors.New("chunked: malformed chunked body")
	ErrLineTooLong = errors.New("chunked: chunk-size line over 4 KiB")
	ErrOverhead    = errors.New("chunked: chunked framing with too much non-data")
	ErrTooLarge    = errors.New("chunked: chunk sizes add up to more than the body limit")
	ErrTrailer     = errors.New("chunked: trailer section too large or with a framing field")
	errNoProgress  = errors.New("chunked: source returned no data and no error")
)

const (
	// overheadAllowed is the framing beyond the per-chunk allowance a body
	// may carry (Go's net/http: 16 KiB).
	overheadAllowed = 16 << 10
	// maxEmptyReads bounds the reads of src that return neither data nor
	// an error (io.Reader discourages them; bufio gives up after 100 too).
	maxEmptyReads = 100
)

// Reader decodes one chunked body from src. The zero value is not ready:
// call Reset. Owned by one request at a time; not safe for concurrent use.
type Reader struct {
	src        io.Reader
	max        int64 // bound on the sum of the chunk sizes
	maxTrailer int
	left       int64 // data bytes left in the current chunk
	total      int64 // chunk sizes declared so far
	excess     int64 // framing bytes beyond the allowance (see the package doc)
	afterData  bool  // a chunk's data ended: its CRLF comes next
	err        error // sticky: io.EOF once the trailers were read
	b          [1]byte
}

// Reset makes r decode a new body from src: the sum of its chunk sizes at
// most maxBody, its trailer section at most maxTrailer bytes. src must
// give back exactly what it was asked for or less (Read reads single
// bytes for the framing and at most a chunk's data at once).
func (r *Reader) Reset(src io.Reader, maxBody int64, maxTrailer int) {
	*r = Reader{src: src, max: maxBody, maxTrailer: maxTrailer}
}

// Declared is the sum of the chunk sizes read so far.
func (r *Reader) Declared() int64 { return r.total }

// Read reads decoded data into p. It returns io.EOF once the last chunk
// and the trailer section have been read, io.ErrUnexpectedEOF when src
// ends before that, one of the Err* values for a body it refuses, and
// src's other errors (a timeout) as they are. Every error is sticky.
func (r *Reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		if err := r.next(); err != nil {
			r.err = err
			return 0, err
		}
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.src.Read(p)
	r.left -= int64(n)
	switch {
	case err == io.EOF:
		err = io.ErrUnexpectedEOF // the data, its CRLF and the last chunk are missing
		r.err = err
	case err != nil:
		r.err = err
	}
	return n, err
}

// next reads the framing up to the next chunk's data: the CRLF that ends
// the previous chunk's, and the size line. After the last chunk it reads
// the trailer section and returns io.EOF.
func (r *Reader) next() error {
	if r.afterData {
		if err := r.crlf(); err != nil {
			return err
		}
		r.afterData = false
	}
	size, n, err := r.sizeLine()
	if err != nil {
		return err
	}
	// Go's net/http heuristic (net/http/internal/chunked.go): the line and
	// the data's CRLF are overhead; each chunk is allowed 16 bytes of it
	// plus twice its data.
	r.excess += int64(n) + 2 - 16 - 2*size
	r.excess = max(r.excess, 0)
	if r.excess > overheadAllowed {
		return ErrOverhead
	}
	if size == 0 {
		if err := r.trailers(); err != nil {
			return err
		}
		return io.EOF
	}
	r.left, r.afterData = size, true
	return nil
}

// sizeLine reads a chunk-size line and returns the size and the line's
// length. The size is checked against the body limit as soon as its last
// digit is read.
func (r *Reader) sizeLine() (size int64, n int, err error) {
	c, err := r.lineByte(&n)
	digits := 0
	for ; err == nil; c, err = r.lineByte(&n) {
		v := Unhex(c)
		if v < 0 {
			break
		}
		if digits++; digits > maxDigits {
			return 0, n, ErrSyntax
		}
		size = size<<4 | int64(v)
	}
	if err != nil {
		return 0, n, err
	}
	if digits == 0 {
		return 0, n, ErrSyntax
	}
	if size > r.max-r.total {
		return 0, n, ErrTooLarge
	}
	r.total += size
	ws := false
	for ; err == nil && (c == ' ' || c == '\t'); c, err = r.lineByte(&n) {
		ws = true
	}
	if err == nil && c == ';' && !ws {
		// An extension: anything but CTLs up to the CR.
		for c, err = r.lineByte(&n); err == nil && c != '\r'; c, err = r.lineByte(&n) {
			if c < ' ' && c != '\t' || c == 0x7f {
				return 0, n, ErrSyntax
			}
		}
	}
	if err != nil {
		return 0, n, err
	}
	if c != '\r' {
		return 0, n, ErrSyntax
	}
	if c, err = r.lineByte(&n); err != nil {
		return 0, n, err
	}
	if c != '\n' {
		return 0, n, ErrSyntax
	}
	return size, n, nil
}

// lineByte reads one byte of a chunk-size line, counting it in *n.
func (r *Reader) lineByte(n *int) (byte, error) {
	if *n++; *n > MaxLine {
		return 0, ErrLineTooLong
	}
	return r.byte()
}

// crlf reads the CRLF after a chunk's data.
func (r *Reader) crlf() error {
	for _, want := range [2]byte{'\r', '\n'} {
		c, err := r.byte()
		if err != nil {
			return err
		}
		if c != want {
			return ErrSyntax
		}
	}
	return nil
}

// trailers reads the trailer section up to its empty line.
func (r *Reader) trailers() error {
	n := 0
	for {
		c, err := r.trailerByte(&n)
		if err != nil {
			return err
		}
		if c == '\r' {
			if c, err = r.trailerByte(&n); err != nil {
				return err
			}
			if c != '\n' {
				return ErrSyntax
			}
			return nil
		}
		if err := r.trailerField(c, &n); err != nil {
			return err
		}
	}
}

// trailerField reads the rest of one trailer line, whose first byte is c.
func (r *Reader) trailerField(c byte, n *int) error {
	// The name, kept as far as the longest refused one.
	var name [len("transfer-encoding")]byte
	nl := 0
	var err error
	for ; c != ':'; c, err = r.trailerByte(n) {
		if err != nil {
			return err
		}
		if one := [1]byte{c}; !ascii.IsToken(one[:]) {
			return ErrSyntax
		}
		if nl < len(name) {
			name[nl] = c
		}
		nl++
	}
	if nl == 0 {
		return ErrSyntax
	}
	if nl <= len(name) && refused(name[:nl]) {
		return ErrTrailer
	}
	for {
		if c, err = r.trailerByte(n); err != nil {
			return err
		}
		if c == '\r' {
			break
		}
		if c < ' ' && c != '\t' || c == 0x7f {
			return ErrSyntax
		}
	}
	if c, err = r.trailerByte(n); err != nil {
		return err
	}
	if c != '\n' {
		return ErrSyntax
	}
	return nil
}

// refused: the fields a trailer may not carry (framing and routing).
func refused(name []byte) bool {
	return ascii.EqualFold(name, "content-length") || ascii.EqualFold(name, "transfer-encoding") ||
		ascii.EqualFold(name, "host")
}

// trailerByte reads one byte of the trailer section, counting it in *n.
func (r *Reader) trailerByte(n *int) (byte, error) {
	if *n++; *n > r.maxTrailer {
		return 0, ErrTrailer
	}
	return r.byte()
}

// byte reads one byte from src. The end of src is io.ErrUnexpectedEOF:
// only the framing can end a chunked body.
func (r *Reader) byte() (byte, error) {
	for range maxEmptyReads {
		n, err := r.src.Read(r.b[:])
		if n == 1 {
			return r.b[0], nil
		}
		if err == io.EOF {
			return 0, io.ErrUnexpectedEOF
		}
		if err != nil {
			return 0, err
		}
	}
	return 0, errNoProgress
}

// Unhex is c's value as a hex digit, or -1 (a chunk-size digit, RFC 9112
// section 7.1; the router's decoder of node bodies uses it too).
func Unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
