package router

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/fastrouter/fastrouter/internal/sockutil"
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// The uwsgi front (--uwsgi) is uWSGI's "fastrouter" mode: a web server in
// front (nginx uwsgi_pass, Apache mod_proxy_uwsgi, a uWSGI --http router)
// already speaks uwsgi, so the router only picks a pool and a node and
// passes the packet through:
//
//	client → [modifier1][u16 LE size][modifier2] vars [body of CONTENT_LENGTH bytes]
//	node   ← the same vars, verbatim, under the node's modifiers, then the body
//	client ← the node's response bytes, verbatim, until the node closes
//
// One request per connection, as in uWSGI: the response ends at EOF.
// The routing key is UWSGI_FASTROUTER_KEY, else HTTP_HOST, else SERVER_NAME
// (uWSGI's order); PATH_INFO serves mount points. Errors before the node
// answered are HTTP responses the web server in front can parse.
//
// Vars arrive from the network and are hostile input: they are validated
// (parseUwsgiFront, fuzzed) before anything is looked up.

// uwsgiFrontReq is what the front reads from a request's vars. Slices alias
// the vars block.
type uwsgiFrontReq struct {
	key     []byte // routing key
	path    []byte // PATH_INFO (decoded), for mount points
	bodyLen int64  // CONTENT_LENGTH, 0 when absent
	remote  netip.AddrPort
	// For the access log and the request id.
	method, uri, proto, host []byte
	https                    bool   // REQUEST_SCHEME https or HTTPS=on
	reqID                    []byte // HTTP_X_REQUEST_ID; nil when absent
}

// parseUwsgiFront validates the vars block b and extracts what routing
// needs. errBadRequest: malformed block, or a CONTENT_LENGTH that is not a
// single decimal number (two of them could make the router and the node
// disagree on where the body ends); errBadHost: a key over 255 bytes or an
// invalid HTTP_HOST used as the key.
func parseUwsgiFront(b []byte, r *uwsgiFrontReq) error {
	*r = uwsgiFrontReq{}
	var fkey, host, sname, addr, port []byte
	seenCL := false
	for off := 0; off < len(b); {
		k, v, next, err := uwsgi.NextVar(b, off)
		if err != nil {
			return errBadRequest
		}
		off = next
		switch string(k) {
		case "UWSGI_FASTROUTER_KEY":
			fkey = v
		case "HTTP_HOST":
			host = v
		case "SERVER_NAME":
			sname = v
		case "REQUEST_METHOD":
			r.method = v
		case "REQUEST_URI":
			r.uri = v
		case "SERVER_PROTOCOL":
			r.proto = v
		case "REQUEST_SCHEME":
			r.https = r.https || string(v) == "https"
		case "HTTPS":
			r.https = r.https || string(v) == "on"
		case "HTTP_X_REQUEST_ID":
			r.reqID = v
		case "PATH_INFO":
			r.path = v
		case "REMOTE_ADDR":
			addr = v
		case "REMOTE_PORT":
			port = v
		case "CONTENT_LENGTH":
			if seenCL {
				return errBadRequest
			}
			seenCL = true
			if len(v) == 0 {
				continue // nginx sends an empty CONTENT_LENGTH for no body
			}
			if len(v) > 18 {
				return errBadRequest
			}
			for _, c := range v {
				if c < '0' || c > '9' {
					return errBadRequest
				}
			}
			n, _ := strconv.ParseInt(string(v), 10, 64)
			r.bodyLen = n
		}
	}
	switch {
	case len(fkey) > 0:
		r.key = fkey
	case len(host) > 0:
		if !strict.ValidHost(host) {
			return errBadHost
		}
		r.key = host
	default:
		r.key = sname
	}
	if len(r.key) > 255 {
		return errBadHost
	}
	r.host = host
	if len(host) == 0 {
		r.host = sname
	}
	if a, err := netip.ParseAddr(string(addr)); err == nil {
		p, _ := ascii.ParsePort(port)
		r.remote = netip.AddrPortFrom(a, p)
	}
	return nil
}

// uwsgiListener is one --uwsgi listener. Its goroutines (accept loop, one
// per connection, tracked with its connection in conns) are owned by it and
// stopped by Shutdown.
type uwsgiListener struct {
	rt   *Router
	ln   net.Listener
	name string

	// conns are the client connections, each until its goroutine ends:
	// Shutdown waits for them, and closes them at its deadline.
	conns connSet
	open  prometheus.Gauge // fastrouter_client_connections{proto="uwsgi"}
}

