package router

import "io"

// A node can fail after its response head was accepted: it closes before
// its Content-Length or sends a bad chunk. The status is then already
// decided, and fasthttp, on a body-stream error, closes the connection
// without flushing what it buffered: the client would get an empty reply
// for a response whose head was fine. So for those bodies the head is
// flushed ahead of the body, and a failing body reaches the client as a
// truncated response (short of its Content-Length, or chunked without the
// last chunk), which every client recognises, as nginx does.
//
// The extra write is spent only where such a failure can happen: not when
// the whole Content-Length body arrived with the head (the common case for
// small responses, which still go out in one write), and not for bodies the
// node ends by closing (uWSGI's usual framing), which cannot be short.

// flushHeadFirst reports whether the head should be written before the
// body is read.
func (b *backendBody) flushHeadFirst() bool {
	if b.limit >= 0 {
		return int64(b.br.Buffered()) < b.limit
	}
	return b.src != io.Reader(b.br) // chunked from the node
}
