package router

import (
	"bytes"

	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Strict HTTP/1.1 (RFC 9112). fasthttp v1.74 already refuses much of what
// follows (bad header names and values, duplicate Host or Content-Length,
// transfer codings other than chunked, CTLs in the target); parseHead
// checks it all again on the raw head, so that the guarantees below hold
// whatever fasthttp lets through, and adds what fasthttp accepts:
//
//   - request line: method a token; HTTP/1.0 or HTTP/1.1 only (else 505);
//     target origin-form ("/…"), absolute-form ("http[s]://authority/…"),
//     or "*" for OPTIONS; no CTL, no fragment; at most maxRequestLine
//     bytes (else 414); CONNECT is refused (405);
//   - header lines: no obs-fold (a line starting with SP/HTAB), a token
//     name ending at the colon (so no whitespace before the colon), values
//     without CTLs other than HTAB (so no NUL, no bare CR); at most
//     MaxHeaderCount lines (else 431);
//   - framing: one Content-Length of 1..18 digits (no list, no sign);
//     Transfer-Encoding only on HTTP/1.1, chunked exactly once and last
//     (else 400; another coding before it: 501, the router does not decode
//     them); never both (400);
//   - Host: exactly one on HTTP/1.1 (at most one on 1.0), and for an
//     absolute-form target the target's authority wins over Host (RFC 9112
//     §3.2.2): it is the routing key, HTTP_HOST and SERVER_NAME, and
//     REQUEST_URI is the target's path and query.
//
// Any of these answers the status above and closes the connection; nothing
// of the request reaches a node. parseHead allocates nothing.
//
// HTTP/2 (and, later, HTTP/3) carry the request line as pseudo-header
// fields and frame the body themselves; x/net/http2 decodes and checks the
// framing, field-name syntax (lower-case tokens), CTLs other than SP/HTAB
// in values, Host against :authority, :scheme, and a :path starting with
// "/" or "*". checkPseudo and fieldCheck apply the rules above that it
// leaves out, on the decoded fields (RFC 9113 §8.2.1, §8.3.1; RFC 9114
// §4.2, §4.3.1 are the same): a token method, a target without SP, CTL or
// fragment, "*" only for OPTIONS, CONNECT refused, values without leading
// or trailing SP/HTAB, one decimal content-length, no connection-specific
// field. They are pure and allocation-free, on bytes, so any front can
// call them; the h2 front answers what they refuse on the stream (the
// connection's framing is intact) and counts it with the reasons above.

// maxRequestLine bounds the request line (method, target and version);
// longer is 414. nginx's default is 8 KiB per line; long query strings in
// the wild go past that, so twice as much.
const maxRequestLine = 16 << 10

// headReject is why parseHead refused a request. It indexes the reasons of
// fastrouter_http_rejected_total.
type headReject uint8

const (
	rejNone          headReject = iota
	rejRequestLine              // method, target form, CTL or fragment in the target
	rejVersion                  // not HTTP/1.0 or HTTP/1.1
	rejTargetLong               // request line over maxRequestLine
	rejConnect                  // CONNECT: not a forward proxy
	rejObsFold                  // header line starting with whitespace
	rejHeaderName               // empty name, non-token byte, whitespace before the colon
	rejHeaderValue              // CTL (NUL, bare CR, ...) in a value
	rejHeaderCount              // more than MaxHeaderCount lines
	rejContentLength            // repeated, listed, signed or non-numeric Content-Length
	rejTransferEnc              // chunked not last or repeated, or TE on HTTP/1.0
	rejTECoding                 // a coding other than chunked
	rejCLAndTE                  // both Content-Length and Transfer-Encoding
	rejHost                     // missing (HTTP/1.1), repeated, or bad absolute-form authority
	rejConnHeader               // HTTP/2, HTTP/3: a connection-specific field (RFC 9113 §8.2.2)
	numHeadRejects
)

var headRejectNames = [numHeadRejects]string{"", "request_line", "version", "request_line_too_long", "connect",
	"obs_fold", "header_name", "header_value", "header_count", "content_length", "transfer_encoding",
	"transfer_coding", "content_length_and_transfer_encoding", "host", "connection_header"}

// status is the answer to a rejected head.
func (r headReject) status() int {
	switch r {
	case rejVersion:
		return 505
	case rejTargetLong:
		return 414
	case rejConnect:
		return 405
	case rejHeaderCount:
		return 431
	case rejTECoding:
		return 501
	}
	return 400
}

// strictBodies are the error pages for the statuses only parseHead uses
// (errorBodies has the rest).
var strictBodies = map[int][]byte{
	405: []byte("405 Method Not Allowed\n"),
	414: []byte("414 URI Too Long\n"),
	501: []byte("501 Not Implemented: transfer coding\n"),
	505: []byte("505 HTTP Version Not Supported\n"),
}

// newSecurityMetrics registers fastrouter_http_rejected_total{reason}
// (children resolved here) and
// fastrouter_client_connections_refused_total{listener} (--max-conns).
func newSecurityMetrics(reg prometheus.Registerer) (rejects [numHeadRejects]prometheus.Counter, refused *prometheus.CounterVec, err error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_http_rejected_total",
		Help: "Requests refused by the strict request-line and header checks before routing (RFC 9112 for HTTP/1.1, RFC 9113 §8 for HTTP/2), by reason.",
	}, []string{"reason"})
	refused = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_client_connections_refused_total",
		Help: "Client connections refused because the listener had --max-conns open, by listener.",
	}, []string{"listener"})
	for _, c := range []prometheus.Collector{vec, refused} {
		if err := reg.Register(c); err != nil {
			return rejects, nil, err
		}
	}
	for r := rejNone + 1; r < numHeadRejects; r++ {
		rejects[r] = vec.WithLabelValues(headRejectNames[r])
	}
	return rejects, refused, nil
}