// ServeUwsgi serves the uwsgi protocol on ln (uWSGI fastrouter mode, for
// nginx uwsgi_pass) until Shutdown, which makes it return nil. name labels
// the listener in metrics and logs.
func (rt *Router) ServeUwsgi(ln net.Listener, name string) error {
	l := &uwsgiListener{rt: rt, ln: ln, name: name, open: rt.metrics.clientConns.WithLabelValues(name, "uwsgi")}
	if !rt.addFront(l) {
		return nil
	}

	acc := &sockutil.Acceptor{Listener: ln, OnRetry: func(err error, backoff time.Duration) {
		rt.log.Warn("accept failed; retrying", "listener", name, "err", err, "backoff", backoff)
	}}
	for {
		c, err := acc.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || rt.shuttingDown() {
				return nil
			}
			return err
		}
		if !l.conns.add(c) {
			c.Close() // past the shutdown deadline
			continue
		}
		l.open.Inc()
		go func() {
			defer l.conns.remove(c)
			defer c.Close()
			defer l.open.Dec()
			l.serveConn(c)
		}()
	}
}

// Shutdown stops accepting and waits for the requests in flight until ctx
// ends; then it closes the rest and waits at most cutGrace for them. A
// goroutine waiting on its node is woken by the router closing the node
// connections (shutdown.go), one dialling when its dial ends.
func (l *uwsgiListener) Shutdown(ctx context.Context) error {
	l.ln.Close()
	return l.conns.shutdown(ctx)
}

// serveConn serves the one request of a uwsgi connection: read and check
// the packet, route it by its key, pass it to a node (proxy, with
// rawUpstream) and relay the answer.
func (l *uwsgiListener) serveConn(c net.Conn) {
	rt := l.rt
	defer func() {
		if p := recover(); p != nil {
			rt.log.Error("panic serving uwsgi request", "panic", p, "listener", l.name)
		}
	}()
	x := getExchange()
	defer putExchange(x)

	var req uwsgiFrontReq
	if !l.readRequest(c, x, &req) {
		return
	}
	var path []byte
	if rt.cfg.Pools.HasMounts() {
		path = req.path
	}
	pool := rt.cfg.Pools.LookupPath(req.key, path)
	if pool == nil {
		l.answer(c, x, rt.metrics.none, errNoPool)
		return
	}
	pm := rt.poolMetrics(x, pool) // x.req.Remote: iphash pools pick by REMOTE_ADDR
	// The packet goes verbatim: connect skips http:// nodes, which would
	// need it rebuilt as HTTP and their keep-alive framing relayed
	// (errRawToHTTP, 502, when a pool has nothing else).
	x.wire, x.headLen = wireRaw, len(x.buf)
	x.req.BodyLen, x.client = req.bodyLen, c
	if req.bodyLen > 0 {
		x.bodySrc = c // exactly CONTENT_LENGTH bytes follow the packet
	}
	head := responseHeaderPool.Get().(*fasthttp.ResponseHeader)
	defer func() {
		head.Reset()
		responseHeaderPool.Put(head)
	}()
	_, b, err := rt.proxy(x, pool, pm, head) // counted there
	if err != nil {
		l.reply(c, x, statusOf(err))
		return
	}
	l.relay(c, x, b, head.StatusCode())
}

// readRequest reads the packet of c into x.buf and the request view x.req
// and req from its vars, under the header timeout. Whatever is refused is
// answered (and counted) here, and false returned.
func (l *uwsgiListener) readRequest(c net.Conn, x *exchange, req *uwsgiFrontReq) bool {
	rt := l.rt
	_ = c.SetDeadline(rt.now().Add(rt.timeouts().Header))
	x.buf = append(x.buf[:0], 0, 0, 0, 0)
	if _, err := io.ReadFull(c, x.buf[:uwsgi.HeaderLen]); err != nil {
		return false // nothing (or not even a header) in time: nobody to answer
	}
	if rt.alog != nil {
		x.obs.began = rt.now()
	}
	x.req.Scheme = "http"
	h, _ := uwsgi.ParseHeader(x.buf)
	n := uwsgi.HeaderLen + int(h.Size)
	if cap(x.buf) < n {
		x.buf = append(x.buf, make([]byte, n-len(x.buf))...)
	}
	x.buf = x.buf[:n]
	if _, err := io.ReadFull(c, x.buf[uwsgi.HeaderLen:]); err != nil {
		l.answer(c, x, rt.metrics.none, errBadRequest)
		return false
	}
	_ = c.SetDeadline(time.Time{})

	if err := parseUwsgiFront(x.buf[uwsgi.HeaderLen:], req); err != nil {
		l.answer(c, x, rt.metrics.none, err)
		return false
	}
	x.req.Method, x.req.URI, x.req.Proto, x.req.Host, x.req.Remote = req.method, req.uri, req.proto, req.host, req.remote
	if req.https {
		x.req.Scheme = "https"
	}
	if req.bodyLen > rt.cfg.MaxBodyBytes {
		// Refused whatever the pool: answered before any of the body is
		// read, and nothing goes to a node.
		l.answer(c, x, rt.metrics.none, errBodyTooLarge)
		lingerDiscard(c, req.bodyLen, rt.now().Add(lingerTime))
		return false
	}
	l.requestID(x, req.reqID)
	return true
}

