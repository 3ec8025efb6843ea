package h2srv

import (
	"context"
	"io"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// processHeaders handles a HEADERS frame (with its CONTINUATIONs): a new
// stream, or the trailers of an open one (RFC 9113 §8.1). The Framer has
// checked the field names (lowercase tokens), values, and the order and
// repetition of the pseudo-header fields.
func (c *conn) processHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 != 1 {
		return connError{http2.ErrCodeProtocol, "conn_headers_even"}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		switch {
		case st.resetRecv:
			return connError{http2.ErrCodeStreamClosed, "conn_headers_after_reset"}
		case st.aborted:
			return nil
		case st.remoteDone:
			c.resetLocked(id, http2.ErrCodeStreamClosed, "stream_headers_half_closed")
			return nil
		case !f.StreamEnded():
			return connError{http2.ErrCodeProtocol, "conn_trailers_no_end_stream"}
		case len(f.PseudoFields()) > 0 || !validTrailers(f.RegularFields()) || !c.keepTrailersLocked(st, f.RegularFields()):
			c.resetLocked(id, http2.ErrCodeProtocol, "stream_bad_trailers")
			return nil
		}
		c.endRemoteLocked(st)
		return nil
	}
	if id <= c.maxID {
		if c.closedByClientLocked(id) {
			return connError{http2.ErrCodeStreamClosed, "conn_headers_after_reset"}
		}
		return connError{http2.ErrCodeProtocol, "conn_stream_id_down"}
	}
	c.maxID = id
	if c.goingAway {
		return nil // above the GOAWAY's last stream: ignored (RFC 9113 §6.8)
	}
	if f.HasPriority() && f.Priority.StreamDep == id {
		c.resetLocked(id, http2.ErrCodeProtocol, "stream_priority_self")
		return nil
	}
	if uint32(len(c.streams)) >= c.srv.cfg.MaxConcurrentStreams {
		c.resetLocked(id, http2.ErrCodeRefusedStream, "stream_over_max_streams")
		return nil
	}
	st := c.srv.getStream()
	st.c, st.id = c, id
	if name := c.readRequestLocked(st, f); name != "" {
		c.srv.putStream(st)
		c.resetLocked(id, http2.ErrCodeProtocol, name)
		return nil
	}
	st.sendWindow = int64(c.peerWindow)
	st.recvAvail = int64(c.srv.cfg.StreamWindow)
	st.ctx, st.cancel = context.WithCancel(c.ctx)
	st.req = st.base.WithContext(st.ctx)
	if f.StreamEnded() {
		st.remoteDone, st.rerr = true, io.EOF
	}
	c.streams[id] = st
	st.tooLarge = f.Truncated
	c.wg.Add(1) // done in finish
	c.srv.workers.run(st)
	return nil
}

// keepTrailersLocked keeps the trailers of st for its handler, which
// finds those the request declared (in its Trailer field) in req.Trailer
// once its body Read returns io.EOF (requestBody.Read): as net/http's
// HTTP/2 server does, the handler's goroutine copies them, so the reader
// never touches the map the handler has. Without a declaration they are
// dropped unchecked; with one, a field that may not be a trailer
// (httpguts.ValidTrailerHeader) makes them malformed: false.
func (c *conn) keepTrailersLocked(st *stream, fs []hpack.HeaderField) bool {
	if st.base.Trailer == nil {
		return true
	}
	for _, hf := range fs {
		k := c.canonical(hf.Name)
		if !httpguts.ValidTrailerHeader(k) {
			return false
		}
		if st.trailer == nil {
			st.trailer = make(http.Header)
		}
		st.trailer[k] = append(st.trailer[k], hf.Value)
	}
	return true
}

// declaredTrailers is req.Trailer as net/http makes it from the Trailer
// field's values: the names declared, canonical, without values; nil
// when none (Transfer-Encoding, Trailer and Content-Length do not count).
// The Trailer field stays in the header map.
func declaredTrailers(vs []string) http.Header {
	var tr http.Header
	for _, v := range vs {
		for k := range strings.SplitSeq(v, ",") {
			switch k = textproto.CanonicalMIMEHeaderKey(textproto.TrimString(k)); k {
			case "Transfer-Encoding", "Trailer", "Content-Length", "":
				continue
			}
			if tr == nil {
				tr = make(http.Header)
			}
			tr[k] = nil
		}
	}
	return tr
}

