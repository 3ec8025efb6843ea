package router

import (
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Strict request syntax (internal/strict): the HTTP/1.1 front checks every
// raw head (parseHead), the h2 front every stream's pseudo-headers and
// fields (h2.go); what they refuse is answered with the reason's status,
// counted in fastrouter_http_rejected_total{reason}, and never reaches a
// node.

// strictBodies are the error pages for the statuses only the strict checks
// use
// (errorBodies has the rest).
var strictBodies = map[int][]byte{
	405: []byte("405 Method Not Allowed\n"),
	414: []byte("414 URI Too Long\n"),
	501: []byte("501 Not Implemented: transfer coding\n"),
	505: []byte("505 HTTP Version Not Supported\n"),
}

// newSecurityMetrics registers fastrouter_http_rejected_total{reason}
// (children resolved here: the head's reasons, strict.Names, and the
// body's, bodyReasonNames) and
// fastrouter_client_connections_refused_total{listener} (--max-conns).
func newSecurityMetrics(reg prometheus.Registerer) (rejects [strict.NumRejects]prometheus.Counter, bodies [numBodyReasons]prometheus.Counter, refused *prometheus.CounterVec, err error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_http_rejected_total",
		Help: "Requests refused by the strict request-line and header checks before routing (RFC 9112 for HTTP/1.1, RFC 9113 §8 for HTTP/2) or for their body's framing, by reason.",
	}, []string{"reason"})
	refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_client_connections_refused_total",
		Help: "Client connections refused because the listener had --max-conns open, by listener.",
	}, []string{"listener"})
	for _, c := range []prometheus.Collector{vec, refused} {
		if err := reg.Register(c); err != nil {
			return rejects, bodies, nil, err
		}
	}
	for r := strict.None + 1; r < strict.NumRejects; r++ {
		rejects[r] = vec.WithLabelValues(strict.Names[r])
	}
	for r := range bodies {
		bodies[r] = vec.WithLabelValues(bodyReasonNames[r])
	}
	return rejects, bodies, refused, nil
}

// Reasons of fastrouter_http_rejected_total for a request body (the
// head's are internal/strict's), as small integers indexing
// Router.bodyRejects.
const (
	bodyChunkLine     = iota // a chunk-size line over 4 KiB: chunk extensions
	bodyChunkFraming         // malformed chunked framing, or too much of it
	bodyChunkTrailer         // trailer section too large or with a framing field
	bodyChunkTooLarge        // chunk sizes past --max-body-bytes (413)
	bodyIncomplete           // the client's body ended before its length
	numBodyReasons
)

var bodyReasonNames = [numBodyReasons]string{"chunk_line_too_long", "chunked_framing", "chunked_trailer",
	"chunk_too_large", "body_incomplete"}

// countBodyReject counts err in fastrouter_http_rejected_total when it is
// a refused request body.
func (rt *Router) countBodyReject(err error) {
	r := -1
	switch err {
	case errChunkLine:
		r = bodyChunkLine
	case errChunkFraming:
		r = bodyChunkFraming
	case errChunkTrailer:
		r = bodyChunkTrailer
	case errChunkTooLarge:
		r = bodyChunkTooLarge
	case errClientBody:
		r = bodyIncomplete
	}
	if r >= 0 {
		rt.bodyRejects[r].Inc()
	}
}

// rejectHead answers a refused head and closes the connection.
func (f *h1Front) rejectHead(ctx *fasthttp.RequestCtx, why strict.Reject) {
	code := why.Status()
	writeError(ctx, code)
	if b, ok := strictBodies[code]; ok {
		ctx.SetBody(b)
	}
	if code == 405 {
		ctx.Response.Header.SetBytesKV(allowHeader, allowedMethods)
	}
	ctx.SetConnectionClose()
	f.rt.metrics.none.count(code)
	f.rt.headRejects[why].Inc()
	f.rt.logUnparsed(ctx, code)
}

var (
	allowHeader    = []byte("Allow")
	allowedMethods = []byte("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
)

// parseHead checks the request head h under the strict rules and fills
// x's request view: its headers (every header line, in order) and, for an
// absolute-form target, its host and uri. x.req.URI, Host and Proto must
// already hold h's values.
func parseHead(h *fasthttp.RequestHeader, x *exchange, maxCount int) strict.Reject {
	r := &x.req
	hd := strict.Head{URI: r.URI, Proto: r.Proto, Host: r.Host, Fields: r.Headers, Scratch: x.scratch}
	why := strict.CheckHead(h.Method(), h.RawHeaders(), &hd, maxCount)
	r.URI, r.Host, r.Headers, x.scratch = hd.URI, hd.Host, hd.Fields, hd.Scratch
	return why
}
