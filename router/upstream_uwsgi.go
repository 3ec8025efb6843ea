package router

import (
	"context"
	"errors"
	"time"

	"github.com/valyala/fasthttp"
)

// uwsgiUpstream speaks the uwsgi protocol to a uwsgi node: the request is
// one packet (header and vars, uwsgi.AppendVars) followed by the body, on a
// connection of its own; the answer is raw HTTP, which the node ends by
// closing the connection (uWSGI's framing: one request per connection).
type uwsgiUpstream struct{}

// errNotConnected is sendAwait's answer when the connection of a lazy dial
// has not finished its handshake: nothing was written.
var errNotConnected = errors.New("router: backend connection not established yet")

// requestSender is a node connection that writes a whole request and waits
// for the answer in one step, skipping the read that would find the socket
// still empty (dial_linux.go's backendConn).
type requestSender interface {
	// sendAwait writes p, then waits until the answer can be read or the
	// deadline (computed from now), which also holds for the reads that
	// follow. If n < len(p),
	// err is the write's (nil: write the rest yourself); else the wait's.
	sendAwait(p []byte, now, deadline time.Time) (n int, err error)
	// finishConnect waits, until deadline or the end of ctx, for the
	// handshake of a lazy dial that sendAwait found unfinished
	// (errNotConnected), or returns the error it ended with.
	finishConnect(ctx context.Context, deadline time.Time) error
}

func (uwsgiUpstream) roundTrip(x *exchange, head *fasthttp.ResponseHeader) (headFlags, error) {
	c := &x.call
	rt := c.rt
	packet := x.buf // connect made it fit the node (modifiers)
	sent := 0
	if s, ok := c.conn.(requestSender); ok && x.req.BodyLen == x.inline {
		// The whole request is in packet: write it and wait for the answer
		// in one step. The read deadline is set for the reads below.
		now := rt.now()
		n, err := s.sendAwait(packet, now, now.Add(rt.timeouts().Timeout))
		if err == errNotConnected { // a lazy dial (connect.go) whose handshake had not finished
			if cerr := s.finishConnect(x.ctx, now.Add(rt.timeouts().Connect)); cerr != nil {
				x.lateErr = cerr
				return 0, errLateConnect // proxy tries another node
			}
			now = rt.now()
			n, err = s.sendAwait(packet, now, now.Add(rt.timeouts().Timeout))
		}
		switch {
		case n < len(packet) && err != nil:
			return 0, errBackendWrite
		case err != nil && isTimeout(err):
			return 0, errBackendTimeout
		case err != nil:
			return 0, errBadResponse // closed under the wait: the client left (fail says so) or the node
		}
		sent = n
	}
	if sent < len(packet) {
		if err := rt.writeFull(c.conn, packet[sent:]); err != nil {
			return rt.earlyAnswer(x, head, errBackendWrite) // upstream.go
		}
		if err := rt.sendRest(x, c.conn); err != nil {
			return rt.earlyAnswer(x, head, err)
		}
		_ = c.conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	}
	return rt.readHead(x, c.conn, c.br, head) // response.go
}

func (uwsgiUpstream) response(x *exchange, head *fasthttp.ResponseHeader, f headFlags) *backendBody {
	if head.StatusCode() == 101 { // asked for (readHead): tunnel.go, the front makes it a tunnel
		return upgradeBody(x, head)
	}
	// The node closing its connection is uwsgi framing, not a request to
	// close the client's; an app's own "Connection: close" is one, since a
	// uwsgi connection has no other hop it could mean. uWSGI's http router
	// honours it the same way (plugins/http/keepalive.c,
	// http_response_parse). The other hop-by-hop headers go (relay).
	x.closeClient = f&hfClose != 0
	return relay(x, head, f)
}
