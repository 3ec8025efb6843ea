package router

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// TestDeclaredBodyOverLimit: an HTTP/1.1 request whose Content-Length is
// over MaxBodyBytes is answered 413 as soon as its head is read, whether
// or not any of the body follows, and the connection closes; nothing
// reaches the node. Before, fasthttp waited for 8 KiB of body first: a few
// bytes then nothing got 408 after Timeout (60s here).
func TestDeclaredBodyOverLimit(t *testing.T) {
	n := startFakeNode(t, func(map[string]string, []byte) string { return "HTTP/1.1 200 OK\r\n\r\nok" })
	r := startRouter(t, Config{MaxBodyBytes: 1000, Timeout: time.Minute})
	r.table.AddStatic("k.test", n.addr(), 1)
	for _, tc := range []struct{ name, head, body string }{
		{"a few bytes", "Content-Length: 2000000000\r\n", "abc"},
		{"no body", "Content-Length: 1001\r\n", ""},
		{"Expect", "Content-Length: 1001\r\nExpect: 100-continue\r\n", ""},
		{"no pool, no body", "Content-Length: 1001\r\n", ""},
	} {
		host := "k.test"
		if strings.HasPrefix(tc.name, "no pool") {
			host = "nowhere.test"
		}
		c, err := net.Dial("tcp", r.addr)
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(5 * time.Second))
		_, _ = c.Write([]byte("POST / HTTP/1.1\r\nHost: " + host + "\r\n" + tc.head + "\r\n" + tc.body))
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		c.Close()
		if err != nil {
			t.Fatalf("%s: %v; want 413 at once", tc.name, err)
		}
		if resp.StatusCode != 413 || !resp.Close || resp.Header.Get("Content-Type") == "" {
			t.Errorf("%s: %d, close %v, %v; want a 413 page that closes the connection", tc.name, resp.StatusCode, resp.Close, resp.Header)
		}
	}
	if v := n.last(); v != nil {
		t.Errorf("the node got a request: %v", v)
	}
}

// TestUwsgiFrontBodyLimit: the uwsgi front answers a CONTENT_LENGTH over
// MaxBodyBytes with an HTTP 413 before reading the body, sends nothing to
// the node, and reads (and drops) the body that follows, so that a web
// server still writing it gets the answer rather than a reset.
func TestUwsgiFrontBodyLimit(t *testing.T) {
	n := startFakeNode(t, func(map[string]string, []byte) string { return "HTTP/1.1 200 OK\r\n\r\nok" })
	r := startRouter(t, Config{MaxBodyBytes: 1000})
	r.table.AddStatic("k.test", n.addr(), 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); r.rt.ServeUwsgi(ln, "u") }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		r.rt.Shutdown(ctx)
		<-done
	})

	for _, size := range []int{1001, 300 << 10} {
		vars := varsBlock("REQUEST_METHOD", "POST", "PATH_INFO", "/", "HTTP_HOST", "k.test", "CONTENT_LENGTH", strconv.Itoa(size))
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		_ = c.SetDeadline(time.Now().Add(10 * time.Second))
		_, _ = c.Write(append(uwsgi.AppendHeader(nil, uwsgi.Header{Size: uint16(len(vars))}), vars...))
		// The answer comes before any body byte is sent...
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 413 {
			t.Fatalf("CONTENT_LENGTH %d: %v %v; want an HTTP 413", size, resp, err)
		}
		_, _ = io.ReadAll(resp.Body)
		// ...and the whole body can still be written: the router reads it.
		if _, err := c.Write(make([]byte, size)); err != nil {
			t.Errorf("CONTENT_LENGTH %d: writing the body after the 413: %v", size, err)
		}
		if _, err := br.ReadByte(); err == nil {
			t.Errorf("CONTENT_LENGTH %d: bytes after the 413", size)
		}
		c.Close()
	}
	if v := n.last(); v != nil {
		t.Errorf("the node got a request: %v", v)
	}
}
