package router

import (
	"bufio"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// Upgraded connections (WebSockets and any other HTTP/1.1 Upgrade): a
// request carrying "Connection: upgrade" is forwarded like any other (the
// node sees HTTP_UPGRADE, HTTP_SEC_WEBSOCKET_KEY, …). When the node answers
// 101 Switching Protocols, the HTTP exchange is over and the two
// connections become a tunnel: the 101 head goes to the client, then bytes
// are copied both ways, unparsed, until either side closes.
//
// Lifetime rules:
//   - idle: a tunnel with no byte in either direction for Config.Timeout is
//     closed (activity either way keeps both directions open);
//   - drain: the backend connection stays tracked by its node (Node.Track),
//     so a node drain lets the tunnel run until the drain deadline, then
//     closes it and counts it as forced, like any other request;
//   - shutdown: the listener's Shutdown waits for its tunnels (a connSet,
//     frontListener.tunnels) until its deadline, then closes both sides
//     (shutdown.go).
//
// HTTP/2 and HTTP/3 clients open WebSockets with an extended CONNECT
// (extconnect.go): the client side of their tunnel is the stream
// (streamEnd), which the connection's own shutdown rules cover (h2.go,
// h3.go), not a connSet.

// wsMetrics count tunnels.
type wsMetrics struct {
	open  prometheus.Gauge
	total prometheus.Counter
	bytes *prometheus.CounterVec
	in    prometheus.Counter // client → node bytes
	out   prometheus.Counter // node → client bytes
}

func newWSMetrics(reg prometheus.Registerer) (*wsMetrics, error) {
	m := &wsMetrics{
		open: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fastrouter_upgraded_connections",
			Help: "Open upgraded (WebSocket) tunnels between a client and a node.",
		}),
		total: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_upgraded_connections_total",
			Help: "Upgraded (WebSocket) tunnels opened after a node answered 101.",
		}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_upgraded_bytes_total",
			Help: "Bytes relayed through upgraded tunnels, by direction (in: client to node).",
		}, []string{"direction"}),
	}
	for _, c := range []prometheus.Collector{m.open, m.total, m.bytes} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	m.in = m.bytes.WithLabelValues("in")
	m.out = m.bytes.WithLabelValues("out")
	return m, nil
}

// tunnelEnd is a side of a tunnel as its pipes use it: a net.Conn, or an
// h2 or h3 stream (streamEnd).
type tunnelEnd interface {
	io.ReadWriter
	SetReadDeadline(time.Time) error
	SetWriteDeadline(time.Time) error
}

// tunnel is one upgraded connection pair. Owned by the goroutine running
// run; Close may be called from anywhere.
type tunnel struct {
	rt      *Router
	client  tunnelEnd // fasthttp's hijacked view (replays its read buffer), or a stream
	raw     io.Closer // closes the client side: the view's Close does nothing
	backend net.Conn
	br      *bufio.Reader // backend reader, holding bytes read past the 101 head
	last    atomic.Int64  // unix nanos of the last byte either way
	once    sync.Once
}

// Close closes both sides (once). Always nil: a tunnel is a connSet member.
func (t *tunnel) Close() error {
	t.once.Do(func() {
		t.raw.Close()
		t.backend.Close()
	})
	return nil
}

// isUpgrade reports whether an HTTP/1.1 request asks to switch protocols.
func isUpgrade(h *fasthttp.RequestHeader) bool {
	return h.ConnectionUpgrade() && len(h.Peek("Upgrade")) > 0
}

// hijackUpgrade answers the client with the node's 101 head and turns the
// connection into a tunnel to the node. b is the backend side forward
// returned; it is released when the tunnel ends.
func (f *h1Front) hijackUpgrade(ctx *fasthttp.RequestCtx, b *backendBody) {
	rt := f.rt
	head := append([]byte(nil), ctx.Response.Header.Header()...)
	raw := ctx.Conn()
	f.hijack(ctx, func(c net.Conn) {
		defer b.Close()
		// The node must get every byte the client sent before it left.
		if g, ok := b.conn.(interface{ closeGracefully() }); ok {
			g.closeGracefully()
		}
		t := &tunnel{rt: rt, client: c, raw: raw, backend: b.conn, br: b.br}
		if !f.tunnels.add(t) {
			return // past the shutdown deadline
		}
		defer f.tunnels.remove(t)
		_ = c.SetWriteDeadline(rt.now().Add(rt.timeouts().Timeout))
		if _, err := c.Write(head); err != nil {
			return
		}
		rt.metrics.ws.total.Inc()
		rt.metrics.ws.open.Inc()
		defer rt.metrics.ws.open.Dec()
		b.n = t.run()
	})
}

// run copies both ways until one side ends, then closes both. It returns
// the bytes relayed to the client: the "bytes" of the upgrade's access-log
// line, which the caller's backendBody.Close writes (docs/observability.md).
func (t *tunnel) run() (toClient int64) {
	t.last.Store(t.rt.now().UnixNano())
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer t.Close()
		t.pipe(t.backend, t.client, t.client, t.rt.metrics.ws.in)
	}()
	toClient = t.pipe(t.client, t.br, t.backend, t.rt.metrics.ws.out)
	t.Close()
	<-done
	return toClient
}

// pipe copies src to dst until src ends or the tunnel has been idle both
// ways for the inactivity timeout, and returns the bytes written to dst.
// src is t.client or t.br (over t.backend, which is rc); the read deadline
// goes on rc.
func (t *tunnel) pipe(dst tunnelEnd, src io.Reader, rc tunnelEnd, n prometheus.Counter) (written int64) {
	cb := bufPool.Get().(*[]byte)
	defer bufPool.Put(cb)
	buf := *cb
	for {
		d := t.rt.timeouts().Timeout
		_ = rc.SetReadDeadline(time.Unix(0, t.last.Load()).Add(d))
		m, err := src.Read(buf)
		if m > 0 {
			now := t.rt.now()
			t.last.Store(now.UnixNano())
			_ = dst.SetWriteDeadline(now.Add(d))
			w, werr := dst.Write(buf[:m])
			written += int64(w)
			n.Add(float64(w))
			if werr != nil {
				return written
			}
		}
		if err != nil {
			// The other direction may have kept the tunnel busy: an idle
			// deadline on this side alone is not the end.
			if isTimeout(err) && t.rt.now().Sub(time.Unix(0, t.last.Load())) < d {
				continue
			}
			return written
		}
	}
}
