package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastrouter/fastrouter/internal/sockutil"
	"github.com/valyala/fasthttp"
)

// A front listener splits each accepted connection by protocol before any
// request is parsed: over TLS by the ALPN result (h2 → internal/h2srv, anything
// else → fasthttp), in clear text by sniffing the HTTP/2 connection preface
// (h2c with prior knowledge). Both protocols then meet in forward.
//
// Per connection, the split runs on its own goroutine (a slow TLS handshake
// must not hold up the accept loop), bounded by HeaderTimeout.

// h2Preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frontListener is one --http or --https listener. Its goroutines (accept
// loop, per-connection split, h2 connections, fasthttp servers, resumed
// parked connections, tunnels) are tracked by servers and its connection sets;
// Shutdown stops them.
type frontListener struct {
	rt          *Router
	ln          net.Listener
	name        string
	tls         *tls.Config // nil: clear text
	port        []byte
	scheme      string
	clientCerts bool
	limit       *connLimit // nil: no --max-conns
	// altSvc is the Alt-Svc field of every response when the address also
	// serves HTTP/3 (Config.HTTP3, h3.go); nil otherwise.
	altSvc []string

	// gen serves new connections. A reload (renew) makes a new generation;
	// older ones keep serving the connections they have until those end.
	gen atomic.Pointer[frontGen]

	mu sync.Mutex // guards gens and every generation's users
	// gens are the generations Shutdown stops: the current one and each
	// older one still in use (users > 0). A retired generation leaves it
	// with its last user (release), so a router that reloads often keeps
	// only the generations that still serve a connection.
	gens []*frontGen

	servers sync.WaitGroup // fasthttp Serve goroutines

	// splitting holds the connections the accept loop's goroutines own:
	// from accept until the HTTP/1.1 front takes them, and h2 ones (served
	// on that goroutine) until they end. Shutdown waits for it to empty;
	// its deadline closes them.
	splitting connSet
	// tunnels are the upgraded connections (tunnel.go).
	tunnels connSet

	parkState // HTTP/1.1 connections, and those parked outside fasthttp (park.go)

	// loops serve the listener instead of the accept loop (the
	// HTTP/1.1 event loop, unless Config.DisableH1EventLoop); nil without.
	loops *loopFront
}

// frontGen is one generation of a listener's protocol servers, built with
// the timeouts current when it was made. Immutable but for users.
type frontGen struct {
	h1f  *h1Front
	h1   *fasthttp.Server
	h1ln *chanListener
	h2   *h2Front
	// users counts who may still serve a connection with this
	// generation (guarded by the listener's mu): an accept goroutine
	// from split to its end (an h2 connection's whole life), a
	// connection handed to h1 through h1ln until fasthttp lets go of it
	// (pushH1), a parkable connection while h1.ServeConn serves it
	// (serveConn). Only the current generation gains users from none
	// (acquire), so a retired one with none is done for good.
	users int
}

// renew starts a generation with timeouts t for new connections and retires
// the current one: it accepts nothing more but serves its connections on.
func (l *frontListener) renew(t *Timeouts) {
	rt := l.rt
	h1 := &h1Front{rt: rt, serverPort: l.port, scheme: l.scheme, clientCerts: l.clientCerts,
		conns: rt.metrics.clientConns.WithLabelValues(l.name, "http/1.1"), tunnels: &l.tunnels}
	if l.altSvc != nil {
		h1.altSvc = []byte(l.altSvc[0])
	}
	g := &frontGen{
		h1f:  h1,
		h1ln: newChanListener(l.ln.Addr()),
		h2: newH2Front(rt, t, &streamFront{rt: rt, serverPort: l.port, scheme: l.scheme, clientCerts: l.clientCerts, altSvc: l.altSvc},
			rt.metrics.clientConns.WithLabelValues(l.name, "h2")),
	}
	g.h1 = h1.server(t, func() { l.release(g) })
	l.servers.Add(1)
	go func() {
		defer l.servers.Done()
		// Serve returns when h1ln closes; fasthttp keeps serving the
		// connections it has (its busy workers finish them).
		_ = g.h1.Serve(g.h1ln)
	}()
	l.mu.Lock()
	l.gens = append(l.gens, g)
	old := l.gen.Swap(g)
	if old != nil {
		l.pruneLocked(old)
	}
	l.mu.Unlock()
	if old != nil {
		old.h1ln.Close()
	}
}

