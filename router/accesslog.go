package router

import (
	"net"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/valyala/fasthttp"
)

// The access log: one JSON object per line and request, written when the
// response ends (for a streamed body, when its last byte has been handed to
// the client):
//
//	{"time":"2026-01-02T15:04:05.123456Z","id":"…","client":"192.0.2.7:51234",
//	 "method":"GET","host":"example.com","uri":"/a?b","proto":"HTTP/1.1",
//	 "scheme":"http","user_agent":"curl/8.5.0","referer":null,"status":200,
//	 "pool":"example.com","node":"10.0.0.5:3031","upstream_connect":0.000181,
//	 "upstream_header":0.012337,"bytes":5120,"duration":0.013012}
//
// time is when the request reached the forwarding core (UTC, µs); durations
// are seconds. user_agent and referer are the request's headers, null when
// it had none (and on the --uwsgi front, which relays vars verbatim).
// upstream_connect and upstream_header run from the first connect attempt
// to the established connection and to the parsed response head (nginx's
// $upstream_connect_time and $upstream_header_time); they, pool and node
// are null when the request never got that far. node is the node that
// served, or, when every connect failed (502, 504), the last node tried;
// upstream_connect is null then. bytes is the response body sent to the
// client; for an upgrade, what the tunnel relayed to the client after the
// switch (tunnel.run), its line written when the tunnel ends. Client-controlled strings are escaped; invalid UTF-8 becomes
// U+FFFD.
//
// The line is written with a fixed encoder rather than log/slog: it
// allocates nothing and costs a fraction of slog's JSON handler (see
// BenchmarkAccessLogLine). The writer (Config.AccessLog) must not block on
// I/O: package accesslog buffers and flushes from its own goroutine.

// obsInfo is what the request id and the access log need of one exchange.
// Owned by the exchange's request; zeroed by putExchange.
type obsInfo struct {
	id    []byte // X-Request-Id sent to the node: the client's, or idBuf
	idBuf [requestIDLen]byte
	// The rest is filled only while an access log is configured.
	began   time.Time      // when forward began
	pool    string         // the pool's key, "" for none
	node    *balancer.Node // the node that served; nil when none did
	tried   *balancer.Node // the last node a failed connect was tried on
	connect time.Duration  // first connect attempt → connection established
	header  time.Duration  // first connect attempt → response head parsed
}

// observe starts a request's observability: its id and, with an access
// log, its start time. forward calls it first.
func (rt *Router) observe(x *exchange) {
	rt.assignRequestID(x)
	if rt.alog != nil {
		x.obs.began = rt.now()
	}
}

// poolMetrics returns pool's metric children and remembers the pool's key
// for the access log.
func (rt *Router) poolMetrics(x *exchange, pool *balancer.Pool) *poolMetrics {
	x.obs.pool = pool.Key
	return rt.metrics.forPool(pool)
}

// observeConnect records the node a request got and when (start: the first
// connect attempt).
func (rt *Router) observeConnect(x *exchange, n *balancer.Node, start time.Time) {
	if rt.alog != nil {
		x.obs.node = n
		x.obs.connect = rt.now().Sub(start)
	}
}

// unobserveConnect forgets observeConnect's record: the connect turned out
// to have failed (errLateConnect, proxy).
func (rt *Router) unobserveConnect(x *exchange) {
	x.obs.node, x.obs.connect = nil, 0
}

// observeTried records a node whose connect failed, so that the line of a
// request nothing served (502, 504) names the node it last tried.
func (rt *Router) observeTried(x *exchange, n *balancer.Node) {
	if rt.alog != nil {
		x.obs.tried = n
	}
}

// observeHead records when the response head arrived and counts what was
// sent to the node (sent bytes: packet and body).
// x.headAt is the arrival.
func (rt *Router) observeHead(x *exchange, n *balancer.Node, start time.Time, sent int64) {
	n.AddTraffic(uint64(max(sent, 0)), 0)
	if rt.alog != nil {
		x.obs.header = x.headAt.Sub(start)
	}
}

// accessRecord is an access-log line under construction: every field but
// bytes and duration is formatted while the request view is still valid
// (the fasthttp front streams a body after its handler returned). Owned by
// one request; recycled through recordPool.
type accessRecord struct {
	buf   []byte
	began time.Time
}

var recordPool = sync.Pool{New: func() any { return &accessRecord{buf: make([]byte, 0, 1024)} }}

// logResponse writes x's access-log line once the front knows how forward
// went: at once for an error or a response without body, at b.Close for a
// streamed body. head is the response head (nil on an error).
func (rt *Router) logResponse(x *exchange, b *backendBody, err error, head *fasthttp.ResponseHeader) {
	if rt.alog == nil {
		return
	}
	if err != nil {
		code := statusOf(err)
		n := len(errorBodies[code])
		if err == errClientGone {
			n = 0 // nobody to send it to
		}
		rt.logAccess(x, code, nil, n)
		return
	}
	rt.logAccess(x, head.StatusCode(), b, 0)
}

// logAccess formats x's line with status; with b, the line is completed
// and written by b.Close, else now with bytes.
func (rt *Router) logAccess(x *exchange, status int, b *backendBody, bytes int) {
	rec := rt.startAccess(x, status)
	if rec == nil {
		return
	}
	if b != nil {
		b.rec = rec
		return
	}
	rt.finishAccess(rec, int64(bytes), rt.now())
}

