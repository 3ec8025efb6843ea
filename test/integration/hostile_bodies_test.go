package integration

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// The request-body cases of the hostile pass (SECURITY.md, "What was
// tried"): chunk framing the router must refuse before it has read (or
// waited for) what the framing announces.

// sendRaw writes head and then body (in a goroutine: the router may stop
// reading) on a new connection and reads the answer. It reports the
// status (0: none), how long the answer took, whether the router then
// closed the connection, and how many body bytes the client managed to
// write before that.
func sendRaw(t *testing.T, addr, head, body string) (code int, took time.Duration, closed bool, written int) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(30 * time.Second))
	wrote := make(chan int, 1)
	go func() {
		n, _ := io.WriteString(c, head)
		m, _ := io.WriteString(c, body)
		wrote <- n + m - len(head)
	}()
	start := time.Now()
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, nil)
	took = time.Since(start)
	if err != nil {
		t.Logf("%.60q: no answer after %s: %v", head, took, err)
		return 0, took, true, <-wrote
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = br.ReadByte()
	c.Close() // unblocks the writer
	return resp.StatusCode, took, err != nil && !isTimeoutErr(err), <-wrote
}

// A chunk size over --max-body-bytes is 413 as soon as its line is read,
// and so is a running total of sizes that passes it; before, the router
// waited for the data and the request ended at --timeout (400, 408).
// Found by the hostile pass.
func TestChunkSizeOverLimit(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	un, hn := startRecUwsgi(t), startRecHTTP(t)
	r := startRouter(t, "--max-body-bytes", "1000", "--timeout", "20s",
		"--to", "u.test="+un.addr, "--to", "h.test="+hn.addr)
	for _, host := range []string{"u.test", "h.test"} {
		head := "POST /up HTTP/1.1\r\nHost: " + host + "\r\nTransfer-Encoding: chunked\r\n\r\n"
		for _, tc := range []struct{ name, body string }{
			{"a 2 GiB chunk", "80000000\r\nabc"},
			{"a 1001-byte chunk", "3e9\r\nabc"},
			{"sizes adding up past the limit", "3e8\r\n" + strings.Repeat("a", 1000) + "\r\n1\r\nb"},
		} {
			code, took, closed, _ := sendRaw(t, r.http, head, tc.body)
			t.Logf("%s %s: %d after %s, closed %v", host, tc.name, code, took.Round(time.Millisecond), closed)
			if code != 413 || !closed || took > 5*time.Second {
				t.Errorf("%s %s: %d after %s, closed %v; want 413 at once (well within --timeout 20s), closed",
					host, tc.name, code, took, closed)
			}
		}
		// At the limit, served.
		code, _, _, _ := sendRaw(t, r.http, head, "3e8\r\n"+strings.Repeat("a", 1000)+"\r\n0\r\n\r\n")
		if code != 200 {
			t.Errorf("%s: a chunked body of exactly --max-body-bytes: %d; want 200", host, code)
		}
	}
	for _, n := range []*recNode{un, hn} {
		for _, rq := range n.take() {
			if len(rq.body) != 1000 {
				t.Errorf("%s: the node got a body of %d bytes", n.addr, len(rq.body))
			}
		}
	}
	if got := metricValue(t, r, `fastrouter_http_rejected_total{reason="chunk_too_large"}`); got != 6 {
		t.Errorf(`fastrouter_http_rejected_total{reason="chunk_too_large"} = %v; want 6`, got)
	}
}

