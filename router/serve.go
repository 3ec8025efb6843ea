package router

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/valyala/fasthttp"
)

// A front listener splits each accepted connection by protocol before any
// request is parsed: over TLS by the ALPN result (h2 → x/net/http2, anything
// else → fasthttp), in clear text by sniffing the HTTP/2 connection preface
// (h2c with prior knowledge). Both protocols then meet in forward.
//
// Per connection, the split runs on its own goroutine (a slow TLS handshake
// must not hold up the accept loop), bounded by HeaderTimeout.

// h2Preface is what an HTTP/2 client sends first (RFC 9113 §3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// frontListener is one --http or --https listener. Its goroutines (accept
// loop, per-connection split, h2 connections) are owned by wg; close stops
// them.
type frontListener struct {
	rt   *Router
	ln   net.Listener
	name string
	tls  *tls.Config // nil: clear text

	h1   *fasthttp.Server
	h1ln *chanListener
	h2   *h2Front

	wg sync.WaitGroup
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
	scheme := "http"
	if cfg != nil {
		scheme = "https"
	}
	clientCerts := cfg != nil && cfg.ClientAuth != tls.NoClientCert
	l := &frontListener{rt: rt, ln: ln, name: name, tls: cfg, h1ln: newChanListener(ln.Addr())}
	h1 := &h1Front{rt: rt, serverPort: []byte(port), scheme: scheme, clientCerts: clientCerts,
		conns: rt.metrics.clientConns.WithLabelValues(name, "http/1.1")}
	l.h1 = h1.server()
	l.h2 = newH2Front(rt, []byte(port), scheme, clientCerts, rt.metrics.clientConns.WithLabelValues(name, "h2"))

	rt.mu.Lock()
	if rt.closing {
		rt.mu.Unlock()
		return nil
	}
	rt.listeners = append(rt.listeners, l)
	rt.mu.Unlock()

	h1done := make(chan error, 1)
	go func() { h1done <- l.h1.Serve(l.h1ln) }()
	err := l.acceptLoop()
	l.h1ln.Close()
	if herr := <-h1done; err == nil && herr != nil && !errors.Is(herr, net.ErrClosed) {
		err = herr
	}
	rt.mu.Lock()
	closing := rt.closing
	rt.mu.Unlock()
	if closing {
		return nil
	}
	return err
}

// acceptLoop accepts until the listener is closed. Temporary errors
// (EMFILE and the like) back off instead of spinning or giving up.
func (l *frontListener) acceptLoop() error {
	var backoff time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || isTemporary(err) {
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				l.rt.log.Warn("accept failed; retrying", "listener", l.name, "err", err, "backoff", backoff)
				time.Sleep(backoff)
				continue
			}
			return err
		}
		backoff = 0
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.split(c)
		}()
	}
}

func isTemporary(err error) bool {
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}

// split finishes the TLS handshake or sniffs for the h2c preface, then hands
// the connection to the h2 or HTTP/1.1 front.
func (l *frontListener) split(c net.Conn) {
	rt := l.rt
	_ = c.SetDeadline(rt.now().Add(rt.cfg.HeaderTimeout))
	if l.tls != nil {
		tc := tls.Server(c, l.tls)
		if err := tc.Handshake(); err != nil {
			rt.metrics.tlsHandshakeErrors.Inc()
			rt.log.Debug("tls handshake failed", "listener", l.name, "remote", c.RemoteAddr(), "err", err)
			c.Close()
			return
		}
		_ = c.SetDeadline(time.Time{})
		if tc.ConnectionState().NegotiatedProtocol == "h2" {
			l.h2.serveConn(tc)
			return
		}
		l.h1ln.push(tc)
		return
	}
	pc, isH2, err := sniffPreface(c)
	if err != nil {
		// Nothing (or not even a request line) within the header timeout.
		rt.log.Debug("connection closed before a request", "listener", l.name, "remote", c.RemoteAddr(), "err", err)
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	if isH2 {
		l.h2.serveConn(pc)
		return
	}
	l.h1ln.push(pc)
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

// push hands c to the server, or closes it if the server is gone.
func (l *chanListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
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

// shutdown stops accepting, lets requests in flight finish (HTTP/2 clients
// get GOAWAY, HTTP/1.1 responses "Connection: close"), and waits for every
// connection until ctx ends; then the rest are closed.
func (l *frontListener) shutdown(ctx context.Context) error {
	l.ln.Close()
	var wg sync.WaitGroup
	var h1err error
	wg.Add(1)
	go func() {
		defer wg.Done()
		h1err = l.h1.ShutdownWithContext(ctx)
	}()
	l.h2.startShutdown()
	done := make(chan struct{})
	go func() {
		l.wg.Wait()
		close(done)
	}()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		err = ctx.Err()
		l.h2.closeAll()
		<-done
	}
	wg.Wait()
	return errors.Join(h1err, err)
}

// clientDN returns the subject of the verified client certificate on c, if
// any, in RFC 2253 form, appended to x's scratch space.
func clientDN(c net.Conn, x *exchange) []byte {
	tc, ok := c.(*tls.Conn)
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
