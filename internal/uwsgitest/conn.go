package uwsgitest

import (
	"bufio"
	"io"
	"net"
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
// one, or garbage.
func Reply(raw string) Handler {
	return func(c *Conn, _ *Request) { _, _ = io.WriteString(c, raw) }
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
