package uwsgi

import (
	"bytes"
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

// The request vars (the CGI/WSGI environ) a router sends a node, as nginx's
// uwsgi_params and uWSGI's http router (plugins/http/http.c
// http_headers_parse) send them, and the request view they are made from.

// Field is one request header as received; slices alias the front's
// buffers. It is an alias of an unnamed struct, the same as
// internal/strict's Field, so that one []Field is what the strict checks
// fill and what AppendVars reads, and neither package imports the other.
type Field = struct{ Name, Value []byte }

// Request is the protocol-neutral view of a client request that the vars
// are made from (the router's fronts fill one per request; its HTTP encoder
// reads it too). Nothing in it may be retained after the request ends.
type Request struct {
	Method, URI, Proto []byte
	Host               []byte // routing host, as received (may carry :port)
	Scheme             string // "http" or "https"
	Remote             netip.AddrPort
	ServerPort         []byte
	// BodyLen is the body size sent as CONTENT_LENGTH: >0 when known, 0 for
	// no body.
	BodyLen     int64
	ContentType []byte
	Headers     []Field
	// Trusted reports whether the peer may set X-Forwarded-*.
	Trusted bool
	// ClientDN is the subject of a verified TLS client certificate.
	ClientDN []byte
}

// Reset clears r for reuse, keeping the Headers slice's capacity.
func (r *Request) Reset() {
	h := r.Headers[:0]
	*r = Request{Headers: h}
}

// AppendVars encodes r as a complete uwsgi packet header + vars block into
// dst, with modifiers m1/m2, and returns the extended slice. It fails with
// ErrTooLarge (and dst as it was) when the block would not fit the u16
// size. It allocates
// nothing when dst has room.
//
// Client input never produces a var outside HTTP_*: headers are always
// prefixed, CONTENT_TYPE/CONTENT_LENGTH come from validated values, and header
// names containing '_' are dropped so "X_Forwarded_For" cannot pose as
// "X-Forwarded-For" (both would map to HTTP_X_FORWARDED_FOR).
func AppendVars(dst []byte, r *Request, m1, m2 uint8) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = AppendVar(dst, sREQUEST_METHOD, r.Method)
	dst = AppendVar(dst, sREQUEST_URI, r.URI)
	path, query := SplitURI(r.URI)
	dst = appendPathInfo(dst, path)
	dst = AppendVar(dst, sQUERY_STRING, query)
	dst = AppendVar(dst, sSERVER_PROTOCOL, r.Proto)
	dst = AppendVar(dst, sSCRIPT_NAME, nil)
	dst = AppendVar(dst, sSERVER_NAME, ServerName(r.Host))
	dst = AppendVar(dst, sSERVER_PORT, r.ServerPort)
	dst = appendAddrVar(dst, sREMOTE_ADDR, r.Remote.Addr())
	dst = AppendVarUint(dst, "REMOTE_PORT", uint64(r.Remote.Port()))
	dst = AppendVarString(dst, "REQUEST_SCHEME", r.Scheme)
	if r.Scheme == "https" {
		dst = AppendVarString(dst, "HTTPS", "on")
		if len(r.ClientDN) > 0 {
			dst = AppendVar(dst, sHTTPS_DN, r.ClientDN)
		}
	}
	if r.BodyLen > 0 {
		dst = AppendVarUint(dst, "CONTENT_LENGTH", uint64(r.BodyLen))
	}
	if len(r.ContentType) > 0 {
		dst = AppendVar(dst, sCONTENT_TYPE, r.ContentType)
	}

	var xff []byte // the client's X-Forwarded-For, if trusted
	var xfp []byte
	for i := range r.Headers {
		h := &r.Headers[i]
		switch ClassOf(h.Name) {
		case ClassSkip:
			continue
		case ClassXFF:
			if r.Trusted && xff == nil {
				xff = h.Value
			}
			continue
		case ClassXFP:
			if r.Trusted && xfp == nil {
				xfp = h.Value
			}
			continue
		}
		if seenBefore(r.Headers, i) {
			continue // folded into the first occurrence
		}
		dst = appendHeaderVar(dst, r.Headers, i)
	}

	// X-Forwarded-For: the trusted peer's list plus the peer itself.
	kStart := len(dst)
	dst = append(dst, 0, 0)
	dst = append(dst, "HTTP_X_FORWARDED_FOR"...)
	putU16(dst[kStart:], len("HTTP_X_FORWARDED_FOR"))
	vStart := len(dst)
	dst = append(dst, 0, 0)
	dst = AppendForwardedFor(dst, xff, r.Remote.Addr())
	if len(dst)-vStart-2 > 0xffff {
		return dst[:start], ErrTooLarge
	}
	putU16(dst[vStart:], len(dst)-vStart-2)
	if len(xfp) > 0 {
		dst = AppendVar(dst, sHTTP_X_FORWARDED_PROTO, xfp)
	} else {
		dst = AppendVarString(dst, "HTTP_X_FORWARDED_PROTO", r.Scheme)
	}

	size := len(dst) - start - HeaderLen
	if size > MaxVarsSize {
		return dst[:start], ErrTooLarge
	}
	PutHeader(dst[start:], Header{Modifier1: m1, Size: uint16(size), Modifier2: m2})
	return dst, nil
}

