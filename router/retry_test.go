package router

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// The retry rules hold for every front and every body the router holds
// whole (forward.go, retryable): the uwsgi front's requests take the same
// path as the HTTP fronts', and a buffered body goes again as a bodiless
// request would.

// uwsgiFrontDo sends a packet of vars kv (and body) to the uwsgi front at
// addr and returns what the router relayed until it closed.
func uwsgiFrontDo(t *testing.T, addr, body string, kv ...string) string {
	t.Helper()
	c := uwsgitest.Dial(t, addr)
	defer c.Close()
	c.Send(string(uwsgitest.Packet(kv...)) + body)
	return c.Rest()
}

// A uwsgi-front request whose node refused the connect, or closed or reset
// it before a byte of the answer, is answered by another node when it can
// go again; the failure counts as on the HTTP fronts.
func TestUwsgiFrontRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		bad  uwsgitest.Handler // nil: the port is closed
	}{
		{"connect refused", nil},
		{"close", uwsgitest.Silent()},
		{"reset", uwsgitest.Reset()},
	} {
		for _, method := range []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE"} {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				bad := tc.bad
				if bad == nil {
					bad = uwsgitest.Silent()
				}
				p := startEarlyPair(t, Config{}, bad, uwsgitest.Uwsgi)
				if tc.bad == nil {
					p.bad.Close() // its port refuses connects from now on
				}
				front := startUwsgiFront(t, p.r)
				for i := 0; i < 8; i++ {
					got := uwsgiFrontDo(t, front, "", "REQUEST_METHOD", method, "PATH_INFO", "/", "HTTP_HOST", p.host)
					if !strings.HasPrefix(got, "HTTP/1.1 200 ") || !strings.HasSuffix(got, "live") {
						t.Fatalf("request %d: %q; want the live node's 200", i, got)
					}
				}
				// A refused connect fails the node and is counted,
				// though another node served the request (the node
				// backs off, so later requests skip it); a close before
				// the answer is counted and fails nothing.
				if tc.bad == nil {
					if !p.badFailing(t) {
						t.Error("the node that refused the connect is not failed")
					}
					if got := p.errCount("connect"); got < 1 {
						t.Errorf(`backend_errors_total{reason="connect"} = %v; want at least 1`, got)
					}
					return
				}
				if got := p.closedCount(); got < 1 {
					t.Errorf(`backend_errors_total{reason="closed"} = %v; want at least 1`, got)
				}
				if p.badFailing(t) {
					t.Error("the node that closed without answering was failed; want it only counted")
				}
			})
		}
	}
}

// A uwsgi-front request the node may have acted on, or whose body streams
// from the web server in front, is not sent twice: 502.
func TestUwsgiFrontNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name, method, body string
	}{
		{"POST", "POST", "hello"},
		{"PATCH", "PATCH", ""},
		{"GET with a streamed body", "GET", "hello"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := startEarlyPair(t, Config{}, uwsgitest.Reset(), uwsgitest.Uwsgi)
			front := startUwsgiFront(t, p.r)
			for i := 0; i < 20 && len(p.bad.Requests()) == 0; i++ {
				got := uwsgiFrontDo(t, front, tc.body, "REQUEST_METHOD", tc.method, "PATH_INFO", "/", "HTTP_HOST", p.host,
					"CONTENT_LENGTH", strconv.Itoa(len(tc.body)))
				if len(p.bad.Requests()) > 0 && !strings.HasPrefix(got, "HTTP/1.1 502 ") {
					t.Errorf("the request the node reset: %q; want 502", got)
				}
			}
			if len(p.bad.Requests()) == 0 {
				t.Fatal("the bad node never read a request")
			}
			if got := p.closedCount(); got != 1 {
				t.Errorf(`backend_errors_total{reason="closed"} = %v; want 1`, got)
			}
		})
	}
}

// A GET whose body the router holds whole (inline with the head, buffered
// in memory or spilled to a file, de-chunked) goes to another node as a
// bodiless one does, and that node reads the whole body.
func TestBufferedBodyRetried(t *testing.T) {
	buffering := Config{RequestBuffering: 4 << 20}
	for _, tc := range []struct {
		name string
		cfg  Config
		body string
		// chunked sends body as one chunk instead of with Content-Length.
		chunked bool
	}{
		{"inline", Config{}, "hello", false},
		{"in memory", buffering, strings.Repeat("m", 100_000), false},
		{"spilled", buffering, strings.Repeat("0123456789", 200_000), false},
		{"chunked", Config{}, strings.Repeat("c", 50_000), true},
	} {
		for _, proto := range []uwsgitest.Proto{uwsgitest.Uwsgi, uwsgitest.HTTP} {
			t.Run(tc.name+" "+protoName(proto), func(t *testing.T) {
				cfg := tc.cfg
				cfg.TempDir = t.TempDir()
				p := startEarlyPair(t, cfg, uwsgitest.Reset(), proto)
				req := "GET / HTTP/1.1\r\nHost: early.test\r\nContent-Length: " + strconv.Itoa(len(tc.body)) + "\r\n\r\n" + tc.body
				if tc.chunked {
					req = "GET / HTTP/1.1\r\nHost: early.test\r\nTransfer-Encoding: chunked\r\n\r\n" +
						strconv.FormatInt(int64(len(tc.body)), 16) + "\r\n" + tc.body + "\r\n0\r\n\r\n"
				}
				p.untilBad(t, req, func(i int, resp *http.Response, body string) {
					if resp.StatusCode != 200 || body != "live" {
						t.Errorf("request %d: %d %q; want 200 %q", i, resp.StatusCode, body, "live")
					}
				})
				got := p.live.Last()
				if got == nil {
					t.Fatal("the live node read no request")
				}
				if string(got.Body) != tc.body {
					t.Errorf("the live node read a body of %d bytes; want the %d sent", len(got.Body), len(tc.body))
				}
				if got := p.closedCount(); got != 1 {
					t.Errorf(`backend_errors_total{reason="closed"} = %v; want 1`, got)
				}
			})
		}
	}
}

// A request that is not idempotent goes to another node only when its
// node surely never got it: a refused connect. Its buffered body is sent
// whole there.
func TestBufferedPostRetriedOnConnectFailure(t *testing.T) {
	body := strings.Repeat("p", 100_000)
	p := startEarlyPair(t, Config{RequestBuffering: 4 << 20}, uwsgitest.Silent(), uwsgitest.Uwsgi)
	p.bad.Close() // its port refuses connects from now on
	for i := 0; i < 4; i++ {
		resp, got := raw(t, p.r.addr, "POST / HTTP/1.1\r\nHost: early.test\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		if resp.StatusCode != 200 || got != "live" {
			t.Fatalf("request %d: %d %q; want 200 %q", i, resp.StatusCode, got, "live")
		}
		if b := p.live.Last().Body; string(b) != body {
			t.Fatalf("request %d: the live node read %d bytes; want %d", i, len(b), len(body))
		}
	}
	if !p.badFailing(t) {
		t.Error("the node that refused the connect is not failed")
	}
}

func protoName(p uwsgitest.Proto) string {
	if p == uwsgitest.HTTP {
		return "http"
	}
	return "uwsgi"
}