// Chunk extensions are bounded: a chunk-size line over 4 KiB is 400 and
// the connection closes, nothing reaching the node. Before, fasthttp read
// and dropped 10 MB of extension on one chunk and the node got the body.
// The last chunk followed by a lone LF ("0\r\n\n") is 400 at once too: it
// used to be forwarded when the read timed out. Found by the hostile pass.
func TestChunkExtensionsBounded(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	un, hn := startRecUwsgi(t), startRecHTTP(t)
	r := startRouter(t, "--timeout", "20s", "--to", "u.test="+un.addr, "--to", "h.test="+hn.addr)
	for _, side := range []struct {
		host string
		n    *recNode
	}{{"u.test", un}, {"h.test", hn}} {
		head := "POST /up HTTP/1.1\r\nHost: " + side.host + "\r\nTransfer-Encoding: chunked\r\n\r\n"
		ext := strings.Repeat("a", 10<<20)
		code, took, closed, written := sendRaw(t, r.http, head, "5;"+ext+"\r\nhello\r\n0\r\n\r\n")
		t.Logf("%s: 10 MB of extension: %d after %s, closed %v, %d bytes written before the close", side.host, code, took.Round(time.Millisecond), closed, written)
		if code != 400 || !closed || took > 5*time.Second {
			t.Errorf("%s: 10 MB of extension: %d after %s, closed %v; want 400 at once, closed", side.host, code, took, closed)
		}
		if written >= len(ext) {
			t.Errorf("%s: the router read all %d bytes of extension", side.host, written)
		}
		code, took, closed, _ = sendRaw(t, r.http, head, "5\r\nhello\r\n0\r\n\n")
		if code != 400 || !closed || took > 5*time.Second {
			t.Errorf("%s: last chunk then a lone LF: %d after %s, closed %v; want 400 at once", side.host, code, took, closed)
		}
		if got := side.n.take(); len(got) != 0 {
			t.Errorf("%s: refused bodies reached the node: %d requests", side.host, len(got))
		}
		// Extensions within the bound, as a signed upload sends them.
		sig := ";chunk-signature=" + strings.Repeat("0", 64)
		code, _, _, _ = sendRaw(t, r.http, head, "5"+sig+"\r\nhello\r\n5;"+strings.Repeat("e", 4000)+"\r\nworld\r\n0"+sig+"\r\n\r\n")
		got := side.n.take()
		if code != 200 || len(got) != 1 || !bytes.Equal(got[0].body, []byte("helloworld")) {
			t.Errorf("%s: extensions within 4 KiB: %d, node got %d requests; want 200 and the body", side.host, code, len(got))
		}
	}
	for reason, want := range map[string]float64{"chunk_line_too_long": 2, "chunked_framing": 2} {
		if got := metricValue(t, r, `fastrouter_http_rejected_total{reason="`+reason+`"}`); got != want {
			t.Errorf(`fastrouter_http_rejected_total{reason=%q} = %v; want %v`, reason, got, want)
		}
	}
}

// tapNode is a node that records, per connection, every byte it was sent
// until the router ended the connection (or 10 s passed), answering
// nothing until then. ended says how the connection ended: "eof", "rst"
// or "timeout".
type tapNode struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []tapConn
}

type tapConn struct {
	data  []byte
	ended string
}

func startTap(t *testing.T) *tapNode {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	n := &tapNode{ln: ln}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				data, err := io.ReadAll(c)
				ended := "eof"
				switch {
				case isTimeoutErr(err):
					ended = "timeout"
				case err != nil:
					ended = "rst"
				}
				n.mu.Lock()
				n.conns = append(n.conns, tapConn{data, ended})
				n.mu.Unlock()
			}()
		}
	}()
	return n
}

// take waits up to 15 s for want connections to end and returns them.
func (n *tapNode) take(t *testing.T, want int) []tapConn {
	t.Helper()
	var got []tapConn
	eventually(t, 15*time.Second, "the node's connections to end", func() bool {
		n.mu.Lock()
		defer n.mu.Unlock()
		if len(n.conns) < want {
			return false
		}
		got, n.conns = n.conns, nil
		return true
	})
	return got
}

// uwsgiBody splits a uwsgi request as a node receives it: the vars'
// CONTENT_LENGTH and the body bytes after the vars.
func uwsgiBody(data []byte) (declared string, body int, ok bool) {
	if len(data) < 4 {
		return "", 0, false
	}
	size := int(data[1]) | int(data[2])<<8
	if len(data) < 4+size {
		return "", 0, false
	}
	vars := data[4 : 4+size]
	for len(vars) >= 4 {
		kl := int(vars[0]) | int(vars[1])<<8
		k := string(vars[2 : 2+kl])
		vl := int(vars[2+kl]) | int(vars[3+kl])<<8
		v := string(vars[4+kl : 4+kl+vl])
		vars = vars[4+kl+vl:]
		if k == "CONTENT_LENGTH" {
			declared = v
		}
	}
	return declared, len(data) - 4 - size, true
}