// AppendForwardedFor appends the X-Forwarded-For value the node gets: the
// trusted peer's list (xff, nil when untrusted or absent), then the peer.
func AppendForwardedFor(dst, xff []byte, peer netip.Addr) []byte {
	if len(xff) > 0 {
		dst = append(dst, xff...)
		dst = append(dst, ", "...)
	}
	return peer.Unmap().AppendTo(dst)
}

// Pre-converted keys: AppendVar takes []byte, and converting a constant
// string at each call would be free too, but named slices read better.
var (
	sREQUEST_METHOD         = []byte("REQUEST_METHOD")
	sREQUEST_URI            = []byte("REQUEST_URI")
	sPATH_INFO              = []byte("PATH_INFO")
	sQUERY_STRING           = []byte("QUERY_STRING")
	sSERVER_PROTOCOL        = []byte("SERVER_PROTOCOL")
	sSCRIPT_NAME            = []byte("SCRIPT_NAME")
	sSERVER_NAME            = []byte("SERVER_NAME")
	sSERVER_PORT            = []byte("SERVER_PORT")
	sREMOTE_ADDR            = []byte("REMOTE_ADDR")
	sCONTENT_TYPE           = []byte("CONTENT_TYPE")
	sHTTP_X_FORWARDED_PROTO = []byte("HTTP_X_FORWARDED_PROTO")
	sHTTPS_DN               = []byte("HTTPS_DN")
)

func putU16(b []byte, n int) { b[0], b[1] = byte(n), byte(n>>8) }

// Class is what happens to a request header on its way to a node (ClassOf):
// the vars encoder's rules, which the router's HTTP encoder shares.
type Class uint8

const (
	ClassPass Class = iota // sent as it is
	ClassSkip              // sent otherwise (CONTENT_*), hop-by-hop, or unsafe
	ClassXFF               // X-Forwarded-For: kept from a trusted peer, appended to
	ClassXFP               // X-Forwarded-Proto: kept from a trusted peer
)

// ClassOf decides what happens to a header k before it becomes a var.
func ClassOf(k []byte) Class {
	if bytes.IndexByte(k, '_') >= 0 {
		return ClassSkip
	}
	switch len(k) {
	case 5: // "Proxy": HTTP_PROXY would set the app's outbound proxy (httpoxy).
		if ascii.EqualFold(k, "proxy") {
			return ClassSkip
		}
	case 12:
		if ascii.EqualFold(k, "content-type") {
			return ClassSkip
		}
	case 14:
		if ascii.EqualFold(k, "content-length") {
			return ClassSkip
		}
	case 15:
		if ascii.EqualFold(k, "x-forwarded-for") {
			return ClassXFF
		}
	case 17:
		if ascii.EqualFold(k, "x-forwarded-proto") {
			return ClassXFP
		}
		if ascii.EqualFold(k, "transfer-encoding") { // the router de-chunks
			return ClassSkip
		}
	}
	return ClassPass
}

func seenBefore(hs []Field, i int) bool {
	for j := 0; j < i; j++ {
		if ascii.EqualFoldBytes(hs[j].Name, hs[i].Name) {
			return true
		}
	}
	return false
}

