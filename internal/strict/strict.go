// Package strict holds the request syntax checks a front applies before
// anything of a request is routed: strict HTTP/1.1 (RFC 9112) on a raw
// head (CheckHead), and the same rules on the decoded fields of HTTP/2 and
// HTTP/3 requests (CheckPseudo, FieldCheck). The router's HTTP/1.1 front
// runs CheckHead on fasthttp's raw head: fasthttp v1.74 already refuses
// much of what follows (bad header names and values, duplicate Host or
// Content-Length, transfer codings other than chunked, CTLs in the target),
// but the guarantees below hold whatever it lets through, and CheckHead adds
// what fasthttp accepts:
//
//   - request line: method a token; HTTP/1.0 or HTTP/1.1 only (else 505);
//     target origin-form ("/…"), absolute-form ("http[s]://authority/…"),
//     or "*" for OPTIONS; no CTL, no fragment; at most maxRequestLine
//     bytes (else 414); CONNECT is refused (405);
//   - header lines: no obs-fold (a line starting with SP/HTAB), a token
//     name ending at the colon (so no whitespace before the colon), values
//     without CTLs other than HTAB (so no NUL, no bare CR); at most
//     maxCount lines (else 431; the router's Config.MaxHeaderCount);
//   - framing: one Content-Length of 1..18 digits (no list, no sign);
//     Transfer-Encoding only on HTTP/1.1, chunked exactly once and last
//     (else 400; another coding before it: 501, the router does not decode
//     them); never both (400);
//   - Host: exactly one on HTTP/1.1 (at most one on 1.0), and for an
//     absolute-form target the target's authority wins over Host (RFC 9112
//     §3.2.2): it is the routing key, HTTP_HOST and SERVER_NAME, and
//     REQUEST_URI is the target's path and query.
//
// A front answers any of these with the status above (Reject.Status) and
// closes the connection; nothing of the request reaches a node. CheckHead
// allocates nothing.
//
// HTTP/2 (and, later, HTTP/3) carry the request line as pseudo-header
// fields and frame the body themselves; x/net/http2 decodes and checks the
// framing, field-name syntax (lower-case tokens), CTLs other than SP/HTAB
// in values, Host against :authority, :scheme, and a :path starting with
// "/" or "*". CheckPseudo and FieldCheck apply the rules above that it
// leaves out, on the decoded fields (RFC 9113 §8.2.1, §8.3.1; RFC 9114
// §4.2, §4.3.1 are the same): a token method, a target without SP, CTL or
// fragment, "*" only for OPTIONS, CONNECT refused, values without leading
// or trailing SP/HTAB, one decimal content-length, no connection-specific
// field. They are pure and allocation-free, on bytes, so any front can
// call them; the router's h2 front answers what they refuse on the stream
// (the connection's framing is intact) and counts it with the reasons
// above.
//
// Input is hostile; every check is fuzzed (FuzzCheckHead, FuzzCheckPseudo,
// FuzzFieldCheck). The package depends on the standard library and
// internal/ascii only.
package strict

