package chunked

// Decoder decodes a node's chunked response body as it arrives, for the
// router's HTTP/1.1 event loop (router/h1loop_linux.go), which reads
// without blocking and so cannot pull from an io.Reader as Reader does. It
// accepts and refuses exactly what the router's goroutine path does with a
// response body (router/relay.go: httputil.NewChunkedReader, Go's
// net/http/internal/chunked.go), so a client sees the same body from both:
//
//   - a chunk-size line ends with CRLF, and holds no other CR or LF; with
//     its extensions it is under 4096 bytes;
//   - the size is 1 to 16 hex digits; spaces and tabs may follow it when
//     the line has no extension (a ';' and anything after it), none may
//     come before it or before the ';';
//   - a chunk's data is followed by CRLF;
//   - framing beyond 16 bytes plus twice the data per chunk may add up to
//     16 KiB over the body (Go's heuristic against extension padding);
//   - the last chunk (size 0) ends the body: what follows (trailers, the
//     final CRLF) is not read.
//
// Owned by one loopConn; the zero value is ready for a body.
type Decoder struct {
	state  int
	line   int    // bytes of the size line so far, its CRLF excluded
	digits int    // hex digits of the size
	ws     bool   // a space or tab followed the digits (valid only at the line's end)
	size   uint64 // the size being read
	left   uint64 // data bytes of the current chunk still to come
	excess int64  // Go's overhead count
}

// Decoder states.
const (
	dcSize   = iota // the size, then spaces and tabs
	dcExt           // after ';': anything but CR and LF
	dcLineLF        // the size line's CR was read: its LF
	dcData          // a chunk's data
	dcDataCR        // the CR after a chunk's data
	dcDataLF        // its LF
	dcDone          // the last chunk was read
)

// maxChunkLine is Go's bound on a chunk-size line (maxLineLength): its
// content, without the CRLF, must be shorter.
const maxChunkLine = 4096

// Feed decodes b in place: the body's data, moved to the start of b, is
// b[:n]. done: the last chunk was read (what of b follows it is not the
// body's). An error is sticky to the caller: the body cannot go on.
func (d *Decoder) Feed(b []byte) (n int, done bool, err error) {
	for i := 0; i < len(b); {
		if d.state == dcData {
			k := len(b) - i
			if uint64(k) > d.left {
				k = int(d.left)
			}
			n += copy(b[n:], b[i:i+k])
			i += k
			if d.left -= uint64(k); d.left == 0 {
				d.state = dcDataCR
			}
			continue
		}
		if err := d.framing(b[i]); err != nil {
			return n, false, err
		}
		i++
		if d.state == dcDone {
			return n, true, nil
		}
	}
	return n, d.state == dcDone, nil
}

// framing takes one byte that is not a chunk's data.
func (d *Decoder) framing(c byte) error {
	switch d.state {
	case dcSize, dcExt:
		return d.lineByte(c)
	case dcLineLF:
		if c != '\n' {
			return ErrSyntax
		}
		return d.lineEnd()
	case dcDataCR:
		if c != '\r' {
			return ErrSyntax
		}
		d.state = dcDataLF
	case dcDataLF:
		if c != '\n' {
			return ErrSyntax
		}
		*d = Decoder{excess: d.excess} // the next size line
	}
	return nil
}

// lineByte takes one byte of a size line before its CR.
func (d *Decoder) lineByte(c byte) error {
	if c == '\r' {
		d.state = dcLineLF
		return nil
	}
	if c == '\n' { // a bare LF
		return ErrSyntax
	}
	if d.line++; d.line >= maxChunkLine {
		return ErrSyntax
	}
	if d.state == dcExt {
		return nil
	}
	switch v := Unhex(c); {
	case c == ';':
		if d.digits == 0 || d.ws { // Go trims the line's end only: "5 ;x" is refused
			return ErrSyntax
		}
		d.state = dcExt
	case c == ' ' || c == '\t':
		d.ws = true
	case v < 0 || d.ws:
		return ErrSyntax
	default:
		if d.digits++; d.digits > 16 {
			return ErrSyntax
		}
		d.size = d.size<<4 | uint64(v)
	}
	return nil
}

// lineEnd ends a size line (its CRLF read): Go's checks, in its order.
func (d *Decoder) lineEnd() error {
	if d.digits == 0 {
		return ErrSyntax
	}
	d.excess += int64(d.line) + 2
	d.excess -= 16 + 2*int64(d.size) // int64 wraps as Go's does for absurd sizes
	d.excess = max(d.excess, 0)
	if d.excess > 16<<10 {
		return ErrSyntax
	}
	if d.size == 0 {
		d.state = dcDone
		return nil
	}
	d.left, d.state = d.size, dcData
	return nil
}
