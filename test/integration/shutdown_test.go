package integration

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"golang.org/x/net/websocket"
)

// holdNode is a fake node that reads what the router sends and never
// answers (stream false), or answers a head and then one line every 100 ms
// for ever (stream true); each connection is bounded at 60 s, long past any
// deadline the test waits for.
func holdNode(t *testing.T, stream bool) *uwsgitest.Node {
	t.Helper()
	h := uwsgitest.Hold()
	if stream {
		h = uwsgitest.Stream("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", "tick\n", 100*time.Millisecond)
	}
	return uwsgitest.NewNode(t, h, uwsgitest.WithProto(uwsgitest.Raw), uwsgitest.Deadline(60*time.Second))
}

// uwsgiGet is a uwsgi packet for GET host+uri, as a web server in front of
// a --uwsgi listener sends it.
func uwsgiGet(host, path, query string) []byte {
	return uwsgitest.Packet("REQUEST_METHOD", "GET", "REQUEST_URI", path+"?"+query, "PATH_INFO", path,
		"QUERY_STRING", query, "SERVER_PROTOCOL", "HTTP/1.1", "HTTP_HOST", host,
		"SERVER_NAME", host, "SERVER_PORT", "80", "REMOTE_ADDR", "127.0.0.1", "REMOTE_PORT", "1")
}

// openExchange is one client exchange held open across the shutdown: ended
// is closed when the client's connection ends.
type openExchange struct {
	name  string
	ended chan struct{}
	at    time.Time // valid once ended
}

// hold reads c until it ends; first is closed at the first byte read.
func hold(name string, c net.Conn, first chan<- struct{}) *openExchange {
	x := &openExchange{name: name, ended: make(chan struct{})}
	go func() {
		defer close(x.ended)
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
		var b [4096]byte
		once := false
		for {
			_, err := c.Read(b[:])
			if !once && first != nil && err == nil {
				close(first)
				once = true
			}
			if err != nil {
				x.at = time.Now()
				return
			}
		}
	}()
	return x
}

