package router

import (
	"io"
	"math"
	"slices"
	"sync"

	"github.com/fastrouter/fastrouter/internal/chunked"
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/valyala/fasthttp"
)

// The client's request body, before a node is picked: its length must be
// known (uwsgi apps read exactly CONTENT_LENGTH bytes), so one of unknown
// length is buffered (spill.go); a small one rides inline with the head.
// An HTTP/1.1 chunked body is de-chunked by the router (takeChunked).

// readyBody settles the length of x's body as the node will see it
// (x.req.BodyLen): a declared length over MaxBodyBytes is errBodyTooLarge;
// an unknown one is buffered, bounded, spilling to disk (spill.go), and so
// is a known one up to RequestBuffering (bufferKnown).
func (rt *Router) readyBody(x *exchange) error {
	r := &x.req
	switch {
	case x.bodySrc == nil:
	case x.bodyLen > 0:
		if x.bodyLen > rt.cfg.MaxBodyBytes {
			return errBodyTooLarge
		}
		r.BodyLen = x.bodyLen
		if x.bodyLen > bodyPrefetch && x.bodyLen <= rt.cfg.RequestBuffering {
			return rt.bufferKnown(x)
		}
	default: // unknown length: buffer, bounded, spilling to disk (spill.go)
		n, err := rt.bufferBody(x, rt.cfg.MaxBufferedBody)
		if err != nil {
			return err
		}
		r.BodyLen = n
		x.consumed = true
	}
	return nil
}

// knownInMemory is how much of a body of known length bufferKnown keeps in
// memory before it moves the body to a temporary file: every slow upload
// in progress holds up to this much, so it is kept well under the 8 MiB a
// chunked body may take (MaxBufferedBody), which only de-chunking needs.
const knownInMemory = 1 << 20

// bufferKnown reads x's body of known length whole before a node is
// picked (Config.RequestBuffering): a uWSGI worker is the scarce resource,
// and a body streamed at a slow client's pace would hold one for as long
// as the client takes (20 uploads at a byte a second kept a 4-worker node
// from answering anything). Buffered, the slow client holds a router
// connection and a bounded buffer instead, as behind nginx
// (proxy_request_buffering). A body that ends before its length is
// errClientBody; nothing of it reached a node.
func (rt *Router) bufferKnown(x *exchange) error {
	n, err := rt.bufferBody(x, knownInMemory) // spill.go
	if err != nil {
		return err
	}
	if n != x.bodyLen {
		return errClientBody
	}
	x.consumed = true
	return nil
}

// inlineBody appends a small body (up to bodyPrefetch bytes) to the head in
// x.buf, so that it rides in the same write as the vars, and records it in
// x.inline.
func (rt *Router) inlineBody(x *exchange) error {
	r := &x.req
	x.inline = 0
	if r.BodyLen <= 0 || r.BodyLen > bodyPrefetch {
		return nil
	}
	packet := x.buf
	n := len(packet)
	packet = slices.Grow(packet, int(r.BodyLen))
	if x.bodySrc != nil {
		// Under the inactivity timeout: nothing else bounds an h2
		// stream's body read (bodyErr).
		rt.renewClientRead(x)
		m, rerr := io.ReadFull(x.bodySrc, packet[n:n+int(r.BodyLen)])
		if rerr != nil {
			return bodyErr(rerr)
		}
		packet = packet[:n+m]
		x.consumed = true
	} else {
		packet = append(packet, x.body...)
	}
	x.inline = r.BodyLen
	x.buf = packet
	return nil
}

// readAllLimited reads x's body into dst up to limit bytes, each read
// under the inactivity timeout; more is errBodyTooLarge, a read error
// bodyErr's.
func (rt *Router) readAllLimited(x *exchange, dst []byte, limit int) ([]byte, error) {
	src := x.bodySrc
	if src == nil {
		return dst, nil
	}
	for {
		if len(dst) == cap(dst) {
			dst = append(dst, 0)[:len(dst)]
		}
		rt.renewClientRead(x)
		n, err := src.Read(dst[len(dst):cap(dst)])
		dst = dst[:len(dst)+n]
		if len(dst) > limit {
			return dst, errBodyTooLarge
		}
		if err == io.EOF {
			return dst, nil
		}
		if err != nil {
			return dst, bodyErr(err)
		}
	}
}

