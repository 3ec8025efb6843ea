package router

import (
	"crypto/rand"
	"encoding/base64"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/valyala/fasthttp"
)

// WebSockets over HTTP/2 (RFC 8441) and HTTP/3 (RFC 9220): the extended
// CONNECT. The front advertises SETTINGS_ENABLE_CONNECT_PROTOCOL; a client
// then opens a WebSocket as a stream whose HEADERS carry :method CONNECT,
// :protocol websocket, :scheme, :path and :authority. Nodes only know the
// HTTP/1.1 handshake (RFC 6455 §4; uWSGI's uwsgi.websocket_handshake reads
// HTTP_SEC_WEBSOCKET_KEY, core/websockets.c), so the router turns the
// stream into one:
//
//   - request: a GET of :path with Upgrade: websocket, Connection: Upgrade
//     and a Sec-WebSocket-Key of its own (RFC 8441 §5: h2 has none; one
//     the client sent is dropped), the client's other fields as they came
//     (Sec-WebSocket-Version, -Protocol, -Extensions, Origin). No body: the
//     stream's DATA are the tunnel's bytes;
//   - answer: the node's 101 becomes a 200 on the stream, with its headers
//     but the hop-by-hop ones and Sec-WebSocket-Accept (RFC 8441 §5), then
//     the stream and the node connection are a tunnel (tunnel.go: idle
//     timeout, drains, shutdown). A refusal (3xx-5xx) is relayed as the
//     node's response; a 2xx that is not a switch is a 502, since a 2xx is
//     what tells the client its tunnel is open (RFC 9113 §8.5);
//   - other :protocol values (connect-udp, webtransport…) are a 501: a
//     well-formed request for something the router does not implement
//     (RFC 9110 §15.6.2). A CONNECT without :protocol stays refused (405,
//     strict.go): the router is not a forward proxy.
//
// The stream front (h2.go), for h2 and h3 streams alike, reads the request
// into an exchange as it reads any other and calls serveExtendedConnect
// with the stream's ResponseWriter and body; past extendedConnect nothing
// depends on the HTTP version.

var (
	websocketToken = []byte("websocket")
	upgradeKey     = []byte("Upgrade")
	connectionKey  = []byte("Connection")
	wsKeyKey       = []byte("Sec-WebSocket-Key")
	getMethod      = []byte("GET")
)

// extendedConnect returns the :protocol of an extended CONNECT, or "" for
// any other request. The two stream servers hand it over differently:
//
//   - internal/h2srv leaves the pseudo-header in the header map: it is
//     removed from there. On another method it
//     stays, for the strict field check to refuse (RFC 8441 §4: :protocol
//     belongs to CONNECT only);
//   - quic-go's http3 puts it in req.Proto (headers.go requestFromHeaders,
//     v0.65), which is "HTTP/3.0" on every other request, and itself
//     resets a stream with :protocol on another method or without :path
//     or :scheme (RFC 9220 §3). A :protocol is a token, so it is never
//     "HTTP/3.0".
func extendedConnect(req *http.Request) string {
	if req.Method != http.MethodConnect {
		return ""
	}
	if req.ProtoMajor == 3 {
		if req.Proto == h3Proto {
			return ""
		}
		return req.Proto
	}
	p, ok := req.Header[":protocol"]
	if !ok || len(p) != 1 || p[0] == "" {
		return ""
	}
	delete(req.Header, ":protocol")
	return p[0]
}

// h3Proto is the protocol of every HTTP/3 request, SERVER_PROTOCOL's
// value; an extended CONNECT's req.Proto is its :protocol instead.
const h3Proto = "HTTP/3.0"

// toUpgrade turns x, an extended CONNECT for protocol as a front read it,
// into the node's HTTP/1.1 WebSocket handshake (rules above). The front's
// strict checks ran on the GET it becomes. errNotImplemented for a
// protocol other than websocket.
func (x *exchange) toUpgrade(protocol string) error {
	if !ascii.EqualFoldString(protocol, "websocket") {
		return errNotImplemented
	}
	r := &x.req
	r.Method = getMethod
	h := r.Headers[:0]
	for _, f := range r.Headers {
		if !ascii.EqualFold(f.Name, "sec-websocket-key") {
			h = append(h, f)
		}
	}
	var key [16]byte
	_, _ = rand.Read(key[:]) // never fails (crypto/rand)
	n := len(x.scratch)
	x.scratch = base64.StdEncoding.AppendEncode(x.scratch, key[:])
	wsKey := x.scratch[n:len(x.scratch):len(x.scratch)]
	r.Headers = append(h, hdr{upgradeKey, websocketToken}, hdr{connectionKey, upgradeKey}, hdr{wsKeyKey, wsKey})
	x.bodySrc, x.bodyLen = nil, 0
	x.upgrade, x.mustSwitch = true, true
	return nil
}

