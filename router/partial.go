package router

// A backend can fail after its response head was accepted: it closes before
// its Content-Length, sends a bad chunk, or stalls past the timeout. The
// status is then already decided, and fasthttp, on a body-stream error,
// closes the connection without flushing what it buffered: a client would
// get an empty reply for a response whose head was fine. So the head is
// flushed ahead of the body whenever the body is not already complete in
// the read buffer; a failing body then reaches the client as a truncated
// response (short of its Content-Length, or chunked without the last
// chunk), which every client recognises, as nginx does. Responses whose
// body arrived with the head, the common case for small ones, still go out
// in one write.

// bodyBuffered reports whether the whole body is already in the backend
// read buffer (a Content-Length body that arrived with the head).
func (b *backendBody) bodyBuffered() bool {
	return b.limit >= 0 && int64(b.br.Buffered()) >= b.limit
}