// rejectHead answers a refused head and closes the connection.
func (f *h1Front) rejectHead(ctx *fasthttp.RequestCtx, why headReject) {
	code := why.status()
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

// parseHead checks the request head h under the rules above and fills r's
// headers (every header line, in order) and, for an absolute-form target,
// its host and uri. r.uri, r.host and r.proto must already hold h's values.
func parseHead(h *fasthttp.RequestHeader, r *request, maxCount int) headReject {
	return checkHead(h.Method(), h.RawHeaders(), r, maxCount)
}

// checkHead is parseHead on the method and the raw header block (the lines
// after the request line, up to and including the blank line).
func checkHead(method, raw []byte, r *request, maxCount int) headReject {
	if len(method)+len(r.uri)+len(r.proto)+2 > maxRequestLine {
		return rejTargetLong
	}
	if len(method) == 0 || !ascii.IsToken(method) {
		return rejRequestLine
	}
	if string(r.proto) != "HTTP/1.1" && string(r.proto) != "HTTP/1.0" {
		return rejVersion
	}
	http11 := r.proto[7] == '1'
	if string(method) == "CONNECT" {
		return rejConnect
	}
	var authority []byte // absolute-form target's authority
	switch uri := r.uri; {
	case len(uri) == 0:
		return rejRequestLine
	case uri[0] == '/':
	case len(uri) == 1 && uri[0] == '*':
		if string(method) != "OPTIONS" {
			return rejRequestLine
		}
	default:
		var why headReject
		if authority, r.uri, why = splitAbsolute(uri); why != rejNone {
			return why
		}
		if r.uri[0] == '?' {
			// "http://h?q": the path is empty, and origin-form needs
			// "/" (RFC 9112 §3.2.1); "?q" reached nodes as the target
			// (an http:// node refused it: 502).
			r.target = append(append(r.target[:0], '/'), r.uri...)
			r.uri = r.target
		}
	}
	for _, c := range r.uri {
		if c <= ' ' || c == 0x7f || c == '#' {
			return rejRequestLine
		}
	}

	var hosts, cls int
	var te []byte // the Transfer-Encoding line; more than one is refused
	for len(raw) > 0 {
		var line []byte
		if i := bytes.IndexByte(raw, '\n'); i >= 0 {
			line, raw = raw[:i], raw[i+1:]
		} else {
			line, raw = raw, nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line = line[:n-1]
		}
		if len(line) == 0 {
			break // the blank line that ends the head
		}
		if line[0] == ' ' || line[0] == '\t' {
			return rejObsFold
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 || !ascii.IsToken(line[:c]) {
			return rejHeaderName
		}
		k, v := line[:c], ascii.TrimOWS(line[c+1:])
		for _, b := range v {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return rejHeaderValue
			}
		}
		if len(r.headers) >= maxCount {
			return rejHeaderCount
		}
		switch len(k) {
		case 4:
			if ascii.EqualFold(k, "host") {
				hosts++
				if authority != nil {
					v = authority // HTTP_HOST names what is routed on
				}
			}
		case 14:
			if ascii.EqualFold(k, "content-length") {
				cls++
				if cls > 1 || !validContentLength(v) {
					return rejContentLength
				}
			}
		case 17:
			if ascii.EqualFold(k, "transfer-encoding") {
				if te != nil || !http11 {
					return rejTransferEnc
				}
				te = v
			}
		}
		r.headers = append(r.headers, hdr{k, v})
	}
	switch {
	case hosts > 1 || (hosts == 0 && http11):
		return rejHost
	case te != nil && cls > 0:
		return rejCLAndTE
	case te != nil:
		if why := checkTransferEncoding(te); why != rejNone {
			return why
		}
	}
	if authority != nil {
		r.host = authority
		if hosts == 0 { // HTTP/1.0 with an absolute target: the app still gets HTTP_HOST
			if len(r.headers) >= maxCount {
				return rejHeaderCount
			}
			r.headers = append(r.headers, hdr{hostKey, authority})
		}
	}
	if http11 && len(r.host) == 0 {
		return rejHost // "Host:" with an empty value: nothing to route on
	}
	return rejNone
}

// checkPseudo checks the request line of an HTTP/2 or HTTP/3 request,
// given as its :method and :path pseudo-header values (for CONNECT, :path
// is absent: pass the :authority or nothing), under checkHead's rules:
// method a token, CONNECT refused (405, RFC 9113 §8.5: the router is not a
// tunnel, and extended CONNECT, RFC 8441, is not supported), a target in
// origin-form or "*" for OPTIONS, without SP, CTL or "#", and the line it
// would make ("METHOD target HTTP/1.1") at most maxRequestLine (414).
func checkPseudo(method, path []byte) headReject {
	if len(method)+len(path)+len(" HTTP/1.1")+1 > maxRequestLine {
		return rejTargetLong
	}
	if len(method) == 0 || !ascii.IsToken(method) {
		return rejRequestLine
	}
	if string(method) == "CONNECT" {
		return rejConnect
	}
	switch {
	case len(path) == 0:
		return rejRequestLine
	case path[0] == '/':
	case len(path) == 1 && path[0] == '*':
		if string(method) != "OPTIONS" {
			return rejRequestLine
		}
	default:
		return rejRequestLine // absolute-form has no place in :path
	}
	for _, c := range path {
		if c <= ' ' || c == 0x7f || c == '#' {
			return rejRequestLine
		}
	}
	return rejNone
}

// fieldCheck applies checkHead's header rules to the regular fields of one
// HTTP/2 or HTTP/3 request, a field at a time. The zero value is ready;
// use one per request. The decoder has already refused names that are not
// lower-case tokens (x/net/http2 then canonicalizes them, so names are
// compared case-insensitively here).
type fieldCheck struct {
	fields, contentLengths int
}

// field checks one field: name a token; value without CTL but HTAB
// inside, and without leading or trailing SP/HTAB (RFC 9113 §8.2.1); at
// most maxCount fields (431); one content-length of 1 to 18 digits; none
// of the connection-specific fields (RFC 9113 §8.2.2), and te only as
// "trailers".
func (fc *fieldCheck) field(name, value []byte, maxCount int) headReject {
	if fc.fields++; fc.fields > maxCount {
		return rejHeaderCount
	}
	if len(name) == 0 || !ascii.IsToken(name) {
		return rejHeaderName
	}
	if n := len(value); n > 0 && (value[0] == ' ' || value[0] == '\t' || value[n-1] == ' ' || value[n-1] == '\t') {
		return rejHeaderValue
	}
	for _, b := range value {
		if (b < ' ' && b != '\t') || b == 0x7f {
			return rejHeaderValue
		}
	}
	var conn bool // a connection-specific field
	switch len(name) {
	case 14:
		if ascii.EqualFold(name, "content-length") {
			if fc.contentLengths++; fc.contentLengths > 1 || !validContentLength(value) {
				return rejContentLength
			}
		}
	case 2:
		conn = ascii.EqualFold(name, "te") && !ascii.EqualFold(value, "trailers")
	case 7:
		conn = ascii.EqualFold(name, "upgrade")
	case 10:
		conn = ascii.EqualFold(name, "connection") || ascii.EqualFold(name, "keep-alive")
	case 16:
		conn = ascii.EqualFold(name, "proxy-connection")
	case 17:
		conn = ascii.EqualFold(name, "transfer-encoding")
	}
	if conn {
		return rejConnHeader
	}
	return rejNone
}

// splitAbsolute splits an absolute-form target "http[s]://authority[/path][?query]"
// into the authority and the rest (path and query; "/" when both are
// empty). Anything but an http or https URI is a bad request line; an empty
// authority, userinfo or an invalid host is a bad host.
func splitAbsolute(uri []byte) (authority, rest []byte, _ headReject) {
	i := bytes.Index(uri, []byte("://"))
	if i <= 0 || !(ascii.EqualFold(uri[:i], "http") || ascii.EqualFold(uri[:i], "https")) {
		return nil, nil, rejRequestLine
	}
	a := uri[i+3:]
	end := len(a)
	if j := bytes.IndexAny(a, "/?#"); j >= 0 {
		end = j
	}
	authority, rest = a[:end:end], a[end:]
	if len(rest) == 0 {
		rest = slash // "http://h": the path is "/" ("http://h?q": checkHead adds it)
	}
	if bytes.IndexByte(authority, '@') >= 0 || !validHost(authority) {
		return nil, nil, rejHost
	}
	return authority, rest, rejNone
}

// validContentLength: 1 to 18 decimal digits (fits an int64 with room),
// nothing else: no sign, no list, no spaces inside.
func validContentLength(v []byte) bool {
	if len(v) == 0 || len(v) > 18 {
		return false
	}
	for _, c := range v {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// checkTransferEncoding accepts a list whose last coding is "chunked" and
// that holds it once; any other coding before it is one the router cannot
// decode (501). Empty list elements are ignored (RFC 9110 §5.6.1).
func checkTransferEncoding(v []byte) headReject {
	chunked, other, last := 0, 0, false
	for len(v) > 0 {
		var el []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			el, v = v[:i], v[i+1:]
		} else {
			el, v = v, nil
		}
		el = ascii.TrimOWS(el)
		if len(el) == 0 {
			continue
		}
		last = ascii.EqualFold(el, "chunked")
		if last {
			chunked++
		} else {
			other++
		}
	}
	switch {
	case !last || chunked != 1:
		return rejTransferEnc
	case other > 0:
		return rejTECoding
	}
	return rejNone
}
