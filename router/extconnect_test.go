package router

//lint:file-ignore SA1019 x/net/http2's Transport is the client here on purpose: net/http's refuses a request with a :protocol field (transport.go, its header field name check), so it cannot send an extended CONNECT

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/tls"
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/net/http2"
)

// wsFake is an in-process node, uwsgi or http, that answers a WebSocket
// handshake the way uWSGI's websocket_handshake does (101 with
// Sec-WebSocket-Accept computed from the key it got) and then runs mode
// on the raw connection: "echo" copies bytes back, "sink" reads and drops
// them, "cut" closes after the first bytes, "tick" echoes and sends "t"
// every 250 ms, 12 times, "flood" sinks and sends 8 MiB (more than any
// window). answer, when set, replaces the
// 101 head.
type wsFake struct {
	ln     net.Listener
	http   bool
	mode   string
	answer string // under mu
	mu     sync.Mutex
	vars   []map[string]string // what each handshake carried, as uwsgi vars
	closed chan struct{}       // gets a value when a tunnel's client side ended (EOF)
}

func startWSFake(t *testing.T, httpNode bool, mode string) *wsFake {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &wsFake{ln: ln, http: httpNode, mode: mode, closed: make(chan struct{}, 16)}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go f.serve(c)
		}
	}()
	t.Cleanup(func() { ln.Close() })
	return f
}

func (f *wsFake) addr() string {
	if f.http {
		return "http://" + f.ln.Addr().String()
	}
	return f.ln.Addr().String()
}

// setAnswer makes the node answer the next handshakes with a (mu: the
// node's goroutines read it).
func (f *wsFake) setAnswer(a string) {
	f.mu.Lock()
	f.answer = a
	f.mu.Unlock()
}

func (f *wsFake) last() map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.vars) == 0 {
		return nil
	}
	return f.vars[len(f.vars)-1]
}

// readHandshake reads one request as vars: a uwsgi packet, or an HTTP/1.1
// head turned into the HTTP_* names a uwsgi node would get.
func (f *wsFake) readHandshake(br *bufio.Reader) map[string]string {
	vars := map[string]string{}
	if f.http {
		req, err := http.ReadRequest(br)
		if err != nil {
			return nil
		}
		vars["REQUEST_METHOD"], vars["REQUEST_URI"], vars["HTTP_HOST"] = req.Method, req.RequestURI, req.Host
		for k, vs := range req.Header {
			vars["HTTP_"+strings.ToUpper(strings.ReplaceAll(k, "-", "_"))] = strings.Join(vs, ",")
		}
		return vars
	}
	var hb [4]byte
	if _, err := io.ReadFull(br, hb[:]); err != nil {
		return nil
	}
	h, _ := uwsgi.ParseHeader(hb[:])
	block := make([]byte, h.Size)
	if _, err := io.ReadFull(br, block); err != nil {
		return nil
	}
	for off := 0; off < len(block); {
		k, v, next, err := uwsgi.NextVar(block, off)
		if err != nil {
			return nil
		}
		vars[string(k)] = string(v)
		off = next
	}
	return vars
}

func wsAccept(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

func (f *wsFake) serve(c net.Conn) {
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	vars := f.readHandshake(br)
	if vars == nil {
		return
	}
	f.mu.Lock()
	f.vars = append(f.vars, vars)
	answer := f.answer
	f.mu.Unlock()
	if answer != "" {
		io.WriteString(c, answer)
		return
	}
	io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "+wsAccept(vars["HTTP_SEC_WEBSOCKET_KEY"])+"\r\nSec-WebSocket-Protocol: chat\r\n\r\nhello")
	if f.mode == "flood" {
		go func() {
			junk := bytes.Repeat([]byte("f"), 64<<10)
			for range 128 {
				if _, err := c.Write(junk); err != nil {
					return
				}
			}
		}()
	}
	if f.mode == "tick" {
		go func() {
			for range 12 {
				time.Sleep(250 * time.Millisecond)
				if _, err := io.WriteString(c, "t"); err != nil {
					return
				}
			}
		}()
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := br.Read(buf)
		if n > 0 {
			switch f.mode {
			case "echo", "tick":
				if _, err := c.Write(buf[:n]); err != nil {
					return
				}
			case "cut":
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				f.closed <- struct{}{}
			}
			return
		}
	}
}

// h2cExtTransport is x/net/http2's client over h2c to r, which speaks
// extended CONNECT when the server advertises it.
func h2cExtTransport(r *testRouter) *http2.Transport {
	return &http2.Transport{AllowHTTP: true, DialTLSContext: func(ctx context.Context, _, _ string, _ *tls.Config) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", r.addr)
	}}
}