// startAccess formats x's line with status up to its size and duration,
// for finishAccess to complete (logAccess; the HTTP/1.1 event loop, which
// streams the body itself). nil without an access log.
func (rt *Router) startAccess(x *exchange, status int) *accessRecord {
	if rt.alog == nil {
		return nil
	}
	if x.obs.id == nil { // failed before forward: still give it an id
		rt.ids.next(&x.obs.idBuf)
		x.obs.id = x.obs.idBuf[:]
	}
	if x.obs.began.IsZero() {
		x.obs.began = rt.now()
	}
	rec := recordPool.Get().(*accessRecord)
	rec.began = x.obs.began
	rec.buf = appendAccessHead(rec.buf[:0], x, status)
	return rec
}

// logUnparsed logs a request the HTTP/1.1 front could not parse, with what
// fasthttp made of it.
func (rt *Router) logUnparsed(ctx *fasthttp.RequestCtx, code int) {
	if rt.alog == nil {
		return
	}
	x := getExchange()
	defer putExchange(x)
	h := &ctx.Request.Header
	x.req.Method, x.req.URI, x.req.Proto, x.req.Host = h.Method(), h.RequestURI(), h.Protocol(), h.Host()
	x.req.Scheme = "http"
	if ctx.IsTLS() {
		x.req.Scheme = "https"
	}
	if ta, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		x.req.Remote = ta.AddrPort()
	}
	rt.logAccess(x, code, nil, len(errorBodies[code]))
}

// finishAccess completes rec with the body size and the duration to end,
// writes it and recycles it.
func (rt *Router) finishAccess(rec *accessRecord, bytes int64, end time.Time) {
	buf := append(rec.buf, `,"bytes":`...)
	buf = strconv.AppendInt(buf, bytes, 10)
	buf = append(buf, `,"duration":`...)
	buf = appendSeconds(buf, end.Sub(rec.began))
	buf = append(buf, "}\n"...)
	_, _ = rt.alog.Write(buf)
	rec.buf = buf[:0]
	if cap(rec.buf) > 16<<10 {
		rec.buf = make([]byte, 0, 1024)
	}
	recordPool.Put(rec)
}

// appendAccessHead appends every field of x's line up to and excluding
// bytes and duration.
func appendAccessHead(dst []byte, x *exchange, status int) []byte {
	r := &x.req
	o := &x.obs
	dst = append(dst, `{"time":"`...)
	dst = o.began.UTC().AppendFormat(dst, "2006-01-02T15:04:05.000000Z07:00")
	dst = append(dst, `","id":`...)
	dst = appendJSONString(dst, o.id)
	dst = append(dst, `,"client":"`...)
	if r.Remote.IsValid() {
		dst = r.Remote.AppendTo(dst)
	}
	dst = append(dst, `","method":`...)
	dst = appendJSONString(dst, r.Method)
	dst = append(dst, `,"host":`...)
	dst = appendJSONString(dst, r.Host)
	dst = append(dst, `,"uri":`...)
	dst = appendJSONString(dst, r.URI)
	dst = append(dst, `,"proto":`...)
	dst = appendJSONString(dst, r.Proto)
	dst = append(dst, `,"scheme":"`...)
	dst = append(dst, r.Scheme...) // "http" or "https", set by the front
	dst = append(dst, `","user_agent":`...)
	dst = appendHeaderJSON(dst, r.Headers, "user-agent")
	dst = append(dst, `,"referer":`...)
	dst = appendHeaderJSON(dst, r.Headers, "referer")
	dst = append(dst, `,"status":`...)
	dst = strconv.AppendInt(dst, int64(status), 10)
	dst = append(dst, `,"pool":`...)
	if o.pool == "" {
		dst = append(dst, "null"...)
	} else {
		dst = appendJSONString(dst, o.pool)
	}
	dst = append(dst, `,"node":`...)
	switch {
	case o.node == nil && o.tried != nil:
		dst = appendJSONString(dst, o.tried.Address)
		dst = append(dst, `,"upstream_connect":null`...)
	case o.node == nil:
		dst = append(dst, `null,"upstream_connect":null`...)
	default:
		dst = appendJSONString(dst, o.node.Address)
		dst = append(dst, `,"upstream_connect":`...)
		dst = appendSeconds(dst, o.connect)
	}
	dst = append(dst, `,"upstream_header":`...)
	if o.header == 0 {
		dst = append(dst, "null"...)
	} else {
		dst = appendSeconds(dst, o.header)
	}
	return dst
}

// appendHeaderJSON appends the first header named lower as a JSON string,
// or null when there is none.
func appendHeaderJSON(dst []byte, hs []uwsgi.Field, lower string) []byte {
	for i := range hs {
		if ascii.EqualFold(hs[i].Name, lower) {
			return appendJSONString(dst, hs[i].Value)
		}
	}
	return append(dst, "null"...)
}

// appendSeconds appends d in seconds with microsecond precision.
func appendSeconds(dst []byte, d time.Duration) []byte {
	return strconv.AppendFloat(dst, d.Seconds(), 'f', 6, 64)
}

// appendJSONString appends s as a JSON string. Quotes, backslashes and
// control bytes are escaped; every byte of an invalid UTF-8 sequence becomes
// U+FFFD, as encoding/json does, so a line always parses. Pool keys and node
// addresses are validated printable text, but they came from datagrams, so
// they are escaped like everything else.
func appendJSONString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != 0x7f {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		// Decode from a copy of at most 4 bytes: one code path for string
		// and []byte, and no conversion that could allocate.
		var rb [utf8.UTFMax]byte
		n := copy(rb[:], s[i:min(i+utf8.UTFMax, len(s))])
		r, size := utf8.DecodeRune(rb[:n])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
