package router

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// The HTTP/3 front (docs/http3.md): QUIC on the UDP port of a --https
// listener, through quic-go and its http3 package. Each request stream goes
// to the same streamFront as an h2 stream (h2.go), so routing, balancing,
// drains, metrics, the access log and the limits are the ones of the other
// fronts. What QUIC adds is bounded here, deliberately:
//
//   - connections: --max-conns QUIC connections per address, counted from
//     the first Initial (a handshake holds a slot); over it quic-go answers
//     CONNECTION_REFUSED before any TLS work (admitConn);
//   - handshakes: HandshakeIdleTimeout is the header timeout, so a client
//     that stalls its handshake holds its slot no longer than an HTTP/1.1
//     client stalling its head; quic-go also ends any handshake at twice it;
//   - amplification: before a client's address is validated quic-go sends
//     at most three times what it received (RFC 9000 §8.1); from
//     h3ValidateAbove open connections on the address (or half of
//     --max-conns, when lower), a new client must first echo a Retry token
//     (RFC 9000 §8.1.2), so spoofed sources can neither be reflected to nor
//     fill the connection slots;
//   - streams: h3MaxStreams concurrent requests per connection (their
//     handler goroutines), h3MaxUniStreams unidirectional streams (HTTP/3
//     needs three: control and the two QPACK ones, RFC 9114 §6.2);
//   - buffers: the flow control windows below, as h2's;
//   - 0-RTT: refused unless Config.HTTP3EarlyData, and then only for GET
//     and HEAD (admitEarly), since early data can be replayed (RFC 8470).
//
// No stateless reset key is set on purpose: across a binary upgrade both
// processes read the one UDP socket (the upgrade hands it over like the TCP
// listeners), and each drops the packets of the other's connections, which
// QUIC's loss recovery resends. With a reset key the new process would
// answer those packets with a stateless reset and kill the old process's
// connections while they drain.

const (
	// h3MaxStreams is the concurrent request streams one connection may
	// have open (quic-go's MaxIncomingStreams); RFC 9114 §6.1 asks for no
	// fewer than 100.
	h3MaxStreams = 100
	// h3MaxUniStreams is the unidirectional streams a client may open.
	h3MaxUniStreams = 8
	// h3ValidateAbove is how many open QUIC connections an address may have
	// before new clients must validate their address with a Retry.
	h3ValidateAbove = 1000
	// Flow control: what one client can make the router buffer, as h2's
	// (h2.go).
	h3StreamWindow = 256 << 10
	h3ConnWindow   = 1 << 20
)

// h3Front serves HTTP/3 on one UDP socket. Created by ServeHTTP3; its
// accept loop belongs to ServeHTTP3's goroutine and stops at Shutdown,
// which also ends every connection (http3.Server's own goroutines).
type h3Front struct {
	rt    *Router
	name  string
	sf    *streamFront
	pc    net.PacketConn
	tr    *quic.Transport
	ln    *quic.EarlyListener
	srv   *http3.Server
	early bool // Config.HTTP3EarlyData

	limit *connLimit       // nil: no --max-conns
	open  atomic.Int64     // QUIC connections, handshakes included
	conns prometheus.Gauge // fastrouter_client_connections{proto="h3"}

	mu   sync.Mutex           // guards live
	live map[*h3Conn]struct{} // connections http3 serves, until they close
}

// h3Conn is one HTTP/3 connection and its requests in flight, which
// Shutdown needs to tell an idle connection from a busy one.
type h3Conn struct {
	c      *quic.Conn
	active atomic.Int64 // request handlers running
	idle   atomic.Int64 // unix nanoseconds when active last fell to 0
}

var _ front = (*h3Front)(nil)

// altSvc is the Alt-Svc field value that offers HTTP/3 on port of the
// same host for a day (RFC 7838 §3).
func altSvc(port string) string { return `h3=":` + port + `"; ma=86400` }

// h3ConnKey is the request context key of a stream's *h3Conn: admitEarly
// asks it whether the handshake is complete, ServeHTTP counts its streams.
type h3ConnKey struct{}