// wsStream is the client side of one extended CONNECT.
type wsStream struct {
	resp *http.Response
	in   *io.PipeWriter // what the client sends
}

func openWS(t *testing.T, tr *http2.Transport, protocol, path string, extra http.Header) (*wsStream, error) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, "http://k.test"+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(":protocol", protocol)
	req.Header.Set("Sec-WebSocket-Version", "13")
	for k, v := range extra {
		req.Header[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	req = req.WithContext(ctx)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		pw.Close()
		return nil, err
	}
	s := &wsStream{resp: resp, in: pw}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	return s, nil
}

// readN reads exactly n bytes of the stream (the node's, through the tunnel).
func (s *wsStream) readN(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := io.ReadFull(s.resp.Body, b); err != nil {
		t.Fatalf("reading %d bytes of the tunnel: %v (got %q)", n, err, b)
	}
	return string(b)
}

// TestExtendedConnectAdvertised: the h2 front's SETTINGS carry
// ENABLE_CONNECT_PROTOCOL=1 (RFC 8441 §3).
func TestExtendedConnectAdvertised(t *testing.T) {
	r := startRouter(t, Config{})
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	f, err := fr.ReadFrame()
	if err != nil {
		t.Fatal(err)
	}
	sf, ok := f.(*http2.SettingsFrame)
	if !ok {
		t.Fatalf("first server frame: %v; want SETTINGS", f)
	}
	if v, ok := sf.Value(http2.SettingEnableConnectProtocol); !ok || v != 1 {
		t.Fatalf("SETTINGS_ENABLE_CONNECT_PROTOCOL: %d, %v; want 1", v, ok)
	}
}

