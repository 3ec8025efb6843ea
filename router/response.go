package router

import (
	"bufio"
	"bytes"
	"net"
	"sync"

	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/valyala/fasthttp"
)

// Reading a node's response head, for uwsgi and http nodes alike.
//
//   - Status line: the code must be three digits in 100–999 (RFC 9110
//     §15). fasthttp checks "three digits" but reports a parsed 000 as 200,
//     so the raw line is checked here first; anything else is a 502.
//   - Interim responses (1xx, RFC 9110 §15.2) are not the answer: the node's
//     final response follows them. 100 Continue is dropped (the router
//     answers Expect itself, before it reads the body); any other 1xx goes
//     to the client as an interim response through the front's interimSink
//     (HTTP/1.1 and h2; an HTTP/1.0 client never gets one), then the next
//     head is read. A node gets at most maxInterim of them per request, each
//     a head within the 16 KiB read buffer like any head: one more is a 502,
//     so a 1xx flood cannot hold the request.
//   - 101 Switching Protocols ends the exchange only when the client asked to
//     upgrade (tunnel.go); otherwise it is a 502 (and never reaches an h2
//     client, where :status 101 does not exist, RFC 9113 §8.6). To an h2
//     or h3 WebSocket (extconnect.go) a 2xx is a 502 too: there a 2xx says
//     the tunnel is open.
//   - The final head goes out with the router's own version, HTTP/1.1
//     (RFC 9110 §6.2), whatever the node's: uWSGI answers "HTTP/1.0" to
//     an HTTP/1.0 client, and a node's version must not change how an
//     HTTP/1.1 client reads the router's framing.
//   - Framing fasthttp does not see: a head that is not HTTP/1.1 loses its
//     Transfer-Encoding in fasthttp's parser, though a uWSGI app behind an
//     HTTP/1.0 (or h2: SERVER_PROTOCOL HTTP/2.0) client may chunk its body
//     itself. "chunked" alone is then honoured (de-chunked, the connection
//     never reused, RFC 9112 §6.1 "treat the message as if the framing is
//     faulty"); any other coding is a 502, as fasthttp makes it for
//     HTTP/1.1 heads.

// maxInterim bounds the interim (1xx) responses read before a final one.
const maxInterim = 8

// interimSink relays a node's interim response to the client in the front's
// protocol (h1.go, h2.go). head has had its hop-by-hop headers removed.
// An error means the client is gone.
type interimSink interface {
	interim(x *exchange, head *fasthttp.ResponseHeader) error
}

// headFlags are what scanHead saw in the raw response head.
type headFlags uint8

const (
	hfClose   headFlags = 1 << iota // a Connection header lists "close"
	hfHTTP11                        // the status line's version is HTTP/1.1
	hfTE                            // a Transfer-Encoding header
	hfChunked                       // … whose value is exactly "chunked", once
	hfCL                            // a Content-Length header
	hfFaulty                        // framing to distrust: the node's connection is not reused
	hfHop                           // a hop-by-hop header stripHopByHop removes
)

// responseHeaderPool recycles the response heads of the fronts that have
// none of their own (h2, uwsgi): fasthttp's RequestCtx carries one.
var responseHeaderPool = sync.Pool{New: func() any {
	h := new(fasthttp.ResponseHeader)
	h.DisableNormalizing()
	return h
}}

// readHead reads the node's final response head from br into head: interim
// responses before it are relayed or dropped (rules above), each renewing
// the read deadline of conn. It returns what the raw final head showed.
// Errors: errBadResponse, errBackendTimeout, errClientGone (an interim
// response could not be written), errNodeClosedEarly (the node closed or
// reset the connection before sending any byte); head is then reset.
func (rt *Router) readHead(x *exchange, conn net.Conn, br *bufio.Reader, head *fasthttp.ResponseHeader) (headFlags, error) {
	for {
		f, err := scanHead(br)
		if err == nil {
			if err = head.Read(br); err != nil {
				err = readError(err)
			}
		}
		if err == nil {
			f, err = checkFraming(head, f)
		}
		if err != nil {
			head.Reset()
			if err == errNodeClosedEarly && x.interims > 0 {
				err = errBadResponse // an interim response was the first byte
			}
			return 0, err
		}
		final, err := rt.takeHead(x, head, f)
		if final || err != nil {
			return f, err
		}
		_ = conn.SetReadDeadline(rt.now().Add(rt.timeouts().Timeout))
	}
}

