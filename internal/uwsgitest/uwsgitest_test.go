package uwsgitest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// waitFor is WaitFor, as the other packages call it.
var waitFor = WaitFor

// dialWrite connects to addr, writes b and returns the connection.
func dialWrite(t *testing.T, network, addr string, b []byte) net.Conn {
	t.Helper()
	c, err := net.Dial(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	return c
}

func readAll(t *testing.T, c net.Conn) string {
	t.Helper()
	b, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return string(b)
}

// A uwsgi node reads the packet and the CONTENT_LENGTH body, records them,
// answers and closes, as a uWSGI worker does.
func TestUwsgiNode(t *testing.T) {
	n := NewNode(t, func(c *Conn, r *Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n"+r.Vars["PATH_INFO"]+":"+string(r.Body))
	})
	p := Packet("REQUEST_METHOD", "POST", "PATH_INFO", "/x", "CONTENT_LENGTH", "4")
	p[3] = 7 // modifier2
	c := dialWrite(t, "tcp", n.Addr(), append(p, "body"...))
	if got := readAll(t, c); got != "HTTP/1.1 200 OK\r\n\r\n/x:body" {
		t.Fatalf("answer %q", got)
	}
	r := n.Last()
	if r == nil || r.Vars["REQUEST_METHOD"] != "POST" || string(r.Body) != "body" || r.Modifier2 != 7 || string(r.Raw) != string(p) {
		t.Fatalf("recorded %+v", r)
	}
	if n.Accepted() != 1 || n.Served() != 1 || len(n.Requests()) != 1 || r.Conn != 0 || r.Nth != 0 {
		t.Fatalf("accepted %d served %d requests %d conn %d nth %d", n.Accepted(), n.Served(), len(n.Requests()), r.Conn, r.Nth)
	}
	waitFor(t, "the connection to close", func() bool { return n.Open() == 0 })
}

// An HTTP node keeps the connection for the next request until its
// handler closes it.
func TestHTTPNodeKeepAlive(t *testing.T) {
	n := NewNode(t, func(c *Conn, r *Request) {
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+string(rune('0'+len(r.Body)))+"\r\n\r\n"+string(r.Body))
		if r.Nth == 1 {
			c.Close()
		}
	}, WithProto(HTTP))
	cl := Dial(t, n.Addr())
	if resp, body := cl.Do("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\nab"); resp.StatusCode != 200 || body != "ab" {
		t.Fatalf("first: %d %q", resp.StatusCode, body)
	}
	if resp, body := cl.Do("GET /second HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 || body != "" {
		t.Fatalf("second: %d %q", resp.StatusCode, body)
	}
	waitFor(t, "the handler's close", func() bool { return n.Open() == 0 })
	reqs := n.Requests()
	if len(reqs) != 2 || reqs[1].HTTP.URL.Path != "/second" || reqs[1].Nth != 1 || string(reqs[0].Body) != "ab" || n.Accepted() != 1 {
		t.Fatalf("requests %+v, accepted %d", reqs, n.Accepted())
	}
}

