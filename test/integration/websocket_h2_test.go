package integration

//lint:file-ignore SA1019 x/net/http2's Transport is the client here on purpose: net/http's refuses a request with a :protocol field (transport.go, its header field name check), so it cannot send an extended CONNECT

// WebSockets over HTTP/2 (RFC 8441 extended CONNECT) through real uWSGI
// nodes running test/apps/app.py's /ws echo (uwsgi.websocket_handshake),
// with x/net/http2's client and with headless Chromium.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	be "encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// wsOverH2 is one WebSocket on an extended CONNECT stream.
type wsOverH2 struct {
	resp *http.Response
	br   *bufio.Reader
	pw   *io.PipeWriter
}

// h2ExtTransport is x/net/http2's client to addr: over TLS with the test
// CA when pki is set (ALPN h2), else h2c.
func h2ExtTransport(t *testing.T, addr string, pki *testPKI) *http2.Transport {
	tr := &http2.Transport{DialTLSContext: func(ctx context.Context, _, _ string, cfg *tls.Config) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || pki == nil {
			return c, err
		}
		tc := tls.Client(c, &tls.Config{RootCAs: pki.pool, ServerName: "default.test", NextProtos: []string{"h2"}})
		return tc, tc.HandshakeContext(ctx)
	}}
	tr.AllowHTTP = pki == nil
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// openWSH2 sends an extended CONNECT for protocol to url and returns the
// stream, whatever the status.
func openWSH2(t *testing.T, tr *http2.Transport, protocol, url string) (*wsOverH2, error) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(":protocol", protocol)
	req.Header.Set("Sec-WebSocket-Version", "13")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		pw.Close()
		return nil, err
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	return &wsOverH2{resp: resp, br: bufio.NewReader(resp.Body), pw: pw}, nil
}

// send writes one masked client frame (RFC 6455 §5.2): opcode 1 text, 2
// binary.
func (w *wsOverH2) send(op byte, payload []byte) error {
	hdr := []byte{0x80 | op}
	switch n := len(payload); {
	case n < 126:
		hdr = append(hdr, 0x80|byte(n))
	case n < 1<<16:
		hdr = append(hdr, 0x80|126, byte(n>>8), byte(n))
	default:
		hdr = append(hdr, 0x80|127)
		hdr = be.BigEndian.AppendUint64(hdr, uint64(n))
	}
	mask := [4]byte{0x37, 0xfa, 0x21, 0x3d}
	hdr = append(hdr, mask[:]...)
	for i, b := range payload {
		hdr = append(hdr, b^mask[i%4])
	}
	_, err := w.pw.Write(hdr)
	return err
}

// recv reads the node's next data frame (unmasked, unfragmented: what
// uwsgi.websocket_send writes), skipping pings and pongs.
func (w *wsOverH2) recv() ([]byte, error) {
	for {
		var h [2]byte
		if _, err := io.ReadFull(w.br, h[:]); err != nil {
			return nil, err
		}
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = uint64(be.BigEndian.Uint16(b[:]))
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(w.br, b[:]); err != nil {
				return nil, err
			}
			n = be.BigEndian.Uint64(b[:])
		}
		if n > 16<<20 {
			return nil, fmt.Errorf("frame of %d bytes", n)
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(w.br, p); err != nil {
			return nil, err
		}
		switch op := h[0] & 0x0f; op {
		case 9, 10: // ping, pong
			continue
		case 8:
			return nil, errors.New("close frame")
		default:
			return p, nil
		}
	}
}

// echoH2 sends msg and returns the answer, within 20 s.
func (w *wsOverH2) echo(t *testing.T, op byte, msg []byte) ([]byte, error) {
	t.Helper()
	type res struct {
		b   []byte
		err error
	}
	ch := make(chan res, 1)
	go func() {
		if err := w.send(op, msg); err != nil {
			ch <- res{nil, err}
			return
		}
		b, err := w.recv()
		ch <- res{b, err}
	}()
	select {
	case r := <-ch:
		return r.b, r.err
	case <-time.After(20 * time.Second):
		w.resp.Body.Close()
		return nil, errors.New("no echo within 20 s")
	}
}

// TestWebSocketOverH2: x/net/http2's client opens a WebSocket with an
// extended CONNECT over TLS to a uwsgi node and over h2c to an http://
// node (uWSGI's --http-socket, which gets a real HTTP/1.1 Upgrade), both
// running uWSGI's websocket_handshake; frames flow both ways, the tunnel
// holds the node in flight and is counted, and closing it releases the
// node.
func TestWebSocketOverH2(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startTLSRouter(t, p)
	n := startNode(t, r.router, "default.test", nodeOpts{id: "a"})
	hn := startHTTPNode(t, r.router, "plain.test", "h", false, true)
	waitForNodes(t, r.router, "default.test", 1)
	waitForNodes(t, r.router, "plain.test", 1)

	for i, c := range []struct {
		name, url, addr, id, pool, node string
		pki                             *testPKI
	}{
		{"uwsgi over TLS", "https://default.test/ws", r.https, "a", "default.test", n.addr, p},
		{"http node over h2c", "http://plain.test/ws", r.http, "h", "plain.test", hn.addr, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr := h2ExtTransport(t, c.addr, c.pki)
			ws, err := openWSH2(t, tr, "websocket", c.url)
			if err != nil {
				t.Fatal(err)
			}
			ws.echoAndRelease(t, r.router, c.id, c.pool, c.node, 100, i+1)
		})
	}
}

