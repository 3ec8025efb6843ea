package integration

import (
	"bytes"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// dialWS opens a WebSocket to /ws of host through the router at addr.
func dialWS(t *testing.T, addr, host string) *websocket.Conn {
	t.Helper()
	cfg, err := websocket.NewConfig("ws://"+host+"/ws", "http://"+host+"/")
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	ws, err := websocket.NewClient(cfg, c)
	if err != nil {
		c.Close()
		t.Fatalf("websocket handshake through the router: %v", err)
	}
	t.Cleanup(func() { ws.Close() })
	return ws
}

// echo sends msg and returns the node's answer ("<id>:<msg>").
func echo(t *testing.T, ws *websocket.Conn, msg []byte, binary bool) ([]byte, error) {
	t.Helper()
	_ = ws.SetDeadline(time.Now().Add(20 * time.Second))
	var err error
	if binary {
		err = websocket.Message.Send(ws, msg)
	} else {
		err = websocket.Message.Send(ws, string(msg))
	}
	if err != nil {
		return nil, err
	}
	if binary {
		var got []byte
		err = websocket.Message.Receive(ws, &got)
		return got, err
	}
	var got string
	err = websocket.Message.Receive(ws, &got)
	return []byte(got), err
}

// TestWebSocketEcho: a WebSocket through the router to a real uWSGI
// websocket app; frames flow both ways, small and large, text and binary;
// the tunnel is counted, its client connection stays counted open until it
// closes, the node's in-flight slot is released then, and its access-log
// line counts the bytes relayed to the client.
func TestWebSocketEcho(t *testing.T) {
	requireUWSGI(t)
	logPath := filepath.Join(t.TempDir(), "access.log")
	r := startRouter(t, "--access-log", logPath)
	n := startNode(t, r, "ws.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "ws.test", 1)
	clientConns := `fastrouter_client_connections{listener="` + r.http + `",proto="http/1.1"}`

	ws := dialWS(t, r.http, "ws.test")
	toClient := 0 // the node's frames: 2 bytes of head (unmasked), 10 past 64 KiB of payload
	for i := range 5 {
		msg := []byte(fmt.Sprintf("hello %d", i))
		got, err := echo(t, ws, msg, false)
		if err != nil || string(got) != "a:"+string(msg) {
			t.Fatalf("echo %d: %q, %v; want %q", i, got, err, "a:"+string(msg))
		}
		toClient += 2 + len(got)
	}
	big := bytes.Repeat([]byte{0, 1, 2, 250, 251}, 20000) // 100 kB binary frame
	got, err := echo(t, ws, big, true)
	if err != nil || !bytes.Equal(got, append([]byte("a:"), big...)) {
		t.Fatalf("100 kB binary echo: %d bytes, %v", len(got), err)
	}
	toClient += 10 + len(got)
	if l := metricLines(t, r, "fastrouter_upgraded_connections"); len(l) != 1 || sampleValue(t, l[0]) != 1 {
		t.Errorf("open tunnels: %v; want 1", l)
	}
	if v := metricValue(t, r, clientConns); v != 1 {
		t.Errorf("%s = %v with the tunnel open; want 1", clientConns, v)
	}
	if p := r.pool(t, "ws.test").node(n.addr); p.Inflight != 1 {
		t.Errorf("node in flight during the websocket: %d; want 1", p.Inflight)
	}
	// Plain requests still work next to it.
	if code, body := get(t, client(), r.http, "ws.test", "/"); code != 200 || body != "node=a" {
		t.Errorf("plain GET beside a websocket: %d %q", code, body)
	}
	ws.Close()
	eventually(t, 10*time.Second, "tunnel closed and node released", func() bool {
		l := metricLines(t, r, "fastrouter_upgraded_connections")
		return len(l) == 1 && sampleValue(t, l[0]) == 0 && r.pool(t, "ws.test").node(n.addr).Inflight == 0
	})
	if l := metricLines(t, r, "fastrouter_upgraded_connections_total"); len(l) != 1 || sampleValue(t, l[0]) != 1 {
		t.Errorf("tunnels opened: %v; want 1", l)
	}
	if l := metricLines(t, r, "fastrouter_requests_total", `pool="ws.test"`, `code="101"`); len(l) != 1 {
		t.Errorf("101 not counted: %v", l)
	}
	eventually(t, 10*time.Second, clientConns+" back to 0 once the tunnel closed", func() bool {
		return metricValue(t, r, clientConns) == 0
	})
	var line *accessEntry
	eventually(t, 15*time.Second, "the tunnel's access-log line", func() bool {
		for _, e := range readAccessLog(t, logPath) {
			if e.URI == "/ws" {
				line = &e
			}
		}
		return line != nil
	})
	// The frames echoed, and at most the node's answer to the client's
	// close (a close frame: 2 bytes of head and at most 125 of payload).
	if line.Status != 101 || line.Bytes < int64(toClient) || line.Bytes > int64(toClient)+127 {
		t.Errorf("tunnel access-log line: status %d, bytes %d; want 101 and the %d bytes of frames relayed to the client (+ a close frame)",
			line.Status, line.Bytes, toClient)
	}
}

// TestWebSocketDrainAndShutdown: a node being drained keeps its open
// websocket until the drain deadline, then it is cut and counted as forced;
// router shutdown keeps a websocket until --shutdown-timeout, then closes
// it and exits 0.
func TestWebSocketDrainAndShutdown(t *testing.T) {
	requireUWSGI(t)
	r := startRouter(t, "--shutdown-timeout", "3s")
	nodes := map[string]*node{
		"a": startNode(t, r, "ws.test", nodeOpts{id: "a"}),
		"b": startNode(t, r, "ws.test", nodeOpts{id: "b"}),
	}
	waitForNodes(t, r, "ws.test", 2)

	ws := dialWS(t, r.http, "ws.test")
	got, err := echo(t, ws, []byte("x"), false)
	if err != nil {
		t.Fatal(err)
	}
	id, _, _ := strings.Cut(string(got), ":")
	n := nodes[id]
	if n == nil {
		t.Fatalf("echo %q from an unknown node", got)
	}
	path := "/api/pools/ws.test/nodes/" + url.PathEscape(n.addr)
	if code, body := adminPost(t, r, path+"/drain", `{"timeout":"3s"}`); code != 202 {
		t.Fatalf("drain: %d %s", code, body)
	}
	start := time.Now()
	// Within the deadline the tunnel lives on, and stays draining.
	for i := range 3 {
		if got, err := echo(t, ws, []byte("during drain"), false); err != nil || string(got) != id+":during drain" {
			t.Fatalf("echo %d during the drain: %q, %v", i, got, err)
		}
		time.Sleep(300 * time.Millisecond)
	}
	if st := r.pool(t, "ws.test").node(n.addr).State; st != "draining" && time.Since(start) < 3*time.Second {
		t.Fatalf("state with an open websocket: %s; want draining", st)
	}
	// At the deadline it is cut.
	_ = ws.SetDeadline(time.Now().Add(20 * time.Second))
	var msg string
	if err := websocket.Message.Receive(ws, &msg); err == nil {
		t.Fatalf("websocket still open after the drain deadline: %q", msg)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("websocket cut after %s; want at the 3s drain deadline", el)
	}
	eventually(t, 10*time.Second, "node drained", func() bool {
		return r.pool(t, "ws.test").node(n.addr).State == "drained"
	})
	eventually(t, 10*time.Second, "forced drain counted", func() bool {
		l := metricLines(t, r, "fastrouter_drains_total", `result="forced"`)
		return len(l) == 1 && sampleValue(t, l[0]) == 1
	})

	// Shutdown: the websocket to the other node outlives SIGTERM until
	// --shutdown-timeout.
	ws2 := dialWS(t, r.http, "ws.test")
	if got, err := echo(t, ws2, []byte("y"), false); err != nil || strings.HasPrefix(string(got), id+":") {
		t.Fatalf("second websocket: %q, %v (want the undrained node)", got, err)
	}
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	start = time.Now()
	time.Sleep(500 * time.Millisecond)
	if _, err := echo(t, ws2, []byte("after SIGTERM"), false); err != nil {
		t.Fatalf("websocket right after SIGTERM: %v; want it kept until the shutdown deadline", err)
	}
	if code := r.wait(t, 20*time.Second); code != 0 {
		t.Fatalf("router exit %d; want 0", code)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("router exited %s after SIGTERM with a websocket open; want the 3s deadline", el)
	}
	_ = ws2.SetDeadline(time.Now().Add(10 * time.Second))
	if err := websocket.Message.Receive(ws2, &msg); err == nil {
		t.Fatal("websocket open after the router exited")
	}
}

// TestWebSocketIdleTimeout: a tunnel busy in either direction outlives
// --timeout; one idle both ways for --timeout is closed.
func TestWebSocketIdleTimeout(t *testing.T) {
	requireUWSGI(t)
	r := startRouter(t, "--timeout", "2s")
	startNode(t, r, "ws.test", nodeOpts{id: "a"})
	waitForNodes(t, r, "ws.test", 1)

	ws := dialWS(t, r.http, "ws.test")
	for i := range 5 { // 5 s of traffic every 0.8 s: longer than --timeout
		if _, err := echo(t, ws, []byte("tick"), false); err != nil {
			t.Fatalf("echo %d on a busy tunnel: %v", i, err)
		}
		time.Sleep(800 * time.Millisecond)
	}
	start := time.Now()
	_ = ws.SetDeadline(time.Now().Add(20 * time.Second))
	var msg string
	if err := websocket.Message.Receive(ws, &msg); err == nil {
		t.Fatalf("idle tunnel delivered %q; want it closed", msg)
	}
	if el := time.Since(start); el < time.Second || el > 10*time.Second {
		t.Errorf("idle tunnel closed after %s; want about --timeout (2s)", el)
	}
}
