package router

import (
	"crypto/rand"
	"encoding/binary"
	"sync/atomic"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

// X-Request-Id: every request reaches its node with one, so the node's logs,
// the router's access log and the client can name the same request. A
// client's own id is kept when it is well-formed (a front proxy may have
// assigned it); otherwise the router makes one up.

// requestIDLen is the length of a generated id: 32 hex digits, like a UUID
// without dashes.
const requestIDLen = 32

// maxClientRequestID bounds a client-supplied id that is kept; a longer one
// is replaced (it would bloat every log line).
const maxClientRequestID = 128

// idGen makes unique request ids without allocating or locking: a random
// per-process prefix (16 hex digits, fixed at New) and a counter (16 hex
// digits). Two processes collide only if their 64-bit prefixes do, and one
// process would have to issue 2^64 requests to repeat itself. The counter
// makes ids of one process sortable by arrival.
type idGen struct {
	prefix [16]byte // hex, immutable after newIDGen
	n      atomic.Uint64
}

func newIDGen() *idGen {
	var seed [8]byte
	_, _ = rand.Read(seed[:]) // crypto/rand.Read never fails (Go ≥ 1.24)
	g := &idGen{}
	appendHex64(g.prefix[:0], binary.BigEndian.Uint64(seed[:]))
	return g
}

// next writes a fresh id into dst.
func (g *idGen) next(dst *[requestIDLen]byte) {
	copy(dst[:16], g.prefix[:])
	appendHex64(dst[16:16], g.n.Add(1))
}

const hexDigits = "0123456789abcdef"

// appendHex64 appends v as 16 lower-case hex digits.
func appendHex64(dst []byte, v uint64) []byte {
	for shift := 60; shift >= 0; shift -= 4 {
		dst = append(dst, hexDigits[(v>>uint(shift))&0xf])
	}
	return dst
}

// validRequestID reports whether a client's X-Request-Id is kept: 1 to
// maxClientRequestID bytes of letters, digits and ". _ : / + = @ -", which
// covers UUIDs, hex, base64 and the ids other proxies (Heroku, nginx,
// Envoy) generate, and nothing that could break a log line or a header.
func validRequestID(v []byte) bool {
	if len(v) == 0 || len(v) > maxClientRequestID {
		return false
	}
	for _, c := range v {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '_', c == ':', c == '/', c == '+', c == '=', c == '@', c == '-':
		default:
			return false
		}
	}
	return true
}

var xRequestID = []byte("X-Request-Id")

// assignRequestID sets x.obs.id to the request's id and makes sure the node
// receives exactly that as HTTP_X_REQUEST_ID: the client's first
// X-Request-Id when it is valid, else a generated one in its place. Later
// X-Request-Id headers are dropped (uwsgi.AppendVars would join them to the
// first with ", "). Allocation-free: a generated id lives in the exchange.
func (rt *Router) assignRequestID(x *exchange) {
	r := &x.req
	first := -1
	for i := range r.Headers {
		if !ascii.EqualFold(r.Headers[i].Name, "x-request-id") {
			continue
		}
		if first >= 0 {
			r.Headers[i].Name = droppedHeader
			continue
		}
		first = i
	}
	if first >= 0 && validRequestID(r.Headers[first].Value) {
		x.obs.id = r.Headers[first].Value
		return
	}
	rt.ids.next(&x.obs.idBuf)
	x.obs.id = x.obs.idBuf[:]
	if first < 0 {
		r.Headers = append(r.Headers, hdr{xRequestID, x.obs.id})
		return
	}
	r.Headers[first].Value = x.obs.id
}

// droppedHeader is a header name uwsgi.AppendVars skips (it contains '_').
var droppedHeader = []byte("_")