// sumOf adds up the samples of lines.
func sumOf(t *testing.T, lines []string) float64 {
	var n float64
	for _, l := range lines {
		n += sampleValue(t, l)
	}
	return n
}

// TestWebSocketOverH2Chromium: headless Chromium loads a page over h2
// (TLS, ALPN) and opens new WebSocket("wss://…") on the same origin. The
// router advertises SETTINGS_ENABLE_CONNECT_PROTOCOL, so Chromium opens it
// as an extended CONNECT over h2 (RFC 8441), as the tunnel's access-log
// line shows (HTTP/1.1 before). The echo from the
// uWSGI app comes back.
func TestWebSocketOverH2Chromium(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	alog := filepath.Join(t.TempDir(), "access.log")
	r := startTLSRouter(t, p, "--access-log", alog)
	startNode(t, r.router, "default.test", nodeOpts{id: "c"})
	waitForNodes(t, r.router, "default.test", 1)
	b := startBrowser(t, "--ignore-certificate-errors", "--host-resolver-rules=MAP default.test 127.0.0.1")
	origin := "https://default.test:" + r.port
	b.navigate(t, origin+"/")
	var got string
	b.evalPromise(t, `new Promise((resolve, reject) => {
		const ws = new WebSocket("wss://default.test:`+r.port+`/ws");
		ws.onopen = () => ws.send("hello from chromium");
		ws.onmessage = (e) => { window.__ws = ws; resolve(String(e.data)); };
		ws.onerror = () => reject(new Error("websocket error"));
		setTimeout(() => reject(new Error("no echo in 20 s")), 20000);
	})`, &got)
	if got != "c:hello from chromium" {
		t.Fatalf("echo through Chromium: %q", got)
	}
	// The tunnel is open now, on the page's h2 connection.
	if l := metricLines(t, r.router, "fastrouter_upgraded_connections"); len(l) != 1 || sampleValue(t, l[0]) != 1 {
		t.Errorf("open tunnels: %v; want 1", l)
	}
	// Chromium may hold a spare connection of its own beside the page's
	// (a preconnect), so the count is at least one; the tunnel's access-log
	// line below shows it rode HTTP/2, not a connection of its own.
	if n := sumOf(t, metricLines(t, r.router, "fastrouter_client_connections", `proto="h2"`)); n < 1 {
		t.Errorf("h2 client connections: %v; want at least the page's", n)
	}
	b.evalPromise(t, `new Promise((resolve) => { window.__ws.onmessage = (e) => resolve(String(e.data)); window.__ws.send("second"); })`, &got)
	if got != "c:second" {
		t.Fatalf("second echo: %q", got)
	}
	b.eval(t, `window.__ws.close(); true`, new(bool))
	eventually(t, 10*time.Second, "tunnel closed", func() bool {
		l := metricLines(t, r.router, "fastrouter_upgraded_connections")
		return len(l) == 1 && sampleValue(t, l[0]) == 0
	})
	// The tunnel's access-log line, written when it ends, says which protocol carried it.
	var line map[string]any
	eventually(t, 10*time.Second, "the websocket's access-log line", func() bool {
		b, _ := os.ReadFile(alog)
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["uri"] == "/ws" {
				line = m
				return true
			}
		}
		return false
	})
	if line["proto"] != "HTTP/2.0" || line["status"] != float64(101) {
		t.Errorf("Chromium's websocket handshake: %v; want HTTP/2.0 and the node's 101", line)
	}
}