// A raw node records the first read, whatever it is, and answers.
func TestRawNode(t *testing.T) {
	n := NewNode(t, Reply("pong"), WithProto(Raw))
	c := dialWrite(t, "tcp", n.Addr(), []byte("ping"))
	if got := readAll(t, c); got != "pong" || string(n.Last().Raw) != "ping" {
		t.Fatalf("answer %q, recorded %q", got, n.Last().Raw)
	}
	// A connection that sends nothing is accepted, never served.
	c2, err := net.Dial("tcp", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	c2.Close()
	waitFor(t, "the second connection", func() bool { return n.Accepted() == 2 && n.Open() == 0 })
	if n.Served() != 1 {
		t.Fatalf("served %d; want 1", n.Served())
	}
}

func TestHandlers(t *testing.T) {
	get := Packet("REQUEST_METHOD", "GET")
	t.Run("silent", func(t *testing.T) {
		n := NewNode(t, Silent())
		if got := readAll(t, dialWrite(t, "tcp", n.Addr(), get)); got != "" {
			t.Fatalf("silent node sent %q", got)
		}
	})
	t.Run("reset", func(t *testing.T) {
		n := NewNode(t, Reset())
		c := dialWrite(t, "tcp", n.Addr(), get)
		if _, err := io.ReadAll(c); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read after a reset: %v; want ECONNRESET", err)
		}
	})
	t.Run("reset after", func(t *testing.T) {
		n := NewNode(t, ResetAfter("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"))
		c := dialWrite(t, "tcp", n.Addr(), get)
		b, err := io.ReadAll(c)
		if !strings.HasPrefix("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart", string(b)) || !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("read %q, %v; want a prefix of the head then ECONNRESET", b, err)
		}
	})
	t.Run("hold", func(t *testing.T) {
		n := NewNode(t, Hold())
		c := dialWrite(t, "tcp", n.Addr(), get)
		waitFor(t, "the request", func() bool { return n.Served() == 1 })
		_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		var b [1]byte
		var ne net.Error
		if k, err := c.Read(b[:]); k != 0 || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("held connection read %d, %v; want a timeout", k, err)
		}
		if n.Open() != 1 {
			t.Fatalf("open %d while held", n.Open())
		}
		c.Close()
		waitFor(t, "the hold to end with the client", func() bool { return n.Open() == 0 })
	})
	t.Run("stream", func(t *testing.T) {
		n := NewNode(t, Stream("HTTP/1.1 200 OK\r\n\r\n", "x", time.Millisecond))
		c := dialWrite(t, "tcp", n.Addr(), get)
		b := make([]byte, len("HTTP/1.1 200 OK\r\n\r\nxxx"))
		if _, err := io.ReadFull(c, b); err != nil || string(b) != "HTTP/1.1 200 OK\r\n\r\nxxx" {
			t.Fatalf("stream %q, %v", b, err)
		}
		c.Close()
		waitFor(t, "the stream to end with the client", func() bool { return n.Open() == 0 })
	})
	t.Run("delay", func(t *testing.T) {
		n := NewNode(t, Delay(50*time.Millisecond, Reply("late")))
		start := time.Now()
		if got := readAll(t, dialWrite(t, "tcp", n.Addr(), get)); got != "late" || time.Since(start) < 50*time.Millisecond {
			t.Fatalf("delayed answer %q after %s", got, time.Since(start))
		}
	})
}

// A node on a unix socket; SetHandler switches the answer; NoRecord keeps
// nothing.
func TestUnixSetHandlerNoRecord(t *testing.T) {
	n := NewNode(t, Reply("one"), OnUnix(), NoRecord())
	if !strings.HasSuffix(n.Addr(), "node.sock") {
		t.Fatalf("unix node address %q", n.Addr())
	}
	get := Packet("REQUEST_METHOD", "GET")
	if got := readAll(t, dialWrite(t, "unix", n.Addr(), get)); got != "one" {
		t.Fatalf("first answer %q", got)
	}
	n.SetHandler(Reply("two"))
	if got := readAll(t, dialWrite(t, "unix", n.Addr(), get)); got != "two" {
		t.Fatalf("answer after SetHandler %q", got)
	}
	if n.Last() != nil || len(n.Requests()) != 0 || n.Served() != 2 {
		t.Fatalf("NoRecord node recorded %v, served %d", n.Requests(), n.Served())
	}
}

// Close refuses new connections and ends the held ones.
func TestClose(t *testing.T) {
	n := NewNode(t, Hold(), Deadline(time.Minute))
	c := dialWrite(t, "tcp", n.Addr(), Packet("REQUEST_METHOD", "GET"))
	waitFor(t, "the request", func() bool { return n.Served() == 1 })
	n.Close()
	if n.Open() != 0 {
		t.Fatalf("open %d after Close", n.Open())
	}
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("client read after Close: %v", err)
	}
	if c, err := net.Dial("tcp", n.Addr()); err == nil {
		c.Close()
		t.Fatal("connect after Close succeeded")
	}
	n.Close()
}