// ServeHTTP3 serves HTTP/3 on pc, the UDP socket at the address of the
// --https listener name, with the certificates of cfg (its GetCertificate
// sees every SNI name, so hot reloads apply as on TCP), until Shutdown.
// Config.HTTP3 makes that listener advertise it. The PROXY protocol does
// not apply: QUIC has no byte stream to carry its header. pc belongs to
// the front from then on: closed by Shutdown (or here, when Shutdown has
// already begun).
func (rt *Router) ServeHTTP3(pc net.PacketConn, name string, cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("router: ServeHTTP3 needs a tls.Config")
	}
	f, err := rt.newH3Front(pc, name, cfg)
	if f == nil {
		pc.Close()
		return err // nil: Shutdown has begun
	}
	err = f.srv.ServeListener(f.ln)
	if errors.Is(err, http.ErrServerClosed) || errors.Is(err, quic.ErrServerClosed) || rt.shuttingDown() {
		return nil
	}
	return err
}

// newH3Front builds the front on pc and registers it for Shutdown; nil
// and no error once Shutdown has begun.
func (rt *Router) newH3Front(pc net.PacketConn, name string, cfg *tls.Config) (*h3Front, error) {
	port := "0"
	if ap, err := netip.ParseAddrPort(pc.LocalAddr().String()); err == nil {
		port = strconv.Itoa(int(ap.Port()))
	}
	f := &h3Front{rt: rt, name: name, pc: pc, early: rt.cfg.HTTP3EarlyData,
		sf:    &streamFront{rt: rt, serverPort: []byte(port), scheme: "https", clientCerts: cfg.ClientAuth != tls.NoClientCert},
		conns: rt.metrics.clientConns.WithLabelValues(name, "h3"), live: map[*h3Conn]struct{}{}}
	if rt.cfg.MaxConns > 0 {
		f.limit = &connLimit{max: int64(rt.cfg.MaxConns)}
	}
	validateAbove := int64(h3ValidateAbove)
	if f.limit != nil {
		// Spoofed Initials must not be able to fill the slots either.
		validateAbove = min(validateAbove, f.limit.max/2)
	}
	f.tr = &quic.Transport{Conn: pc, ConnContext: f.admitConn,
		VerifySourceAddress: func(net.Addr) bool { return f.open.Load() >= validateAbove }}
	f.srv = &http3.Server{
		Handler: f,
		// quic-go answers a larger field section with 431.
		MaxHeaderBytes: rt.cfg.MaxHeaderBytes,
		IdleTimeout:    rt.timeouts().Timeout,
		ConnContext:    f.connContext,
	}
	f.sf.admit = f.admitEarly
	ln, err := f.tr.ListenEarly(http3.ConfigureTLSConfig(cfg), f.quicConfig())
	if err != nil {
		return nil, err
	}
	f.ln = ln
	if !rt.addFront(f) {
		f.ln.Close()
		f.tr.Close()
		return nil, nil
	}
	return f, nil
}

// quicConfig is the configuration of each new connection, with the
// timeouts current when it arrives (a reload changes them for new
// connections, as on TCP).
func (f *h3Front) quicConfig() *quic.Config {
	t := f.rt.timeouts()
	return &quic.Config{
		GetConfigForClient: func(*quic.ClientInfo) (*quic.Config, error) { return f.quicConfig(), nil },
		// A handshake gets the header timeout, as an HTTP/1.1 head does.
		HandshakeIdleTimeout:           t.Header,
		MaxIdleTimeout:                 t.Timeout,
		MaxIncomingStreams:             h3MaxStreams,
		MaxIncomingUniStreams:          h3MaxUniStreams,
		InitialStreamReceiveWindow:     h3StreamWindow,
		MaxStreamReceiveWindow:         h3StreamWindow,
		InitialConnectionReceiveWindow: h3ConnWindow,
		MaxConnectionReceiveWindow:     h3ConnWindow,
		Allow0RTT:                      f.early,
	}
}

// errH3Full is admitConn's refusal: quic-go answers CONNECTION_REFUSED.
var errH3Full = errors.New("router: too many QUIC connections")

// admitConn is quic-go's ConnContext, called for a connection's first
// Initial, before any TLS work: it takes a --max-conns slot and counts the
// connection until its context ends, which is when it closes or its
// handshake fails.
func (f *h3Front) admitConn(ctx context.Context, _ *quic.ClientInfo) (context.Context, error) {
	if f.limit != nil && f.limit.open.Add(1) > f.limit.max {
		f.limit.open.Add(-1)
		f.rt.connsRefused.WithLabelValues(f.name).Inc()
		return nil, errH3Full
	}
	f.open.Add(1)
	f.conns.Inc()
	context.AfterFunc(ctx, func() {
		f.conns.Dec()
		f.open.Add(-1)
		if f.limit != nil {
			f.limit.open.Add(-1)
		}
	})
	return ctx, nil
}