// validTrailers: no connection-specific fields in the trailers either.
func validTrailers(fs []hpack.HeaderField) bool {
	for _, hf := range fs {
		if connectionSpecific(hf.Name, hf.Value) {
			return false
		}
	}
	return true
}

// connectionSpecific reports a field HTTP/2 forbids (RFC 9113 §8.2.2):
// the hop-by-hop ones, and TE other than "trailers".
func connectionSpecific(name, value string) bool {
	switch name {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	case "te":
		return value != "trailers"
	}
	return false
}

// readRequestLocked fills st's request from the header block; it returns
// the CountError name of the rule the block breaks (the stream is then
// malformed, RFC 9113 §8.1.1), or "".
//
// The request is as net/http's HTTP/2 server makes it: Host from
// :authority (else the Host field, which leaves the header map), Cookie
// fields joined (RFC 9113 §8.2.3), ContentLength from content-length or
// -1. RequestURI is :path, or :authority for a CONNECT. An extended
// CONNECT's :protocol (RFC 8441 §4) stays in the header map under
// ":protocol" (x/net/http2's server does the same). URL is :path parsed
// (setURL), with Scheme and Host from :scheme and :authority. Trailer is
// what the Trailer field declares.
func (c *conn) readRequestLocked(st *stream, f *http2.MetaHeadersFrame) string {
	var method, path, scheme, authority, protocol, host string
	h := st.header
	cookies, clFields := 0, 0
	cl := int64(-1)
	for _, hf := range f.Fields {
		if hf.IsPseudo() {
			switch hf.Name {
			case ":method":
				method = hf.Value
			case ":path":
				path = hf.Value
			case ":scheme":
				scheme = hf.Value
			case ":authority":
				authority = hf.Value
			case ":protocol":
				protocol = hf.Value
				st.addValue(h, ":protocol", hf.Value)
			default:
				return "stream_bad_pseudo"
			}
			continue
		}
		if connectionSpecific(hf.Name, hf.Value) {
			return "stream_connection_header"
		}
		switch hf.Name {
		case "host":
			if host != "" && host != hf.Value {
				return "stream_two_hosts"
			}
			host = hf.Value
			continue
		case "cookie":
			cookies++
		case "content-length":
			// One that is no number, or two that differ, are left to
			// the handler's checks: the body is then of unknown length.
			if n, err := strconv.ParseUint(hf.Value, 10, 63); err == nil && clFields == 0 {
				cl = int64(n)
			} else if err != nil || int64(n) != cl {
				cl = -1
			}
			clFields++
		}
		st.addValue(h, c.canonical(hf.Name), hf.Value)
	}
	if cookies > 1 {
		h["Cookie"] = []string{strings.Join(h["Cookie"], "; ")}
	}
	switch {
	case method == "":
		return "stream_no_method"
	case method == http.MethodConnect && protocol == "":
		if path != "" || scheme != "" || authority == "" {
			return "stream_bad_connect"
		}
	case path == "" || scheme == "":
		return "stream_no_path"
	}
	if protocol != "" && method == http.MethodConnect && authority == "" {
		return "stream_bad_connect"
	}
	if authority == "" {
		authority = host
	} else if host != "" && host != authority {
		return "stream_host_authority" // RFC 9113 §8.3.1
	}
	r := &st.base
	r.Method = method
	r.Proto, r.ProtoMajor, r.ProtoMinor = "HTTP/2.0", 2, 0
	r.Host = authority
	r.Header = h
	r.Trailer = declaredTrailers(h["Trailer"])
	r.RemoteAddr = c.remote
	r.TLS = c.tls
	r.RequestURI = path
	if method == http.MethodConnect && protocol == "" {
		r.RequestURI = authority
	}
	setURL(&st.url, path)
	st.url.Scheme, st.url.Host = scheme, authority
	r.URL = &st.url
	switch {
	case f.StreamEnded():
		r.ContentLength, r.Body = 0, http.NoBody
		if cl > 0 {
			return "stream_body_short"
		}
	default:
		r.ContentLength, r.Body = cl, requestBody{st}
	}
	st.declared = cl
	return ""
}