// takeHead applies the rules above to one complete head the node sent,
// parsed into head with f what scanHead (headScan) saw: final reports the
// answer, ready for relay (or a tunnel); otherwise an interim response was
// relayed or dropped and the next head follows. On an error head is reset.
// readHead and the HTTP/1.1 event loop (h1loop_linux.go) share it.
func (rt *Router) takeHead(x *exchange, head *fasthttp.ResponseHeader, f headFlags) (final bool, err error) {
	code := head.StatusCode()
	switch {
	case code >= 200 && code < 300 && x.mustSwitch:
		head.Reset()
		return false, errBadResponse
	case code >= 200:
		head.SetProtocol(nil) // the router's own version goes out (RFC 9110 §6.2): HTTP/1.1
		return true, nil
	case code == 101:
		if x.upgrade {
			head.SetProtocol(nil)
			return true, nil
		}
		head.Reset()
		return false, errBadResponse
	case x.interims == maxInterim:
		head.Reset()
		return false, errBadResponse
	}
	x.interims++
	if err := rt.relayInterim(x, head, f); err != nil {
		head.Reset()
		return false, err
	}
	return false, nil
}

// relayInterim hands the interim response in head to x's front, unless it
// is a 100 or the client cannot take it.
func (rt *Router) relayInterim(x *exchange, head *fasthttp.ResponseHeader, f headFlags) error {
	if head.StatusCode() == 100 || x.sink == nil {
		return nil
	}
	head.ResetConnectionClose()
	if f&hfHop != 0 {
		stripHopByHop(head)
	}
	return x.sink.interim(x, head)
}

// readError maps an error of fasthttp's head parser.
func readError(err error) error {
	if isTimeout(err) {
		return errBackendTimeout
	}
	return errBadResponse
}

// checkFraming applies the Transfer-Encoding rules fasthttp skips for heads
// that are not HTTP/1.1 (see above) and marks a head with both
// Transfer-Encoding and Content-Length faulty (RFC 9112 §6.3: it "ought to
// be handled as an error"; Transfer-Encoding wins, as fasthttp decides).
func checkFraming(head *fasthttp.ResponseHeader, f headFlags) (headFlags, error) {
	if f&hfTE == 0 {
		return f, nil
	}
	if f&hfCL != 0 {
		f |= hfFaulty
	}
	if f&hfHTTP11 == 0 {
		if f&hfChunked == 0 {
			return 0, errBadResponse
		}
		head.SetContentLength(-1) // de-chunk; ignored for 1xx, 204 and 304, which have no body
		f |= hfFaulty
	}
	return f, nil
}

// scanHead waits until br holds a whole response head, as head.Read will
// need it (through its empty line, within br's buffer and the read
// deadline), and checks its raw status line and framing headers on the way.
// It consumes nothing. errNodeClosedEarly: the connection ended (EOF or
// reset) before a single byte arrived. Lines already scanned are not
// scanned again, so a node that trickles its head costs linear time.
func scanHead(br *bufio.Reader) (headFlags, error) {
	var s headScan
	for n := 1; ; {
		if _, err := br.Peek(n); err != nil {
			if err == bufio.ErrBufferFull {
				return 0, errBadResponse // the head does not fit: as fasthttp would say
			}
			if n == 1 && br.Buffered() == 0 && closedEarly(err) {
				return 0, errNodeClosedEarly // not a byte of an answer (proxy may retry)
			}
			return 0, readError(err)
		}
		b, _ := br.Peek(br.Buffered())
		done, ok := s.feed(b)
		if !ok {
			return 0, errBadResponse
		}
		if done {
			return s.flags, nil
		}
		n = len(b) + 1
	}
}

// headScan is scanHead's position in a head that may arrive in pieces.
type headScan struct {
	off    int  // start of the first line not yet scanned
	status bool // the status line has been scanned
	flags  headFlags
}

// feed scans the complete lines of b (the whole head so far) from s.off. It
// reports done at the head's empty line, and !ok for a bad status line.
func (s *headScan) feed(b []byte) (done, ok bool) {
	for {
		i := bytes.IndexByte(b[s.off:], '\n')
		if i < 0 {
			return false, true
		}
		line := b[s.off : s.off+i]
		s.off += i + 1
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		switch {
		case !s.status && len(line) == 0: // fasthttp skips empty lines before the status line
		case !s.status:
			s.status = true
			v, ok := statusLineVersion(line)
			if !ok {
				return false, false
			}
			if string(v) == "HTTP/1.1" {
				s.flags |= hfHTTP11
			}
		case len(line) == 0:
			return true, true
		default:
			s.header(line)
		}
	}
}