// TestExtendedConnectWebSocket: an extended CONNECT with :protocol
// websocket reaches a uwsgi or http node as the HTTP/1.1 handshake it
// knows, with a key of the router's own; the node's 101 comes back as a
// 200 without Sec-WebSocket-Accept, then bytes flow both ways and the
// tunnel is counted; closing the stream ends it and releases the node.
func TestExtendedConnectWebSocket(t *testing.T) {
	for _, kind := range []string{"uwsgi", "http"} {
		t.Run(kind, func(t *testing.T) {
			n := startWSFake(t, kind == "http", "echo")
			logs := &lockedBuffer{}
			r := startRouter(t, Config{AccessLog: logs})
			r.table.AddStatic("k.test", n.addr(), 1)
			tr := h2cExtTransport(r)
			defer tr.CloseIdleConnections()
			s, err := openWS(t, tr, "websocket", "/ws?x=1", http.Header{
				"Sec-Websocket-Key": {"Y2xpZW50LWNob3Nlbi1rZXk="}, "Sec-Websocket-Protocol": {"chat"}, "Origin": {"https://k.test"}})
			if err != nil {
				t.Fatal(err)
			}
			if s.resp.StatusCode != 200 {
				t.Fatalf("status %d; want 200", s.resp.StatusCode)
			}
			if v := s.resp.Header.Get("Sec-Websocket-Accept"); v != "" {
				t.Errorf("Sec-WebSocket-Accept %q went to the h2 client", v)
			}
			if v := s.resp.Header.Get("Sec-Websocket-Protocol"); v != "chat" {
				t.Errorf("Sec-WebSocket-Protocol %q; want the node's chat", v)
			}
			if got := s.readN(t, 5); got != "hello" {
				t.Fatalf("node's first bytes %q", got)
			}
			v := n.last()
			key, _ := base64.StdEncoding.DecodeString(v["HTTP_SEC_WEBSOCKET_KEY"])
			if v["REQUEST_METHOD"] != "GET" || v["REQUEST_URI"] != "/ws?x=1" || !strings.EqualFold(v["HTTP_UPGRADE"], "websocket") ||
				!strings.EqualFold(v["HTTP_CONNECTION"], "upgrade") || len(key) != 16 ||
				v["HTTP_SEC_WEBSOCKET_KEY"] == "Y2xpZW50LWNob3Nlbi1rZXk=" || v["HTTP_SEC_WEBSOCKET_VERSION"] != "13" ||
				v["HTTP_SEC_WEBSOCKET_PROTOCOL"] != "chat" || v["HTTP_ORIGIN"] != "https://k.test" || v["HTTP_HOST"] != "k.test" {
				t.Errorf("handshake the node got: %v", v)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 8<<10) // 128 KiB: past the stream windows
			for _, msg := range [][]byte{[]byte("ping"), big} {
				go s.in.Write(msg)
				if got := s.readN(t, len(msg)); got != string(msg) {
					t.Fatalf("echo of %d bytes: got %d different", len(msg), len(got))
				}
			}
			if v := testutil.ToFloat64(r.rt.metrics.ws.open); v != 1 {
				t.Errorf("open tunnels: %v; want 1", v)
			}
			// The tunnel is a stream of the h2 connection counted already.
			h2c, h1c := r.rt.metrics.clientConns.WithLabelValues("test", "h2"), r.rt.metrics.clientConns.WithLabelValues("test", "http/1.1")
			if a, b := testutil.ToFloat64(h2c), testutil.ToFloat64(h1c); a != 1 || b != 0 {
				t.Errorf("client_connections h2 %v, http/1.1 %v with the tunnel open; want 1 and 0", a, b)
			}
			s.in.Close() // END_STREAM: the client is done
			select {
			case <-n.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("node never saw the tunnel end")
			}
			waitFor(t, "tunnel closed and node released", func() bool {
				return testutil.ToFloat64(r.rt.metrics.ws.open) == 0 && r.table.Lookup([]byte("k.test")).Nodes()[0].Inflight() == 0
			})
			if v := testutil.ToFloat64(r.rt.metrics.ws.total); v != 1 {
				t.Errorf("tunnels opened: %v; want 1", v)
			}
			if v := testutil.ToFloat64(r.rt.metrics.ws.in); v != float64(4+len(big)) {
				t.Errorf("bytes in: %v; want %d", v, 4+len(big))
			}
			// The line counts what the tunnel relayed to the client.
			want := `,"bytes":` + strconv.Itoa(5+4+len(big)) + `,`
			waitFor(t, "the tunnel's access-log line", func() bool { return strings.Contains(logs.String(), `"uri":"/ws?x=1"`) })
			if line := logs.String(); !strings.Contains(line, want) {
				t.Errorf("access log %q; want %s", line, want)
			}
		})
	}
}

