package router

import (
	"io"
	"slices"
)

// The client's request body, before a node is picked: its length must be
// known (uwsgi apps read exactly CONTENT_LENGTH bytes), so one of unknown
// length is buffered (spill.go); a small one rides inline with the head.

// readyBody settles the length of x's body as the node will see it
// (x.req.BodyLen): a declared length over MaxBodyBytes is errBodyTooLarge;
// an unknown one is buffered, bounded, spilling to disk (spill.go).
func (rt *Router) readyBody(x *exchange) error {
	r := &x.req
	switch {
	case x.bodySrc == nil:
	case x.bodyLen > 0:
		if x.bodyLen > rt.cfg.MaxBodyBytes {
			return errBodyTooLarge
		}
		r.BodyLen = x.bodyLen
	default: // unknown length: buffer, bounded, spilling to disk (spill.go)
		n, err := rt.bufferBody(x)
		if err != nil {
			return err
		}
		r.BodyLen = n
		x.consumed = true
	}
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
// stream has none (x/net bounds stream reads only by http.Server's
// ReadTimeout, a total), so a stream that declared a body and never sent
// it held its handler for as long as the connection lived.
func (rt *Router) renewClientRead(x *exchange) {
	if x.client != nil {
		_ = x.client.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	}
}

// bodyErr maps a failed read of the client body before any node was
// picked: a stall past the timeout is errClientTimeout (408), anything
// else errClientBody (400).
func bodyErr(err error) error {
	if isTimeout(err) {
		return errClientTimeout
	}
	return errClientBody
}
