package router

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
	"github.com/quic-go/quic-go/qlog"
	"github.com/quic-go/quic-go/qlogwriter"
)

// h3Router is a router serving HTTPS on TCP and HTTP/3 on the UDP port of
// the same number, as the app does with --http3.
type h3Router struct {
	*testRouter
	tcp, udp string
	ca       *testcert.CA
}

func startH3Router(t *testing.T, cfg Config) *h3Router {
	t.Helper()
	cfg.HTTP3 = true
	r := startRouter(t, cfg)
	ca := testcert.NewCA(t, "router test CA")
	tcfg := &tls.Config{Certificates: []tls.Certificate{ca.Server(t, "h3.test").TLS(t)},
		NextProtos: []string{"h2", "http/1.1"}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	go r.rt.ServeTLS(ln, "h3-test", tcfg)
	served := make(chan error, 1)
	go func() { served <- r.rt.ServeHTTP3(pc, "h3-test", tcfg.Clone()) }()
	t.Cleanup(func() { // before startRouter's, which would shut down too
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.rt.Shutdown(ctx)
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("ServeHTTP3: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("ServeHTTP3 still running after Shutdown")
		}
	})
	waitFor(t, "the h3 front", func() bool { return h3FrontOf(r.rt) != nil })
	return &h3Router{testRouter: r, tcp: ln.Addr().String(), udp: pc.LocalAddr().String(), ca: ca}
}

// h3FrontOf is rt's HTTP/3 front, nil until ServeHTTP3 has registered it.
func h3FrontOf(rt *Router) *h3Front {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, f := range rt.fronts {
		if h, ok := f.(*h3Front); ok {
			return h
		}
	}
	return nil
}

func (r *h3Router) clientTLS() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(r.ca.Cert)
	return &tls.Config{RootCAs: pool, ServerName: "h3.test", NextProtos: []string{http3.NextProtoH3},
		ClientSessionCache: tls.NewLRUClientSessionCache(4)}
}