// A client that declares a body, sends part of it and closes: the node
// must never get a request that looks complete. A body within fasthttp's
// read-ahead (8 KiB), or buffered (--request-buffering, the default),
// never reaches a node; with --request-buffering 0 a larger one streams,
// and when it is cut short the node's connection is reset. Before, an
// http:// node got the head, the part of the body and a FIN, as after a
// complete request. The access log says 400 and
// fastrouter_http_rejected_total{reason="body_incomplete"} counts each.
// Found by the hostile pass.
func TestPartialBodyAborted(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	for _, mode := range []struct {
		name string
		args []string
	}{{"streamed", []string{"--request-buffering", "0"}}, {"buffered", nil}} {
		t.Run(mode.name, func(t *testing.T) {
			t.Parallel()
			partialBodies(t, mode.args, mode.name == "streamed")
		})
	}
}

func partialBodies(t *testing.T, args []string, streamed bool) {
	un, hn := startTap(t), startTap(t)
	alog := filepath.Join(t.TempDir(), "access.log")
	r := startRouter(t, append(args, "--timeout", "5s", "--access-log", alog, "--to", "u.test="+un.ln.Addr().String(), "--to", "h.test=http://"+hn.ln.Addr().String())...)
	for _, tc := range []struct {
		name     string
		declared int
		sent     int
	}{
		{"1000 declared, 500 sent", 1000, 500},
		{"1000 declared, none sent", 1000, 0},
		{"100000 declared, 50000 sent", 100000, 50000},
		{"100000 declared, 20000 sent", 100000, 20000},
	} {
		for _, side := range []struct {
			host string
			n    *tapNode
		}{{"u.test", un}, {"h.test", hn}} {
			c, err := net.Dial("tcp", r.http)
			if err != nil {
				t.Fatal(err)
			}
			fmt.Fprintf(c, "POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", side.host, tc.declared, strings.Repeat("b", tc.sent))
			time.Sleep(200 * time.Millisecond) // let it reach the router: a close together with the data is a different case
			c.Close()
			conns := side.n.take(t, 0)
			time.Sleep(500 * time.Millisecond)
			conns = append(conns, side.n.take(t, 0)...)
			for _, tc2 := range conns {
				var body int
				complete := false
				if side.host == "u.test" {
					declared, b, ok := uwsgiBody(tc2.data)
					body = b
					complete = ok && declared == fmt.Sprint(b) && tc2.ended == "eof"
				} else {
					i := bytes.Index(tc2.data, []byte("\r\n\r\n"))
					if i >= 0 {
						body = len(tc2.data) - i - 4
					}
					complete = i >= 0 && body == tc.declared && tc2.ended == "eof"
				}
				t.Logf("%s %s: the node got %d bytes (%d of body), connection ended by %s", side.host, tc.name, len(tc2.data), body, tc2.ended)
				if complete || (len(tc2.data) > 0 && tc2.ended != "rst") || !streamed {
					t.Errorf("%s %s: the node got %d bytes (%d of body) ended by %s; want nothing, or a cut (rst) request",
						side.host, tc.name, len(tc2.data), body, tc2.ended)
				}
			}
		}
	}
	if got := metricValue(t, r, `fastrouter_http_rejected_total{reason="body_incomplete"}`); got != 8 {
		t.Errorf(`fastrouter_http_rejected_total{reason="body_incomplete"} = %v; want 8`, got)
	}
	var lines []map[string]any
	eventually(t, 10*time.Second, "8 access log lines", func() bool {
		b, _ := os.ReadFile(alog)
		lines = nil
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(l), &m) == nil && m["status"] == float64(400) {
				lines = append(lines, m)
			}
		}
		return len(lines) == 8
	})
	named := 0
	for _, m := range lines {
		if m["node"] != nil {
			named++
		}
	}
	if want := map[bool]int{true: 4, false: 0}[streamed]; named != want {
		t.Errorf("%d access log lines name the node; want %d (the bodies that streamed): %v", named, want, lines)
	}
}

