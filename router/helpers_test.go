package router

// The test doubles the router's tests share: a Router serving on loopback,
// fake nodes (internal/uwsgitest, with the accessors these tests use) and
// raw clients. A test that needs a node's behaviour these do not script
// builds a uwsgitest.Node with a Handler of its own.

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

type testRouter struct {
	addr  string
	table *balancer.Table
	rt    *Router
}

// startRouter serves a Router of cfg (with an empty table of its own, and
// short timeouts unless cfg sets them) on a loopback port; the test's
// cleanup shuts it down.
func startRouter(t testing.TB, cfg Config) *testRouter {
	t.Helper()
	// The HTTP/1.1 event loop (h1loop_linux.go) is the default;
	// FASTROUTER_TEST_H1LOOP=0 runs every test of the package on the
	// goroutine path instead, which must pass them all too.
	if os.Getenv("FASTROUTER_TEST_H1LOOP") == "0" {
		cfg.DisableH1EventLoop = true
	}
	return startRouterAsIs(t, cfg)
}

// startRouterAsIs is startRouter on the path cfg chooses, whatever
// FASTROUTER_TEST_H1LOOP says (a test of one path, or comparing both).
func startRouterAsIs(t testing.TB, cfg Config) *testRouter {
	t.Helper()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Pools = table
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = time.Second
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	rt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return &testRouter{addr: serveUntilCleanup(t, rt, rt.Serve, "tcp", "test"), table: table, rt: rt}
}

// startUwsgiFront serves r's uwsgi front on a loopback port and returns its
// address.
func startUwsgiFront(t *testing.T, r *testRouter) string {
	t.Helper()
	return serveUntilCleanup(t, r.rt, r.rt.ServeUwsgi, "tcp", "u")
}

// serveUntilCleanup runs serve (one of rt's fronts) on a new listener, on
// 127.0.0.1 or, for network "unix", in the test's temporary directory, and
// returns its address. The test's cleanup shuts rt down (Shutdown, 5s) and
// waits for serve to return.
func serveUntilCleanup(tb testing.TB, rt *Router, serve func(net.Listener, string) error, network, name string) string {
	tb.Helper()
	addr := "127.0.0.1:0"
	if network == "unix" {
		addr = filepath.Join(tb.TempDir(), name+".sock")
	}
	ln, err := net.Listen(network, addr)
	if err != nil {
		tb.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); serve(ln, name) }()
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rt.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

// fakeNode is a uwsgi node (a uwsgitest.Node) that answers each request,
// one per connection, with what its reply returns for the vars and body.
type fakeNode struct{ *uwsgitest.Node }

func startFakeNode(t testing.TB, reply func(vars map[string]string, body []byte) string) *fakeNode {
	t.Helper()
	return &fakeNode{uwsgitest.NewNode(t, uwsgitest.Respond(func(r *uwsgitest.Request) string {
		return reply(r.Vars, r.Body)
	}))}
}

func (n *fakeNode) addr() string { return n.Addr() }

// last is the vars of the latest request the node read, nil before any.
func (n *fakeNode) last() map[string]string {
	if r := n.Last(); r != nil {
		return r.Vars
	}
	return nil
}

func okReply(body string) func(map[string]string, []byte) string {
	return func(map[string]string, []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + body
	}
}

// httpFake is an HTTP/1.1 node with keep-alive (a uwsgitest.Node).
type httpFake struct{ *uwsgitest.Node }

// startHTTPFake starts an http node whose reply returns, for the nth
// request on its connection, the raw response ("" closes without an
// answer) and whether to close the connection after it. A HEAD gets the
// response's head only.
func startHTTPFake(t *testing.T, reply func(req *http.Request, body []byte, nth int) (resp string, closeAfter bool)) *httpFake {
	t.Helper()
	return startHTTPNode(t, func(c *uwsgitest.Conn, r *uwsgitest.Request) {
		resp, closeAfter := reply(r.HTTP, r.Body, r.Nth)
		uwsgitest.Respond(func(*uwsgitest.Request) string { return resp })(c, r)
		if closeAfter {
			_ = c.Close()
		}
	})
}

// startHTTPNode starts an http node that answers with h.
func startHTTPNode(t *testing.T, h uwsgitest.Handler) *httpFake {
	t.Helper()
	return &httpFake{uwsgitest.NewNode(t, h, uwsgitest.WithProto(uwsgitest.HTTP))}
}

// addr is the node's address as an http node's: with its scheme.
func (f *httpFake) addr() string { return "http://" + f.Addr() }

// requests is the HTTP requests the node read, in order.
func (f *httpFake) requests() []*http.Request {
	var reqs []*http.Request
	for _, r := range f.Requests() {
		reqs = append(reqs, r.HTTP)
	}
	return reqs
}

// raw sends one raw request on a fresh connection and returns the parsed
// response and its body (uwsgitest.Do).
func raw(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	return uwsgitest.Do(t, addr, req)
}

// waitFor is uwsgitest.WaitFor, named for the many tests that use it.
var waitFor = uwsgitest.WaitFor

// keepAlive is one client connection sending requests in turn.
type keepAlive struct {
	*uwsgitest.Client
	t *testing.T
}

func dialKeepAlive(t *testing.T, addr string) *keepAlive {
	t.Helper()
	return &keepAlive{uwsgitest.Dial(t, addr), t}
}

// get sends raw (one or more requests, or the rest of one) and reads n
// responses, checking each is 200 with body want.
func (k *keepAlive) get(raw string, n int, want string) {
	k.t.Helper()
	k.Send(raw)
	for i := range n {
		resp, b, err := k.Next("GET")
		if err != nil {
			k.t.Fatalf("response %d: %v", i, err)
		}
		if resp.StatusCode != 200 || b != want {
			k.t.Fatalf("response %d: %d %q; want 200 %q", i, resp.StatusCode, b, want)
		}
	}
}

// expectEOF waits for the router to close the connection.
func (k *keepAlive) expectEOF(within time.Duration) {
	k.t.Helper()
	_ = k.Conn().SetDeadline(time.Now().Add(within))
	if n, err := k.Reader().Read(make([]byte, 1)); err != io.EOF {
		k.t.Fatalf("read = %d, %v; want EOF (connection closed by the router)", n, err)
	}
}

// lockedBuffer collects what a logger or a process writes, for the test to
// poll while it is written.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