// Do reads a response to its end, HEAD included; an empty reply fails the
// test (checked by the Client's callers, not here).
func TestDo(t *testing.T) {
	n := NewNode(t, func(c *Conn, r *Request) {
		if r.HTTP.Method == "HEAD" {
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello")
	}, WithProto(HTTP))
	resp, body := Do(t, n.Addr(), "GET / HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp.StatusCode != 201 || body != "hello" {
		t.Fatalf("Do: %d %q", resp.StatusCode, body)
	}
	cl := Dial(t, n.Addr())
	if resp, body := cl.Do("HEAD / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 200 || body != "" || resp.ContentLength != 5 {
		t.Fatalf("HEAD: %d %q CL %d", resp.StatusCode, body, resp.ContentLength)
	}
	if resp, body := cl.Do("GET / HTTP/1.1\r\nHost: h\r\n\r\n"); resp.StatusCode != 201 || body != "hello" {
		t.Fatalf("GET after HEAD on the same connection: %d %q", resp.StatusCode, body)
	}
}

// Respond answers from the request; "" closes without a byte; an HTTP
// node's HEAD gets the head only; CloseAfter ends a keep-alive connection.
func TestRespond(t *testing.T) {
	u := NewNode(t, Respond(func(r *Request) string {
		if r.Vars["PATH_INFO"] == "/drop" {
			return ""
		}
		return "HTTP/1.1 200 OK\r\n\r\n" + r.Vars["PATH_INFO"]
	}))
	if got := readAll(t, dialWrite(t, "tcp", u.Addr(), Packet("PATH_INFO", "/a"))); got != "HTTP/1.1 200 OK\r\n\r\n/a" {
		t.Fatalf("uwsgi answer %q", got)
	}
	if got := readAll(t, dialWrite(t, "tcp", u.Addr(), Packet("PATH_INFO", "/drop"))); got != "" {
		t.Fatalf(`"" sent %q; want nothing`, got)
	}
	h := NewNode(t, CloseAfter(Respond(func(r *Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"
	})), WithProto(HTTP))
	c := dialWrite(t, "tcp", h.Addr(), []byte("HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n"))
	if got := readAll(t, c); got != "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" {
		t.Fatalf("HEAD then a pipelined GET on a CloseAfter node: %q; want the HEAD's head and the close", got)
	}
	if h.Served() != 1 {
		t.Fatalf("served %d; want 1 (closed after the first)", h.Served())
	}
}

// Echo sends back the first read, here on an abstract unix socket;
// Partial sends part of a response and then holds the connection.
func TestEchoPartialListenOn(t *testing.T) {
	abstract := "@uwsgitest-" + strings.ReplaceAll(t.Name(), "/", "-") + "-" + time.Now().Format("150405.000000000")
	e := NewNode(t, Echo(), WithProto(Raw), ListenOn("unix", abstract))
	if e.Addr() != abstract {
		t.Fatalf("address %q; want %q", e.Addr(), abstract)
	}
	if got := readAll(t, dialWrite(t, "unix", abstract, []byte("ping"))); got != "ping" {
		t.Fatalf("echo %q", got)
	}
	p := NewNode(t, Partial("HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"))
	c := dialWrite(t, "tcp", p.Addr(), Packet("REQUEST_METHOD", "GET"))
	want := "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\npart"
	b := make([]byte, len(want))
	if _, err := io.ReadFull(c, b); err != nil || string(b) != want {
		t.Fatalf("partial %q, %v", b, err)
	}
	_ = c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	var ne net.Error
	if k, err := c.Read(b[:1]); k != 0 || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read after the partial answer: %d, %v; want a timeout (held)", k, err)
	}
	c.Close()
	waitFor(t, "the hold to end with the client", func() bool { return p.Open() == 0 })
}

