package router

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// WebSockets over HTTP/3 (RFC 9220) with quic-go's own client, which sends
// an extended CONNECT for a request with Method CONNECT and the :protocol
// in Proto (request_writer.go isExtendedConnectRequest).

// h3Transport is quic-go's HTTP/3 client for r; qc, when set, is its QUIC
// configuration.
func (r *h3Router) h3Transport(t *testing.T, qc *quic.Config) *http3.Transport {
	tr := &http3.Transport{TLSClientConfig: r.clientTLS(), QUICConfig: qc}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// ws3Stream is the client side of one extended CONNECT over HTTP/3;
// cancel resets the stream both ways.
type ws3Stream struct {
	*wsStream
	cancel context.CancelFunc
}

// openWS3 sends an extended CONNECT for protocol and path to r and returns
// the stream, whatever the status. method CONNECT with Proto "HTTP/1.1"
// (http.NewRequest's) is a plain CONNECT.
func (r *h3Router) openWS3(t *testing.T, tr *http3.Transport, protocol, path string, extra http.Header) (*ws3Stream, error) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, "https://"+r.udp+path, pr)
	if err != nil {
		t.Fatal(err)
	}
	if protocol != "" {
		req.Proto = protocol
	}
	req.Header.Set("Sec-WebSocket-Version", "13")
	for k, v := range extra {
		req.Header[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		pw.Close()
		return nil, err
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	return &ws3Stream{wsStream: &wsStream{resp: resp, in: pw}, cancel: cancel}, nil
}

// ws3Released waits for r's tunnels to close and the node of pool to have
// nothing in flight.
func ws3Released(t *testing.T, r *h3Router, pool string) {
	t.Helper()
	waitFor(t, "tunnel closed and node released", func() bool {
		return testutil.ToFloat64(r.rt.metrics.ws.open) == 0 && r.table.Lookup([]byte(pool)).Nodes()[0].Inflight() == 0
	})
}

// TestH3ExtendedConnectAdvertised: the h3 front's SETTINGS carry
// SETTINGS_ENABLE_CONNECT_PROTOCOL=1 (RFC 9220 §3).
func TestH3ExtendedConnectAdvertised(t *testing.T) {
	r := startH3Router(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qc, err := quic.DialAddr(ctx, r.udp, r.clientTLS(), &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.CloseWithError(0, "")
	cc := (&http3.Transport{}).NewClientConn(qc)
	select {
	case <-cc.ReceivedSettings():
	case <-ctx.Done():
		t.Fatal("no SETTINGS from the router")
	}
	if !cc.Settings().EnableExtendedConnect {
		t.Fatal("SETTINGS_ENABLE_CONNECT_PROTOCOL not advertised")
	}
}

// TestH3ExtendedConnectWebSocket: an extended CONNECT over HTTP/3 with
// :protocol websocket reaches a uwsgi or http node as the HTTP/1.1
// handshake it knows (SERVER_PROTOCOL HTTP/3.0, the :path as the URI, a
// key of the router's own); the node's 101 comes back as a 200 without
// Sec-WebSocket-Accept, bytes flow both ways past the stream windows, the
// access log says HTTP/3.0 and 101, and the client's end of the stream
// ends the tunnel and releases the node.
func TestH3ExtendedConnectWebSocket(t *testing.T) {
	for _, kind := range []string{"uwsgi", "http"} {
		t.Run(kind, func(t *testing.T) {
			n := startWSFake(t, kind == "http", "echo")
			logs := &lineBuffer{}
			r := startH3Router(t, Config{AccessLog: logs})
			r.table.AddStatic(r.udp, n.addr(), 1)
			tr := r.h3Transport(t, nil)
			s, err := r.openWS3(t, tr, "websocket", "/ws?x=1", http.Header{
				"Sec-Websocket-Key": {"Y2xpZW50LWNob3Nlbi1rZXk="}, "Sec-Websocket-Protocol": {"chat"}, "Origin": {"https://k.test"}})
			if err != nil {
				t.Fatal(err)
			}
			if s.resp.StatusCode != 200 {
				t.Fatalf("status %d; want 200", s.resp.StatusCode)
			}
			if v := s.resp.Header.Get("Sec-Websocket-Accept"); v != "" {
				t.Errorf("Sec-WebSocket-Accept %q went to the h3 client", v)
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
				v["HTTP_SEC_WEBSOCKET_PROTOCOL"] != "chat" || v["HTTP_ORIGIN"] != "https://k.test" || v["HTTP_HOST"] != r.udp {
				t.Errorf("handshake the node got: %v", v)
			}
			if kind == "uwsgi" && (v["SERVER_PROTOCOL"] != "HTTP/3.0" || v["HTTPS"] != "on") {
				t.Errorf("SERVER_PROTOCOL %q, HTTPS %q; want HTTP/3.0, on", v["SERVER_PROTOCOL"], v["HTTPS"])
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 32<<10) // 512 KiB: past the stream window
			for _, msg := range [][]byte{[]byte("ping"), big} {
				go s.in.Write(msg)
				if got := s.readN(t, len(msg)); got != string(msg) {
					t.Fatalf("echo of %d bytes: got %d different", len(msg), len(got))
				}
			}
			if v := testutil.ToFloat64(r.rt.metrics.ws.open); v != 1 {
				t.Errorf("open tunnels: %v; want 1", v)
			}
			s.in.Close() // FIN: the client is done
			select {
			case <-n.closed:
			case <-time.After(10 * time.Second):
				t.Fatal("node never saw the tunnel end")
			}
			if b, err := io.ReadAll(s.resp.Body); err != nil || len(b) != 0 {
				t.Errorf("stream end after the tunnel: %q, %v; want a clean end", b, err)
			}
			ws3Released(t, r, r.udp)
			if v := testutil.ToFloat64(r.rt.metrics.ws.in); v != float64(4+len(big)) {
				t.Errorf("bytes in: %v; want %d", v, 4+len(big))
			}
			if l := logs.waitLines(t, 1); l[0].URI != "/ws?x=1" || l[0].Proto != "HTTP/3.0" || l[0].Status != 101 || l[0].Method != "GET" {
				t.Errorf("access log: %+v; want GET /ws?x=1 HTTP/3.0 and the node's 101", l[0])
			}
		})
	}
}

// TestH3ExtendedConnectRefusals: as on h2, a :protocol other than
// websocket is a 501 that reaches no node, even with a body on the
// stream, a CONNECT without :protocol is a 405, and the connection serves
// the next stream; a node's refusal is relayed and a 2xx that is not a
// switch is a 502.
func TestH3ExtendedConnectRefusals(t *testing.T) {
	n := startWSFake(t, false, "echo")
	r := startH3Router(t, Config{})
	r.table.AddStatic(r.udp, n.addr(), 1)
	tr := r.h3Transport(t, nil)

	s, err := r.openWS3(t, tr, "connect-udp", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.in.Write(bytes.Repeat([]byte("x"), 100<<10))
	body, _ := io.ReadAll(s.resp.Body)
	if s.resp.StatusCode != 501 || string(body) != "501 Not Implemented\n" {
		t.Errorf("connect-udp: %d %q; want 501", s.resp.StatusCode, body)
	}
	s, err = r.openWS3(t, tr, "", "/", nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.resp.StatusCode != 405 {
		t.Errorf("plain CONNECT: %d; want 405", s.resp.StatusCode)
	}
	if v := n.last(); v != nil {
		t.Errorf("a refused stream reached the node: %v", v)
	}
	for _, c := range []struct {
		answer string
		code   int
		body   string
	}{
		{"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\n\r\nnope", 403, "nope"},
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", 502, "502 Bad Gateway\n"},
	} {
		n.setAnswer(c.answer)
		s, err := r.openWS3(t, tr, "websocket", "/ws", nil)
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
}

// TestH3ExtendedConnectCuts: a client that resets its stream mid-tunnel
// closes the node's connection; a node that closes ends the client's
// stream. Either way the node is released.
func TestH3ExtendedConnectCuts(t *testing.T) {
	t.Run("client", func(t *testing.T) {
		n := startWSFake(t, false, "sink")
		r := startH3Router(t, Config{})
		r.table.AddStatic(r.udp, n.addr(), 1)
		s, err := r.openWS3(t, r.h3Transport(t, nil), "websocket", "/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		s.readN(t, 5)
		s.cancel() // RESET_STREAM and STOP_SENDING, H3_REQUEST_CANCELLED
		select {
		case <-n.closed:
		case <-time.After(10 * time.Second):
			t.Fatal("node connection still open after the client's reset")
		}
		ws3Released(t, r, r.udp)
	})
	t.Run("node", func(t *testing.T) {
		n := startWSFake(t, false, "cut")
		r := startH3Router(t, Config{})
		r.table.AddStatic(r.udp, n.addr(), 1)
		s, err := r.openWS3(t, r.h3Transport(t, nil), "websocket", "/ws", nil)
		if err != nil {
			t.Fatal(err)
		}
		s.readN(t, 5)
		go s.in.Write([]byte("x"))
		if b, _ := io.ReadAll(s.resp.Body); len(b) != 0 {
			t.Errorf("after the node's cut: %q", b)
		}
		ws3Released(t, r, r.udp)
	})
}

// TestH3ExtendedConnectIdle: a tunnel busy one way only stays open past
// the inactivity timeout; idle both ways it is closed after about the
// timeout, and its QUIC connection serves on.
func TestH3ExtendedConnectIdle(t *testing.T) {
	n := startWSFake(t, false, "sink")
	r := startH3Router(t, Config{Timeout: 2 * time.Second})
	r.table.AddStatic(r.udp, n.addr(), 1)
	tr := r.h3Transport(t, &quic.Config{KeepAlivePeriod: 500 * time.Millisecond})
	s, err := r.openWS3(t, tr, "websocket", "/ws", nil)
	if err != nil {
		t.Fatal(err)
	}
	busyThenIdle(t, r.rt, s.wsStream)
	ws3Released(t, r, r.udp)
	if v := testutil.ToFloat64(r.rt.metrics.ws.in); v != 48 {
		t.Errorf("bytes in: %v; want 48", v)
	}
	s2, err := r.openWS3(t, tr, "websocket", "/ws", nil)
	if err != nil || s2.resp.StatusCode != 200 {
		t.Fatalf("a new tunnel on the connection: %v %v", s2, err)
	}
}

// TestH3ExtendedConnectStuckClient: a client that stops reading (its
// stream window full) does not pin the tunnel: the write to it is cut at
// the inactivity timeout, the stream reset, and the node released.
func TestH3ExtendedConnectStuckClient(t *testing.T) {
	n := startWSFake(t, false, "flood")
	r := startH3Router(t, Config{Timeout: 2 * time.Second})
	r.table.AddStatic(r.udp, n.addr(), 1)
	tr := r.h3Transport(t, &quic.Config{KeepAlivePeriod: 500 * time.Millisecond,
		InitialStreamReceiveWindow: 64 << 10, MaxStreamReceiveWindow: 64 << 10})
	s, err := r.openWS3(t, tr, "websocket", "/ws", nil)
	if err != nil || s.resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %v %v", s, err)
	}
	s.readN(t, 5)
	start := time.Now()
	ws3Released(t, r, r.udp) // the client never reads again
	if el := time.Since(start); el < time.Second {
		t.Errorf("stuck tunnel cut after %s; want about the 2 s timeout", el)
	}
	var se *http3.Error
	if _, err := io.Copy(io.Discard, s.resp.Body); !errors.As(err, &se) {
		t.Errorf("stream after the cut: %v; want a reset", err)
	}
}

// TestH3ExtendedConnectShutdown: Shutdown keeps an open h3 tunnel until
// its deadline (GOAWAY does not end a stream), then cuts it; ServeHTTP3
// returns and the node is released.
func TestH3ExtendedConnectShutdown(t *testing.T) {
	n := startWSFake(t, false, "echo")
	r := startH3Router(t, Config{})
	r.table.AddStatic(r.udp, n.addr(), 1)
	s, err := r.openWS3(t, r.h3Transport(t, nil), "websocket", "/ws", nil)
	if err != nil || s.resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %v %v", s, err)
	}
	s.readN(t, 5)
	shut := make(chan error, 1)
	start := time.Now()
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		shut <- r.rt.Shutdown(ctx)
	}()
	waitFor(t, "shutdown to begin", r.rt.shuttingDown)
	time.Sleep(drainGrace + 500*time.Millisecond) // past the idle-connection close
	go s.in.Write([]byte("after shutdown"))
	if got := s.readN(t, 14); got != "after shutdown" {
		t.Fatalf("echo during shutdown: %q", got)
	}
	select {
	case <-shut:
	case <-time.After(15 * time.Second):
		t.Fatal("Shutdown still running 15 s into a 3 s deadline")
	}
	if el := time.Since(start); el < 2500*time.Millisecond {
		t.Errorf("Shutdown returned after %s with a tunnel open; want the 3 s deadline", el)
	}
	if _, err := io.Copy(io.Discard, s.resp.Body); err == nil {
		t.Error("tunnel ended cleanly; want it cut at the deadline")
	}
	ws3Released(t, r, r.udp)
}
