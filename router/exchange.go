package router

import (
	"context"
	"io"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/fastrouter/fastrouter/internal/chunked"
)

// deadliner is what the core needs of the client side to renew inactivity
// deadlines while bodies stream: a net.Conn for HTTP/1.1, an
// http.ResponseController (one stream) for h2.
type deadliner interface {
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// exchange is one request as every front hands it to the forwarding core:
// the protocol-neutral request view plus the scratch buffers the core
// encodes into, and the node call that serves it. A front fills req,
// bodySrc, bodyLen and client, calls forward (forward.go), and writes what
// forward returns in its own protocol.
//
// Owned by one request at a time; recycled through exchangePool.
type exchange struct {
	req request

	// bodySrc is the client body; nil means no body. bodyLen is its length:
	// > 0 known (streamed), -1 unknown (buffered up to MaxBufferedBody to
	// learn the CONTENT_LENGTH WSGI apps read by).
	bodySrc io.Reader
	bodyLen int64
	// chunks de-chunks an HTTP/1.1 chunked body for bodySrc (clientbody.go).
	chunks chunked.Reader
	// client renews the client's deadlines while bodies stream. May be nil.
	client deadliner
	// rc is the h2 and h3 fronts' client: the stream's controller, held
	// here so that it costs no allocation per stream.
	rc http.ResponseController
	// isHead: the response to a HEAD request has no body whatever it says.
	isHead bool
	// ctx ends with the client's interest in the response (an h2 stream
	// reset, a connection gone): the backend exchange is cut at once instead
	// of running to its end for nobody. A rapid-reset flood thus cannot keep
	// backends busy. context.Background() (never nil) for the fronts that
	// see a client leave only at their next write.
	ctx context.Context

	// upgrade: the client asked to switch protocols (HTTP/1.1 front); a 101
	// from the node then comes back as a tunnel (tunnel.go).
	upgrade bool
	// mustSwitch: the client's request was an extended CONNECT
	// (extconnect.go), to which a 2xx means the tunnel is open: the node's
	// answer must be a 101 or a refusal, never a 2xx (response.go).
	mustSwitch bool

	// consumed is set by forward when the client body was read to its end,
	// so the next request on the connection can be parsed safely.
	consumed bool

	// sink takes the node's interim (1xx) responses for the client
	// (response.go); nil drops them, as for HTTP/1.0 clients (RFC 9110
	// §15.2). rw is the h2 stream's writer, for h2Front's sink.
	sink interimSink
	rw   http.ResponseWriter
	// interims counts the interim responses the node sent (response.go).
	interims uint8
	// closeClient is set by forward when the node asked for the client's
	// connection to end after this response: a uwsgi app's
	// "Connection: close" (upstream_uwsgi.go).
	closeClient bool

	// call is the node serving the request, from the connect until the
	// response body is handed to the front (upstream.go).
	call nodeCall
	// lateErr is why a lazy dial's handshake failed, with errLateConnect
	// (upstream_uwsgi.go, proxy).
	lateErr error
	// headAt is when the final response head arrived (proxy's one reading
	// of the clock for it); zero until then.
	headAt time.Time

	// obs: request id, timings and node for the access log (accesslog.go).
	obs obsInfo

	keyBuf  [16]byte // iphash: the client address
	path    []byte   // the decoded path, for mount points
	buf     []byte   // the request head (uwsgi packet or HTTP head, see wire), small bodies
	wire    wire     // what buf holds before the inline body (encode.go)
	headLen int      // length of that head in buf
	inline  int64    // body bytes buf carries after the head
	alt     []byte   // scratch for re-encoding the head of a mixed pool's other kind
	body    []byte   // a buffered body of unknown length
	spill   *os.File // a body of unknown length too large for body (spill.go)
	scratch []byte   // front-owned: bytes the request view points into (h2)
}

var exchangePool = sync.Pool{New: func() any {
	return &exchange{req: request{Headers: make([]hdr, 0, 32)}, buf: make([]byte, 0, 8<<10), ctx: context.Background()}
}}

func getExchange() *exchange { return exchangePool.Get().(*exchange) }

// putExchange recycles x; buffers grown by an unusual request are dropped
// so one large request does not pin memory in the pool.
func putExchange(x *exchange) {
	x.req.Reset()
	x.bodySrc, x.bodyLen, x.client, x.isHead, x.consumed, x.ctx = nil, 0, nil, false, false, context.Background()
	x.rc = http.ResponseController{}
	x.chunks = chunked.Reader{} // it holds the client's stream
	x.upgrade, x.mustSwitch = false, false
	x.sink, x.rw, x.interims, x.closeClient = nil, nil, 0, false
	x.call, x.lateErr, x.headAt = nodeCall{}, nil, time.Time{}
	x.wire, x.headLen, x.inline = wireNone, 0, 0
	x.releaseSpill()
	x.obs = obsInfo{}
	x.buf = x.buf[:0]
	if cap(x.buf) > 64<<10 {
		x.buf = make([]byte, 0, 8<<10)
	}
	x.body = x.body[:0]
	if cap(x.body) > 1<<20 {
		x.body = nil
	}
	if cap(x.alt) > 64<<10 {
		x.alt = nil
	}
	x.path = x.path[:0]
	if cap(x.path) > 8<<10 {
		x.path = nil
	}
	x.scratch = x.scratch[:0]
	if cap(x.scratch) > 64<<10 {
		x.scratch = nil
	}
	exchangePool.Put(x)
}