// TestWebSocketOverH2Hostile: extended CONNECTs a client should not send,
// against a real node: without :path (reset by x/net), a CONNECT without
// :protocol (405, not a tunnel), another :protocol with a body behind it
// (501, nothing reaches the node, the connection serves on); and a node
// cut mid-tunnel ends the client's stream at once.
func TestWebSocketOverH2Hostile(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n := startNode(t, r, "ws.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "ws.test", 1)

	h := dialH2C(t, r.http)
	cases := []struct {
		fields [][2]string
		data   bool
		want   string
	}{
		{[][2]string{{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "http"}, {":authority", "ws.test"}}, false, "RST_STREAM PROTOCOL_ERROR"},
		{[][2]string{{":method", "CONNECT"}, {":authority", "ws.test:80"}}, false, ":status 405"},
		{[][2]string{{":method", "CONNECT"}, {":protocol", "connect-udp"}, {":scheme", "http"}, {":authority", "ws.test"}, {":path", "/ws"}}, true, `:status 501 "501 Not Implemented\n"`},
		{stdReq("GET", "ws.test", "/"), false, `:status 200 "node=a"`},
	}
	for i, c := range cases {
		id := uint32(2*i + 1)
		if err := h.writeReq(id, c.fields, !c.data); err != nil {
			t.Fatal(err)
		}
		if c.data {
			_ = h.fr.WriteData(id, false, bytes.Repeat([]byte("x"), 16<<10))
			_ = h.bw.Flush()
		}
		o := h.await(id, 10*time.Second)
		if got := o.String(); !strings.HasPrefix(got, c.want) {
			t.Errorf("%v: %s; want %s", c.fields, got, c.want)
		}
	}
	if l := metricLines(t, r, "fastrouter_requests_total", `pool="ws.test"`); len(l) != 1 || !strings.Contains(l[0], `code="200"`) {
		t.Errorf("requests that reached the pool: %v; want the GET only", l)
	}

	// The node dies mid-tunnel: the stream ends, the tunnel is gone.
	tr := h2ExtTransport(t, r.http, nil)
	ws, err := openWSH2(t, tr, "websocket", "http://ws.test/ws")
	if err != nil || ws.resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %v %v", ws, err)
	}
	if got, err := ws.echo(t, 1, []byte("before")); err != nil || string(got) != "a:before" {
		t.Fatalf("echo: %q %v", got, err)
	}
	n.kill(t)
	start := time.Now()
	done := make(chan error, 1)
	go func() { _, err := ws.recv(); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a frame after the node died")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("stream still open 10 s after its node died")
	}
	t.Logf("stream ended %s after the node was killed", time.Since(start).Round(time.Millisecond))
	eventually(t, 10*time.Second, "tunnel gone", func() bool {
		l := metricLines(t, r, "fastrouter_upgraded_connections")
		return len(l) == 1 && sampleValue(t, l[0]) == 0
	})
}

// TestWebSocketOverH2Limits: tunnels hold their node in flight, so
// --max-inflight bounds them like any request: with a cap of 2, a third
// waits in the queue and gets 503 at --queue-timeout; once a tunnel
// closes, a new one opens. And an h2 tunnel follows the shutdown rules:
// SIGTERM keeps it until --shutdown-timeout, then it is cut and the
// router exits 0.
func TestWebSocketOverH2Limits(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--max-inflight", "2", "--queue-timeout", "1s", "--shutdown-timeout", "3s")
	startNode(t, r, "ws.test", nodeOpts{id: "a", processes: 1, threads: 4})
	waitForNodes(t, r, "ws.test", 1)
	tr := h2ExtTransport(t, r.http, nil)

	var open []*wsOverH2
	for i := range 2 {
		ws, err := openWSH2(t, tr, "websocket", "http://ws.test/ws")
		if err != nil || ws.resp.StatusCode != 200 {
			t.Fatalf("tunnel %d: %v %v", i, ws, err)
		}
		if got, err := ws.echo(t, 1, []byte(strconv.Itoa(i))); err != nil || string(got) != "a:"+strconv.Itoa(i) {
			t.Fatalf("echo on tunnel %d: %q %v", i, got, err)
		}
		open = append(open, ws)
	}
	start := time.Now()
	ws, err := openWSH2(t, tr, "websocket", "http://ws.test/ws")
	if err != nil {
		t.Fatal(err)
	}
	if ws.resp.StatusCode != 503 || ws.resp.Header.Get("Retry-After") == "" {
		t.Fatalf("third tunnel over a cap of 2: %d %v; want 503 with Retry-After", ws.resp.StatusCode, ws.resp.Header)
	}
	if el := time.Since(start); el < 800*time.Millisecond {
		t.Errorf("503 after %s; want the 1s queue timeout", el)
	}
	open[0].pw.Close()
	open[0].resp.Body.Close()
	eventually(t, 10*time.Second, "a slot freed", func() bool { return r.pool(t, "ws.test").Nodes[0].Inflight == 1 })
	ws, err = openWSH2(t, tr, "websocket", "http://ws.test/ws")
	if err != nil || ws.resp.StatusCode != 200 {
		t.Fatalf("tunnel after one closed: %v %v", ws, err)
	}
	if got, err := ws.echo(t, 1, []byte("again")); err != nil || string(got) != "a:again" {
		t.Fatalf("echo: %q %v", got, err)
	}

	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	time.Sleep(500 * time.Millisecond)
	if got, err := ws.echo(t, 1, []byte("after SIGTERM")); err != nil || string(got) != "a:after SIGTERM" {
		t.Fatalf("h2 websocket right after SIGTERM: %q %v; want it kept until the shutdown deadline", got, err)
	}
	if code := r.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("router exit %d; want 0", code)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("router exited %s after SIGTERM with an h2 websocket open; want the 3s deadline", el)
	}
	if _, err := ws.recv(); err == nil {
		t.Fatal("h2 websocket open after the router exited")
	}
}