// At the --shutdown-timeout deadline every exchange still open is cut,
// whatever it waits on, and the process exits within the deadline plus a
// second: streams without end from a real uWSGI generator and from a fake
// node, a node that never answers (through the HTTP/1.1 front, the uwsgi
// front and to an http:// node), an HTTP/1.0 stream, an h2c stream, an idle
// WebSocket tunnel, and a client connection that never sent a byte.
func TestShutdownDeadlineCutsEverything(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	// Enough threads for every stream held open at once.
	sock := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	app := &node{addr: sock, proc: startProc(t, "uwsgi", "--plugin", "python3", "--master", "--socket", sock,
		"--wsgi-file", appPath, "--processes", "2", "--threads", "8", "--die-on-term", "--env", "NODE_ID=s",
		"--disable-logging")}
	happ := startHTTPNodeOn(t, nil, fmt.Sprintf("127.0.0.1:%d", freePort(t)), "", "h", true, false)
	silent, streamer, hsilent := holdNode(t, false), holdNode(t, true), holdNode(t, false)
	uw := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	const timeout = 2 * time.Second
	r := startRouter(t, "--shutdown-timeout", timeout.String(), "--uwsgi", uw,
		"--to", "app.test="+app.addr, "--to", "happ.test="+happ.addr,
		"--to", "silent.test="+silent.Addr(), "--to", "stream.test="+streamer.Addr(),
		"--to", "hsilent.test=http://"+hsilent.Addr())
	eventually(t, 10*time.Second, "the nodes to serve", func() bool {
		a, _ := get(t, client(), r.http, "app.test", "/")
		h, _ := get(t, client(), r.http, "happ.test", "/")
		return a == 200 && h == 200
	})

	var xs []*openExchange
	var firsts []chan struct{}
	h1 := func(name, host, path, proto string) {
		c, err := net.DialTimeout("tcp", r.http, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s %s\r\nHost: %s\r\n\r\n", path, proto, host)
		first := make(chan struct{})
		if host != "silent.test" && host != "hsilent.test" {
			firsts = append(firsts, first)
		}
		xs = append(xs, hold(name, c, first))
	}
	h1("h1 uWSGI generator", "app.test", "/stream?ms=200", "HTTP/1.1")
	h1("h1.0 uWSGI generator", "app.test", "/stream?ms=200", "HTTP/1.0")
	h1("h1 http node generator", "happ.test", "/stream?ms=200", "HTTP/1.1")
	h1("h1 fake streaming node", "stream.test", "/", "HTTP/1.1")
	h1("h1 node that never answers", "silent.test", "/", "HTTP/1.1")
	h1("h1 http node that never answers", "hsilent.test", "/", "HTTP/1.1")

	uc, err := net.DialTimeout("tcp", uw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	uc.Write(uwsgiGet("silent.test", "/", ""))
	xs = append(xs, hold("uwsgi front, node that never answers", uc, nil))
	uc2, err := net.DialTimeout("tcp", uw, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	uc2.Write(uwsgiGet("app.test", "/stream", "ms=200"))
	first := make(chan struct{})
	firsts = append(firsts, first)
	xs = append(xs, hold("uwsgi front, uWSGI generator", uc2, first))

	idle, err := net.DialTimeout("tcp", r.http, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	xs = append(xs, hold("connection that never sent a byte", idle, nil))

	// h2c: the stream's body is read on its own goroutine.
	h2 := &openExchange{name: "h2c uWSGI generator", ended: make(chan struct{})}
	h2first := make(chan struct{})
	firsts = append(firsts, h2first)
	go func() {
		defer close(h2.ended)
		defer func() { h2.at = time.Now() }()
		resp, err := h2Client(r.http, nil, nil).Get("http://app.test/stream?ms=200")
		if err != nil {
			return
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		if _, err := br.ReadString('\n'); err == nil {
			close(h2first)
		}
		io.Copy(io.Discard, br)
	}()
	xs = append(xs, h2)

	ws := dialWS(t, r.http, "app.test")
	if got, err := echo(t, ws, []byte("x"), false); err != nil || string(got) != "s:x" {
		t.Fatalf("websocket echo: %q %v", got, err)
	}
	_ = ws.SetDeadline(time.Now().Add(60 * time.Second))
	wsx := &openExchange{name: "idle websocket", ended: make(chan struct{})}
	go func() {
		defer close(wsx.ended)
		var msg string
		websocket.Message.Receive(ws, &msg)
		wsx.at = time.Now()
	}()
	xs = append(xs, wsx)

	for i, f := range firsts {
		select {
		case <-f:
		case <-time.After(20 * time.Second):
			t.Fatalf("streaming exchange %d sent nothing", i)
		}
	}
	eventually(t, 10*time.Second, "the silent nodes to have their requests", func() bool {
		return silent.Served() == 2 && hsilent.Served() == 1
	})

	signalled := time.Now()
	if err := r.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	code := r.wait(t, 30*time.Second)
	exit := time.Since(signalled)
	t.Logf("exit %d after %s (--shutdown-timeout %s)", code, exit.Round(time.Millisecond), timeout)
	if code != 0 {
		t.Errorf("exit code %d; want 0", code)
	}
	if exit > timeout+time.Second {
		t.Errorf("the router exited %s after SIGTERM; want within --shutdown-timeout + 1s (%s)", exit.Round(time.Millisecond), timeout+time.Second)
	}
	// Every goroutine let go of what was cut before the process exited.
	logb, _ := os.ReadFile(r.log)
	line := grep(string(logb), "shutdown deadline")
	t.Logf("%s", line)
	if !strings.Contains(line, "node_connections_left=0") || !strings.Contains(line, "http1_connections_left=0") {
		t.Errorf("router log at the deadline: %q; want every node and HTTP/1.1 connection released", line)
	}
	var late []string
	for _, x := range xs {
		select {
		case <-x.ended:
			if d := x.at.Sub(signalled); d < timeout-500*time.Millisecond {
				late = append(late, fmt.Sprintf("%s: cut %s after SIGTERM, before the deadline", x.name, d.Round(time.Millisecond)))
			}
		case <-time.After(5 * time.Second):
			late = append(late, x.name+": still open after the router exited")
		}
	}
	for _, n := range []*uwsgitest.Node{silent, streamer, hsilent} {
		for wait := time.Now().Add(5 * time.Second); n.Open() > 0 && time.Now().Before(wait); {
			time.Sleep(10 * time.Millisecond)
		}
		if k := n.Open(); k > 0 {
			late = append(late, fmt.Sprintf("fake node %s: %d connections still open after the router exited", n.Addr(), k))
		}
	}
	if len(late) > 0 {
		t.Errorf("exchanges:\n%s", strings.Join(late, "\n"))
	}
}