// requestID keeps the request's X-Request-Id as the other fronts keep or
// make it. A missing or malformed one gets a generated id appended as a
// var: the vars stay verbatim otherwise, and uWSGI builds the environ in
// order, so the appended var is the one the app sees.
func (l *uwsgiListener) requestID(x *exchange, id []byte) {
	if validRequestID(id) {
		x.obs.id = id
		return
	}
	l.rt.ids.next(&x.obs.idBuf)
	x.obs.id = x.obs.idBuf[:]
	if size := len(x.buf) - uwsgi.HeaderLen + 4 + len("HTTP_X_REQUEST_ID") + len(x.obs.id); size <= 0xffff {
		x.buf = uwsgi.AppendVar(x.buf, []byte("HTTP_X_REQUEST_ID"), x.obs.id)
		binary.LittleEndian.PutUint16(x.buf[1:3], uint16(size))
	}
}

// relay copies the node's response in b, as it comes and head included, to
// the client until the node closes, and logs the request: its bytes are the
// whole response relayed, as this front does not parse the head it passes
// on.
func (l *uwsgiListener) relay(c net.Conn, x *exchange, b *backendBody, code int) {
	rt := l.rt
	defer b.Close()
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	buf := *cb
	var relayed int64
	defer func() { rt.logAccess(x, code, nil, int(relayed)) }()
	for {
		m, rerr := b.Read(buf) // renews the node's read deadline
		if m > 0 {
			_ = c.SetWriteDeadline(rt.now().Add(rt.timeouts().Timeout))
			w, werr := c.Write(buf[:m])
			relayed += int64(w)
			if werr != nil {
				return // the client (web server) went away
			}
		}
		if rerr != nil {
			if rerr != io.EOF {
				b.pm.backendError(errBackendTimeout)
			}
			return
		}
	}
}

// lingerTime bounds how long a refused request's body is read and thrown
// away after the answer (lingerDiscard). nginx's lingering_timeout is 5s.
const lingerTime = 5 * time.Second

// lingerDiscard ends a connection whose peer may still be sending the n
// body bytes of a request that was answered without reading them: it
// half-closes (the answer is complete at EOF) and reads and drops up to n
// bytes until deadline. Closing with unread bytes would make the kernel
// reset the connection, and a web server in front that is still writing
// the body (nginx's uwsgi_pass does) would see the reset instead of the
// answer (RFC 9112 §9.6 describes the same for HTTP/1.1).
func lingerDiscard(c net.Conn, n int64, deadline time.Time) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = c.SetReadDeadline(deadline)
	_, _ = io.Copy(io.Discard, io.LimitReader(c, n))
}

// answer counts err's status for pm and writes it (reply).
func (l *uwsgiListener) answer(c net.Conn, x *exchange, pm *poolMetrics, err error) {
	code := statusOf(err)
	pm.count(code)
	l.reply(c, x, code)
}

// reply writes code as an HTTP response (the web server in front parses it
// like any node's) and logs the request; a 499 (the client left) is only
// logged.
func (l *uwsgiListener) reply(c net.Conn, x *exchange, code int) {
	if code == 499 {
		l.rt.logAccess(x, code, nil, 0)
		return
	}
	body := errorBodies[code]
	defer l.rt.logAccess(x, code, nil, len(body))
	var b []byte
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, statusText(code)...)
	b = append(b, "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(body)), 10)
	if code == 503 {
		b = append(b, "\r\nRetry-After: 1"...)
	}
	b = append(b, "\r\n\r\n"...)
	b = append(b, body...)
	_ = c.SetWriteDeadline(l.rt.now().Add(l.rt.timeouts().Timeout))
	_, _ = c.Write(b)
}

func statusText(code int) string {
	switch code {
	case 400:
		return "Bad Request"
	case 404:
		return "Not Found"
	case 413:
		return "Content Too Large"
	case 431:
		return "Request Header Fields Too Large"
	case 503:
		return "Service Unavailable"
	case 504:
		return "Gateway Timeout"
	}
	return "Bad Gateway"
}
