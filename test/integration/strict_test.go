package integration

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// malformedRequests are sent one per connection, raw, to the real binary.
// Every one must get an answer with the status listed (never an empty
// reply), and every refusal closes the connection. The list is the issue's
// RFC 9112 checklist; SECURITY.md lists the same answers.
var malformedRequests = []struct {
	name, req string
	want      int
}{
	{"obs-fold continuation line", "GET / HTTP/1.1\r\nHost: live.test\r\nX-A: 1\r\n folded\r\n\r\n", 400},
	{"whitespace before the first header", "GET / HTTP/1.1\r\n Host: live.test\r\n\r\n", 400},
	{"NUL in a header value", "GET / HTTP/1.1\r\nHost: live.test\r\nX-A: a\x00b\r\n\r\n", 400},
	{"bare CR in a header value", "GET / HTTP/1.1\r\nHost: live.test\r\nX-A: a\rb\r\n\r\n", 400},
	{"CTL 0x01 in a header value", "GET / HTTP/1.1\r\nHost: live.test\r\nX-A: a\x01b\r\n\r\n", 400},
	{"DEL in a header value", "GET / HTTP/1.1\r\nHost: live.test\r\nX-A: a\x7fb\r\n\r\n", 400},
	{"NUL in a header name", "GET / HTTP/1.1\r\nHost: live.test\r\nX\x00A: 1\r\n\r\n", 400},
	{"space before the colon", "GET / HTTP/1.1\r\nHost : live.test\r\n\r\n", 400},
	{"tab before the colon", "GET / HTTP/1.1\r\nHost: live.test\r\nX-A\t: 1\r\n\r\n", 400},
	{"space inside a header name", "GET / HTTP/1.1\r\nHost: live.test\r\nX A: 1\r\n\r\n", 400},
	{"empty header name", "GET / HTTP/1.1\r\nHost: live.test\r\n: 1\r\n\r\n", 400},
	{"header line without a colon", "GET / HTTP/1.1\r\nHost: live.test\r\nnocolon\r\n\r\n", 400},
	{"non-token byte in a header name", "GET / HTTP/1.1\r\nHost: live.test\r\nX(A): 1\r\n\r\n", 400},
	{"two different Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", 400},
	{"two equal Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
	{"listed Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 5, 5\r\n\r\nhello", 400},
	{"signed Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: +5\r\n\r\nhello", 400},
	{"negative Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: -1\r\n\r\n", 400},
	{"hex Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 0x5\r\n\r\nhello", 400},
	{"20-digit Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
	{"Transfer-Encoding chunked, gzip (chunked not last)", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n", 400},
	{"Transfer-Encoding gzip alone", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
	// fasthttp refuses any coding but chunked before the strict check would
	// answer 501.
	{"Transfer-Encoding gzip, chunked", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 400},
	{"Transfer-Encoding chunked twice", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n", 400},
	{"two Transfer-Encoding lines", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"Transfer-Encoding xchunked", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 400},
	{"Content-Length with Transfer-Encoding", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"Transfer-Encoding then Content-Length", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n", 400},
	{"Transfer-Encoding on HTTP/1.0", "POST / HTTP/1.0\r\nHost: live.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
	{"bad chunk size", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", 400},
	{"chunk size overflow", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\nx\r\n0\r\n\r\n", 400},
	{"chunk without its CRLF", "POST / HTTP/1.1\r\nHost: live.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n", 400},
	{"no Host on HTTP/1.1", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400},
	{"two Host headers", "GET / HTTP/1.1\r\nHost: live.test\r\nHost: live.test\r\n\r\n", 400},
	{"empty Host", "GET / HTTP/1.1\r\nHost:\r\n\r\n", 400},
	{"bad Host characters", "GET / HTTP/1.1\r\nHost: live.test/../x\r\n\r\n", 400},
	{"absolute-form with another scheme", "GET ftp://live.test/ HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"absolute-form with userinfo", "GET http://u:p@live.test/ HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"absolute-form with an empty authority", "GET http:///x HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"request line over 16 KiB", "GET /" + strings.Repeat("a", 17<<10) + " HTTP/1.1\r\nHost: live.test\r\n\r\n", 414},
	{"head over --max-header-bytes", "GET / HTTP/1.1\r\nHost: live.test\r\nX-Big: " + strings.Repeat("b", 70<<10) + "\r\n\r\n", 431},
	{"101 header lines", "GET / HTTP/1.1\r\nHost: live.test\r\n" + strings.Repeat("X-H: 1\r\n", 100) + "\r\n", 431},
	{"HTTP/1.2", "GET / HTTP/1.2\r\nHost: live.test\r\n\r\n", 505},
	{"HTTP/2.0 request line over HTTP/1", "GET / HTTP/2.0\r\nHost: live.test\r\n\r\n", 505},
	{"HTTP/0.9 request line", "GET /\r\n\r\n", 400},
	{"no version", "GET / \r\nHost: live.test\r\n\r\n", 400},
	{"lowercase version", "GET / http/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"two spaces in the request line", "GET  / HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"non-token method", "G(T / HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"CONNECT", "CONNECT live.test:443 HTTP/1.1\r\nHost: live.test:443\r\n\r\n", 405},
	{"relative target", "GET foo/bar HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"asterisk target without OPTIONS", "GET * HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"fragment in the target", "GET /a#frag HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"NUL in the target", "GET /a\x00b HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"space in the target", "GET /a b HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
	{"tab in the target", "GET /a\tb HTTP/1.1\r\nHost: live.test\r\n\r\n", 400},
}

func TestMalformedRequests(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "live.test", nodeOpts{id: "live"})
	waitForNodes(t, r, "live.test", 1)
	var report strings.Builder
	for _, tc := range malformedRequests {
		resp, body := uwsgitest.Do(t, r.http, tc.req)
		fmt.Fprintf(&report, "\n  %-52s -> %d", tc.name, resp.StatusCode)
		if resp.StatusCode != tc.want || body == "" {
			t.Errorf("%s: %d %q; want %d with a body", tc.name, resp.StatusCode, body, tc.want)
		}
		if !resp.Close {
			t.Errorf("%s: connection kept open after %d", tc.name, resp.StatusCode)
		}
	}
	t.Logf("answers:%s", report.String())
	// The router is still serving well-formed requests.
	if code, body := get(t, client(), r.http, "live.test", "/"); code != 200 || body != "node=live" {
		t.Fatalf("after the malformed requests: %d %q", code, body)
	}
	if v := metricValue(t, r, `fastrouter_http_rejected_total{reason="version"}`); v != 2 {
		t.Errorf("rejected{version} = %v; want 2", v)
	}
}

// envOf sends req raw and decodes the /env JSON the app answers with.
func envOf(t *testing.T, addr, req string) map[string]string {
	t.Helper()
	resp, body := uwsgitest.Do(t, addr, req)
	if resp.StatusCode != 200 {
		t.Fatalf("%.60q: %d %q", req, resp.StatusCode, body)
	}
	var env map[string]string
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatalf("env: %v: %q", err, body)
	}
	return env
}

// Requests that are well-formed but try to steer the router or the app: an
// absolute-form target beats Host; spoofing headers never become anything
// but HTTP_* vars; REMOTE_ADDR is the socket peer; X-Forwarded-For is
// appended to only for a trusted peer.
func TestHostileButValidRequests(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	trusting := startRouter(t) // trusts loopback (the default)
	startNode(t, trusting, "live.test", nodeOpts{id: "live"})
	waitForNodes(t, trusting, "live.test", 1)

	env := envOf(t, trusting.http, "GET http://live.test/env?q=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
	if env["HTTP_HOST"] != "live.test" || env["REQUEST_URI"] != "/env?q=1" || env["PATH_INFO"] != "/env" || env["SERVER_NAME"] != "live.test" {
		t.Errorf("absolute form: HTTP_HOST %q REQUEST_URI %q PATH_INFO %q SERVER_NAME %q; want the target's",
			env["HTTP_HOST"], env["REQUEST_URI"], env["PATH_INFO"], env["SERVER_NAME"])
	}
	if resp, _ := uwsgitest.Do(t, trusting.http, "GET http://nowhere.test/ HTTP/1.1\r\nHost: live.test\r\n\r\n"); resp.StatusCode != 404 {
		t.Errorf("absolute form to an unknown host routed by Host: %d; want 404", resp.StatusCode)
	}

	spoof := "GET /env HTTP/1.1\r\nHost: live.test\r\n" +
		"X_Forwarded_For: 5.5.5.5\r\nX-Real_IP: 5.5.5.5\r\nRemote-Addr: 6.6.6.6\r\nScript-Name: /evil\r\n" +
		"Uwsgi-Script: evil\r\nPath-Info: /evil\r\nHttps: on\r\nProxy: http://evil:1\r\nX-Forwarded-For: 7.7.7.7\r\n\r\n"
	env = envOf(t, trusting.http, spoof)
	fixed := map[string]bool{"REQUEST_METHOD": true, "REQUEST_URI": true, "PATH_INFO": true, "QUERY_STRING": true,
		"SERVER_PROTOCOL": true, "SCRIPT_NAME": true, "SERVER_NAME": true, "SERVER_PORT": true, "REMOTE_ADDR": true,
		"REMOTE_PORT": true, "REQUEST_SCHEME": true, "CONTENT_LENGTH": true, "CONTENT_TYPE": true}
	for k, v := range env {
		if strings.HasPrefix(k, "wsgi.") || strings.HasPrefix(k, "uwsgi.") || k == "SERVER_SOFTWARE" {
			continue // set by uWSGI itself
		}
		if !fixed[k] && !strings.HasPrefix(k, "HTTP_") {
			t.Errorf("var %s=%q is neither a fixed var nor HTTP_*", k, v)
		}
		if strings.Contains(v, "5.5.5.5") {
			t.Errorf("a header with '_' reached the app as %s=%q", k, v)
		}
		if strings.Contains(v, "6.6.6.6") && k != "HTTP_REMOTE_ADDR" {
			t.Errorf("Remote-Addr reached the app as %s=%q", k, v)
		}
	}
	if env["REMOTE_ADDR"] != "127.0.0.1" || env["SCRIPT_NAME"] != "" || env["PATH_INFO"] != "/env" || env["HTTPS"] != "" || env["HTTP_PROXY"] != "" {
		t.Errorf("spoofed: REMOTE_ADDR %q SCRIPT_NAME %q PATH_INFO %q HTTPS %q HTTP_PROXY %q",
			env["REMOTE_ADDR"], env["SCRIPT_NAME"], env["PATH_INFO"], env["HTTPS"], env["HTTP_PROXY"])
	}
	if env["HTTP_X_FORWARDED_FOR"] != "7.7.7.7, 127.0.0.1" {
		t.Errorf("trusted peer: X-Forwarded-For %q; want the client's list with the peer appended", env["HTTP_X_FORWARDED_FOR"])
	}

	// A peer outside --trusted-proxy cannot inject X-Forwarded-For.
	strict := startRouter(t, "--trusted-proxy", "192.0.2.0/24")
	startNode(t, strict, "live.test", nodeOpts{id: "live2"})
	waitForNodes(t, strict, "live.test", 1)
	env = envOf(t, strict.http, spoof)
	if env["HTTP_X_FORWARDED_FOR"] != "127.0.0.1" || env["REMOTE_ADDR"] != "127.0.0.1" || env["HTTP_X_FORWARDED_PROTO"] != "http" {
		t.Errorf("untrusted peer: X-Forwarded-For %q REMOTE_ADDR %q X-Forwarded-Proto %q; want the socket peer only",
			env["HTTP_X_FORWARDED_FOR"], env["REMOTE_ADDR"], env["HTTP_X_FORWARDED_PROTO"])
	}
}

// A client that trickles its head (one byte at a time, slower than
// --header-timeout allows in total) is cut at the header timeout, on a new
// connection and on a kept-alive one.
func TestTrickledHeadCutAtHeaderTimeout(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--header-timeout", "1s")
	startNode(t, r, "live.test", nodeOpts{id: "live"})
	waitForNodes(t, r, "live.test", 1)
	trickle := func(t *testing.T, c net.Conn, br *bufio.Reader) {
		t.Helper()
		head := "GET / HTTP/1.1\r\nHost: live.test\r\nX-Slow: " + strings.Repeat("s", 100) + "\r\n\r\n"
		start := time.Now()
		_ = c.SetDeadline(time.Now().Add(15 * time.Second))
		for i := 0; i < len(head); i++ {
			if _, err := c.Write([]byte{head[i]}); err != nil {
				break // cut
			}
			time.Sleep(100 * time.Millisecond) // the whole head would take >10s
			if time.Since(start) > 12*time.Second {
				t.Fatal("still accepting bytes after 12s")
			}
		}
		b, _ := io.ReadAll(br)
		d := time.Since(start)
		// Generous bound for a loaded machine; without the cut the head
		// would take more than 10s.
		if d > 7*time.Second {
			t.Fatalf("trickling client held for %s", d)
		}
		if len(b) > 0 && !strings.HasPrefix(string(b), "HTTP/1.1 408") {
			t.Fatalf("trickling client got %q; want 408 or a close", b)
		}
		t.Logf("cut after %s with %q", d.Round(time.Millisecond), firstLine(b))
	}
	t.Run("new connection", func(t *testing.T) {
		c, err := net.Dial("tcp", r.http)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		trickle(t, c, bufio.NewReader(c))
	})
	t.Run("kept-alive connection", func(t *testing.T) {
		c := uwsgitest.Dial(t, r.http)
		if resp, _ := c.Do("GET / HTTP/1.1\r\nHost: live.test\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("first request: %v", resp)
		}
		trickle(t, c.Conn(), c.Reader())
	})
}

// --max-conns: connections beyond the limit get a 503 with Retry-After at
// once, without a request being read; a freed slot serves again.
func TestMaxConnsRefusesCleanly(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	// Held connections send nothing: a long header timeout keeps them open.
	r := startRouter(t, "--max-conns", "3", "--header-timeout", "60s")
	startNode(t, r, "live.test", nodeOpts{id: "live"})
	waitForNodes(t, r, "live.test", 1)
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", r.http)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		held = append(held, c)
	}
	refused := func() bool {
		c, err := net.Dial("tcp", r.http)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil) // no request sent: the answer comes anyway
		if err != nil {
			// Not refused: the connection was admitted and waits for a request.
			return false
		}
		if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" || !resp.Close {
			t.Fatalf("over the limit: %d %v", resp.StatusCode, resp.Header)
		}
		return true
	}
	// An admitted connection sends nothing, so the probe above would wait
	// for the header timeout; probe with a short deadline instead.
	probe := func() (int, error) {
		c, err := net.Dial("tcp", r.http)
		if err != nil {
			return 0, err
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: live.test\r\n\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return 0, err
		}
		return resp.StatusCode, nil
	}
	eventually(t, 10*time.Second, "a fourth connection refused with 503", func() bool {
		code, err := probe()
		return err == nil && code == 503
	})
	if !refused() {
		t.Fatal("refusal needed the request")
	}
	if v := metricValue(t, r, `fastrouter_client_connections_refused_total{listener="`+r.http+`"}`); v < 2 {
		t.Errorf("refused counter = %v", v)
	}
	held[0].Close()
	eventually(t, 10*time.Second, "a freed slot to serve", func() bool {
		code, err := probe()
		return err == nil && code == 200
	})
}