// TestExtendedConnectRefusals: a :protocol other than websocket is a 501
// that reaches no node, even with a body on the stream, and the connection
// serves the next stream; a node's refusal is relayed with its status and
// body; a node's 2xx that is not a switch is a 502.
func TestExtendedConnectRefusals(t *testing.T) {
	n := startWSFake(t, false, "echo")
	r := startRouter(t, Config{})
	r.table.AddStatic("k.test", n.addr(), 1)
	tr := h2cExtTransport(r)
	defer tr.CloseIdleConnections()

	s, err := openWS(t, tr, "connect-udp", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.in.Write(bytes.Repeat([]byte("x"), 100<<10))
	body, _ := io.ReadAll(s.resp.Body)
	if s.resp.StatusCode != 501 || string(body) != "501 Not Implemented\n" {
		t.Errorf("connect-udp: %d %q; want 501", s.resp.StatusCode, body)
	}
	if v := n.last(); v != nil {
		t.Errorf("a refused protocol reached the node: %v", v)
	}

	for _, c := range []struct {
		answer string
		code   int
		body   string
	}{
		{"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope", 403, "nope"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 502, "502 Bad Gateway\n"},
		{"HTTP/1.1 204 No Content\r\n\r\n", 502, "502 Bad Gateway\n"},
	} {
		n.setAnswer(c.answer)
		s, err := openWS(t, tr, "websocket", "/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(s.resp.Body)
		if s.resp.StatusCode != c.code || string(body) != c.body {
			t.Errorf("node answering %.30q: %d %q; want %d %q", c.answer, s.resp.StatusCode, body, c.code, c.body)
		}
	}
	if v := testutil.ToFloat64(r.rt.metrics.ws.total); v != 0 {
		t.Errorf("tunnels opened: %v; want 0", v)
	}
	if v := testutil.ToFloat64(r.rt.metrics.requests.WithLabelValues("k.test", "502")); v != 2 {
		t.Errorf("502s counted for k.test: %v; want 2", v)
	}
}

// TestExtendedConnectRaw: hand-framed streams. :protocol on a GET is a
// 400 (RFC 8441 §4: CONNECT only), a CONNECT without :protocol stays a
// 405, and an extended CONNECT without :path is reset (internal/h2srv).
func TestExtendedConnectRaw(t *testing.T) {
	n := startWSFake(t, false, "echo")
	r := startRouter(t, Config{})
	r.table.AddStatic("k.test", n.addr(), 1)
	h := dialTestH2C(t, r.addr)
	cases := []struct {
		fields [][2]string
		want   string
	}{
		{[][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "k.test"}, {":path", "/ws"}, {":protocol", "websocket"}}, "400"},
		{[][2]string{{":method", "CONNECT"}, {":authority", "k.test:443"}}, "405"},
		{[][2]string{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"}, {":authority", "k.test"}}, "RST_STREAM"},
	}
	for i, c := range cases {
		id := uint32(2*i + 1)
		h.headers(id, c.fields, true)
		if got := h.status(id); got != c.want {
			t.Errorf("%v: %s; want %s", c.fields, got, c.want)
		}
	}
	if v := n.last(); v != nil {
		t.Errorf("a refused stream reached the node: %v", v)
	}
}

// TestExtendedConnectIdle: traffic in one direction only keeps a tunnel
// open past the inactivity timeout; idle both ways, it is closed after
// about the timeout. (An h2 stream's read deadline, unlike a connection's,
// cannot be renewed once it fired: streamEnd.)
func TestExtendedConnectIdle(t *testing.T) {
	n := startWSFake(t, false, "sink")
	r := startRouter(t, Config{Timeout: 2 * time.Second})
	r.table.AddStatic("k.test", n.addr(), 1)
	tr := h2cExtTransport(r)
	defer tr.CloseIdleConnections()
	s, err := openWS(t, tr, "websocket", "/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	busyThenIdle(t, r.rt, s)
	if v := testutil.ToFloat64(r.rt.metrics.ws.in); v != 48 {
		t.Errorf("bytes in: %v; want 48", v)
	}
}

// TestExtendedConnectIdleClient: traffic from the node only keeps the
// tunnel open past the inactivity timeout while the client is silent, and
// the client's side still works after: what it sends then reaches the node.
func TestExtendedConnectIdleClient(t *testing.T) {
	n := startWSFake(t, false, "tick")
	r := startRouter(t, Config{Timeout: 2 * time.Second})
	r.table.AddStatic("k.test", n.addr(), 1)
	tr := h2cExtTransport(r)
	defer tr.CloseIdleConnections()
	s, err := openWS(t, tr, "websocket", "/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := s.readN(t, 5+12); got != "hello"+strings.Repeat("t", 12) { // 3 s node → client only
		t.Fatalf("node's bytes: %q", got)
	}
	go s.in.Write([]byte("ping"))
	if got := s.readN(t, 4); got != "ping" {
		t.Fatalf("echo after a silent client: %q", got)
	}
}

// TestExtendedConnectCuts: a node that closes mid-tunnel ends the client's
// stream; a client that resets its stream closes the node's connection.
// Either way the node is released.
func TestExtendedConnectCuts(t *testing.T) {
	t.Run("node", func(t *testing.T) {
		n := startWSFake(t, false, "cut")
		r := startRouter(t, Config{})
		r.table.AddStatic("k.test", n.addr(), 1)
		tr := h2cExtTransport(r)
		defer tr.CloseIdleConnections()
		s, err := openWS(t, tr, "websocket", "/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		s.readN(t, 5)
		go s.in.Write([]byte("x"))
		if b, err := io.ReadAll(s.resp.Body); len(b) != 0 {
			t.Errorf("after the node's cut: %q, %v", b, err)
		}
		waitFor(t, "node released", func() bool {
			return testutil.ToFloat64(r.rt.metrics.ws.open) == 0 && r.table.Lookup([]byte("k.test")).Nodes()[0].Inflight() == 0
		})
	})
	t.Run("client", func(t *testing.T) {
		n := startWSFake(t, false, "sink")
		r := startRouter(t, Config{})
		r.table.AddStatic("k.test", n.addr(), 1)
		tr := h2cExtTransport(r)
		defer tr.CloseIdleConnections()
		s, err := openWS(t, tr, "websocket", "/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		s.readN(t, 5)
		s.resp.Body.Close() // RST_STREAM CANCEL
		select {
		case <-n.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("node connection still open after the client's reset")
		}
		waitFor(t, "node released", func() bool {
			return testutil.ToFloat64(r.rt.metrics.ws.open) == 0 && r.table.Lookup([]byte("k.test")).Nodes()[0].Inflight() == 0
		})
	})
}

// TestExtendedConnectUpgradeVars: what toUpgrade makes of a request.
func TestExtendedConnectUpgradeVars(t *testing.T) {
	x := getExchange()
	defer putExchange(x)
	x.req.Method = []byte("CONNECT")
	x.req.Headers = append(x.req.Headers, hdr{[]byte("sec-websocket-key"), []byte("client")}, hdr{[]byte("sec-websocket-version"), []byte("13")})
	x.bodySrc, x.bodyLen = strings.NewReader("frames"), -1
	if err := x.toUpgrade("WebSocket"); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, h := range x.req.Headers {
		got = append(got, string(h.Name)+"="+string(h.Value))
	}
	if len(got) != 4 || got[0] != "sec-websocket-version=13" || got[1] != "Upgrade=websocket" || got[2] != "Connection=Upgrade" ||
		!strings.HasPrefix(got[3], "Sec-WebSocket-Key=") || len(got[3]) != len("Sec-WebSocket-Key=")+24 {
		t.Errorf("headers: %v", got)
	}
	if string(x.req.Method) != "GET" || x.bodySrc != nil || !x.upgrade || !x.mustSwitch {
		t.Errorf("method %s, body %v, upgrade %v", x.req.Method, x.bodySrc, x.upgrade)
	}
	y := getExchange()
	defer putExchange(y)
	if err := y.toUpgrade("connect-udp"); err != errNotImplemented {
		t.Errorf("connect-udp: %v", err)
	}
	h2req := func(method string) *http.Request {
		return &http.Request{Method: method, Proto: "HTTP/2.0", ProtoMajor: 2, Header: http.Header{":protocol": {"websocket"}}}
	}
	if req := h2req("GET"); extendedConnect(req) != "" || len(req.Header) != 1 {
		t.Errorf("GET with :protocol taken as extended CONNECT, or its field dropped: %v", req.Header)
	}
	if req := h2req("CONNECT"); extendedConnect(req) != "websocket" || len(req.Header) != 0 {
		t.Errorf("extended CONNECT not seen, or :protocol left: %v", req.Header)
	}
	// quic-go's http3: the :protocol is req.Proto.
	for _, c := range []struct{ method, proto, want string }{
		{"CONNECT", "websocket", "websocket"}, {"CONNECT", "HTTP/3.0", ""}, {"GET", "HTTP/3.0", ""},
	} {
		req := &http.Request{Method: c.method, Proto: c.proto, ProtoMajor: 3, Header: http.Header{}}
		if got := extendedConnect(req); got != c.want {
			t.Errorf("h3 %s with Proto %s: %q; want %q", c.method, c.proto, got, c.want)
		}
	}
}

// busyThenIdle sends on s for 3 s, past a 2 s --timeout, and checks the
// tunnel stays open; then, idle both ways, that it closes after about the
// timeout.
func busyThenIdle(t *testing.T, rt *Router, s *wsStream) {
	t.Helper()
	s.readN(t, 5)
	for i := range 12 { // 3 s client → node only, past the 2 s timeout
		if _, err := s.in.Write([]byte("tick")); err != nil {
			t.Fatalf("write %d on a busy tunnel: %v", i, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
	if v := testutil.ToFloat64(rt.metrics.ws.open); v != 1 {
		t.Fatalf("tunnel busy one way closed (open %v)", v)
	}
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := s.resp.Body.Read(make([]byte, 1)); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("idle tunnel delivered a byte")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("idle tunnel still open after 10 s")
	}
	if el := time.Since(start); el < time.Second {
		t.Errorf("idle tunnel closed after %s; want about the 2 s timeout", el)
	}
}
