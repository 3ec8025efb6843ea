package integration

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// How node responses reach clients (README "Bodies stream", "Interim
// responses", "HTTP nodes"), against real uWSGI apps: one on a uwsgi
// socket, one serving HTTP itself (--http11-socket, keep-alive).
func framingNodes(t *testing.T) *router {
	t.Helper()
	requireUWSGI(t)
	r := startRouter(t)
	startNode(t, r, "u.test", nodeOpts{id: "u"})
	waitForNodes(t, r, "u.test", 1)
	h := startHTTPNode(t, r, "", "h", true, false)
	if code, body := adminPost(t, r, "/api/pools/h.test/nodes", `{"address":"`+h.addr+`","weight":1}`); code/100 != 2 {
		t.Fatalf("adding the http node: %d %s", code, body)
	}
	c := client()
	for _, host := range []string{"u.test", "h.test"} {
		eventually(t, 10*time.Second, host+" answering", func() bool {
			code, body := get(t, c, r.http, host, ownPath)
			return code == 200 && body == "raw"
		})
	}
	return r
}

// ownPath answers "raw" with a Content-Length: uWSGI's --http11-socket
// keeps a connection open after a response without one, so the router
// would wait for its socket timeout.
const ownPath = "/rawstatus?s=200+OK"

// TestFraming drives the cases below against one router and its two
// nodes.
func TestFraming(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := framingNodes(t)
	t.Run("EarlyHints", func(t *testing.T) { framingEarlyHints(t, r) })
	t.Run("HTTP10Streams", func(t *testing.T) { framingHTTP10Streams(t, r) })
	t.Run("ZeroStatus", func(t *testing.T) { framingZeroStatus(t, r) })
	t.Run("HopByHop", func(t *testing.T) { framingHopByHop(t, r) })
	t.Run("HEADLateBody", func(t *testing.T) { framingHEADLateBody(t, r) })
}

// curlOut runs curl -si (head and body) and returns its output.
func curlOut(t *testing.T, args ...string) string {
	t.Helper()
	out, err := runTool(t, 30*time.Second, "", "curl", append([]string{"-sSi", "--max-time", "10"}, args...)...)
	if err != nil {
		t.Fatalf("curl %v: %v\n%s", args, err, out)
	}
	return out
}

// A uWSGI app's 103 Early Hints reaches HTTP/1.1 and h2 clients as an
// interim response with its Link header, and the final response follows;
// HTTP/1.0 clients get only the final one; pipelined requests each get
// their own answers.
func framingEarlyHints(t *testing.T, r *router) {
	for _, host := range []string{"u.test", "h.test"} {
		url := "http://" + r.http + "/hints"
		out := curlOut(t, "-H", "Host: "+host, url)
		if !strings.HasPrefix(out, "HTTP/1.1 103") || !strings.Contains(out, "Link: </style.css>; rel=preload; as=style") ||
			!strings.Contains(out, "HTTP/1.1 200 OK") || !strings.HasSuffix(out, "final") {
			t.Errorf("%s HTTP/1.1: %q; want the 103 with its Link, then 200 final", host, out)
		}
		out = curlOut(t, "--http1.0", "-H", "Host: "+host, url)
		if strings.Contains(out, "103") || !strings.HasPrefix(out, "HTTP/1.1 200 OK") || !strings.HasSuffix(out, "final") {
			t.Errorf("%s HTTP/1.0: %q; want 200 final alone", host, out)
		}
		out = curlOut(t, "--http2-prior-knowledge", "-H", "Host: "+host, url)
		if !strings.HasPrefix(out, "HTTP/2 103") || !strings.Contains(strings.ToLower(out), "link: </style.css>") ||
			!strings.Contains(out, "HTTP/2 200") || !strings.HasSuffix(out, "final") {
			t.Errorf("%s h2: %q; want the 103 with its Link, then 200 final", host, out)
		}

		// Pipelined: each request gets its own interim and final answers.
		c, err := net.Dial("tcp", r.http)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		req := "GET /hints HTTP/1.1\r\nHost: " + host + "\r\n\r\n"
		io.WriteString(c, req+req)
		br := bufio.NewReader(c)
		var got []string
		for finals := 0; finals < 2; {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("%s pipelined, after %v: %v", host, got, err)
			}
			b, _ := io.ReadAll(resp.Body)
			got = append(got, resp.Status+":"+string(b))
			if resp.StatusCode >= 200 {
				finals++
			}
		}
		c.Close()
		if strings.Join(got, ",") != "103 Early Hints:,200 OK:final,103 Early Hints:,200 OK:final" {
			t.Errorf("%s pipelined: %v", host, got)
		}
	}
}

