package h2srv

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

var (
	errStreamReset = errors.New("h2: stream reset")
	errConnClosed  = errors.New("h2: connection closed")
	errBodyClosed  = errors.New("h2: read on closed body")
	errWriteAfter  = errors.New("h2: write after the handler's end")
)

// wbufSize is a stream's response buffer: writes smaller than it are
// gathered, so a small body leaves in one DATA frame with END_STREAM.
const wbufSize = 4 << 10

// stream is one request stream and its handler's request and response
// writer, pooled by the Server. The connection's fields (marked) are under
// c.mu; the others belong to the stream's handler.
type stream struct {
	c      *conn
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc
	base   http.Request // filled by the reader; req is it with ctx
	req    *http.Request
	url    url.URL
	header http.Header // the request's, reused
	vals   []string    // backing array of header's values
	rw     responseWriter

	// Under c.mu.
	aborted    bool  // reset (either side) or the connection ended
	resetRecv  bool  // by the client's RST_STREAM
	abortErr   error // why
	remoteDone bool  // END_STREAM received
	bodyClosed bool  // the handler closed the body
	tooLarge   bool  // header list over MaxHeaderListSize: answered 431
	rbuf       []byte
	roff       int
	rerr       error       // what a read returns once rbuf is empty
	trailer    http.Header // the trailers received, when some were declared; the handler's Read copies them (copyTrailers)
	declared   int64       // content-length, or -1
	received   int64
	recvAvail  int64 // the client's window on this stream
	recvUnsent int64
	sendWindow int64 // ours on this stream
	waitSpace  bool
	headSent   bool
	endSent    bool
	readDL     time.Time
	writeDL    time.Time

	rwake, wwake chan struct{} // cap 1: a reader and a writer of the handler wait on them
}

func (s *Server) getStream() *stream {
	if st, ok := s.streams.Get().(*stream); ok {
		return st
	}
	st := &stream{header: make(http.Header), rwake: make(chan struct{}, 1), wwake: make(chan struct{}, 1)}
	st.rw.st = st
	st.rw.header = make(http.Header)
	return st
}

// putStream returns st, removed from its connection and its handler
// done, to the pool.
func (s *Server) putStream(st *stream) {
	clear(st.header)
	clear(st.rw.header)
	clear(st.vals)
	rbuf := st.rbuf[:0]
	if cap(rbuf) > 64<<10 {
		rbuf = nil
	}
	*st = stream{header: st.header, vals: st.vals[:0], rbuf: rbuf, rwake: st.rwake, wwake: st.wwake,
		rw: responseWriter{header: st.rw.header, wbuf: st.rw.wbuf[:0]}}
	st.rw.st = st
	select {
	case <-st.rwake:
	default:
	}
	select {
	case <-st.wwake:
	default:
	}
	s.streams.Put(st)
}

func (st *stream) wakeRead() {
	select {
	case st.rwake <- struct{}{}:
	default:
	}
}

func (st *stream) wakeWrite() {
	select {
	case st.wwake <- struct{}{}:
	default:
	}
}

// abortLocked ends st for its handler: reads and writes fail with err, the
// context is cancelled. Unread body bytes go back to the connection's
// window.
func (st *stream) abortLocked(err error) {
	if st.aborted {
		return
	}
	st.aborted, st.abortErr = true, err
	st.rerr = err
	st.c.creditLocked(int64(len(st.rbuf) - st.roff))
	st.rbuf, st.roff = st.rbuf[:0], 0
	if st.cancel != nil {
		st.cancel()
	}
	st.wakeRead()
	st.wakeWrite()
}

// creditLocked gives n bytes of st's receive window back, unless the
// client is done sending on it.
func (st *stream) creditLocked(n int64) {
	if st.remoteDone || st.aborted {
		return
	}
	st.recvUnsent += n
	if st.recvUnsent >= creditMin || st.recvUnsent >= st.recvAvail {
		_ = st.c.wfr.WriteWindowUpdate(st.id, uint32(st.recvUnsent))
		st.recvAvail += st.recvUnsent
		st.recvUnsent = 0
		st.c.work.Signal()
	}
}

// serve runs the handler on the stream, then ends the stream: the
// response is finished (END_STREAM), or reset if the handler panicked
// (http.ErrAbortHandler is how a handler asks for that); a request body
// still coming is refused with RST_STREAM NO_ERROR (RFC 9113 §8.1).
func (st *stream) serve() {
	c := st.c
	aborted := true
	defer func() {
		if r := recover(); r != nil && r != http.ErrAbortHandler {
			c.srv.countError("stream_handler_panic")
			if c.srv.cfg.OnPanic != nil {
				c.srv.cfg.OnPanic(r, debug.Stack())
			}
		}
		st.finish(aborted)
	}()
	if st.tooLarge {
		st.rw.WriteHeader(http.StatusRequestHeaderFieldsTooLarge)
	} else {
		c.srv.h.ServeHTTP(&st.rw, st.req)
	}
	aborted = false
}

