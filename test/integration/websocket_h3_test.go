package integration

// WebSockets over HTTP/3 (RFC 9220 extended CONNECT) through real uWSGI
// nodes running test/apps/app.py's /ws echo (uwsgi.websocket_handshake),
// with quic-go's HTTP/3 client. Chromium opens its WebSockets over h2 or
// HTTP/1.1, never over HTTP/3, so there is no browser test here.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/quic-go/quic-go/http3"
)

// ws3Transport is quic-go's HTTP/3 client to r's UDP port, whatever the
// URL's host (its :authority), with SNI default.test (the test
// certificate's name).
func ws3Transport(t *testing.T, r *tlsRouter) *http3.Transport {
	tr := &http3.Transport{TLSClientConfig: &tls.Config{RootCAs: r.pki.pool, ServerName: "default.test"}, Dial: dialTo(r.https)}
	t.Cleanup(func() { tr.Close() })
	return tr
}

// openWSH3 sends an extended CONNECT for protocol to url (quic-go sends
// one for a CONNECT whose Proto is the :protocol) and returns the stream,
// whatever the status, and what resets it.
func openWSH3(t *testing.T, tr *http3.Transport, protocol, url string) (*wsOverH2, context.CancelFunc, error) {
	t.Helper()
	pr, pw := io.Pipe()
	req, err := http.NewRequest(http.MethodConnect, url, pr)
	if err != nil {
		t.Fatal(err)
	}
	req.Proto = protocol
	req.Header.Set("Sec-WebSocket-Version", "13")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if err != nil {
		pw.Close()
		return nil, cancel, err
	}
	t.Cleanup(func() { pw.Close(); resp.Body.Close() })
	return &wsOverH2{resp: resp, br: bufio.NewReader(resp.Body), pw: pw}, cancel, nil
}

// TestWebSocketOverH3: quic-go's client opens a WebSocket with an extended
// CONNECT over HTTP/3 to a uwsgi node and to an http:// node (uWSGI's
// --http-socket, which gets a real HTTP/1.1 Upgrade), both running
// uWSGI's websocket_handshake; frames flow both ways, the tunnel holds the
// node in flight and is counted, closing it releases the node, and the
// access log has the handshake as HTTP/3.0 and the node's 101.
func TestWebSocketOverH3(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	alog := filepath.Join(t.TempDir(), "access.log")
	r := startH3Router(t, p, "--access-log", alog)
	n := startNode(t, r.router, "default.test", nodeOpts{id: "a"})
	hn := startHTTPNode(t, r.router, "plain.test", "h", false, true)
	waitForNodes(t, r.router, "default.test", 1)
	waitForNodes(t, r.router, "plain.test", 1)
	tr := ws3Transport(t, r)

	for i, c := range []struct{ name, url, id, pool, node string }{
		{"uwsgi", "https://default.test:" + r.port + "/ws", "a", "default.test", n.addr},
		{"http node", "https://plain.test:" + r.port + "/ws", "h", "plain.test", hn.addr},
	} {
		t.Run(c.name, func(t *testing.T) {
			ws, _, err := openWSH3(t, tr, "websocket", c.url)
			if err != nil {
				t.Fatal(err)
			}
			ws.echoAndRelease(t, r.router, c.id, c.pool, c.node, 500, i+1) // 500 kB: past the stream window
		})
	}
	if n := sumOf(t, metricLines(t, r.router, "fastrouter_client_connections", `proto="h3"`)); n != 2 {
		t.Errorf("h3 client connections: %v; want the transport's 2 (one per origin)", n)
	}
	var lines []map[string]any
	eventually(t, 10*time.Second, "the websockets' access-log lines", func() bool {
		b, _ := os.ReadFile(alog)
		lines = nil
		for _, l := range strings.Split(string(b), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["uri"] == "/ws" {
				lines = append(lines, m)
			}
		}
		return len(lines) == 2
	})
	for _, l := range lines {
		if l["proto"] != "HTTP/3.0" || l["status"] != float64(101) || l["method"] != "GET" {
			t.Errorf("websocket handshake logged as %v; want GET, HTTP/3.0 and the node's 101", l)
		}
	}
}

// TestWebSocketOverH3Hostile: another :protocol with a body behind it is a
// 501 that reaches no node; a client resetting its stream mid-tunnel cuts
// the node's connection; and an h3 tunnel follows the shutdown rules:
// SIGTERM's GOAWAY keeps it until --shutdown-timeout, then it is cut and
// the router exits 0.
func TestWebSocketOverH3Hostile(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	p := newTestPKI(t)
	r := startH3Router(t, p, "--shutdown-timeout", "3s")
	startNode(t, r.router, "default.test", nodeOpts{id: "a"})
	waitForNodes(t, r.router, "default.test", 1)
	tr := ws3Transport(t, r)
	url := "https://default.test:" + r.port + "/ws"

	ws, _, err := openWSH3(t, tr, "connect-udp", url)
	if err != nil {
		t.Fatal(err)
	}
	go ws.pw.Write(bytes.Repeat([]byte("x"), 100<<10))
	if body, _ := io.ReadAll(ws.resp.Body); ws.resp.StatusCode != 501 || string(body) != "501 Not Implemented\n" {
		t.Errorf("connect-udp: %d %q; want 501", ws.resp.StatusCode, body)
	}
	if l := metricLines(t, r.router, "fastrouter_requests_total", `pool="default.test"`); len(l) != 0 {
		t.Errorf("a refused protocol reached the pool: %v", l)
	}

	// The client resets its stream: the node's side goes too.
	ws, cancel, err := openWSH3(t, tr, "websocket", url)
	if err != nil || ws.resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %v %v", ws, err)
	}
	if got, err := ws.echo(t, 1, []byte("before")); err != nil || string(got) != "a:before" {
		t.Fatalf("echo: %q %v", got, err)
	}
	cancel() // RESET_STREAM and STOP_SENDING
	eventually(t, 10*time.Second, "tunnel gone and node released", func() bool {
		l := metricLines(t, r.router, "fastrouter_upgraded_connections")
		return len(l) == 1 && sampleValue(t, l[0]) == 0 && r.pool(t, "default.test").Nodes[0].Inflight == 0
	})

	ws, _, err = openWSH3(t, tr, "websocket", url)
	if err != nil || ws.resp.StatusCode != 200 {
		t.Fatalf("extended CONNECT: %v %v", ws, err)
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	time.Sleep(1500 * time.Millisecond) // past the close of idle connections
	if got, err := ws.echo(t, 1, []byte("after SIGTERM")); err != nil || string(got) != "a:after SIGTERM" {
		t.Fatalf("h3 websocket after SIGTERM: %q %v; want it kept until the shutdown deadline", got, err)
	}
	if code := r.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("router exit %d; want 0", code)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("router exited %s after SIGTERM with an h3 websocket open; want the 3s deadline", el)
	}
	if _, err := ws.recv(); err == nil {
		t.Fatal("h3 websocket open after the router exited")
	}
}