// HTTP/1.0 clients get streamed bodies close-delimited, without
// Transfer-Encoding: a generator without Content-Length, and an app that
// chunks its body itself (uWSGI answers an HTTP/1.0 client "HTTP/1.0",
// whose Transfer-Encoding fasthttp would ignore), which every client gets
// de-chunked.
func framingHTTP10Streams(t *testing.T, r *router) {
	for _, host := range []string{"u.test", "h.test"} {
		out := curlOut(t, "--http1.0", "-H", "Host: "+host, "http://"+r.http+"/download?size=100000")
		head, body, _ := strings.Cut(out, "\r\n\r\n")
		if strings.Contains(strings.ToLower(head), "transfer-encoding") || len(body) != 100000 {
			t.Errorf("%s generator, HTTP/1.0: head %q, %d body bytes; want 100000, no Transfer-Encoding", host, head, len(body))
		}
	}
	// uWSGI's --http11-socket takes the app's own chunking as its framing:
	// that case is the uwsgi socket's.
	for _, args := range [][]string{{"--http1.0"}, {"--http1.1"}, {"--http2-prior-knowledge"}} {
		out := curlOut(t, append(args, "-H", "Host: u.test", "http://"+r.http+"/selfchunk")...)
		head, body, _ := strings.Cut(out, "\r\n\r\n")
		if body != "hello world" || args[0] == "--http1.0" && strings.Contains(strings.ToLower(head), "transfer-encoding") {
			t.Errorf("self-chunked app, curl %s: %q; want hello world", args[0], out)
		}
	}
}

// A status line outside 100–999 is a 502, not a 200.
func framingZeroStatus(t *testing.T, r *router) {
	for _, host := range []string{"u.test", "h.test"} {
		code, body := get(t, client(), r.http, host, "/rawstatus?s=000+X")
		if code != 502 {
			t.Errorf("%s status 000: %d %q; want 502", host, code, body)
		}
	}
}

// Hop-by-hop headers of a uWSGI app's response do not reach the client; a
// uwsgi app's "Connection: close" ends the client's connection after the
// response, so a pipelined request is not served on it.
func framingHopByHop(t *testing.T, r *router) {
	for _, host := range []string{"u.test", "h.test"} {
		for _, args := range [][]string{{"--http1.1"}, {"--http2-prior-knowledge"}} {
			out := strings.ToLower(curlOut(t, append(args, "-H", "Host: "+host, "http://"+r.http+"/hop")...))
			head, _, _ := strings.Cut(out, "\r\n\r\n")
			for _, k := range []string{"connection:", "keep-alive:", "proxy-connection:", "upgrade:", "te:", "trailer:", "x-secret:"} {
				if strings.Contains(head, "\n"+k) {
					t.Errorf("%s curl %s: %s reached the client:\n%s", host, args[0], k, head)
				}
			}
			if !strings.Contains(head, "\nx-kept: yes") {
				t.Errorf("%s curl %s: X-Kept lost:\n%s", host, args[0], head)
			}
		}
	}

	c := uwsgitest.Dial(t, r.http)
	c.Send("GET /close HTTP/1.1\r\nHost: u.test\r\n\r\nGET / HTTP/1.1\r\nHost: u.test\r\n\r\n")
	all := c.Rest()
	if n := strings.Count(all, "HTTP/1.1 "); n != 1 || !strings.Contains(all, "Connection: close") {
		t.Errorf("pipelined after a uwsgi app's Connection: close: %d responses %q; want 1, then the connection closed", n, all)
	}
}

// uWSGI's --http11-socket sends a HEAD answer's body anyway, when the app
// produces it: that body must never become another client's response.
func framingHEADLateBody(t *testing.T, r *router) {
	for i := 0; i < 20; i++ {
		if resp, _ := uwsgitest.Do(t, r.http, "HEAD /latehead?ms=20 HTTP/1.1\r\nHost: h.test\r\n\r\n"); resp.StatusCode != 200 {
			t.Fatalf("HEAD %d: %v", i, resp)
		}
		if code, body := get(t, client(), r.http, "h.test", ownPath); code != 200 || body != "raw" {
			t.Fatalf("run %d: the GET after a HEAD got %d %q; want its own 200 raw", i, code, body)
		}
	}
}
