package router

import (
	"errors"
	"io"
	"os"

	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/valyala/fasthttp"
)

// Request bodies of unknown length (HTTP/1.1 chunked, h2 without
// content-length) must be buffered: uWSGI apps read exactly CONTENT_LENGTH
// bytes, so the router de-chunks the body and sends its length. Up to
// Config.MaxBufferedBody it stays in memory (exchange.body); beyond, the
// whole body moves to an unlinked temporary file in Config.TempDir, up to
// Config.MaxBodyBytes (then 413). The file is closed, and so freed, when
// the request ends (putExchange).
//
// With "Expect: 100-continue", the HTTP/1.1 front answers a request it would
// refuse anyway (a declared body over MaxBodyBytes, no pool for the host)
// with its final status instead of "100 Continue", so the client never
// sends the body (RFC 9110 §10.1.1). A declared body over MaxBodyBytes
// without Expect is answered 413 as soon as the head is read too
// (refuseDeclaredBody), and so is one in an h2 stream (forward checks the
// declared length before reading any of it).

// errSpill is a failure writing a spilled body to disk.
var errSpill = errors.New("router: buffering the request body on disk failed")

// bufferBody reads x.bodySrc to its end, bounded, and leaves the body
// either in x.body (x.bodySrc nil), when it is at most inMemory bytes, or in
// x.spill (x.bodySrc reading it from the start). It returns the body's
// length.
func (rt *Router) bufferBody(x *exchange, inMemory int) (int64, error) {
	var err error
	x.body, err = rt.readAllLimited(x, x.body[:0], inMemory)
	if err != errBodyTooLarge {
		x.bodySrc = nil
		return int64(len(x.body)), err
	}
	if int64(len(x.body)) > rt.cfg.MaxBodyBytes {
		return 0, errBodyTooLarge
	}
	f, ferr := os.CreateTemp(rt.cfg.TempDir, "fastrouter-body-*")
	if ferr != nil {
		rt.log.Warn("cannot spill a request body to disk", "err", ferr)
		return 0, errSpill
	}
	_ = os.Remove(f.Name()) // unlinked: the space is freed when f closes, even after a crash
	x.spill = f
	if _, err := f.Write(x.body); err != nil {
		return 0, errSpill
	}
	n := int64(len(x.body))
	x.body = x.body[:0]
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	buf := *cb
	for {
		if x.client != nil {
			_ = x.client.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
		}
		m, rerr := x.bodySrc.Read(buf)
		if m > 0 {
			n += int64(m)
			if n > rt.cfg.MaxBodyBytes {
				return 0, errBodyTooLarge
			}
			if _, werr := f.Write(buf[:m]); werr != nil {
				return 0, errSpill
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return 0, bodyErr(rerr)
		}
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, errSpill
	}
	x.bodySrc = f
	return n, nil
}

// replayable reports whether x's request can be sent again whole, because
// nothing of its body is read from the client while it goes out: it has
// none, or all of it rides inline in x.buf, or it is buffered in x.body or
// spilled to x.spill, which sendRest reads from the same place at every
// send. A body streaming from the client (over Config.RequestBuffering,
// the uwsgi front's) is not: what a first node took is gone.
func (x *exchange) replayable() bool {
	return x.req.BodyLen == x.inline || x.bodySrc == nil || x.spilled()
}

// spilled reports whether x's body is read from its spill file.
func (x *exchange) spilled() bool {
	return x.spill != nil && x.bodySrc == io.Reader(x.spill)
}

// releaseSpill closes x's spill file, if any.
func (x *exchange) releaseSpill() {
	if x.spill != nil {
		x.spill.Close()
		x.spill = nil
	}
}

// expect decides "Expect: 100-continue" for the HTTP/1.1 front
// (fasthttp.Server.ExpectHandler): 100 to let the body come, or the final
// status of a request that is refused whatever its body.
func (f *h1Front) expect(ctx *fasthttp.RequestCtx) int {
	rt := f.rt
	h := &ctx.Request.Header
	code := fasthttp.StatusContinue
	switch cl := h.ContentLength(); {
	case cl > 0 && cl != rawChunked && int64(cl) > rt.cfg.MaxBodyBytes:
		code = 413
	case rt.cfg.Pools.HasMounts(): // with mounts the decoded path decides; let it come
	default:
		if host := h.Host(); strict.ValidHost(host) && rt.cfg.Pools.LookupPath(host, nil) == nil {
			code = 404
		}
	}
	if code != fasthttp.StatusContinue {
		// fasthttp writes this response (and closes the connection)
		// without calling the handler.
		writeError(ctx, code)
		rt.metrics.none.count(code)
		rt.logUnparsed(ctx, code)
	}
	return code
}

// refuseDeclaredBody runs when fasthttp has read a request head, before it
// reads any of the body (fasthttp.Server.HeaderReceived). fasthttp reads up
// to 8 KiB of a body of known length before the handler runs, so a client
// that declares more than MaxBodyBytes and sends a few bytes would wait
// for the read timeout (then 408) before the handler could refuse it. Such
// a request is marked "Expect: 100-continue": fasthttp then asks expect
// first, without reading the body, and expect answers 413 and closes the
// connection. The mark never reaches a node: nothing of the request does.
func (f *h1Front) refuseDeclaredBody(h *fasthttp.RequestHeader) {
	if cl := h.ContentLength(); cl > 0 && int64(cl) > f.rt.cfg.MaxBodyBytes {
		h.SetBytesKV(expectHeader, continue100)
	}
}

var (
	expectHeader = []byte("Expect")
	continue100  = []byte("100-continue")
)
