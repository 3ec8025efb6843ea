package router

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// rawUpstream is the uwsgi front's pass-through (uwsgifront.go): the packet
// as the web server in front sent it (under the node's modifiers, x.fit),
// then exactly CONTENT_LENGTH body bytes from the client connection; the
// node's response bytes go back as they come, head included, until the
// node closes. Only the status code is read, to count it. A node that
// closes or resets the connection before a byte of the answer is
// errNodeClosedEarly, which proxy retries under the rules of every front
// (forward.go, retryable). http:// nodes cannot take such a packet
// (connect skips them, errRawToHTTP).
type rawUpstream struct{}

func (rawUpstream) roundTrip(x *exchange, head *fasthttp.ResponseHeader) (headFlags, error) {
	c := &x.call
	rt := c.rt
	if err := rt.writeFull(c.conn, x.buf); err != nil {
		return 0, errBackendWrite
	}
	if err := rt.sendRest(x, c.conn); err != nil {
		return 0, err
	}
	_ = c.conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	b, err := c.br.Peek(12) // "HTTP/1.1 200"
	if err != nil && len(b) == 0 {
		if isTimeout(err) {
			return 0, errBackendTimeout
		}
		if closedEarly(err) {
			return 0, errNodeClosedEarly // not a byte of an answer: proxy may try another node, as for the other fronts
		}
		return 0, errBadResponse
	}
	code, ok := statusCode(b)
	if !ok {
		return 0, errBadResponse
	}
	head.SetStatusCode(code)
	return 0, nil
}

// response hands back the whole response, head included, to relay until
// the node closes. The front renews its client's write deadline itself.
func (rawUpstream) response(x *exchange, _ *fasthttp.ResponseHeader, _ headFlags) *backendBody {
	return newBackendBody(&x.call, nil)
}

// statusCode reads the status of an HTTP response head ("HTTP/1.x NNN"),
// or uWSGI's CGI-style "Status: NNN".
func statusCode(b []byte) (int, bool) {
	var d []byte
	switch {
	case len(b) >= 12 && bytes.HasPrefix(b, []byte("HTTP/")) && b[8] == ' ':
		d = b[9:12]
	case len(b) >= 11 && bytes.HasPrefix(b, []byte("Status: ")):
		d = b[8:11]
	default:
		return 0, false
	}
	code := 0
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		code = code*10 + int(c-'0')
	}
	return code, code >= 100
}
