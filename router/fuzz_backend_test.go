package router

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/valyala/fasthttp"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// FuzzBackendResponse makes a node answer with arbitrary bytes and sends a
// real request through the HTTP/1.1 front. Properties: the router never
// panics (a recovered panic would be a 500) and never leaves the client
// without an answer: the client always reads well-formed interim responses
// (at most maxInterim) and then a final status line, never a 101 it did not
// ask for; when the bytes are not heads fasthttp can parse up to a final
// one, the answer is 502; when they are, the client gets the backend's
// final status (or 502: response.go refuses more than fasthttp does).
func FuzzBackendResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhi\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
		"HTTP/1.0 204 No Content\r\nContent-Length: 10\r\n\r\n0123456789",
		"HTTP/1.1 304 Not Modified\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
		"HTTP/1.1 999 Odd\r\n\r\nbody",
		"HTTP/1.1 20 OK\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 000 X\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nConnection: close, X-A\r\nX-A: 1\r\nKeep-Alive: 1\r\nTrailer: X\r\n\r\nbody",
		"HTTP/1.1 200 OK\r\nX\x00: 1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\nConnection: close\r\n\r\nbody until EOF",
		"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\ncgi style",
		"HTTP/1.1 200 OK",
		"HTTP/1.1 200 OK\r\n",
		"\r\n\r\n",
		"",
		"garbage",
		strings.Repeat("A", 20000),
	} {
		f.Add([]byte(s))
	}
	var reply atomic.Pointer[[]byte]
	node := fuzzNode(f, &reply)
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		f.Fatal(err)
	}
	if err := table.AddStatic("f.test", node, 1); err != nil {
		f.Fatal(err)
	}
	rt, err := New(Config{Pools: table, ConnectTimeout: time.Second, Timeout: 2 * time.Second,
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		f.Fatal(err)
	}
	// Unix sockets on both sides: thousands of connections a second over
	// TCP would fill the machine's ephemeral ports with TIME_WAIT.
	addr := serveUntilCleanup(f, rt, rt.Serve, "unix", "fuzz")

	f.Fuzz(func(t *testing.T, resp []byte) {
		if len(resp) > 32<<10 {
			return
		}
		reply.Store(&resp)
		want, parsed := finalStatus(resp)

		c, err := net.Dial("unix", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: f.test\r\nConnection: close\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		cbr := bufio.NewReader(c)
		var got *http.Response
		for interim := 0; ; interim++ {
			got, err = http.ReadResponse(cbr, nil)
			if err != nil {
				t.Fatalf("client could not read an answer: %v (backend sent %q)", err, resp)
			}
			if got.StatusCode >= 200 || got.StatusCode == 101 {
				break
			}
			if got.StatusCode == 100 || interim == maxInterim {
				t.Fatalf("interim response %d (%d before it) for %q", got.StatusCode, interim, resp)
			}
		}
		// The body may be cut short (the backend lied about its length after
		// the head was sent); reading it must end, not hang.
		_, _ = io.Copy(io.Discard, got.Body)
		got.Body.Close()
		switch {
		case got.StatusCode == 500:
			t.Fatalf("500: the router panicked on %q", resp)
		case got.StatusCode == 101:
			t.Fatalf("an unrequested 101 reached the client for %q", resp)
		case !parsed && got.StatusCode != 502:
			t.Fatalf("unparsable head %q answered %d; want 502", resp, got.StatusCode)
		case parsed && got.StatusCode != want && got.StatusCode != 502:
			t.Fatalf("head %q: client got %d; want %d", resp, got.StatusCode, want)
		}
	})
}

// finalStatus is what fasthttp makes of resp as a node's answer: the status
// of the first head that is not interim, within maxInterim interim ones. ok
// is false when a head does not parse, or the final one is a 101.
func finalStatus(resp []byte) (code int, ok bool) {
	br := bufio.NewReader(bytes.NewReader(resp))
	for range maxInterim + 1 {
		var h fasthttp.ResponseHeader
		if h.Read(br) != nil {
			return 0, false
		}
		switch c := h.StatusCode(); {
		case c == 101:
			return 0, false
		case c >= 200:
			return c, true
		}
	}
	return 0, false
}

// fuzzNode is a uwsgi node on a unix socket that answers every request with *reply and
// closes. It lives until the fuzz target's cleanup.
func fuzzNode(tb testing.TB, reply *atomic.Pointer[[]byte]) string {
	tb.Helper()
	return uwsgitest.NewNode(tb, func(c *uwsgitest.Conn, _ *uwsgitest.Request) {
		if r := reply.Load(); r != nil {
			c.Write(*r)
		}
	}, uwsgitest.OnUnix(), uwsgitest.NoRecord(), uwsgitest.Deadline(5*time.Second)).Addr()
}