// TestWebSocketOverH2Drain: a node being drained keeps its open h2
// websocket until the drain deadline, then the tunnel is cut and the drain
// counted as forced, as for HTTP/1.1 (websocket_test.go).
func TestWebSocketOverH2Drain(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	nodes := map[string]*node{
		"a": startNode(t, r, "ws.test", nodeOpts{id: "a"}),
		"b": startNode(t, r, "ws.test", nodeOpts{id: "b"}),
	}
	waitForNodes(t, r, "ws.test", 2)
	tr := h2ExtTransport(t, r.http, nil)
	ws, err := openWSH2(t, tr, "websocket", "http://ws.test/ws")
	if err != nil || ws.resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %v %v", ws, err)
	}
	got, err := ws.echo(t, 1, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(string(got), ":")
	n := nodes[id]
	if n == nil {
		t.Fatalf("echo %q from an unknown node", got)
	}
	if code, body := adminPost(t, r, "/api/pools/ws.test/nodes/"+url.PathEscape(n.addr)+"/drain", `{"timeout":"3s"}`); code != 202 {
		t.Fatalf("drain: %d %s", code, body)
	}
	start := time.Now()
	for i := range 3 {
		if got, err := ws.echo(t, 1, []byte("during drain")); err != nil || string(got) != id+":during drain" {
			t.Fatalf("echo %d during the drain: %q, %v", i, got, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	done := make(chan error, 1)
	go func() { _, err := ws.recv(); done <- err }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a frame from a drained node's tunnel")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("h2 websocket still open 20 s into a 3 s drain")
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("h2 websocket cut after %s; want at the 3s drain deadline", el)
	}
	eventually(t, 10*time.Second, "forced drain counted", func() bool {
		l := metricLines(t, r, "fastrouter_drains_total", `result="forced"`)
		return len(l) == 1 && sampleValue(t, l[0]) == 1
	})
}

// echoAndRelease checks an open WebSocket tunnel end to end: 200 without
// Sec-WebSocket-Accept, three text echoes and one bigKB kB binary echo from
// the node that answers with prefix id, the tunnel and the node's request
// counted while it is open, both released once the client closes, and
// opened tunnels counted in all.
func (ws *wsOverH2) echoAndRelease(t *testing.T, r *router, id, pool, node string, bigKB, opened int) {
	t.Helper()
	if ws.resp.StatusCode != 200 || ws.resp.Header.Get("Sec-Websocket-Accept") != "" {
		t.Fatalf("extended CONNECT: %d %v; want 200 without Sec-WebSocket-Accept", ws.resp.StatusCode, ws.resp.Header)
	}
	for i := range 3 {
		msg := fmt.Appendf(nil, "hello %d", i)
		if got, err := ws.echo(t, 1, msg); err != nil || string(got) != id+":"+string(msg) {
			t.Fatalf("echo %d: %q, %v", i, got, err)
		}
	}
	big := bytes.Repeat([]byte{0, 1, 2, 250, 251}, bigKB*200)
	if got, err := ws.echo(t, 2, big); err != nil || !bytes.Equal(got, append([]byte(id+":"), big...)) {
		t.Fatalf("%d kB binary echo: %d bytes, %v", bigKB, len(got), err)
	}
	if l := metricLines(t, r, "fastrouter_upgraded_connections"); len(l) != 1 || sampleValue(t, l[0]) != 1 {
		t.Errorf("open tunnels: %v; want 1", l)
	}
	if nn := r.pool(t, pool).node(node); nn == nil || nn.Inflight != 1 {
		t.Errorf("node in flight during the websocket: %+v; want 1", nn)
	}
	ws.pw.Close()
	ws.resp.Body.Close()
	eventually(t, 10*time.Second, "tunnel closed and node released", func() bool {
		l := metricLines(t, r, "fastrouter_upgraded_connections")
		return len(l) == 1 && sampleValue(t, l[0]) == 0 && r.pool(t, pool).node(node).Inflight == 0
	})
	if l := metricLines(t, r, "fastrouter_upgraded_connections_total"); len(l) != 1 || sampleValue(t, l[0]) != float64(opened) {
		t.Errorf("tunnels opened: %v; want %d", l, opened)
	}
	if l := metricLines(t, r, "fastrouter_requests_total", `pool="`+pool+`"`, `code="101"`); len(l) != 1 {
		t.Errorf("101 not counted: %v", l)
	}
}