// header notes what one header line says about framing, persistence and
// hop-by-hop headers (names as stripHopByHop matches them).
func (s *headScan) header(line []byte) {
	switch line[0] | 0x20 { // the names below start so; most lines do not
	case 'c', 'k', 'p', 't', 'u':
	default:
		return
	}
	i := bytes.IndexByte(line, ':')
	if i < 0 {
		return // fasthttp refuses it
	}
	k := line[:i]
	for len(k) > 0 && (k[len(k)-1] == ' ' || k[len(k)-1] == '\t') { // fasthttp also takes "Name :"
		k = k[:len(k)-1]
	}
	switch len(k) {
	case 2, 7, 16:
		if hopByHopResponse(k) {
			s.flags |= hfHop
		}
	case 10:
		if ascii.EqualFold(k, "keep-alive") {
			s.flags |= hfHop
		} else if ascii.EqualFold(k, "connection") {
			s.flags |= hfHop
			if ascii.HasToken(line[i+1:], "close") {
				s.flags |= hfClose
			}
		}
	case 14:
		if ascii.EqualFold(k, "content-length") {
			s.flags |= hfCL
		}
	case 17:
		if !ascii.EqualFold(k, "transfer-encoding") {
			return
		}
		if s.flags&hfTE == 0 && ascii.EqualFold(ascii.TrimOWS(line[i+1:]), "chunked") {
			s.flags |= hfChunked
		} else {
			s.flags &^= hfChunked // another coding, or a second header
		}
		s.flags |= hfTE
	}
}

// statusLineVersion checks a status line's code (three digits, 100–999,
// then the end of the line or a space) and returns its version field.
func statusLineVersion(line []byte) ([]byte, bool) {
	i := bytes.IndexByte(line, ' ')
	if i < 0 {
		return nil, false
	}
	v, c := line[:i], line[i+1:]
	for len(c) > 0 && c[0] == ' ' { // as fasthttp reads it
		c = c[1:]
	}
	if len(c) < 3 || c[0] < '1' || c[0] > '9' || !isDigit(c[1]) || !isDigit(c[2]) || len(c) > 3 && c[3] != ' ' {
		return nil, false
	}
	return v, true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// stripHopByHop removes from a node's response head the headers that
// describe the hop to the node, not the response (RFC 9110 §7.6.1):
// Connection and the headers it names, Keep-Alive, Proxy-Connection, TE,
// Trailer (the router drops trailers: it de-chunks and re-frames) and
// Upgrade. Names match in any case. Content-Length and Transfer-Encoding
// stay even when Connection names them: the fronts frame the body from
// them. It allocates nothing (the Trailer header is cleared first: fasthttp
// would format it for All). Callers skip it when scanHead saw none of these
// names (hfHop): the common response costs nothing here.
func stripHopByHop(head *fasthttp.ResponseHeader) {
	head.Del("Trailer")
	var drop [16][]byte
	for left := -1; ; {
		n, total, conn := 0, 0, false
		for k := range head.All() {
			total++
			conn = conn || ascii.EqualFold(k, "connection")
		}
		if total == left {
			return // nothing could go last round: stop rather than spin
		}
		for k := range head.All() {
			if n < len(drop) && (hopByHopResponse(k) || conn && namedByConnection(head, k)) {
				drop[n] = k
				n++
			}
		}
		for _, k := range drop[:n] {
			head.DelBytes(k) // copies k before it moves entries
		}
		if n < len(drop) {
			return
		}
		left = total
	}
}

// hopByHopResponse reports the response headers that are hop-by-hop by
// name.
func hopByHopResponse(k []byte) bool {
	switch len(k) {
	case 2:
		return ascii.EqualFold(k, "te")
	case 7:
		return ascii.EqualFold(k, "upgrade") || ascii.EqualFold(k, "trailer")
	case 10:
		return ascii.EqualFold(k, "connection") || ascii.EqualFold(k, "keep-alive")
	case 16:
		return ascii.EqualFold(k, "proxy-connection")
	}
	return false
}

// namedByConnection reports whether a Connection header of head lists k,
// the framing headers excepted (stripHopByHop).
func namedByConnection(head *fasthttp.ResponseHeader, k []byte) bool {
	if ascii.EqualFold(k, "content-length") || ascii.EqualFold(k, "transfer-encoding") {
		return false
	}
	for name, v := range head.All() {
		if ascii.EqualFold(name, "connection") && ascii.HasTokenBytes(v, k) {
			return true
		}
	}
	return false
}

// appendInterim formats an interim response head for an HTTP/1.1 client:
// the node's code and reason, its headers but Content-Length and
// Transfer-Encoding (an interim response has no body).
func appendInterim(dst []byte, head *fasthttp.ResponseHeader) []byte {
	code := head.StatusCode()
	dst = append(dst, "HTTP/1.1 "...)
	dst = append(dst, byte('0'+code/100), byte('0'+code/10%10), byte('0'+code%10), ' ')
	dst = append(dst, head.StatusMessage()...)
	dst = append(dst, "\r\n"...)
	for k, v := range head.All() {
		if ascii.EqualFold(k, "content-length") || ascii.EqualFold(k, "transfer-encoding") {
			continue
		}
		dst = append(dst, k...)
		dst = append(dst, ": "...)
		dst = append(dst, v...)
		dst = append(dst, "\r\n"...)
	}
	return append(dst, "\r\n"...)
}
