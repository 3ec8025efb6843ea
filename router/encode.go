package router

import (
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"slices"
	"strconv"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/ascii"
)

// The request head, in the node's protocol: a uwsgi packet (uwsgi.AppendVars,
// internal/uwsgi) for uwsgi nodes, an HTTP/1.1 head (appendHTTPRequest, rules in
// upstream_http.go) for http:// nodes, or the uwsgi front's packet as it
// came. exchange.buf holds it, followed by the inline body bytes.

// wire is what x.buf holds before the inline body bytes.
type wire uint8

const (
	wireNone  wire = iota
	wireUwsgi      // a uwsgi packet from uwsgi.AppendVars; modifiers set per node
	wireHTTP       // an HTTP/1.1 request head from appendHTTPRequest
	wireRaw        // a uwsgi packet relayed verbatim (uwsgi front): no http node can take it
)

// encode writes the request head of kind w into x.buf, followed by the
// first inline bytes of the body if x.buf already held them after a head of
// another kind (re-encoding for a node of the other kind).
func (x *exchange) encode(w wire) error {
	if x.wire == w {
		return nil
	}
	var body []byte
	if x.wire != wireNone {
		body = x.buf[x.headLen:]
	}
	// The new head is built in x.alt, then body and head are put in place;
	// only mixed pools that switch kinds between attempts pay this.
	start := 0
	if body == nil {
		start = -1
	}
	var head []byte
	var err error
	dst := x.buf[:0]
	if start >= 0 {
		dst = x.alt[:0]
	}
	switch w {
	case wireUwsgi:
		if head, err = uwsgi.AppendVars(dst, &x.req, 0, 0); err != nil {
			err = errVarsTooLarge // uwsgi.ErrTooLarge: 431
		}
	case wireHTTP:
		head = appendHTTPRequest(dst, &x.req, x.upgrade)
	}
	if err != nil {
		return err
	}
	if start < 0 {
		x.buf, x.wire, x.headLen = head, w, len(head)
		return nil
	}
	x.alt = head
	n := len(body)
	need := len(head) + n
	buf := slices.Grow(x.buf, max(0, need-len(x.buf)))[:max(need, len(x.buf))] // keeps the body bytes
	copy(buf[len(head):], buf[x.headLen:x.headLen+n])                          // memmove: body may overlap its new place
	buf = buf[:need]
	copy(buf, head)
	x.buf, x.wire, x.headLen = buf, w, len(head)
	return nil
}

// guessWire is the head kind most likely needed for pool: its first node's.
// Pools are rarely mixed; when they are, encode fixes the guess.
func guessWire(pool *balancer.Pool) wire {
	if ns := pool.Nodes(); len(ns) > 0 && ns[0].Endpoint.Network == balancer.NetHTTP {
		return wireHTTP
	}
	return wireUwsgi
}

// fit readies x.buf for node n: the right head kind, the node's modifiers
// for uwsgi. errRawToHTTP: n is an http node and x a verbatim uwsgi packet.
func (x *exchange) fit(n *balancer.Node) error {
	isHTTP := n.Endpoint.Network == balancer.NetHTTP
	switch {
	case x.wire == wireRaw:
		if isHTTP {
			return errRawToHTTP
		}
	case isHTTP:
		return x.encode(wireHTTP)
	default:
		if err := x.encode(wireUwsgi); err != nil {
			return err
		}
	}
	x.buf[0], x.buf[3] = n.Modifier1, n.Modifier2
	return nil
}