// acquire returns the current generation, held for the caller until it
// calls release.
func (l *frontListener) acquire() *frontGen {
	l.mu.Lock()
	defer l.mu.Unlock()
	g := l.gen.Load()
	g.users++
	return g
}

// hold adds a user to g, which the caller holds already (frontGen.users).
func (l *frontListener) hold(g *frontGen) {
	l.mu.Lock()
	g.users++
	l.mu.Unlock()
}

// release drops a user of g (acquire, hold); a retired generation left
// with none leaves gens.
func (l *frontListener) release(g *frontGen) {
	l.mu.Lock()
	defer l.mu.Unlock()
	g.users--
	l.pruneLocked(g)
}

// pruneLocked takes g off gens when it is retired and has no user left.
// Caller holds l.mu.
func (l *frontListener) pruneLocked(g *frontGen) {
	if g.users > 0 || g == l.gen.Load() {
		return
	}
	l.gens = slices.DeleteFunc(l.gens, func(o *frontGen) bool { return o == g })
}

// generations returns the generations Shutdown stops (gens). Once the
// router is closing no generation is made, so none gains a user after
// this that is not among them.
func (l *frontListener) generations() []*frontGen {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]*frontGen(nil), l.gens...)
}

// Serve serves HTTP/1.1 and h2c (prior knowledge) on ln until Shutdown.
// name labels the listener in metrics and logs. It returns nil after a
// Shutdown.
func (rt *Router) Serve(ln net.Listener, name string) error {
	return rt.serve(ln, name, nil)
}

// ServeTLS serves HTTPS on ln: TLS with ALPN, h2 and HTTP/1.1, until
// Shutdown. cfg must offer "h2" and "http/1.1" in NextProtos for h2 to be
// negotiated; it is not modified.
func (rt *Router) ServeTLS(ln net.Listener, name string, cfg *tls.Config) error {
	if cfg == nil {
		return errors.New("router: ServeTLS needs a tls.Config")
	}
	return rt.serve(ln, name, cfg)
}

func (rt *Router) serve(ln net.Listener, name string, cfg *tls.Config) error {
	port := "0"
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
		port = strconv.Itoa(int(ap.Port()))
	}
	l := &frontListener{rt: rt, ln: ln, name: name, tls: cfg, port: []byte(port), scheme: "http"}
	if cfg != nil {
		l.scheme = "https"
		l.clientCerts = cfg.ClientAuth != tls.NoClientCert
		if rt.cfg.HTTP3 {
			l.altSvc = []string{altSvc(port)}
		}
	}
	if rt.cfg.MaxConns > 0 {
		l.limit = &connLimit{max: int64(rt.cfg.MaxConns)}
	}

	rt.mu.Lock()
	if rt.closing {
		rt.mu.Unlock()
		return nil
	}
	l.renew(rt.timeouts()) // under rt.mu: SetTimeouts cannot interleave
	if cfg == nil && !rt.cfg.DisableH1EventLoop && !rt.cfg.ProxyProtocol && l.limit == nil {
		l.loops = l.startLoops() // h1loop_linux.go
	}
	rt.fronts = append(rt.fronts, l)
	rt.mu.Unlock()

	var err error
	if l.loops != nil {
		l.loops.wait() // until Shutdown
	} else {
		err = l.acceptLoop()
	}
	l.gen.Load().h1ln.Close()
	l.servers.Wait()
	if rt.shuttingDown() {
		return nil
	}
	return err
}

// acceptLoop accepts until the listener is closed; errors that pass
// (EMFILE and the like) back off in the Acceptor.
func (l *frontListener) acceptLoop() error {
	acc := &sockutil.Acceptor{Listener: l.ln, OnRetry: func(err error, backoff time.Duration) {
		l.rt.log.Warn("accept failed; retrying", "listener", l.name, "err", err, "backoff", backoff)
	}}
	for {
		c, err := acc.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		l.accepted(c)
	}
}

