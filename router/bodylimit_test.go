package router

import (
	"bytes"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
		c := uwsgitest.Dial(t, r.addr)
		c.Send("POST / HTTP/1.1\r\nHost: " + host + "\r\n" + tc.head + "\r\n" + tc.body)
		resp, _, err := c.Next("POST")
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
	front := startUwsgiFront(t, r)

	for _, size := range []int{1001, 300 << 10} {
		c := uwsgitest.Dial(t, front)
		c.Send(string(uwsgitest.Packet("REQUEST_METHOD", "POST", "PATH_INFO", "/", "HTTP_HOST", "k.test", "CONTENT_LENGTH", strconv.Itoa(size))))
		// The answer comes before any body byte is sent...
		resp, _, err := c.Next("POST")
		if err != nil || resp.StatusCode != 413 {
			t.Fatalf("CONTENT_LENGTH %d: %v %v; want an HTTP 413", size, resp, err)
		}
		// ...and the whole body can still be written: the router reads it.
		if _, err := c.Conn().Write(make([]byte, size)); err != nil {
			t.Errorf("CONTENT_LENGTH %d: writing the body after the 413: %v", size, err)
		}
		if _, err := c.Reader().ReadByte(); err == nil {
			t.Errorf("CONTENT_LENGTH %d: bytes after the 413", size)
		}
		c.Close()
	}
	if v := n.last(); v != nil {
		t.Errorf("the node got a request: %v", v)
	}
}

// TestStalledBodyTimesOut: a body that stops coming before any node is
// picked is answered 408 once Timeout passes without a byte: over HTTP/1.1
// (before: 400) and over h2, where nothing bounded the read and the
// stream's handler waited as long as the connection lived.
func TestStalledBodyTimesOut(t *testing.T) {
	n := startFakeNode(t, func(map[string]string, []byte) string { return "HTTP/1.1 200 OK\r\n\r\nok" })
	r := startRouter(t, Config{Timeout: 300 * time.Millisecond})
	r.table.AddStatic("k.test", n.addr(), 1)

	c := uwsgitest.Dial(t, r.addr)
	// fasthttp reads the first 8 KiB itself (a stall there is its 408);
	// the rest the router reads.
	c.Send("POST / HTTP/1.1\r\nHost: k.test\r\nContent-Length: 10000\r\n\r\n" + strings.Repeat("a", 9000))
	resp, _, err := c.Next("POST")
	if err != nil || resp.StatusCode != 408 {
		t.Errorf("HTTP/1.1 body stalled after 9000 of 10000 bytes: %v %v; want 408", resp, err)
	}

	for _, cl := range []string{"10", ""} {
		h2 := dialTestH2C(t, r.addr)
		fields := [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "k.test"}, {":path", "/"}}
		if cl != "" {
			fields = append(fields, [2]string{"content-length", cl})
		}
		h2.headers(1, fields, false)
		start := time.Now()
		if got := h2.status(1); got != "408" || time.Since(start) > 3*time.Second {
			t.Errorf("h2 body (content-length %q) never sent: %q after %s; want 408 after Timeout", cl, got, time.Since(start))
		}
	}
	if v := n.last(); v != nil {
		t.Errorf("the node got a request: %v", v)
	}
}

// testH2C is a raw h2c client connection for unit tests.
type testH2C struct {
	t   *testing.T
	c   net.Conn
	fr  *http2.Framer
	enc *hpack.Encoder
	hb  bytes.Buffer
}

func dialTestH2C(t *testing.T, addr string) *testH2C {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	h := &testH2C{t: t, c: c, fr: http2.NewFramer(c, c)}
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.enc = hpack.NewEncoder(&h.hb)
	if _, err := io.WriteString(c, http2.ClientPreface); err != nil {
		t.Fatal(err)
	}
	if err := h.fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *testH2C) headers(id uint32, fields [][2]string, end bool) {
	h.t.Helper()
	h.hb.Reset()
	for _, f := range fields {
		_ = h.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	if err := h.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: h.hb.Bytes(), EndStream: end, EndHeaders: true}); err != nil {
		h.t.Fatal(err)
	}
}

// status reads frames until stream id gets its response status (or a
// reset, "RST_STREAM", or the connection ends, "closed").
func (h *testH2C) status(id uint32) string {
	for {
		f, err := h.fr.ReadFrame()
		if err != nil {
			return "closed"
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			if f.StreamID == id {
				return f.PseudoValue("status")
			}
		case *http2.RSTStreamFrame:
			if f.StreamID == id {
				return "RST_STREAM"
			}
		}
	}
}