// A Lean node serves without recording or parsing: a uwsgi node one
// packet per connection, an HTTP node pipelined heads in turn.
func TestLean(t *testing.T) {
	u := NewNode(t, Reply("HTTP/1.1 200 OK\r\n\r\nok"), Lean())
	if got := readAll(t, dialWrite(t, "tcp", u.Addr(), Packet("REQUEST_METHOD", "GET", "PATH_INFO", "/"))); got != "HTTP/1.1 200 OK\r\n\r\nok" {
		t.Fatalf("lean uwsgi answer %q", got)
	}
	if u.Served() != 1 || u.Last() != nil {
		t.Fatalf("lean uwsgi node served %d, recorded %v", u.Served(), u.Last())
	}
	var nths []int
	h := NewNode(t, func(c *Conn, r *Request) {
		nths = append(nths, r.Nth) // one connection: the handler runs in turn
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"+strconv.Itoa(r.Nth))
		if r.Nth == 2 {
			c.Close()
		}
	}, WithProto(HTTP), Lean())
	get := "GET / HTTP/1.1\r\nHost: h\r\nAccept: */*\r\n\r\n"
	c := dialWrite(t, "tcp", h.Addr(), []byte(get+get+"GET / HTTP/1.1\nHost: h\n\n"))
	want := "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n"
	if got := readAll(t, c); got != want+"0"+want+"1"+want+"2" {
		t.Fatalf("lean HTTP answers %q", got)
	}
	if h.Served() != 3 || fmt.Sprint(nths) != "[0 1 2]" || h.Accepted() != 1 {
		t.Fatalf("served %d, nths %v, accepted %d", h.Served(), nths, h.Accepted())
	}
}

// Send, Next and Rest: a pipelined pair read one by one, a 100 Continue
// among them, then the rest up to the close.
func TestClientSendNextRest(t *testing.T) {
	n := NewNode(t, func(c *Conn, r *Request) {
		if r.Nth == 0 {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\nuntil close")
		c.Close()
	}, WithProto(HTTP))
	cl := Dial(t, n.Addr())
	cl.Send("GET /1 HTTP/1.1\r\nHost: h\r\n\r\nGET /2 HTTP/1.1\r\nHost: h\r\n\r\n")
	if resp, _, err := cl.Next("GET"); err != nil || resp.StatusCode != 100 {
		t.Fatalf("first: %v, %v; want the 100", resp, err)
	}
	if resp, body, err := cl.Next("GET"); err != nil || resp.StatusCode != 200 || body != "one" {
		t.Fatalf("second: %v %q, %v; want 200 one", resp, body, err)
	}
	if got := cl.Rest(); got != "HTTP/1.1 200 OK\r\n\r\nuntil close" {
		t.Fatalf("rest %q", got)
	}
	if _, _, err := cl.Next("GET"); err != io.ErrUnexpectedEOF {
		t.Fatalf("Next after the close: %v; want io.ErrUnexpectedEOF", err)
	}
	if cl.Reader() == nil {
		t.Fatal("no reader")
	}
}

func TestRefused(t *testing.T) {
	if c, err := net.Dial("tcp", Refused(t)); err == nil {
		c.Close()
		t.Fatal("connect to Refused's address succeeded")
	} else if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to Refused's address: %v; want ECONNREFUSED", err)
	}
}

// A connect to Unanswered's address waits; once accept made room it
// completes (the kernel resends the SYN about a second later).
func TestUnanswered(t *testing.T) {
	addr, accept := Unanswered(t)
	if c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond); err == nil {
		c.Close()
		t.Fatal("connect to a full backlog completed")
	} else if ne, ok := err.(net.Error); !ok || !ne.Timeout() {
		t.Fatalf("connect to a full backlog: %v; want a timeout", err)
	}
	accept()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatalf("connect after accept made room: %v", err)
	}
	c.Close()
}
