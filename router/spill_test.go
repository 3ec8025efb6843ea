package router

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// chunkBody encodes body in chunks of size n.
func chunkBody(body string, n int) string {
	var b strings.Builder
	for len(body) > 0 {
		c := body[:min(n, len(body))]
		body = body[len(c):]
		fmt.Fprintf(&b, "%x\r\n%s\r\n", len(c), c)
	}
	b.WriteString("0\r\n\r\n")
	return b.String()
}

// TestChunkedBodySpill: a chunked body within MaxBufferedBody stays in
// memory, a larger one is spilled to a file (and the file is gone after the
// request), both reach the node whole with CONTENT_LENGTH; past MaxBodyBytes
// the answer is 413.
func TestChunkedBodySpill(t *testing.T) {
	n := startFakeNode(t, func(v map[string]string, body []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\n\r\ncl=%s sum=%x", v["CONTENT_LENGTH"], sha256.Sum256(body))
	})
	dir := t.TempDir()
	r := startRouter(t, Config{MaxBufferedBody: 4096, MaxBodyBytes: 300000, TempDir: dir})
	r.table.AddStatic("k.test", n.addr(), 1)
	for _, size := range []int{100, 4096, 4097, 100000, 300000} {
		body := strings.Repeat("0123456789abcdefghij", size/20+1)[:size]
		resp, got := raw(t, r.addr, "POST / HTTP/1.1\r\nHost: k.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+chunkBody(body, 7000))
		want := fmt.Sprintf("cl=%d sum=%x", size, sha256.Sum256([]byte(body)))
		if resp.StatusCode != 200 || got != want {
			t.Errorf("size %d: %d %q; want 200 %q", size, resp.StatusCode, got, want)
		}
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spill files left behind: %v", ents)
	}
	body := strings.Repeat("x", 300001)
	resp, _ := raw(t, r.addr, "POST / HTTP/1.1\r\nHost: k.test\r\nTransfer-Encoding: chunked\r\n\r\n"+chunkBody(body, 9000))
	if resp.StatusCode != 413 {
		t.Errorf("chunked body over MaxBodyBytes: %d; want 413", resp.StatusCode)
	}
	resp, _ = raw(t, r.addr, "POST / HTTP/1.1\r\nHost: k.test\r\nContent-Length: 300001\r\n\r\n"+strings.Repeat("x", bodyPrefetch))
	if resp.StatusCode != 413 {
		t.Errorf("Content-Length over MaxBodyBytes: %d; want 413", resp.StatusCode)
	}
}

// TestExpectContinue: a request that will be refused gets its final status
// instead of 100 Continue; an acceptable one gets 100 Continue, then the
// node's answer.
func TestExpectContinue(t *testing.T) {
	n := startFakeNode(t, func(v map[string]string, body []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\n\r\nlen=%d", len(body))
	})
	r := startRouter(t, Config{MaxBodyBytes: 1000})
	r.table.AddStatic("k.test", n.addr(), 1)

	send := func(head string) (*bufio.Reader, net.Conn) {
		c := uwsgitest.Dial(t, r.addr)
		c.Send(head)
		return c.Reader(), c.Conn()
	}
	for _, tc := range []struct {
		head string
		code int
	}{
		{"POST / HTTP/1.1\r\nHost: k.test\r\nContent-Length: 1001\r\nExpect: 100-continue\r\n\r\n", 413},
		{"POST / HTTP/1.1\r\nHost: nowhere.test\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", 404},
	} {
		br, _ := send(tc.head)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != tc.code {
			t.Errorf("%q: %d; want %d without 100 Continue", tc.head, resp.StatusCode, tc.code)
		}
	}
	br, c := send("POST / HTTP/1.1\r\nHost: k.test\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || line != "HTTP/1.1 100 Continue\r\n" {
		t.Fatalf("interim: %q, %v; want 100 Continue", line, err)
	}
	if l, _ := br.ReadString('\n'); l != "\r\n" {
		t.Fatalf("after 100 Continue: %q", l)
	}
	io.WriteString(c, "0123456789")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "len=10" {
		t.Errorf("after 100 Continue: %d %q", resp.StatusCode, b)
	}
}

// A body spilled to a file goes again, from the file, when the http node's
// keep-alive connection turns out closed as the request is sent on it (the
// node drops it unanswered), as a body kept in memory does.
func TestSpilledBodyReplayedOnStaleConnection(t *testing.T) {
	f := startHTTPFake(t, func(_ *http.Request, body []byte, nth int) (string, bool) {
		if nth == 1 { // the second request on any connection: drop it unanswered
			return "", true
		}
		return clReply(fmt.Sprintf("%d %x", len(body), sha256.Sum256(body))), false
	})
	dir := t.TempDir()
	r := startRouter(t, Config{MaxBufferedBody: 4096, TempDir: dir})
	r.table.AddStatic("h.test", f.addr(), 1)
	if resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: h.test\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("first request: %d", resp.StatusCode)
	}
	node := r.table.Pool("h.test").Node(f.addr())
	waitFor(t, "an idle keep-alive connection", func() bool { return node.IdleConns() == 1 })
	body := strings.Repeat("0123456789abcdefghij", 10000) // 200 kB: spilled
	resp, got := raw(t, r.addr, "POST / HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n"+chunkBody(body, 7000))
	if want := fmt.Sprintf("%d %x", len(body), sha256.Sum256([]byte(body))); resp.StatusCode != 200 || got != want {
		t.Fatalf("spilled upload over a stale connection: %d %q; want 200 %q", resp.StatusCode, got, want)
	}
	if n := f.Accepted(); n != 2 {
		t.Errorf("accepted %d connections; want 2 (the stale one, then a fresh one for the retry)", n)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spill files left behind: %v", ents)
	}
}

// With RequestBuffering, a body of known length is read whole before a
// node is picked: the node sees no connection while the client is still
// sending, then the whole body (from memory, or from a spill file beyond
// knownInMemory). One cut short never reaches the node.
func TestKnownBodyBuffered(t *testing.T) {
	var dials atomic.Int32
	n := startFakeNode(t, func(vars map[string]string, body []byte) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\n\r\ncl=%s sum=%x", vars["CONTENT_LENGTH"], sha256.Sum256(body))
	})
	tap, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tap.Close()
	go func() { // forwards to n, counting connections
		for {
			c, err := tap.Accept()
			if err != nil {
				return
			}
			dials.Add(1)
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", n.addr())
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}()
	r := startRouter(t, Config{RequestBuffering: 4 << 20, TempDir: t.TempDir()})
	r.table.AddStatic("k.test", tap.Addr().String(), 1)
	for _, size := range []int{100_000, 2_000_000} {
		body := strings.Repeat("0123456789abcdefghij", size/20)
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: k.test\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", size, body[:size-10])
		time.Sleep(300 * time.Millisecond)
		if d := dials.Load(); d != 0 {
			t.Errorf("size %d: the node was dialled %d times before the body was complete", size, d)
		}
		io.WriteString(c, body[size-10:])
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		c.Close()
		if want := fmt.Sprintf("cl=%d sum=%x", size, sha256.Sum256([]byte(body))); string(got) != want {
			t.Errorf("size %d: %q; want %q", size, got, want)
		}
		dials.Store(0)
	}
	c, err := net.Dial("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: k.test\r\nContent-Length: 100000\r\n\r\n%s", strings.Repeat("x", 50_000))
	time.Sleep(300 * time.Millisecond)
	c.Close()
	time.Sleep(300 * time.Millisecond)
	if d := dials.Load(); d != 0 {
		t.Errorf("a body cut short: the node was dialled %d times", d)
	}
}