// renewClientRead gives the client's next body read the inactivity
// timeout. The HTTP/1.1 connection has one from fasthttp already; an h2
// stream has none of its own (internal/h2srv bounds a body read only by
// the deadline set here), so a stream that declared a body and never sent
// it would hold its handler for as long as the connection lived.
func (rt *Router) renewClientRead(x *exchange) {
	if x.client != nil {
		_ = x.client.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	}
}

// bodyErr maps a failed read of the client body before any node was
// picked: a stall past the timeout is errClientTimeout (408), a chunked
// body internal/chunked refuses one of the errChunk* errors (chunk sizes
// past MaxBodyBytes: 413), anything else errClientBody (400).
func bodyErr(err error) error {
	switch {
	case err == chunked.ErrTooLarge:
		return errChunkTooLarge
	case err == chunked.ErrLineTooLong:
		return errChunkLine
	case err == chunked.ErrSyntax, err == chunked.ErrOverhead:
		return errChunkFraming
	case err == chunked.ErrTrailer:
		return errChunkTrailer
	case isTimeout(err):
		return errClientTimeout
	}
	return errClientBody
}

// rawChunked is the Content-Length takeChunked gives a chunked request, so
// that fasthttp hands over the raw bytes of its body. No client can send
// it and be served: the strict checks refuse a Content-Length of more than
// 18 digits (internal/strict) before the body is looked at.
const rawChunked = math.MaxInt64

// takeChunked makes fasthttp stream a chunked request body raw, for the
// router to de-chunk it (x.chunks, internal/chunked), from
// fasthttp.Server.HeaderReceived. fasthttp v1.74's own decoder skips chunk
// extensions without any bound (http.go, parseChunkSize: 10 MB of them on
// one chunk were read and dropped) and learns nothing from a chunk's size
// until its data has come (a 2 GiB chunk waited for --timeout). So the
// head is given a length no body reaches (rawChunked): fasthttp then
// streams what follows the head as it comes, reading ahead of the handler
// only the 1 byte that MaxRequestBodySize allows, and internal/chunked
// reads exactly the body out of that stream and not a byte more, so the
// next request on the connection starts where fasthttp then looks for it
// (it drops an unfinished stream without reading it). The raw head, which
// the strict checks and the node's head are made from, keeps its
// Transfer-Encoding.
//
// That 1-byte read waits for the client. A head the strict checks refuse
// (Content-Length beside Transfer-Encoding, say) must be refused at once
// even when no body follows, so it is checked here first and, refused,
// left to fasthttp's own chunked stream, which reads nothing before the
// handler (and the handler refuses the head without reading the body).
func (f *h1Front) takeChunked(h *fasthttp.RequestHeader, rc fasthttp.RequestConfig) fasthttp.RequestConfig {
	if h.ContentLength() != -1 || !f.headPasses(h) {
		return rc
	}
	h.SetContentLength(rawChunked)
	rc.MaxRequestBodySize = 1
	return rc
}

// headPasses reports whether h passes the strict checks (strict.CheckHead,
// as parseHead runs them in the handler), without allocating: the field
// list is pooled. It runs only for chunked requests.
func (f *h1Front) headPasses(h *fasthttp.RequestHeader) bool {
	hd := headCheckPool.Get().(*strict.Head)
	hd.URI, hd.Proto, hd.Host = h.RequestURI(), h.Protocol(), h.Host()
	why := strict.CheckHead(h.Method(), h.RawHeaders(), hd, f.rt.cfg.MaxHeaderCount)
	clear(hd.Fields)
	*hd = strict.Head{Fields: hd.Fields[:0], Scratch: hd.Scratch[:0]} // no reference to this request kept
	headCheckPool.Put(hd)
	return why == strict.None
}

// headCheckPool holds the scratch heads of headPasses.
var headCheckPool = sync.Pool{New: func() any { return new(strict.Head) }}
