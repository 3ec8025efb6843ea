package integration

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
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
}
