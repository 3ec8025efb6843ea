package h2srv

import (
	"errors"
	"io"

	"golang.org/x/net/http2"
)

// errBlockTooLong is what blockReader's Read returns once a header block
// passes its budget; the reader answers it with GOAWAY ENHANCE_YOUR_CALM.
var errBlockTooLong = errors.New("h2: header block too long")

// blockFrameMin is the least a frame of a header block is counted as, so
// the budget also bounds the count of frames: empty CONTINUATION frames
// (RFC 9113 §6.10) cost nothing to send and the Framer reads them without
// end.
const blockFrameMin = 1 << 10

// blockReader passes the client's bytes, after the preface, to the
// Framer and follows the frame headers in them (RFC 9113 §4.1) to bound a
// header block: the Framer reads a HEADERS frame's CONTINUATION frames
// itself, and stops only once the fields decoded pass MaxHeaderListSize;
// fragments that decode to nothing (HPACK table size updates, RFC 7541
// §6.3) or no fragments at all it reads for ever. A block whose frames,
// each counted as at least blockFrameMin bytes, pass budget bytes ends the
// connection. Owned by the reading goroutine.
type blockReader struct {
	r      io.Reader
	budget int64 // per header block
	hdr    [9]byte
	hn     int   // bytes of hdr read
	skip   int   // payload bytes of the current frame still to pass
	open   bool  // a header block is open: its END_HEADERS not seen yet
	spent  int64 // by the open block
}

func (b *blockReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 && !b.scan(p[:n]) {
		return 0, errBlockTooLong
	}
	return n, err
}

// scan follows the frames in p, the next bytes of the connection; false
// once the open header block is over its budget.
func (b *blockReader) scan(p []byte) bool {
	for len(p) > 0 {
		if b.skip > 0 {
			n := min(b.skip, len(p))
			b.skip -= n
			p = p[n:]
			continue
		}
		n := copy(b.hdr[b.hn:], p)
		b.hn += n
		p = p[n:]
		if b.hn < len(b.hdr) {
			return true
		}
		b.hn = 0
		b.skip = int(b.hdr[0])<<16 | int(b.hdr[1])<<8 | int(b.hdr[2])
		if !b.frame(http2.FrameType(b.hdr[3]), http2.Flags(b.hdr[4])) {
			return false
		}
	}
	return true
}

// frame accounts for a frame whose header was just read.
func (b *blockReader) frame(typ http2.FrameType, flags http2.Flags) bool {
	switch typ {
	case http2.FrameHeaders, http2.FramePushPromise:
		b.open, b.spent = true, 0
	case http2.FrameContinuation:
		if !b.open {
			return true // the Framer refuses it (PROTOCOL_ERROR)
		}
	default:
		return true
	}
	b.spent += int64(max(b.skip, blockFrameMin))
	// END_HEADERS is the same bit in all three (RFC 9113 §6.2, §6.6, §6.10).
	if flags&http2.FlagHeadersEndHeaders != 0 {
		b.open = false
	}
	return b.spent <= b.budget
}