// h3Client is quic-go's HTTP/3 client for r.
func (r *h3Router) h3Client(t *testing.T) *http.Client {
	tr := &http3.Transport{TLSClientConfig: r.clientTLS()}
	t.Cleanup(func() { tr.Close() })
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// A request over HTTP/3 goes through the forwarding core like an h2 one:
// the vars of RFC 9114 §4.3.1's pseudo-headers, a body streamed to the
// node, the node's response and status, connections counted with
// proto="h3"; the TCP listener of the address advertises it with Alt-Svc
// on HTTP/1.1 and h2.
func TestH3Forwards(t *testing.T) {
	n := startFakeNode(t, func(v map[string]string, body []byte) string {
		return "HTTP/1.1 201 Created\r\nContent-Type: text/plain\r\nAlt-Svc: clear\r\n\r\ngot " + strconv.Itoa(len(body))
	})
	r := startH3Router(t, Config{})
	r.table.AddStatic(r.udp, n.addr(), 1)
	r.table.AddStatic("h3.test", n.addr(), 1)
	c := r.h3Client(t)
	body := strings.Repeat("b", 300<<10) // past one stream window
	resp, err := c.Post("https://"+r.udp+"/up?q=1", "text/x-test", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(got) != "got "+strconv.Itoa(len(body)) || resp.Proto != "HTTP/3.0" {
		t.Fatalf("h3 POST: %s %d %q", resp.Proto, resp.StatusCode, got)
	}
	v := n.last()
	for k, want := range map[string]string{"SERVER_PROTOCOL": "HTTP/3.0", "HTTPS": "on", "HTTP_HOST": r.udp,
		"REQUEST_METHOD": "POST", "REQUEST_URI": "/up?q=1", "QUERY_STRING": "q=1", "CONTENT_TYPE": "text/x-test",
		"SERVER_PORT": r.udp[strings.LastIndex(r.udp, ":")+1:], "CONTENT_LENGTH": strconv.Itoa(len(body))} {
		if v[k] != want {
			t.Errorf("node var %s = %q; want %q", k, v[k], want)
		}
	}
	if g := testutil.ToFloat64(r.rt.metrics.clientConns.WithLabelValues("h3-test", "h3")); g != 1 {
		t.Errorf("client_connections{proto=h3} = %v; want 1", g)
	}

	port := r.tcp[strings.LastIndex(r.tcp, ":")+1:]
	want := `h3=":` + port + `"; ma=86400`
	tcfg := r.clientTLS()
	for _, proto := range []string{"http/1.1", "h2"} {
		tcfg.NextProtos = []string{proto}
		tr := &http.Transport{TLSClientConfig: tcfg, ForceAttemptHTTP2: proto == "h2"}
		hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
		for _, host := range []string{"h3.test", "nopool.test"} { // a response and an error page
			req, _ := http.NewRequest("GET", "https://"+r.tcp+"/", nil)
			req.Host = host
			resp, err := hc.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if got := resp.Header.Values("Alt-Svc"); len(got) != 1 || got[0] != want {
				t.Errorf("%s %s (%d): Alt-Svc %q; want %q", resp.Proto, host, resp.StatusCode, got, want)
			}
		}
		tr.CloseIdleConnections()
	}
}

// slowStartConn delays what a client receives until a moment after it
// started: whatever it sends first (its first flight: the ClientHello and
// any 0-RTT data) reaches the router well before the client can finish
// the handshake, so a request sent at once is an early one, however
// loaded the machine.
type slowStartConn struct {
	net.PacketConn
	until time.Time
}

func (c *slowStartConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, a, err := c.PacketConn.ReadFrom(b)
	time.Sleep(time.Until(c.until))
	return n, a, err
}

// earlyRequest resumes a session with r on a fresh connection and sends
// method in its first flight, before the handshake can complete. It
// returns the response status and whether the router accepted 0-RTT.
func earlyRequest(t *testing.T, r *h3Router, tcfg *tls.Config, method string) (int, bool) {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	tr := &quic.Transport{Conn: &slowStartConn{PacketConn: pc, until: time.Now().Add(time.Second)}}
	defer tr.Close()
	ua, _ := net.ResolveUDPAddr("udp", r.udp)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := tr.DialEarly(ctx, ua, tcfg, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(qc)
	str, err := cc.OpenRequestStream(ctx)
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(method, "https://"+r.udp+"/early", nil)
	if err := str.SendRequestHeader(req); err != nil {
		t.Fatal(err)
	}
	str.Close()
	resp, err := str.ReadResponse()
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, qc.ConnectionState().Used0RTT
}

// 0-RTT (RFC 8470): refused without HTTP3EarlyData, so a resumed client's
// requests wait for the handshake; with it, GET goes to the node marked
// Early-Data: 1 and POST is answered 425 without reaching it.
func TestH3EarlyData(t *testing.T) {
	for _, early := range []bool{false, true} {
		t.Run("early="+strconv.FormatBool(early), func(t *testing.T) {
			n := startFakeNode(t, okReply("ok"))
			r := startH3Router(t, Config{HTTP3EarlyData: early})
			r.table.AddStatic(r.udp, n.addr(), 1)
			tcfg := r.clientTLS()
			// A first connection gets the session ticket.
			tr := &http3.Transport{TLSClientConfig: tcfg}
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + r.udp + "/first")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			tr.Close()

			code, used := earlyRequest(t, r, tcfg, "GET")
			if used != early || code != 200 {
				t.Fatalf("resumed GET: %d, 0-RTT used %v; want 200, %v", code, used, early)
			}
			if got := n.last()["HTTP_EARLY_DATA"]; (got == "1") != early {
				t.Errorf("node saw HTTP_EARLY_DATA=%q with 0-RTT %v", got, early)
			}
			seen := len(n.Requests())
			code, used = earlyRequest(t, r, tcfg, "POST")
			want := 200
			if early {
				want = 425
			}
			if used != early || code != want {
				t.Fatalf("resumed POST: %d, 0-RTT used %v; want %d, %v", code, used, want, early)
			}
			if early && len(n.Requests()) != seen {
				t.Error("a POST in early data reached the node")
			}
		})
	}
}

// The router's own QUIC limits: --max-conns counts QUIC connections (the
// one past it is refused before its handshake, and counted), and a
// connection may have at most h3MaxStreams requests open at once.
func TestH3Limits(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	t.Cleanup(func() { once.Do(func() { close(release) }) })
	n := startFakeNode(t, func(map[string]string, []byte) string {
		<-release
		return "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	})
	const maxConns = 3
	r := startH3Router(t, Config{MaxConns: maxConns})
	r.table.AddStatic(r.udp, n.addr(), 1)
	ua, _ := net.ResolveUDPAddr("udp", r.udp)
	dial := func() (*quic.Conn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return quic.DialAddr(ctx, ua.String(), r.clientTLS(), &quic.Config{})
	}
	var conns []*quic.Conn
	for range maxConns {
		c, err := dial()
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	_, err := dial()
	var te *quic.TransportError
	if !errors.As(err, &te) || te.ErrorCode != quic.ConnectionRefused {
		t.Fatalf("connection %d: %v; want CONNECTION_REFUSED", maxConns+1, err)
	}
	// Counted per Initial refused: a ClientHello with a post-quantum key
	// share takes two, and a client that retransmits before it reads the
	// refusal sends them again (docs/http3.md).
	if v := testutil.ToFloat64(r.rt.connsRefused.WithLabelValues("h3-test")); v < 1 || v > 6 {
		t.Errorf("refused connections counted %v; want 1 to 6 (the Initials of one attempt)", v)
	}
	// Closing one frees its slot.
	conns[0].CloseWithError(0, "")
	waitFor(t, "the closed connection's slot", func() bool {
		return testutil.ToFloat64(r.rt.metrics.clientConns.WithLabelValues("h3-test", "h3")) == maxConns-1
	})
	c, err := dial()
	if err != nil {
		t.Fatalf("after a close: %v", err)
	}
	conns[0] = c

	// Streams: h3MaxStreams open at once, the next one is refused by the
	// client's own stream limit, which is the router's setting.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cc := (&http3.Transport{}).NewClientConn(c)
	var strs []*http3.RequestStream
	for i := range h3MaxStreams {
		str, err := cc.OpenRequestStream(ctx)
		if err != nil {
			t.Fatalf("stream %d: %v", i, err)
		}
		req, _ := http.NewRequest("GET", "https://"+r.udp+"/hold", nil)
		if err := str.SendRequestHeader(req); err != nil {
			t.Fatal(err)
		}
		str.Close() // no body
		strs = append(strs, str)
	}
	short, cancelShort := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancelShort()
	if _, err := cc.OpenRequestStream(short); err == nil {
		t.Fatalf("stream %d opened; want the limit of %d", h3MaxStreams+1, h3MaxStreams)
	}
	once.Do(func() { close(release) })
	for _, str := range strs {
		resp, err := str.ReadResponse()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("held stream: %v %v", resp, err)
		}
	}
	for _, c := range conns {
		c.CloseWithError(0, "")
	}
}

// Shutdown sends GOAWAY: a request in flight finishes, the client opens
// no new stream on the connection, and ServeHTTP3 returns.
func TestH3ShutdownFinishesStreams(t *testing.T) {
	started := make(chan struct{})
	release := make(chan struct{})
	n := startFakeNode(t, func(map[string]string, []byte) string {
		close(started)
		<-release
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone"
	})
	r := startH3Router(t, Config{})
	r.table.AddStatic(r.udp, n.addr(), 1)
	c := r.h3Client(t)
	type result struct {
		code int
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://" + r.udp + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{resp.StatusCode, string(b), err}
	}()
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- r.rt.Shutdown(ctx)
	}()
	waitFor(t, "shutdown to begin", r.rt.shuttingDown)
	close(release)
	got := <-res
	if got.err != nil || got.code != 200 || got.body != "done" {
		t.Fatalf("request in flight at shutdown: %+v", got)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// A client that keeps its connection open after GOAWAY (it never closes
// it, or its CONNECTION_CLOSE was lost) does not hold Shutdown to its
// deadline: an idle connection is closed with H3_NO_ERROR after
// drainGrace.
func TestH3ShutdownClosesIdleConnections(t *testing.T) {
	r := startH3Router(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// A bare QUIC connection: no HTTP/3 client to act on the GOAWAY.
	qc, err := quic.DialAddr(ctx, r.udp, r.clientTLS(), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	waitFor(t, "the connection to be served", func() bool {
		f := h3FrontOf(r.rt)
		f.mu.Lock()
		defer f.mu.Unlock()
		return len(f.live) == 1
	})
	start := time.Now()
	if err := r.rt.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	took := time.Since(start)
	select {
	case <-qc.Context().Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the idle connection is still open after Shutdown")
	}
	var ae *quic.ApplicationError
	if err := context.Cause(qc.Context()); !errors.As(err, &ae) || ae.ErrorCode != quic.ApplicationErrorCode(http3.ErrCodeNoError) || !ae.Remote {
		t.Errorf("connection ended with %v; want the router's H3_NO_ERROR", err)
	}
	if took < drainGrace || took > 5*time.Second {
		t.Errorf("Shutdown took %s; want about drainGrace (%s)", took, drainGrace)
	}
}

// The request head limits hold on HTTP/3 as on the other fronts: a field
// section over MaxHeaderBytes (quic-go's check, answered by quic-go as
// x/net/http2 does for h2) and more fields than MaxHeaderCount (the strict
// checks, counted and logged) are 431 and reach no node; the access log
// has proto HTTP/3.0.
func TestH3HeaderLimits(t *testing.T) {
	n := startFakeNode(t, okReply("ok"))
	logs := &lineBuffer{}
	r := startH3Router(t, Config{MaxHeaderBytes: 8192, AccessLog: logs})
	r.table.AddStatic(r.udp, n.addr(), 1)
	c := r.h3Client(t)
	do := func(h http.Header) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "https://"+r.udp+"/limits", nil)
		req.Header = h
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do(http.Header{"X-Small": {"1"}}); code != 200 {
		t.Fatalf("small head: %d", code)
	}
	if code := do(http.Header{"X-Big": {strings.Repeat("b", 10000)}}); code != 431 {
		t.Errorf("10000-byte field with MaxHeaderBytes 8192: %d; want 431", code)
	}
	many := http.Header{}
	for i := range 101 {
		many.Set("X-F"+strconv.Itoa(i), "v")
	}
	if code := do(many); code != 431 {
		t.Errorf("101 fields: %d; want 431", code)
	}
	if got := len(n.Requests()); got != 1 {
		t.Errorf("node saw %d requests; want only the small one", got)
	}
	l := logs.waitLines(t, 2)
	if l[0].Proto != "HTTP/3.0" || l[0].Status != 200 || l[1].Status != 431 {
		t.Errorf("access log %+v; want HTTP/3.0 200 then the 431", l)
	}
}

// Without Config.HTTP3 a TLS listener advertises nothing.
func TestNoAltSvcWithoutHTTP3(t *testing.T) {
	ca := testcert.NewCA(t, "router test CA")
	addr, _, _, _ := parkTLSRouter(t, ca)
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	for _, proto := range []string{"http/1.1", "h2"} {
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "p.test", NextProtos: []string{proto}},
			ForceAttemptHTTP2: proto == "h2"}
		req, _ := http.NewRequest("GET", "https://"+addr+"/", nil)
		req.Host = "p.test"
		resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		tr.CloseIdleConnections()
		if v := resp.Header.Values("Alt-Svc"); resp.StatusCode != 200 || len(v) != 0 {
			t.Errorf("%s: %d, Alt-Svc %q; want 200 and none", resp.Proto, resp.StatusCode, v)
		}
	}
}

// retrySeen is a client qlog trace that notes a Retry packet received.
type retrySeen struct{ seen atomic.Bool }

func (r *retrySeen) AddProducer() qlogwriter.Recorder { return r }
func (r *retrySeen) Close() error                     { return nil }
func (r *retrySeen) RecordEvent(e qlogwriter.Event) {
	if p, ok := e.(qlog.PacketReceived); ok && p.Header.PacketType == qlog.PacketTypeRetry {
		r.seen.Store(true)
	}
}

// With --max-conns, address validation starts at half of it: from then on
// a new client first gets a Retry (RFC 9000 §8.1.2), so spoofed Initials
// cannot fill the slots.
func TestH3RetryFromHalfMaxConns(t *testing.T) {
	r := startH3Router(t, Config{MaxConns: 4})
	for i, wantRetry := range []bool{false, false, true, true} {
		tr := &retrySeen{}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		qc, err := quic.DialAddr(ctx, r.udp, r.clientTLS(), &quic.Config{
			Tracer: func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace { return tr }})
		cancel()
		if err != nil {
			t.Fatalf("connection %d: %v", i+1, err)
		}
		defer qc.CloseWithError(0, "")
		if tr.seen.Load() != wantRetry {
			t.Errorf("connection %d (%d open before it): Retry %v; want %v", i+1, i, tr.seen.Load(), wantRetry)
		}
	}
}

// muteAfterConn lets a client's first n datagrams out and drops the rest:
// a handshake that stalls after its first flight.
type muteAfterConn struct {
	net.PacketConn
	n atomic.Int64
}

func (c *muteAfterConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.n.Add(-1) < 0 {
		return len(b), nil
	}
	return c.PacketConn.WriteTo(b, a)
}

// A handshake that stalls holds its --max-conns slot only for the header
// timeout (quic-go's handshake idle timeout): then the slot is free and
// the gauge back to zero.
func TestH3StalledHandshakeFreesItsSlot(t *testing.T) {
	r := startH3Router(t, Config{MaxConns: 2, HeaderTimeout: time.Second})
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	mc := &muteAfterConn{PacketConn: pc}
	mc.n.Store(2) // the ClientHello (two datagrams with a post-quantum key share)
	tr := &quic.Transport{Conn: mc}
	defer tr.Close()
	ua, _ := net.ResolveUDPAddr("udp", r.udp)
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	go tr.Dial(ctx, ua, r.clientTLS(), &quic.Config{}) // gives up; the router does not know
	gauge := r.rt.metrics.clientConns.WithLabelValues("h3-test", "h3")
	waitFor(t, "the stalled handshake to hold a slot", func() bool { return testutil.ToFloat64(gauge) == 1 })
	start := time.Now()
	waitFor(t, "the stalled handshake's slot to be freed", func() bool { return testutil.ToFloat64(gauge) == 0 })
	if d := time.Since(start); d > 3*time.Second { // quic-go's default would be 5s
		t.Errorf("slot freed after %s; want about the 1s header timeout", d)
	}
	if open := h3FrontOf(r.rt).limit.open.Load(); open != 0 {
		t.Errorf("%d --max-conns slots still taken", open)
	}
}