import (
	"bytes"
	"strconv"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

// MaxRequestLine bounds the request line (method, target and version);
// longer is 414. nginx's default is 8 KiB per line; long query strings in
// the wild go past that, so twice as much.
const MaxRequestLine = 16 << 10

// Reject is why a check refused a request (None: it did not). Small
// integers: a front can index its counters of the reasons with them.
type Reject uint8

const (
	None          Reject = iota
	RequestLine          // method, target form, CTL or fragment in the target
	Version              // not HTTP/1.0 or HTTP/1.1
	TargetLong           // request line over MaxRequestLine
	Connect              // CONNECT: not a forward proxy
	ObsFold              // header line starting with whitespace
	HeaderName           // empty name, non-token byte, whitespace before the colon
	HeaderValue          // CTL (NUL, bare CR, ...) in a value
	HeaderCount          // more than maxCount lines
	ContentLength        // repeated, listed, signed or non-numeric Content-Length
	TransferEnc          // chunked not last or repeated, or TE on HTTP/1.0
	TECoding             // a coding other than chunked
	CLAndTE              // both Content-Length and Transfer-Encoding
	Host                 // missing (HTTP/1.1), repeated, or bad absolute-form authority
	ConnHeader           // HTTP/2, HTTP/3: a connection-specific field (RFC 9113 §8.2.2)
	NumRejects
)

// Names are the reasons' names (None's is empty), the labels of the
// router's fastrouter_http_rejected_total.
var Names = [NumRejects]string{"", "request_line", "version", "request_line_too_long", "connect",
	"obs_fold", "header_name", "header_value", "header_count", "content_length", "transfer_encoding",
	"transfer_coding", "content_length_and_transfer_encoding", "host", "connection_header"}

// Status is the HTTP status that answers a request refused for r.
func (r Reject) Status() int {
	switch r {
	case Version:
		return 505
	case TargetLong:
		return 414
	case Connect:
		return 405
	case HeaderCount:
		return 431
	case TECoding:
		return 501
	}
	return 400
}

var (
	hostKey = []byte("Host")
	slash   = []byte("/")
)

// Field is one header field as received; slices alias the head. It is an
// alias of an unnamed struct, the same as internal/uwsgi's Field, so that
// the list CheckHead fills is the one the vars encoder reads, and neither
// package imports the other.
type Field = struct{ Name, Value []byte }

// Head is what CheckHead reads of a request besides its method and raw
// header block, and completes.
type Head struct {
	// URI and Proto are the request line's target and version. For an
	// absolute-form target, CheckHead leaves URI its path and query ("/"
	// when empty, RFC 9112 §3.2.1).
	URI, Proto []byte
	// Host is the Host header's value as received; for an absolute-form
	// target CheckHead makes it the target's authority (RFC 9112 §3.2.2).
	Host []byte
	// Fields gets every header line, in order (Host's value replaced by an
	// absolute-form target's authority; one added for HTTP/1.0 without
	// Host), at most maxCount of them.
	Fields []Field
	// Scratch is the caller's buffer a rewritten target is appended to
	// (URI then points into it); slices into it stay valid.
	Scratch []byte
}

// CheckHead checks a request head under the rules above: the method, the
// raw header block (the lines after the request line, up to and including
// the blank line), and h's request line, which it completes.
func CheckHead(method, raw []byte, h *Head, maxCount int) Reject {
	authority, why := checkRequestLine(method, h)
	if why != None {
		return why
	}
	http11 := h.Proto[7] == '1'
	var fs fieldScan
	if why := fs.scan(raw, h, authority, http11, maxCount); why != None {
		return why
	}
	switch {
	case fs.hosts > 1 || (fs.hosts == 0 && http11):
		return Host
	case fs.te != nil && fs.cls > 0:
		return CLAndTE
	case fs.te != nil:
		if why := checkTransferEncoding(fs.te); why != None {
			return why
		}
	}
	if authority != nil {
		h.Host = authority
		if fs.hosts == 0 { // HTTP/1.0 with an absolute target: the app still gets HTTP_HOST
			if len(h.Fields) >= maxCount {
				return HeaderCount
			}
			h.Fields = append(h.Fields, Field{hostKey, authority})
		}
	}
	if http11 && len(h.Host) == 0 {
		return Host // "Host:" with an empty value: nothing to route on
	}
	return None
}

// checkRequestLine checks the request line (method, h.URI, h.Proto) and
// returns an absolute-form target's authority, h.URI then its path and
// query.
func checkRequestLine(method []byte, h *Head) (authority []byte, _ Reject) {
	if len(method)+len(h.URI)+len(h.Proto)+2 > MaxRequestLine {
		return nil, TargetLong
	}
	if len(method) == 0 || !ascii.IsToken(method) {
		return nil, RequestLine
	}
	if string(h.Proto) != "HTTP/1.1" && string(h.Proto) != "HTTP/1.0" {
		return nil, Version
	}
	if string(method) == "CONNECT" {
		return nil, Connect
	}
	switch uri := h.URI; {
	case len(uri) == 0:
		return nil, RequestLine
	case uri[0] == '/':
	case len(uri) == 1 && uri[0] == '*':
		if string(method) != "OPTIONS" {
			return nil, RequestLine
		}
	default:
		var why Reject
		if authority, h.URI, why = splitAbsolute(uri); why != None {
			return nil, why
		}
		if h.URI[0] == '?' {
			// "http://h?q": the path is empty, and origin-form needs
			// "/" (RFC 9112 §3.2.1); "?q" reached nodes as the target
			// (an http:// node refused it: 502).
			n := len(h.Scratch)
			h.Scratch = append(append(h.Scratch, '/'), h.URI...)
			h.URI = h.Scratch[n:len(h.Scratch):len(h.Scratch)]
		}
	}
	for _, c := range h.URI {
		if c <= ' ' || c == 0x7f || c == '#' {
			return nil, RequestLine
		}
	}
	return authority, None
}

// fieldScan is what CheckHead's header lines showed: how many Host and
// Content-Length lines, and the Transfer-Encoding value (more than one is
// refused).
type fieldScan struct {
	hosts, cls int
	te         []byte
}

// scan checks every header line of raw, up to the blank line, and appends
// it to h.Fields (Host's value replaced by authority when there is one).
func (fs *fieldScan) scan(raw []byte, h *Head, authority []byte, http11 bool, maxCount int) Reject {
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
			return ObsFold
		}
		c := bytes.IndexByte(line, ':')
		if c <= 0 || !ascii.IsToken(line[:c]) {
			return HeaderName
		}
		k, v := line[:c], ascii.TrimOWS(line[c+1:])
		for _, b := range v {
			if (b < ' ' && b != '\t') || b == 0x7f {
				return HeaderValue
			}
		}
		if len(h.Fields) >= maxCount {
			return HeaderCount
		}
		switch len(k) {
		case 4:
			if ascii.EqualFold(k, "host") {
				fs.hosts++
				if authority != nil {
					v = authority // HTTP_HOST names what is routed on
				}
			}
		case 14:
			if ascii.EqualFold(k, "content-length") {
				fs.cls++
				if fs.cls > 1 || !validContentLength(v) {
					return ContentLength
				}
			}
		case 17:
			if ascii.EqualFold(k, "transfer-encoding") {
				if fs.te != nil || !http11 {
					return TransferEnc
				}
				fs.te = v
			}
		}
		h.Fields = append(h.Fields, Field{k, v})
	}
	return None
}