// admitEarly is the h3 streamFront's admit check, RFC 8470 for a request
// that arrived before the handshake completed (0-RTT, which an attacker
// can replay): without Config.HTTP3EarlyData quic-go accepts no 0-RTT;
// with it, GET and HEAD go on, marked "Early-Data: 1" for the node (§5.1),
// and anything else is answered 425 Too Early, which a client retries
// after the handshake.
func (f *h3Front) admitEarly(req *http.Request, x *exchange) error {
	if !f.early {
		return nil
	}
	hc, _ := req.Context().Value(h3ConnKey{}).(*h3Conn)
	if hc == nil {
		return nil
	}
	select {
	case <-hc.c.HandshakeComplete():
		return nil
	default:
	}
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return errTooEarly
	}
	x.req.Headers = append(x.req.Headers, hdr{earlyDataKey, one})
	return nil
}

var earlyDataKey = []byte("Early-Data")

// connContext is http3's ConnContext: it registers each connection for
// Shutdown until it closes.
func (f *h3Front) connContext(ctx context.Context, c *quic.Conn) context.Context {
	hc := &h3Conn{c: c}
	hc.idle.Store(f.rt.now().UnixNano())
	f.mu.Lock()
	f.live[hc] = struct{}{}
	f.mu.Unlock()
	context.AfterFunc(c.Context(), func() {
		f.mu.Lock()
		delete(f.live, hc)
		f.mu.Unlock()
	})
	return context.WithValue(ctx, h3ConnKey{}, hc)
}

// ServeHTTP serves one request stream: the same forwarding as an h2
// stream, counted on its connection. An extended CONNECT (RFC 9220, a
// WebSocket) goes the h2 way too (extconnect.go): quic-go's server always
// advertises SETTINGS_ENABLE_CONNECT_PROTOCOL (server.go settings, v0.65),
// and its response writer has the flush and write deadline the tunnel's
// stream end needs; the tunnel counts as a request in flight here, so
// Shutdown does not take its connection for an idle one.
func (f *h3Front) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if hc, _ := req.Context().Value(h3ConnKey{}).(*h3Conn); hc != nil {
		hc.active.Add(1)
		defer func() {
			if hc.active.Add(-1) == 0 {
				hc.idle.Store(f.rt.now().UnixNano())
			}
		}()
	}
	f.sf.ServeHTTP(w, req)
}

// closeIdle closes, with H3_NO_ERROR, the connections that have had no
// request in flight since before cutoff. After GOAWAY a client closes its
// connection once its requests are done, but its CONNECTION_CLOSE may be
// lost (across an upgrade, half of them go to the other process's
// reading of the shared socket), and nothing would be sent again until
// the idle timeout; cutoff leaves the last response time to be delivered.
func (f *h3Front) closeIdle(cutoff time.Time) {
	f.mu.Lock()
	var idle []*h3Conn
	for hc := range f.live {
		if hc.active.Load() == 0 && hc.idle.Load() < cutoff.UnixNano() {
			idle = append(idle, hc)
		}
	}
	f.mu.Unlock()
	for _, hc := range idle {
		_ = hc.c.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
	}
}

// Shutdown stops accepting connections (quic-go refuses the handshakes in
// flight and drops new Initials), sends GOAWAY on every connection, lets
// their streams finish until ctx ends, closing each connection that stays
// idle for drainGrace, then closes what is left and the socket; it returns
// within cutGrace of ctx's end.
func (f *h3Front) Shutdown(ctx context.Context) error {
	f.ln.Close()
	start := f.rt.now()
	done := make(chan error, 1)
	go func() { done <- f.srv.Shutdown(ctx) }() // at ctx's end it closes every connection
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	var err error
wait:
	for {
		select {
		case err = <-done:
			break wait
		case <-tick.C:
			if now := f.rt.now(); now.Sub(start) >= drainGrace {
				f.closeIdle(now.Add(-drainGrace))
			}
		case <-ctx.Done():
			// Close is waiting for the handlers, whose node connections
			// Router.Shutdown is cutting now.
			t := time.NewTimer(cutGrace)
			defer t.Stop()
			select {
			case err = <-done:
			case <-t.C:
				err = ctx.Err()
			}
			break wait
		}
	}
	f.tr.Close() // ends the transport's reader; pc stays ours
	f.pc.Close()
	return err
}

// altSvcKey is the field name the HTTP/1.1 front sets.
var altSvcKey = []byte("Alt-Svc")
