package router

import (
	"io"
	"net/http/httputil"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// Relaying the node's response: after the round trip, the final head says
// whether a body follows and how it is framed (RFC 9112 §6.3); the front
// then writes the head in its protocol and copies the body stream, which
// renews both sides' inactivity deadlines as it goes.

// relay hands x's front the body of the final response in head, or ends the
// call when there is none (a HEAD request, 1xx, 204, 304, Content-Length 0):
// nil then. The node's Connection header and the hop-by-hop headers it
// names describe the hop to the node and are removed (f: what scanHead
// saw). A known length is read exactly; a chunked body is de-chunked (the
// front re-frames it); anything else runs to the node's close.
func relay(x *exchange, head *fasthttp.ResponseHeader, f headFlags) *backendBody {
	if !relayHead(x, head, f) {
		x.call.end()
		return nil
	}
	b := newBackendBody(&x.call, x.client)
	switch cl := head.ContentLength(); {
	case cl > 0:
		b.limit = int64(cl)
	case cl == -1: // chunked from the backend: de-chunk; the front re-frames
		b.src = httputil.NewChunkedReader(b.br)
	}
	return b
}

// relayHead removes from the final head the headers of the hop to the node
// (relay) and reports whether a body follows it. relay and the HTTP/1.1
// event loop (h1loop_linux.go) share it.
func relayHead(x *exchange, head *fasthttp.ResponseHeader, f headFlags) (body bool) {
	head.ResetConnectionClose()
	if f&hfHop != 0 {
		stripHopByHop(head)
	}
	code, cl := head.StatusCode(), head.ContentLength()
	return !(x.isHead || code < 200 || code == 204 || code == 304 || cl == 0)
}

// upgradeBody hands x's front the node's side of a 101 (asked for:
// readHead refuses one otherwise), for the front to make a tunnel of it
// (tunnel.go). The switch keeps the headers the client asked for.
func upgradeBody(x *exchange, head *fasthttp.ResponseHeader) *backendBody {
	head.ResetConnectionClose()
	b := newBackendBody(&x.call, nil)
	b.upgrade = true
	return b
}

// newBackendBody moves the call c into a body stream read until the node
// closes (relay sets a length or a de-chunker); client's write deadline is
// renewed with every read (nil: the front renews it itself).
func newBackendBody(c *nodeCall, client deadliner) *backendBody {
	b := backendBodyPool.Get().(*backendBody)
	*b = backendBody{nodeCall: *c, limit: -1, client: client}
	b.src = b.br
	*c = nodeCall{}
	return b
}

// backendBody streams a backend response body to the client. It is the
// body stream handed to the front and is closed by it when the response is
// written (or abandoned). Every Read renews the inactivity deadlines of the
// backend read and the client write, so a large download never hits a total
// deadline, but a stalled peer is cut after Config.Timeout.
//
// Owned by one request at a time; recycled through backendBodyPool.
type backendBody struct {
	nodeCall           // the node, its connection and reader
	src      io.Reader // br, limited or de-chunked
	limit    int64     // bytes left when the length is known, else -1
	client   deadliner
	// upgrade: the node answered 101 to an upgrade request; the front
	// tunnels conn (tunnel.go) instead of reading a body.
	upgrade bool
	closed  bool
	eof     bool          // src returned io.EOF (upstream_http.go: a chunked body's end)
	n       int64         // body bytes read so far
	rec     *accessRecord // access-log line to finish at Close; nil when none
	// fresh, when set, is a reading of the clock the first Read may use
	// as its own: the front sets it when that Read follows at once (h1.go).
	fresh time.Time
}

var backendBodyPool = sync.Pool{New: func() any { return new(backendBody) }}

func (b *backendBody) Read(p []byte) (int, error) {
	if b.limit == 0 {
		return 0, io.EOF
	}
	if b.limit > 0 && int64(len(p)) > b.limit {
		p = p[:b.limit]
	}
	now := b.fresh
	if now.IsZero() {
		now = b.rt.now()
	}
	b.fresh = time.Time{}
	d := b.rt.timeouts().Timeout
	_ = renewRead(b.conn, now.Add(d), now)
	if b.client != nil {
		_ = renewWrite(b.client, now.Add(d), now)
	}
	n, err := b.src.Read(p)
	b.eof = err == io.EOF
	b.n += int64(n)
	if b.limit > 0 {
		b.limit -= int64(n)
		if b.limit == 0 && err == nil {
			err = io.EOF
		}
		if err == io.EOF && b.limit > 0 {
			err = io.ErrUnexpectedEOF // backend closed before Content-Length
		}
	}
	return n, err
}

// WriteTo copies the rest of the body to w in bufPool's 32 KiB chunks. It
// is the copy fasthttp makes for a body of known length (its copyZeroAlloc
// prefers an io.WriterTo), and io.CopyBuffer's: without it fasthttp copies
// through its own 4 KiB buffer, so a 64 KiB response left in 16 writes.
// Errors are Read's and w's, as io.Copy would return them.
func (b *backendBody) WriteTo(w io.Writer) (int64, error) {
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	var total int64
	for {
		n, err := b.Read(*cb)
		if n > 0 {
			m, werr := w.Write((*cb)[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// untilClose reports a body the node ends by closing its connection (no
// length, not chunked).
func (b *backendBody) untilClose() bool { return b.limit < 0 && b.src == io.Reader(b.br) }

// Close releases the backend connection and the node and records the
// request's duration. Safe to call more than once.
func (b *backendBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	if b.unwatch() {
		b.eof, b.limit = false, -1 // cut by the client's leaving: the connection is closed
	}
	b.settleHTTP() // upstream_http.go: may its connection be reused?
	b.node.AddTraffic(0, uint64(b.n))
	rt := b.rt
	end := b.release()
	if b.rec != nil {
		rt.finishAccess(b.rec, b.n, end)
	}
	*b = backendBody{}
	backendBodyPool.Put(b)
	return nil
}