// A node that answers an upload before reading it (an app refusing it with
// 413) and closes, or answers and stops reading: the client gets the
// node's answer, then the connection closes. Before, the router's failed
// write made it 502 (or 504 at --timeout). Found by the hostile pass.
func TestEarlyAnswerRelayed(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	early := func(code string, hold time.Duration) func(c *uwsgitest.Conn, _ *uwsgitest.Request) {
		return func(c *uwsgitest.Conn, _ *uwsgitest.Request) {
			io.WriteString(c, "HTTP/1.1 "+code+"\r\nContent-Length: 4\r\n\r\nnope")
			time.Sleep(hold)
		}
	}
	node := func(code string, hold time.Duration) string {
		return uwsgitest.NewNode(t, early(code, hold), uwsgitest.WithProto(uwsgitest.Raw), uwsgitest.NoRecord()).Addr()
	}
	r := startRouter(t, "--timeout", "3s",
		"--to", "u.test="+node("413 Too Big", 0), "--to", "h.test=http://"+node("413 Too Big", 0),
		"--to", "uh.test="+node("401 Unauthorized", 10*time.Second), "--to", "hh.test=http://"+node("401 Unauthorized", 10*time.Second))
	upload := strings.Repeat("u", 4<<20)
	for _, tc := range []struct{ host, want string }{
		{"u.test", "413"}, {"h.test", "413"}, {"uh.test", "401"}, {"hh.test", "401"},
	} {
		for i := range 3 {
			head := fmt.Sprintf("POST /up HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n", tc.host, len(upload))
			code, took, closed, written := sendRaw(t, r.http, head, upload)
			t.Logf("%s: %d after %s, closed %v, %d of %d body bytes written", tc.host, code, took.Round(time.Millisecond), closed, written, len(upload))
			if fmt.Sprint(code) != tc.want || !closed {
				t.Errorf("%s try %d: %d after %s, closed %v; want the node's %s, then the connection closed", tc.host, i, code, took, closed, tc.want)
			}
		}
	}
}

// Slow uploads hold no node: 20 clients send the first 17 KB of an upload
// at once and the rest a byte a second, to a real uWSGI node with 4
// workers. With --request-buffering (on by default) the router reads each
// body whole before it picks a node, so the node keeps answering other
// requests meanwhile, and each upload then arrives whole. Before, the
// bodies streamed at the clients' pace and held all 4 workers: nothing
// else was answered until the uploads ended. Found by the hostile pass.
func TestSlowUploadsHoldNoNode(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "slow.test", nodeOpts{id: "s", processes: 1, threads: 4})
	waitForNodes(t, r, "slow.test", 1)
	const uploads, fast, trickle = 20, 17000, 10
	body := strings.Repeat("0123456789", (fast+trickle)/10+1)[:fast+trickle]
	want := fmt.Sprintf("%d %x", len(body), sha256.Sum256([]byte(body)))
	results := make(chan string, uploads)
	for range uploads {
		go func() {
			c, err := net.Dial("tcp", r.http)
			if err != nil {
				results <- err.Error()
				return
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(60 * time.Second))
			fmt.Fprintf(c, "POST /upload HTTP/1.1\r\nHost: slow.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body[:fast])
			for i := fast; i < len(body); i++ {
				time.Sleep(time.Second)
				if _, err := io.WriteString(c, body[i:i+1]); err != nil {
					results <- err.Error()
					return
				}
			}
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				results <- err.Error()
				return
			}
			b, _ := io.ReadAll(resp.Body)
			results <- fmt.Sprintf("%d %s", resp.StatusCode, b)
		}()
	}
	// While the uploads trickle in, other requests to the node are
	// answered.
	// Held workers would keep a GET waiting until the uploads end, 9 s
	// from now; the client's 6 s gives a loaded machine room (a GET takes
	// a few milliseconds) and still tells the two apart.
	time.Sleep(time.Second) // the 20 heads are in
	cl := &http.Client{Timeout: 6 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	var worst time.Duration
	for range 8 {
		start := time.Now()
		code := 0
		req, _ := http.NewRequest("GET", "http://"+r.http+"/", nil)
		req.Host = "slow.test"
		if resp, err := cl.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			code = resp.StatusCode
		}
		worst = max(worst, time.Since(start))
		if code != 200 {
			t.Errorf("a request while 20 uploads trickle: %d after %s; want 200 (the uploads must not hold the node's 4 workers)", code, time.Since(start).Round(time.Millisecond))
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Logf("8 requests while %d uploads trickled for %d s: slowest %s", uploads, trickle, worst.Round(time.Millisecond))
	for range uploads {
		if got := <-results; got != "200 "+want {
			t.Errorf("upload: %q; want %q", got, "200 "+want)
		}
	}
}