// setURL sets u from :path as url.ParseRequestURI (net/http's server)
// would: Path unescaped, RawPath when the path's escaping is not the one
// url.URL.EscapedPath would make, RawQuery, ForceQuery. A path of
// characters that need no escaping costs no allocation. One that
// ParseRequestURI refuses (a bad %-escape, a control character) is kept
// as it came in Path, for the handler to judge (RequestURI has it too).
func setURL(u *url.URL, path string) {
	p, q, found := strings.Cut(path, "?")
	*u = url.URL{Path: p, RawQuery: q, ForceQuery: found && q == ""}
	for i := 0; i < len(p); i++ {
		if !plainPathByte(p[i]) {
			if pu, err := url.ParseRequestURI(path); err == nil {
				*u = *pu
			}
			return
		}
	}
}

// plainPathByte reports a byte a path keeps as it is, unescaped and
// escaped (net/url escapes it in no path: RFC 3986 §2.3 and §3.3); '%' is
// not one.
func plainPathByte(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	switch c {
	case '-', '_', '.', '~', '$', '&', '+', ',', '/', ':', ';', '=', '@':
		return true
	}
	return false
}

// addValue adds v under key k to h; values come from one backing array
// per stream.
func (st *stream) addValue(h http.Header, k, v string) {
	if old, ok := h[k]; ok {
		h[k] = append(old, v)
		return
	}
	n := len(st.vals)
	st.vals = append(st.vals, v)
	h[k] = st.vals[n : n+1 : n+1]
}

// maxCached bounds a connection's caches of header names.
const maxCached = 256

// canonical is the net/http form of the lowercase field name k, cached per
// connection (the Framer hands out the same strings for fields from its
// dynamic table, so a cache hit costs no allocation).
func (c *conn) canonical(k string) string {
	if v, ok := c.canonCache[k]; ok {
		return v
	}
	v := textproto.CanonicalMIMEHeaderKey(k)
	if c.canonCache == nil {
		c.canonCache = make(map[string]string)
	}
	if len(c.canonCache) < maxCached {
		c.canonCache[k] = v
	}
	return v
}

// lower is k in the lowercase HTTP/2 requires (RFC 9113 §8.2), cached per
// connection; mu held.
func (c *conn) lower(k string) string {
	if v, ok := c.lowerCache[k]; ok {
		return v
	}
	v := strings.ToLower(k)
	if c.lowerCache == nil {
		c.lowerCache = make(map[string]string)
	}
	if len(c.lowerCache) < maxCached {
		c.lowerCache[k] = v
	}
	return v
}

// validResponseField: fields the response head may carry on HTTP/2.
func validResponseField(k string, v string) bool {
	switch k {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return false
	}
	return httpguts.ValidHeaderFieldName(k) && httpguts.ValidHeaderFieldValue(v)
}

// statusString formats a status code without allocating for the usual ones.
func statusString(code int) string {
	switch code {
	case 100:
		return "100"
	case 103:
		return "103"
	case 200:
		return "200"
	case 201:
		return "201"
	case 204:
		return "204"
	case 206:
		return "206"
	case 301:
		return "301"
	case 302:
		return "302"
	case 304:
		return "304"
	case 400:
		return "400"
	case 403:
		return "403"
	case 404:
		return "404"
	case 405:
		return "405"
	case 413:
		return "413"
	case 431:
		return "431"
	case 500:
		return "500"
	case 502:
		return "502"
	case 503:
		return "503"
	case 504:
		return "504"
	}
	return strconv.Itoa(code)
}

// codeName is an error code's name for CountError.
func codeName(c http2.ErrCode) string { return c.String() }