func (st *stream) finish(aborted bool) {
	c := st.c
	if !aborted {
		_ = st.rw.send(st.rw.wbuf, true)
	}
	c.mu.Lock()
	if !st.aborted && !c.closed {
		switch {
		case aborted || !st.endSent:
			c.resetLocked(st.id, http2.ErrCodeInternal, "") // the handler's choice, not an error of the client's
		case !st.remoteDone:
			_ = c.wfr.WriteRSTStream(st.id, http2.ErrCodeNo)
		}
	}
	st.abortLocked(errWriteAfter)
	c.streamDoneLocked(st)
	c.work.Signal()
	c.mu.Unlock()
	c.srv.putStream(st)
	c.wg.Done()
}

// wait waits, with c.mu held and released meanwhile, for wake, st's end or
// the deadline dl (zero: the connection's WriteTimeout when write, else
// none). It returns os.ErrDeadlineExceeded when dl passed.
func (st *stream) wait(wake chan struct{}, dl time.Time, write bool) error {
	c := st.c
	var tc <-chan time.Time
	if dl.IsZero() && write && c.srv.cfg.WriteTimeout > 0 {
		dl = time.Now().Add(c.srv.cfg.WriteTimeout)
	}
	if !dl.IsZero() {
		d := time.Until(dl)
		if d <= 0 {
			return os.ErrDeadlineExceeded
		}
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	c.mu.Unlock()
	var err error
	select {
	case <-wake:
	case <-tc:
		err = os.ErrDeadlineExceeded
	}
	c.mu.Lock()
	return err
}

// requestBody is a stream's request body.
type requestBody struct{ st *stream }

func (b requestBody) Read(p []byte) (int, error) {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	for {
		if st.roff < len(st.rbuf) {
			n := copy(p, st.rbuf[st.roff:])
			st.roff += n
			if st.roff == len(st.rbuf) {
				st.rbuf, st.roff = st.rbuf[:0], 0
			}
			c.creditLocked(int64(n))
			st.creditLocked(int64(n))
			return n, nil
		}
		switch {
		case st.bodyClosed:
			return 0, errBodyClosed
		case st.rerr != nil:
			if st.rerr == io.EOF && st.trailer != nil {
				st.copyTrailers()
			}
			return 0, st.rerr
		case len(p) == 0:
			return 0, nil
		}
		if err := st.wait(st.rwake, st.readDL, false); err != nil {
			return 0, err
		}
	}
}

// copyTrailers puts the trailers received that the request declared in
// req.Trailer (st.base's map: req is a shallow copy of st.base); on the
// handler's goroutine.
func (st *stream) copyTrailers() {
	for k, vs := range st.trailer {
		if _, ok := st.base.Trailer[k]; ok {
			st.base.Trailer[k] = vs
		}
	}
	st.trailer = nil
}

// Close ends the handler's reading: a Read under way returns, what comes
// later is dropped.
func (b requestBody) Close() error {
	st := b.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if !st.bodyClosed {
		st.bodyClosed = true
		c.creditLocked(int64(len(st.rbuf) - st.roff))
		st.rbuf, st.roff = st.rbuf[:0], 0
		st.wakeRead()
	}
	return nil
}

// responseWriter is a stream's http.ResponseWriter; also what
// http.ResponseController finds: Flush, FlushError, SetReadDeadline,
// SetWriteDeadline.
type responseWriter struct {
	st          *stream
	header      http.Header
	status      int // final status; 0 until WriteHeader
	wbuf        []byte
	wroteHeader bool
}

func (w *responseWriter) Header() http.Header { return w.header }

// WriteHeader sends an interim (1xx) response at once, with the header
// map as it is; a final status is sent with the first body bytes, a
// flush or the handler's end.
func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader || code < 100 || code > 999 {
		return
	}
	if code < 200 {
		if code == http.StatusSwitchingProtocols {
			return // no such thing in HTTP/2 (RFC 9113 §8.6)
		}
		c := w.st.c
		c.mu.Lock()
		if w.st.writableLocked() == nil {
			c.writeHeadLocked(w.st, code, w.header, false)
			c.work.Signal()
		}
		c.mu.Unlock()
		return
	}
	w.status, w.wroteHeader = code, true
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if !bodyAllowed(w.status) {
		return 0, http.ErrBodyNotAllowed
	}
	if w.st.base.Method == http.MethodHead {
		return len(p), nil
	}
	n := len(p)
	if len(w.wbuf)+len(p) <= wbufSize {
		if w.wbuf == nil {
			w.wbuf = make([]byte, 0, wbufSize)
		}
		w.wbuf = append(w.wbuf, p...)
		return n, nil
	}
	if len(w.wbuf) > 0 {
		if err := w.send(w.wbuf, false); err != nil {
			return 0, err
		}
		w.wbuf = w.wbuf[:0]
	}
	if len(p) < wbufSize {
		w.wbuf = append(w.wbuf, p...)
		return n, nil
	}
	if err := w.send(p, false); err != nil {
		return 0, err
	}
	return n, nil
}