// appendHTTPRequest encodes r as an HTTP/1.1 request head (rules above) into
// dst. upgrade keeps the Upgrade header and says "Connection: Upgrade". It
// allocates nothing when dst has room.
func appendHTTPRequest(dst []byte, r *request, upgrade bool) []byte {
	dst = append(dst, r.Method...)
	dst = append(dst, ' ')
	dst = append(dst, r.URI...)
	if string(r.Proto) == "HTTP/1.0" {
		dst = append(dst, " HTTP/1.0\r\nHost: "...)
	} else {
		dst = append(dst, " HTTP/1.1\r\nHost: "...)
	}
	dst = append(dst, r.Host...)
	dst = append(dst, "\r\n"...)
	var fw forwarded
	dst = appendHTTPHeaders(dst, r, upgrade, &fw)
	if len(r.ContentType) > 0 {
		dst = append(dst, "Content-Type: "...)
		dst = append(dst, r.ContentType...)
		dst = append(dst, "\r\n"...)
	}
	if r.BodyLen > 0 || fw.hadCL {
		dst = append(dst, "Content-Length: "...)
		dst = strconv.AppendInt(dst, r.BodyLen, 10)
		dst = append(dst, "\r\n"...)
	}
	if upgrade {
		dst = append(dst, "Connection: Upgrade\r\n"...)
	}
	dst = append(dst, "X-Forwarded-For: "...)
	dst = uwsgi.AppendForwardedFor(dst, fw.xff, r.Remote.Addr())
	dst = append(dst, "\r\nX-Forwarded-Proto: "...)
	if len(fw.xfp) > 0 {
		dst = append(dst, fw.xfp...)
	} else {
		dst = append(dst, r.Scheme...)
	}
	dst = append(dst, "\r\nX-Forwarded-Host: "...)
	if len(fw.xfh) > 0 {
		dst = append(dst, fw.xfh...)
	} else {
		dst = append(dst, r.Host...)
	}
	return append(dst, "\r\n\r\n"...)
}

// forwarded is what appendHTTPHeaders kept back of the client's headers:
// the trusted peer's X-Forwarded-* (nil otherwise) and whether a
// Content-Length came (the router sends its own).
type forwarded struct {
	xff, xfp, xfh []byte
	hadCL         bool
}

// appendHTTPHeaders appends the client's headers an http node gets (rules
// above) and notes in fw those the router sets itself.
func appendHTTPHeaders(dst []byte, r *request, upgrade bool, fw *forwarded) []byte {
	var conn bool // a Connection header may name more hop-by-hop headers
	for i := range r.Headers {
		if ascii.EqualFold(r.Headers[i].Name, "connection") {
			conn = true
			break
		}
	}
	for i := range r.Headers {
		h := &r.Headers[i]
		switch uwsgi.ClassOf(h.Name) {
		case uwsgi.ClassSkip: // '_' names, Proxy, Content-Type (below), Content-Length, Transfer-Encoding
			fw.hadCL = fw.hadCL || ascii.EqualFold(h.Name, "content-length")
			continue
		case uwsgi.ClassXFF:
			if r.Trusted && fw.xff == nil {
				fw.xff = h.Value
			}
			continue
		case uwsgi.ClassXFP:
			if r.Trusted && fw.xfp == nil {
				fw.xfp = h.Value
			}
			continue
		}
		if skipHTTPHeader(h.Name, upgrade) || conn && connectionNames(r.Headers, h.Name) {
			continue
		}
		if ascii.EqualFold(h.Name, "x-forwarded-host") {
			if r.Trusted && fw.xfh == nil {
				fw.xfh = h.Value
			}
			continue
		}
		dst = append(dst, h.Name...)
		dst = append(dst, ": "...)
		dst = append(dst, h.Value...)
		dst = append(dst, "\r\n"...)
	}
	return dst
}

// skipHTTPHeader reports the request headers an http node does not get
// from the client: hop-by-hop ones (RFC 9110 §7.6.1), Host (sent first),
// and Expect (the router handled 100-continue; the node must not answer a
// 100 the router would then have to skip).
func skipHTTPHeader(k []byte, upgrade bool) bool {
	switch len(k) {
	case 2:
		return ascii.EqualFold(k, "te")
	case 4:
		return ascii.EqualFold(k, "host")
	case 6:
		return ascii.EqualFold(k, "expect")
	case 7:
		return ascii.EqualFold(k, "trailer") || !upgrade && ascii.EqualFold(k, "upgrade")
	case 10:
		return ascii.EqualFold(k, "connection") || ascii.EqualFold(k, "keep-alive")
	case 16:
		return ascii.EqualFold(k, "proxy-connection")
	}
	return false
}

// connectionNames reports whether a Connection header of hs lists name k
// (those headers are hop-by-hop too). "Connection: upgrade" names the
// Upgrade header, which an upgrade keeps: skipHTTPHeader decides it.
func connectionNames(hs []hdr, k []byte) bool {
	if ascii.EqualFold(k, "upgrade") {
		return false
	}
	for i := range hs {
		if ascii.EqualFold(hs[i].Name, "connection") && ascii.HasTokenBytes(hs[i].Value, k) {
			return true
		}
	}
	return false
}
