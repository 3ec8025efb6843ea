package uwsgitest

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Do sends req, raw, on a fresh connection to addr and returns the
// response and its body, as much of it as came before the connection
// ended (a cut body is a short one). It fails the test when no response
// comes (an empty reply). Bounded by a 10s deadline.
func Do(t testing.TB, addr, req string) (*http.Response, string) {
	t.Helper()
	c := Dial(t, addr)
	defer c.Close()
	return c.Do(req)
}

// Client is one client connection for raw requests, kept alive across
// them. Not safe for concurrent use.
type Client struct {
	t  testing.TB
	c  net.Conn
	br *bufio.Reader
}

// Dial connects to addr over TCP. The test's cleanup closes the client.
func Dial(t testing.TB, addr string) *Client {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return NewClient(t, c)
}

// NewClient makes a Client of a connection already made (over TLS, say).
// The test's cleanup closes it.
func NewClient(t testing.TB, c net.Conn) *Client {
	t.Cleanup(func() { c.Close() })
	return &Client{t: t, c: c, br: bufio.NewReader(c)}
}

// Conn is the client's connection, to write to or set deadlines on.
func (c *Client) Conn() net.Conn { return c.c }

// Close closes the connection.
func (c *Client) Close() error { return c.c.Close() }

// Reader is the client's buffered reader of the connection: read the
// responses through it, never through Conn, or bytes it buffered are lost.
func (c *Client) Reader() *bufio.Reader { return c.br }

// Do writes req, raw, and reads one response to it, with as much of its
// body as came before the connection ended (none for a HEAD: the method is
// req's first word). It fails the test when no response comes. Each call
// has a fresh 10s deadline.
func (c *Client) Do(req string) (*http.Response, string) {
	c.t.Helper()
	c.Send(req)
	method, _, _ := strings.Cut(req, " ")
	resp, body, err := c.Next(method)
	if err != nil {
		c.t.Fatalf("response to %.60q: %v (empty reply?)", req, err)
	}
	return resp, body
}

// Send writes raw (a request, several pipelined, or part of one) with a
// fresh 10s deadline, failing the test when the write fails.
func (c *Client) Send(raw string) {
	c.t.Helper()
	_ = c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c.c, raw); err != nil {
		c.t.Fatal(err)
	}
}

// Next reads the next response (an interim one included) as the answer to
// a request of method, and its body, as much of it as came before the
// connection ended. err is the head's (net/http's: io.ErrUnexpectedEOF
// when the connection ended before a byte of it).
func (c *Client) Next(method string) (*http.Response, string, error) {
	resp, err := http.ReadResponse(c.br, &http.Request{Method: method})
	if err != nil {
		return nil, "", err
	}
	b, _ := io.ReadAll(resp.Body) // a cut body is returned short
	resp.Body.Close()
	return resp, string(b), nil
}

// Rest reads all the router sends until it closes the connection, failing
// the test when the connection ends otherwise (a reset, the deadline).
func (c *Client) Rest() string {
	c.t.Helper()
	b, err := io.ReadAll(c.br)
	if err != nil {
		c.t.Fatalf("reading to EOF: %v (got %q)", err, b)
	}
	return string(b)
}

// Packet is a uwsgi request packet with the vars kv (key, value, key,
// value...), modifier1 0, as a web server in front of a uwsgi front sends
// it. It panics on an odd kv: a bug in the test.
func Packet(kv ...string) []byte {
	if len(kv)%2 != 0 {
		panic("uwsgitest.Packet: odd number of key/value strings")
	}
	var v []byte
	for i := 0; i < len(kv); i += 2 {
		v = uwsgi.AppendVarString(v, kv[i], kv[i+1])
	}
	return append(uwsgi.AppendHeader(nil, uwsgi.Header{Size: uint16(len(v))}), v...)
}