// accepted starts serving c, a connection the accept loop took, or one the
// HTTP/1.1 event loop hands over with the bytes it read (h1loop_linux.go):
// --max-conns, then the split on a goroutine of its own.
func (l *frontListener) accepted(c net.Conn) {
	if l.limit != nil {
		lc, ok := l.limit.admit(c)
		if !ok {
			l.rt.connsRefused.WithLabelValues(l.name).Inc()
			l.limit.refuse(c, l.tls != nil, l.rt.now())
			return
		}
		c = lc
	}
	if !l.splitting.add(c) {
		c.Close() // past the shutdown deadline
		return
	}
	go func() {
		p := l.split(c)
		// An HTTP/1.1 connection that can park is served here, outside
		// the splitting set: fasthttp's Shutdown waits for it, and one
		// whose response outlives Shutdown's context is closed
		// (shutdown.go) and ends then.
		l.splitting.remove(c)
		if p != nil {
			l.serveConn(p)
		}
	}()
}

// split finishes the TLS handshake or sniffs for the h2c preface, then hands
// the connection to the h2 or HTTP/1.1 front; an HTTP/1.1 one that can park is
// returned, counted and tracked, for the caller to serve (serveConn).
func (l *frontListener) split(c net.Conn) *parkConn {
	rt := l.rt
	g := l.acquire()
	defer l.release(g)
	_ = c.SetDeadline(rt.now().Add(rt.timeouts().Header))
	if rt.cfg.ProxyProtocol { // proxyproto.go
		var ok bool
		if c, ok = l.acceptProxy(c); !ok {
			return nil
		}
	}
	if l.tls != nil {
		tc := tls.Server(c, l.tls)
		if err := tc.Handshake(); err != nil {
			rt.metrics.tlsHandshakeErrors.Inc()
			rt.log.Debug("tls handshake failed", "listener", l.name, "remote", c.RemoteAddr(), "err", err)
			c.Close()
			return nil
		}
		_ = c.SetDeadline(time.Time{})
		switch tc.ConnectionState().NegotiatedProtocol {
		case "h2":
			g.h2.serveConn(tc)
			return nil
		case alpnChallenge: // acme.go: the handshake was the whole exchange
			tc.Close()
			return nil
		}
		return l.admitH1(g, tc)
	}
	pc, isH2, err := sniffPreface(c)
	if err != nil {
		// Nothing (or not even a request line) within the header timeout.
		rt.log.Debug("connection closed before a request", "listener", l.name, "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return nil
	}
	_ = c.SetDeadline(time.Time{})
	if isH2 {
		g.h2.serveConn(pc)
		return nil
	}
	return l.admitH1(g, pc)
}

// admitH1 wraps an HTTP/1.x connection (clear text or TLS) so that it can
// park while idle (park.go), counts and tracks it; the caller serves it on
// its own goroutine rather than one of fasthttp's pooled workers, so the
// goroutine, and its grown stack, end when the connection parks or closes.
// A connection that cannot park goes to the fasthttp listener (nil).
func (l *frontListener) admitH1(g *frontGen, c net.Conn) *parkConn {
	p := newParkConn(c, l, g.h1f)
	if p == nil {
		l.pushH1(g, c)
		return nil
	}
	if !l.track(p) {
		return nil // Shutdown gave up waiting: closed
	}
	g.h1f.connOpened()
	return p
}

// pushH1 hands c to the HTTP/1.1 server of generation g, which the caller
// holds, or of the newer generation a reload put in its place meanwhile; it
// closes c only when the listener is shutting down. The generation that
// takes c keeps a user for it until its server lets go of c (h1Front.server).
func (l *frontListener) pushH1(g *frontGen, c net.Conn) {
	l.hold(g)
	for !g.h1ln.push(c) {
		next := l.acquire()
		l.release(g)
		if next == g {
			l.release(next)
			c.Close() // shutdown: no generation will take it
			return
		}
		g = next
	}
}

// sniffPreface reads just enough of c to tell an HTTP/2 prior-knowledge
// client (RFC 9113 §3.3) from an HTTP/1.x one. The bytes read are replayed
// by the returned conn. It reads only while what arrived is still a prefix
// of the preface, so a short HTTP/1.0 request never waits for more.
func sniffPreface(c net.Conn) (net.Conn, bool, error) {
	var b [len(h2Preface)]byte
	n := 0
	for {
		m, err := c.Read(b[n:])
		n += m
		if !bytes.HasPrefix([]byte(h2Preface), b[:n]) {
			return newPrefixConn(c, b[:n]), false, nil
		}
		if n == len(b) {
			return newPrefixConn(c, b[:n]), true, nil
		}
		if err != nil {
			if n > 0 && err == io.EOF {
				return newPrefixConn(c, b[:n]), false, nil
			}
			return nil, false, err
		}
	}
}

// prefixConn replays bytes already read from a connection before reading
// more from it.
type prefixConn struct {
	net.Conn
	pre []byte
}

func newPrefixConn(c net.Conn, pre []byte) *prefixConn {
	return &prefixConn{Conn: c, pre: append([]byte(nil), pre...)}
}

func (p *prefixConn) Read(b []byte) (int, error) {
	if len(p.pre) > 0 {
		n := copy(b, p.pre)
		p.pre = p.pre[n:]
		return n, nil
	}
	return p.Conn.Read(b)
}

// chanListener feeds connections the split has classified as HTTP/1.x to a
// fasthttp.Server, which only knows how to Accept.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to the server; false if the listener is closed.
func (l *chanListener) push(c net.Conn) bool {
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		// fasthttp recognises this message as a clean stop.
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// Shutdown stops accepting and sends HTTP/2 GOAWAY; HTTP/1.1 responses
// already say "Connection: close" (Router.draining). After the keep-alive
// grace (Router.awaitH1Grace) it closes idle connections, lets requests in
// flight and tunnels finish, and waits for every connection until ctx ends;
// then the rest are closed.
func (l *frontListener) Shutdown(ctx context.Context) error {
	l.ln.Close()
	l.loops.stopAccepting()
	gens := l.generations()
	for _, g := range gens {
		g.h2.startShutdown()
	}
	l.rt.awaitH1Grace(ctx)
	var wg sync.WaitGroup
	errs := make([]error, len(gens)+1)
	for i, g := range gens {
		wg.Go(func() { errs[i] = g.h1.ShutdownWithContext(ctx) })
	}
	// The deadline is reported once, below.
	wg.Go(func() { _ = l.tunnels.shutdown(ctx) })
	wg.Go(func() { l.loops.shutdown(ctx) })
	l.closeParked()
	done := make(chan struct{})
	go func() {
		<-l.splitting.wait()
		<-l.parked.wait()
		close(done)
	}()
	select {
	case <-done:
	case <-ctx.Done():
		errs[len(gens)] = ctx.Err()
		l.closeConns()
		l.splitting.closeAll() // h2 connections too
		waitBounded(done, cutGrace)
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitBounded waits until done is closed or d has passed: after the
// shutdown deadline, what was cut gets d to end (shutdown.go).
func waitBounded(done <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// clientDN returns the subject of the verified client certificate on c, if
// any, in RFC 2253 form, appended to x's scratch space.
func clientDN(c net.Conn, x *exchange) []byte {
	tc, ok := c.(interface{ ConnectionState() tls.ConnectionState }) // *tls.Conn, tlsParkConn
	if !ok {
		return nil
	}
	return appendPeerDN(x, tc.ConnectionState())
}

func appendPeerDN(x *exchange, cs tls.ConnectionState) []byte {
	if len(cs.VerifiedChains) == 0 || len(cs.PeerCertificates) == 0 {
		return nil
	}
	n := len(x.scratch)
	x.scratch = append(x.scratch, cs.PeerCertificates[0].Subject.String()...)
	return x.scratch[n:len(x.scratch):len(x.scratch)]
}