func bodyAllowed(code int) bool {
	return code >= 200 && code != http.StatusNoContent && code != http.StatusNotModified
}

func (w *responseWriter) Flush() { _ = w.FlushError() }

// FlushError sends the head and what the handler wrote, and wakes the
// writer.
func (w *responseWriter) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	err := w.send(w.wbuf, false)
	w.wbuf = w.wbuf[:0]
	c := w.st.c
	c.mu.Lock()
	c.work.Signal()
	c.mu.Unlock()
	return err
}

// SetReadDeadline bounds the request body's reads from now on; a read
// that waits past it fails (os.ErrDeadlineExceeded), later ones may
// succeed.
func (w *responseWriter) SetReadDeadline(t time.Time) error {
	c := w.st.c
	c.mu.Lock()
	w.st.readDL = t
	w.st.wakeRead()
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline bounds the writes from now on: one that waits (for the
// client's window, or for the connection's buffer) past it fails and
// resets the stream.
func (w *responseWriter) SetWriteDeadline(t time.Time) error {
	c := w.st.c
	c.mu.Lock()
	w.st.writeDL = t
	w.st.wakeWrite()
	c.mu.Unlock()
	return nil
}

func (st *stream) writableLocked() error {
	switch {
	case st.c.closed:
		return errConnClosed
	case st.aborted:
		return st.abortErr
	case st.endSent:
		return errWriteAfter
	}
	return nil
}

// send queues the head, if not sent yet, and p as DATA frames within the
// client's windows, the last with END_STREAM when end. It waits for
// window or buffer space as needed, under the write deadline.
func (w *responseWriter) send(p []byte, end bool) error {
	st := w.st
	c := st.c
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := st.writableLocked(); err != nil {
		return err
	}
	if w.st.base.Method == http.MethodHead || !bodyAllowed(w.status) {
		p = nil
	}
	if !st.headSent {
		if w.status == 0 {
			w.status = http.StatusOK
		}
		c.writeHeadLocked(st, w.status, w.header, end && len(p) == 0)
		st.headSent = true
		if end && len(p) == 0 {
			st.endSent = true
			return nil
		}
	}
	if len(p) == 0 && !end {
		return nil
	}
	for {
		if len(c.out) >= outFlush {
			c.work.Signal()
		}
		// A window can be negative (SETTINGS_INITIAL_WINDOW_SIZE lowered,
		// RFC 9113 §6.9.2); an empty DATA frame needs none.
		n := max(0, min(int64(len(p)), st.sendWindow, c.sendWindow, int64(c.peerMaxFrame)))
		if len(p) > 0 && n <= 0 || len(c.out) >= outMax {
			c.work.Signal()
			if len(c.out) >= outMax {
				st.waitSpace = true
				c.spaceWaiters++
			}
			err := st.wait(st.wwake, st.writeDL, true)
			if st.waitSpace {
				st.waitSpace = false
				c.spaceWaiters--
			}
			if werr := st.writableLocked(); werr != nil {
				return werr
			}
			if err != nil {
				c.resetLocked(st.id, http2.ErrCodeInternal, "stream_write_timeout")
				return err
			}
			continue
		}
		last := end && n == int64(len(p))
		c.appendData(st.id, p[:n], last)
		st.sendWindow -= n
		c.sendWindow -= n
		p = p[n:]
		if last {
			st.endSent = true
			return nil
		}
		if len(p) == 0 {
			return nil
		}
	}
}

// appendData queues a DATA frame (RFC 9113 §6.1); mu held.
func (c *conn) appendData(id uint32, p []byte, end bool) {
	var flags byte
	if end {
		flags = byte(http2.FlagDataEndStream)
	}
	n := len(p)
	c.out = append(c.out, byte(n>>16), byte(n>>8), byte(n), byte(http2.FrameData), flags,
		byte(id>>24), byte(id>>16), byte(id>>8), byte(id))
	c.out = append(c.out, p...)
}

// writeHeadLocked queues a response head: :status, the header map's
// fields but the connection-specific ones and those without a value,
// names in lowercase, a Date unless the map has one (or a nil one).
func (c *conn) writeHeadLocked(st *stream, code int, h http.Header, end bool) {
	c.hbuf.Reset()
	_ = c.enc.WriteField(hpack.HeaderField{Name: ":status", Value: statusString(code)})
	if code >= 200 {
		if _, ok := h["Date"]; !ok {
			_ = c.enc.WriteField(hpack.HeaderField{Name: "date", Value: c.srv.dateNow()})
		}
	}
	for k, vs := range h {
		if len(vs) == 0 {
			continue
		}
		lk := c.lower(k)
		for _, v := range vs {
			if validResponseField(lk, v) {
				_ = c.enc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	block := c.hbuf.Bytes()
	max := int(c.peerMaxFrame)
	first := true
	for first || len(block) > 0 {
		frag := block[:min(len(block), max)]
		block = block[len(frag):]
		if first {
			_ = c.wfr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			_ = c.wfr.WriteContinuation(st.id, len(block) == 0, frag)
		}
	}
}