// CheckPseudo checks the request line of an HTTP/2 or HTTP/3 request,
// given as its :method and :path pseudo-header values (for CONNECT, :path
// is absent: pass the :authority or nothing), under CheckHead's rules:
// method a token, CONNECT refused (405, RFC 9113 §8.5: the router is not a
// tunnel; an extended CONNECT, RFC 8441, is checked as the GET it becomes,
// router/extconnect.go), a target in
// origin-form or "*" for OPTIONS, without SP, CTL or "#", and the line it
// would make ("METHOD target HTTP/1.1") at most MaxRequestLine (414).
func CheckPseudo(method, path []byte) Reject {
	if len(method)+len(path)+len(" HTTP/1.1")+1 > MaxRequestLine {
		return TargetLong
	}
	if len(method) == 0 || !ascii.IsToken(method) {
		return RequestLine
	}
	if string(method) == "CONNECT" {
		return Connect
	}
	switch {
	case len(path) == 0:
		return RequestLine
	case path[0] == '/':
	case len(path) == 1 && path[0] == '*':
		if string(method) != "OPTIONS" {
			return RequestLine
		}
	default:
		return RequestLine // absolute-form has no place in :path
	}
	for _, c := range path {
		if c <= ' ' || c == 0x7f || c == '#' {
			return RequestLine
		}
	}
	return None
}

// FieldCheck applies CheckHead's header rules to the regular fields of one
// HTTP/2 or HTTP/3 request, a field at a time. The zero value is ready;
// use one per request. The decoder has already refused names that are not
// lower-case tokens (x/net/http2 then canonicalizes them, so names are
// compared case-insensitively here).
type FieldCheck struct {
	fields, contentLengths int
}

// Field checks one field: name a token; value without CTL but HTAB
// inside, and without leading or trailing SP/HTAB (RFC 9113 §8.2.1); at
// most maxCount fields (431); one content-length of 1 to 18 digits; none
// of the connection-specific fields (RFC 9113 §8.2.2), and te only as
// "trailers".
func (fc *FieldCheck) Field(name, value []byte, maxCount int) Reject {
	if fc.fields++; fc.fields > maxCount {
		return HeaderCount
	}
	if len(name) == 0 || !ascii.IsToken(name) {
		return HeaderName
	}
	if n := len(value); n > 0 && (value[0] == ' ' || value[0] == '\t' || value[n-1] == ' ' || value[n-1] == '\t') {
		return HeaderValue
	}
	for _, b := range value {
		if (b < ' ' && b != '\t') || b == 0x7f {
			return HeaderValue
		}
	}
	var conn bool // a connection-specific field
	switch len(name) {
	case 14:
		if ascii.EqualFold(name, "content-length") {
			if fc.contentLengths++; fc.contentLengths > 1 || !validContentLength(value) {
				return ContentLength
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
		return ConnHeader
	}
	return None
}

// splitAbsolute splits an absolute-form target "http[s]://authority[/path][?query]"
// into the authority and the rest (path and query; "/" when both are
// empty). Anything but an http or https URI is a bad request line; an empty
// authority, userinfo or an invalid host is a bad host.
func splitAbsolute(uri []byte) (authority, rest []byte, _ Reject) {
	i := bytes.Index(uri, []byte("://"))
	if i <= 0 || !(ascii.EqualFold(uri[:i], "http") || ascii.EqualFold(uri[:i], "https")) {
		return nil, nil, RequestLine
	}
	a := uri[i+3:]
	end := len(a)
	if j := bytes.IndexAny(a, "/?#"); j >= 0 {
		end = j
	}
	authority, rest = a[:end:end], a[end:]
	if len(rest) == 0 {
		rest = slash // "http://h": the path is "/" ("http://h?q": CheckHead adds it)
	}
	if bytes.IndexByte(authority, '@') >= 0 || !ValidHost(authority) {
		return nil, nil, Host
	}
	return authority, rest, None
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
func checkTransferEncoding(v []byte) Reject {
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
		return TransferEnc
	case other > 0:
		return TECoding
	}
	return None
}

// ValidHost reports whether a Host header value is acceptable: 1-255 bytes
// of reg-name, IPv4 or [IPv6] characters with an optional numeric port.
func ValidHost(h []byte) bool {
	if len(h) == 0 || len(h) > 255 {
		return false
	}
	for _, c := range h {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c == '.', c == '-', c == ':', c == '[', c == ']', c == '_':
		default:
			return false
		}
	}
	if i := bytes.LastIndexByte(h, ':'); i >= 0 && (h[0] != '[' || i > bytes.IndexByte(h, ']')) {
		if _, err := strconv.ParseUint(string(h[i+1:]), 10, 16); err != nil && i+1 < len(h) {
			return false
		}
	}
	return true
}
