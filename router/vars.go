package router

import (
	"bytes"
	"net/netip"
	"strconv"

	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// hdr is one request header as received. Slices alias the front's buffers.
type hdr struct{ k, v []byte }

// request is the protocol-neutral view of a client request that the
// forwarding core needs. Every front (fasthttp for HTTP/1.1, net/http for h2)
// fills one; nothing in it may be retained after the request ends.
type request struct {
	method, uri, proto []byte
	host               []byte // routing host, as received (may carry :port)
	scheme             string // "http" or "https"
	remote             netip.AddrPort
	serverPort         []byte
	// bodyLen is the body size sent as CONTENT_LENGTH: >0 when known, 0 for
	// no body.
	bodyLen     int64
	contentType []byte
	headers     []hdr
	// trusted reports whether the peer may set X-Forwarded-*.
	trusted bool
	// clientDN is the subject of a verified TLS client certificate.
	clientDN []byte
	// target holds a request target the front had to rewrite (strict.go:
	// "http://h?q" becomes "/?q"); uri may point into it.
	target []byte
}

// reset clears r for reuse, keeping the headers' and target's capacity.
func (r *request) reset() {
	h, tg := r.headers[:0], r.target[:0]
	*r = request{headers: h, target: tg}
}

// appendVars encodes r as a complete uwsgi packet header + vars block into
// dst, with modifiers m1/m2, and returns the extended slice. It fails with
// errVarsTooLarge when the block would not fit the u16 size. It allocates
// nothing when dst has room.
//
// Client input never produces a var outside HTTP_*: headers are always
// prefixed, CONTENT_TYPE/CONTENT_LENGTH come from validated values, and header
// names containing '_' are dropped so "X_Forwarded_For" cannot pose as
// "X-Forwarded-For" (both would map to HTTP_X_FORWARDED_FOR).
func appendVars(dst []byte, r *request, m1, m2 uint8) ([]byte, error) {
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = uwsgi.AppendVar(dst, sREQUEST_METHOD, r.method)
	dst = uwsgi.AppendVar(dst, sREQUEST_URI, r.uri)
	path, query := splitURI(r.uri)
	dst = appendPathInfo(dst, path)
	dst = uwsgi.AppendVar(dst, sQUERY_STRING, query)
	dst = uwsgi.AppendVar(dst, sSERVER_PROTOCOL, r.proto)
	dst = uwsgi.AppendVar(dst, sSCRIPT_NAME, nil)
	dst = uwsgi.AppendVar(dst, sSERVER_NAME, serverName(r.host))
	dst = uwsgi.AppendVar(dst, sSERVER_PORT, r.serverPort)
	dst = appendAddrVar(dst, sREMOTE_ADDR, r.remote.Addr())
	dst = uwsgi.AppendVarUint(dst, "REMOTE_PORT", uint64(r.remote.Port()))
	dst = uwsgi.AppendVarString(dst, "REQUEST_SCHEME", r.scheme)
	if r.scheme == "https" {
		dst = uwsgi.AppendVarString(dst, "HTTPS", "on")
		if len(r.clientDN) > 0 {
			dst = uwsgi.AppendVar(dst, sHTTPS_DN, r.clientDN)
		}
	}
	if r.bodyLen > 0 {
		dst = uwsgi.AppendVarUint(dst, "CONTENT_LENGTH", uint64(r.bodyLen))
	}
	if len(r.contentType) > 0 {
		dst = uwsgi.AppendVar(dst, sCONTENT_TYPE, r.contentType)
	}

	var xff []byte // the client's X-Forwarded-For, if trusted
	var xfp []byte
	for i := range r.headers {
		h := &r.headers[i]
		switch headerClass(h.k) {
		case hcSkip:
			continue
		case hcXFF:
			if r.trusted && xff == nil {
				xff = h.v
			}
			continue
		case hcXFP:
			if r.trusted && xfp == nil {
				xfp = h.v
			}
			continue
		}
		if seenBefore(r.headers, i) {
			continue // folded into the first occurrence
		}
		dst = appendHeaderVar(dst, r.headers, i)
	}

	// X-Forwarded-For: the trusted peer's list plus the peer itself.
	kStart := len(dst)
	dst = append(dst, 0, 0)
	dst = append(dst, "HTTP_X_FORWARDED_FOR"...)
	putU16(dst[kStart:], len("HTTP_X_FORWARDED_FOR"))
	vStart := len(dst)
	dst = append(dst, 0, 0)
	dst = appendForwardedFor(dst, xff, r.remote.Addr())
	if len(dst)-vStart-2 > 0xffff {
		return dst[:start], errVarsTooLarge
	}
	putU16(dst[vStart:], len(dst)-vStart-2)
	if len(xfp) > 0 {
		dst = uwsgi.AppendVar(dst, sHTTP_X_FORWARDED_PROTO, xfp)
	} else {
		dst = uwsgi.AppendVarString(dst, "HTTP_X_FORWARDED_PROTO", r.scheme)
	}

	size := len(dst) - start - uwsgi.HeaderLen
	if size > uwsgi.MaxVarsSize {
		return dst[:start], errVarsTooLarge
	}
	uwsgi.PutHeader(dst[start:], uwsgi.Header{Modifier1: m1, Size: uint16(size), Modifier2: m2})
	return dst, nil
}

// appendForwardedFor appends the X-Forwarded-For value the node gets: the
// trusted peer's list (xff, nil when untrusted or absent), then the peer.
func appendForwardedFor(dst, xff []byte, peer netip.Addr) []byte {
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

const (
	hcPass = iota
	hcSkip // sent otherwise (CONTENT_*), hop-by-hop, or unsafe
	hcXFF
	hcXFP
)

// headerClass decides what happens to a header before it becomes a var.
func headerClass(k []byte) int {
	if bytes.IndexByte(k, '_') >= 0 {
		return hcSkip
	}
	switch len(k) {
	case 5: // "Proxy": HTTP_PROXY would set the app's outbound proxy (httpoxy).
		if ascii.EqualFold(k, "proxy") {
			return hcSkip
		}
	case 12:
		if ascii.EqualFold(k, "content-type") {
			return hcSkip
		}
	case 14:
		if ascii.EqualFold(k, "content-length") {
			return hcSkip
		}
	case 15:
		if ascii.EqualFold(k, "x-forwarded-for") {
			return hcXFF
		}
	case 17:
		if ascii.EqualFold(k, "x-forwarded-proto") {
			return hcXFP
		}
		if ascii.EqualFold(k, "transfer-encoding") { // the router de-chunks
			return hcSkip
		}
	}
	return hcPass
}

func seenBefore(hs []hdr, i int) bool {
	for j := 0; j < i; j++ {
		if ascii.EqualFoldBytes(hs[j].k, hs[i].k) {
			return true
		}
	}
	return false
}

// appendHeaderVar emits HTTP_<NAME> for hs[i], joining the values of every
// later header with the same name with ", " (as nginx does). O(n²) in the
// header count, which the front bounds.
func appendHeaderVar(dst []byte, hs []hdr, i int) []byte {
	k := hs[i].k
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
	dst = append(dst, hs[i].v...)
	for j := i + 1; j < len(hs); j++ {
		if ascii.EqualFoldBytes(hs[j].k, k) {
			dst = append(dst, ", "...)
			dst = append(dst, hs[j].v...)
		}
	}
	n := len(dst) - vStart - 2
	if n > 0xffff {
		n = 0xffff // the block-size check in appendVars rejects the request anyway
	}
	putU16(dst[vStart:], n)
	return dst
}

// splitURI splits a request target into its path and query. For the
// absolute form ("http://host/p?q") the scheme and authority are dropped.
func splitURI(uri []byte) (path, query []byte) {
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
	dst = uwsgi.AppendVar(dst, sPATH_INFO, nil)
	vStart := len(dst)
	dst = appendDecodedPath(dst, path)
	putU16(dst[vStart-2:], min(len(dst)-vStart, 0xffff))
	return dst
}

// appendDecodedPath appends path percent-decoded with dot segments
// resolved: PATH_INFO's value, and what mount points are matched against.
func appendDecodedPath(dst, path []byte) []byte {
	vStart := len(dst)
	for i := 0; i < len(path); i++ {
		c := path[i]
		if c == '%' && i+2 < len(path) {
			if h, ok := unhex(path[i+1]); ok {
				if l, ok := unhex(path[i+2]); ok {
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

func unhex(c byte) (byte, bool) {
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

// serverName is the host without its port, as SERVER_NAME.
func serverName(host []byte) []byte {
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
	dst = uwsgi.AppendVar(dst, key, nil)
	vStart := len(dst)
	dst = a.Unmap().AppendTo(dst)
	putU16(dst[kStart+2+len(key):], len(dst)-vStart)
	return dst
}

// validHost reports whether a Host header value is acceptable: 1-255 bytes
// of reg-name, IPv4 or [IPv6] characters with an optional numeric port.
func validHost(h []byte) bool {
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