// appendHeaderVar emits HTTP_<NAME> for hs[i], joining the values of every
// later header with the same name with ", " (as nginx does). O(n²) in the
// header count, which the front bounds.
func appendHeaderVar(dst []byte, hs []Field, i int) []byte {
	k := hs[i].Name
	kStart := len(dst)
	dst = append(dst, 0, 0, 'H', 'T', 'T', 'P', '_')
	for _, c := range k {
		switch {
		case 'a' <= c && c <= 'z':
			c -= 'a' - 'A'
		case c == '-':
			c = '_'
		}
		dst = append(dst, c)
	}
	putU16(dst[kStart:], len(dst)-kStart-2)
	vStart := len(dst)
	dst = append(dst, 0, 0)
	dst = append(dst, hs[i].Value...)
	for j := i + 1; j < len(hs); j++ {
		if ascii.EqualFoldBytes(hs[j].Name, k) {
			dst = append(dst, ", "...)
			dst = append(dst, hs[j].Value...)
		}
	}
	n := len(dst) - vStart - 2
	if n > 0xffff {
		n = 0xffff // the block-size check in AppendVars rejects the request anyway
	}
	putU16(dst[vStart:], n)
	return dst
}

// SplitURI splits a request target into its path and query. For the
// absolute form ("http://host/p?q") the scheme and authority are dropped.
func SplitURI(uri []byte) (path, query []byte) {
	if i := bytes.Index(uri, []byte("://")); i > 0 && bytes.IndexByte(uri[:i], '/') < 0 {
		rest := uri[i+3:]
		if j := bytes.IndexByte(rest, '/'); j >= 0 {
			uri = rest[j:]
		} else if j := bytes.IndexByte(rest, '?'); j >= 0 {
			uri = rest[j:]
		} else {
			uri = nil
		}
	}
	if i := bytes.IndexByte(uri, '#'); i >= 0 {
		uri = uri[:i]
	}
	if i := bytes.IndexByte(uri, '?'); i >= 0 {
		return uri[:i], uri[i+1:]
	}
	return uri, nil
}

// appendPathInfo appends the PATH_INFO var: the path percent-decoded, with
// "." and ".." segments resolved (as nginx and uWSGI do, so an app that maps
// PATH_INFO to files cannot be walked out of its root with "%2e%2e").
// Unlike uWSGI, an invalid escape stays as it was instead of becoming NUL.
func appendPathInfo(dst, path []byte) []byte {
	dst = AppendVar(dst, sPATH_INFO, nil)
	vStart := len(dst)
	dst = AppendDecodedPath(dst, path)
	putU16(dst[vStart-2:], min(len(dst)-vStart, 0xffff))
	return dst
}

// AppendDecodedPath appends path percent-decoded with dot segments
// resolved: PATH_INFO's value, and what mount points are matched against.
func AppendDecodedPath(dst, path []byte) []byte {
	vStart := len(dst)
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '%' && i+2 < len(path) {
			if h, ok := unhexDigit(path[i+1]); ok {
				if l, ok := unhexDigit(path[i+2]); ok {
					c = h<<4 | l
					i += 2
				}
			}
		}
		dst = append(dst, c)
	}
	if len(dst) > vStart && dst[vStart] == '/' {
		dst = dst[:vStart+len(removeDotSegments(dst[vStart:]))]
	}
	return dst
}

func unhexDigit(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// removeDotSegments resolves "." and ".." in an absolute path in place and
// returns the shortened slice. Empty segments ("//") are kept, as uWSGI does.
func removeDotSegments(p []byte) []byte {
	out := p[:0] // never longer than what has been read, so in-place is safe
	for i := 0; i < len(p); {
		j := i + 1
		for j < len(p) && p[j] != '/' {
			j++
		}
		seg := p[i+1 : j]
		last := j == len(p)
		switch {
		case len(seg) == 1 && seg[0] == '.':
			if last {
				out = append(out, '/')
			}
		case len(seg) == 2 && seg[0] == '.' && seg[1] == '.':
			if k := bytes.LastIndexByte(out, '/'); k >= 0 {
				out = out[:k]
			}
			if last {
				out = append(out, '/')
			}
		default:
			out = append(out, p[i:j]...)
		}
		i = j
	}
	if len(out) == 0 {
		out = append(out, '/')
	}
	return out
}

// ServerName is the host without its port, as SERVER_NAME.
func ServerName(host []byte) []byte {
	if len(host) > 0 && host[0] == '[' {
		if i := bytes.IndexByte(host, ']'); i > 0 {
			return host[1:i]
		}
		return host
	}
	if i := bytes.LastIndexByte(host, ':'); i >= 0 {
		return host[:i]
	}
	return host
}

func appendAddrVar(dst, key []byte, a netip.Addr) []byte {
	kStart := len(dst)
	dst = AppendVar(dst, key, nil)
	vStart := len(dst)
	dst = a.Unmap().AppendTo(dst)
	putU16(dst[kStart+2+len(key):], len(dst)-vStart)
	return dst
}
