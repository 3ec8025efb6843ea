package uwsgitest

import (
	"bufio"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"time"
)

// Conn is the node's end of one connection, handed to a Handler, which
// may write to it anything at all. Reads go through the node's buffer:
// read with Conn.Read, never with Conn.Conn.
type Conn struct {
	net.Conn
	r      *bufio.Reader
	n      *Node
	id     int
	closed atomic.Bool
	lean   Request // under Lean, the one Request of the connection
}

// Read reads what the router sends after the request the node read.
func (c *Conn) Read(p []byte) (int, error) { return c.r.Read(p) }

// Close closes the connection: an HTTP node reads no further request.
func (c *Conn) Close() error {
	c.closed.Store(true)
	return c.Conn.Close()
}

// Hold reads and discards until the router closes the connection (or the
// node's deadline passes), never answering.
func (c *Conn) Hold() {
	_, _ = io.Copy(io.Discard, c)
	c.closed.Store(true)
}

// Reset closes the connection with a TCP RST rather than a FIN (SO_LINGER
// 0), as a crashed node's kernel does; a unix socket is just closed.
func (c *Conn) Reset() {
	if tc, ok := c.Conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// Reply answers with raw, written as it is: a whole HTTP response, part of
// one, or garbage. The bytes are converted once, so that a benchmark's
// node allocates nothing per answer.
func Reply(raw string) Handler {
	b := []byte(raw)
	return func(c *Conn, _ *Request) { _, _ = c.Write(b) }
}

// Respond answers each request with what f returns for it, written raw;
// "" closes the connection without a byte. On an HTTP node a HEAD is
// answered with the head only (up to the blank line), as a server does
// whatever body f's response carries.
func Respond(f func(r *Request) string) Handler {
	return func(c *Conn, r *Request) {
		resp := f(r)
		if resp == "" {
			_ = c.Close()
			return
		}
		if r.HTTP != nil && r.HTTP.Method == "HEAD" {
			if i := strings.Index(resp, "\r\n\r\n"); i >= 0 {
				resp = resp[:i+4]
			}
		}
		_, _ = io.WriteString(c, resp)
	}
}

// CloseAfter answers with h, then closes the connection: an HTTP node that
// serves one request per connection whatever its answer says.
func CloseAfter(h Handler) Handler {
	return func(c *Conn, r *Request) {
		h(c, r)
		_ = c.Close()
	}
}

// Echo writes back the bytes read (Request.Raw): on a Raw node, what the
// first read brought.
func Echo() Handler { return func(c *Conn, r *Request) { _, _ = c.Write(r.Raw) } }

// Partial writes raw, part of a response, then holds the connection
// without another byte until the router closes it: a node that stalls
// mid-body.
func Partial(raw string) Handler {
	return func(c *Conn, _ *Request) {
		if _, err := io.WriteString(c, raw); err == nil {
			c.Hold()
		}
	}
}

// Silent closes the connection without a byte.
func Silent() Handler { return func(c *Conn, _ *Request) { _ = c.Close() } }

// Hold never answers: it reads until the router closes the connection.
func Hold() Handler { return func(c *Conn, _ *Request) { c.Hold() } }

// Reset closes the connection with a TCP RST, without a byte.
func Reset() Handler { return func(c *Conn, _ *Request) { c.Reset() } }

// Stream writes head, then chunk every interval until a write fails (the
// router closed the connection) or the node's deadline passes: a response
// without end.
func Stream(head, chunk string, every time.Duration) Handler {
	return func(c *Conn, _ *Request) {
		if _, err := io.WriteString(c, head); err != nil {
			return
		}
		for {
			if _, err := io.WriteString(c, chunk); err != nil {
				_ = c.Close()
				return
			}
			time.Sleep(every)
		}
	}
}

// Delay waits d, then answers with h.
func Delay(d time.Duration, h Handler) Handler {
	return func(c *Conn, r *Request) {
		time.Sleep(d)
		h(c, r)
	}
}

// ResetAfter writes raw, then resets the connection: a node that dies
// mid-response.
func ResetAfter(raw string) Handler {
	return func(c *Conn, _ *Request) {
		_, _ = io.WriteString(c, raw)
		c.Reset()
	}
}