// serveExtendedConnect serves an extended CONNECT for protocol on one
// stream and returns when the stream is done. x is the request as f read
// it (readRequest: URI the :path, x.ctx the stream's life), w and body the
// stream's ResponseWriter and request body; head is a response header to
// read the node's answer into. Everything the client gets is written
// here: an error, the node's refusal, or 200 and the tunnel.
func (f *streamFront) serveExtendedConnect(w http.ResponseWriter, body io.ReadCloser, x *exchange, protocol string, head *fasthttp.ResponseHeader) {
	rt := f.rt
	if err := x.toUpgrade(protocol); err != nil {
		code := statusOf(err)
		rt.metrics.none.count(code)
		rt.logResponse(x, nil, err, nil)
		f.writeError(w, code)
		return
	}
	pm, b, err := rt.forward(x, head)
	rt.logResponse(x, b, err, head)
	switch {
	case err == errClientGone:
	case err != nil:
		f.writeError(w, statusOf(err))
	case b == nil:
		f.writeHead(w, x, head, false)
	case b.upgrade:
		rt.streamTunnel(w, body, b, head)
	default:
		defer b.Close()
		f.writeHead(w, x, head, true)
		f.writeBody(w, x, b, pm, head.ContentLength() <= 0)
	}
}

// streamTunnel answers the stream with 200 and the node's 101 headers
// (rules above), then tunnels it to the node until either side ends. b is
// the node's side of the switch; it is released when the tunnel ends.
func (rt *Router) streamTunnel(w http.ResponseWriter, body io.ReadCloser, b *backendBody, head *fasthttp.ResponseHeader) {
	defer b.Close()
	hdrs := w.Header()
	for k, v := range head.All() {
		if hopByHop(k) || ascii.EqualFold(k, "sec-websocket-accept") {
			continue
		}
		hdrs.Add(string(k), string(v))
	}
	hdrs["Content-Type"] = nil // no sniffing: the bytes that follow are frames
	s := &streamEnd{w: w, rc: http.NewResponseController(w), body: body}
	_ = s.rc.SetWriteDeadline(rt.now().Add(rt.timeouts().Timeout))
	w.WriteHeader(http.StatusOK)
	if err := s.rc.Flush(); err != nil {
		return
	}
	_ = s.rc.SetWriteDeadline(time.Time{})
	// The node must get every byte the client sent before it left.
	if g, ok := b.conn.(interface{ closeGracefully() }); ok {
		g.closeGracefully()
	}
	t := &tunnel{rt: rt, client: s, raw: s, backend: b.conn, br: b.br}
	rt.metrics.ws.total.Inc()
	rt.metrics.ws.open.Inc()
	defer rt.metrics.ws.open.Dec()
	b.n = t.run()
}

// streamEnd is the client side of a tunnel over one h2 or h3 stream, as
// the tunnel's pipes use it (tunnelEnd). Reads are on the pipe reading the
// client, writes on the one writing it; Close may come from anywhere.
//
// Deadlines on a stream are not a connection's: quic-go's http3 read
// deadline may end the request body for good, and a write deadline resets
// the stream when a write waits past it (internal/h2srv: a write that
// waits for the client's window or the connection's buffer). So a read
// has no deadline: the pipe reading the node keeps the tunnel's idle
// clock for both directions (tunnel.pipe) and closes the stream's body
// when it runs out (h2srv: a Read under way returns; quic-go: CancelRead,
// which does too); a write has one only while it is under way, so a
// client that grants no flow-control window is cut after the inactivity
// timeout. A write that failed keeps its expired deadline: quic-go's
// http3 finishes a stream after its handler returns (server_conn.go
// handleRequestStream, Finish), which writes what is left of a DATA frame
// cut short and would block, without a deadline, on a client that grants
// no window; expired, it fails at once and the stream is reset. (h2srv:
// the stream is reset already.)
type streamEnd struct {
	w    http.ResponseWriter
	rc   *http.ResponseController
	body io.ReadCloser
	once sync.Once
}

func (s *streamEnd) Read(p []byte) (int, error) { return s.body.Read(p) }

// Write sends p to the client at once (flushed: a WebSocket message must
// not wait in a buffer) under the deadline SetWriteDeadline set, which is
// lifted after unless the write failed (see streamEnd).
func (s *streamEnd) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err == nil {
		err = s.rc.Flush()
	}
	if err == nil {
		_ = s.rc.SetWriteDeadline(time.Time{})
	}
	return n, err
}

// SetReadDeadline does nothing (see streamEnd).
func (s *streamEnd) SetReadDeadline(time.Time) error { return nil }

func (s *streamEnd) SetWriteDeadline(t time.Time) error { return s.rc.SetWriteDeadline(t) }

// Close ends the client's side: a Read under way returns. The stream
// itself ends when the front's handler returns.
func (s *streamEnd) Close() error {
	s.once.Do(func() { _ = s.body.Close() })
	return nil
}
