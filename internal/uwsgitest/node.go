// Package uwsgitest provides fake backend nodes and a raw HTTP client for
// tests, as net/http/httptest does for HTTP servers. A Node listens on
// loopback (or a unix socket), reads each request as a uWSGI worker, an
// HTTP/1.1 server or a bare socket would, records it, and answers with a
// Handler: a scripted raw response, silence, a stream without end, a hold
// that never answers, a reset. Do and Client send raw requests and read
// the responses, to see exactly what a router puts on the wire.
//
// Everything listens on 127.0.0.1 or in the test's temporary directory,
// every connection has a deadline, and the test's cleanup closes the node
// and waits for its goroutines.
package uwsgitest

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Proto is how a Node reads a request.
type Proto int

const (
	// Uwsgi reads a uwsgi packet (the 4-byte header and the vars) and then
	// CONTENT_LENGTH bytes of body: one request per connection, as a uWSGI
	// worker serves a router.
	Uwsgi Proto = iota
	// HTTP reads HTTP/1.1 requests (net/http's parser, body included) and
	// keeps the connection for the next one until the handler closes it or
	// the router does.
	HTTP
	// Raw reads once, whatever arrives first (up to 64 KiB), and parses
	// nothing: a node that is probed in more than one protocol, or that
	// must not care what it is sent.
	Raw
)

// Request is one request a Node read. Immutable once recorded.
type Request struct {
	Conn   int    // the connection's number, from 0 in accept order
	Nth    int    // the request's place on its connection, from 0
	Remote string // the router's end of the connection

	// Uwsgi: the header's modifiers and the vars (a repeated key keeps
	// its last value).
	Modifier1, Modifier2 uint8
	Vars                 map[string]string
	// HTTP: the parsed request; its body has been read into Body.
	HTTP *http.Request
	// Body is the request body (Uwsgi, HTTP).
	Body []byte
	// Raw is what was read as it came: Uwsgi, the header and the vars;
	// Raw, the bytes of the first read.
	Raw []byte
}

// Handler answers one request on c. On an HTTP node the connection is read
// for the next request once it returns, unless the handler closed it; on
// the others it is closed.
type Handler func(c *Conn, r *Request)

// Node is a fake backend node. Its methods are safe for concurrent use.
type Node struct {
	ln       net.Listener
	network  string // "" until NewNode: tcp on 127.0.0.1:0, or what an option chose
	addr     string
	proto    Proto
	deadline time.Duration
	record   bool
	lean     bool
	handler  atomic.Pointer[Handler]

	accepted, open, served atomic.Int32

	readers sync.Pool // Lean: the connections' *bufio.Reader, reused

	mu    sync.Mutex
	reqs  []*Request
	conns map[*Conn]bool // open; closed by Close
	done  bool
	wg    sync.WaitGroup // the accept loop and one goroutine per connection
}

// Option configures a Node.
type Option func(*Node)

// WithProto sets how the node reads requests; default Uwsgi.
func WithProto(p Proto) Option { return func(n *Node) { n.proto = p } }

// Deadline sets each connection's deadline, counted from its accept;
// default 10s. A handler that holds or streams ends there at the latest.
func Deadline(d time.Duration) Option { return func(n *Node) { n.deadline = d } }

// NoRecord makes the node keep no Request (counters still count): for
// fuzz targets and loads that send many.
func NoRecord() Option { return func(n *Node) { n.record = false } }

// OnUnix makes the node listen on a unix socket in the test's temporary
// directory instead of 127.0.0.1; Addr is then the socket's path.
func OnUnix() Option { return func(n *Node) { n.network, n.addr = "unix", "" } }

// ListenOn makes the node listen on addr of network as net.Listen takes
// them: "tcp", "[::1]:0" for IPv6, "unix", "@name" for an abstract socket.
func ListenOn(network, addr string) Option {
	return func(n *Node) { n.network, n.addr = network, addr }
}

// Lean makes the node cheap enough to stand behind a benchmark: it records
// nothing (as NoRecord) and parses nothing. A uwsgi node skips the packet
// without reading its vars, and no body; an HTTP node reads heads line by
// line up to the blank line, and no body. The handler gets one Request per
// connection, reused, with only Conn and Nth set. For Uwsgi and HTTP
// nodes; a Raw node reads as Uwsgi under it.
func Lean() Option { return func(n *Node) { n.lean, n.record = true, false } }

// NewNode starts a node that answers every request with h. The test's
// cleanup closes it.
func NewNode(t testing.TB, h Handler, opts ...Option) *Node {
	t.Helper()
	n := &Node{deadline: 10 * time.Second, record: true, conns: map[*Conn]bool{}}
	for _, o := range opts {
		o(n)
	}
	n.SetHandler(h)
	switch {
	case n.network == "":
		n.network, n.addr = "tcp", "127.0.0.1:0"
	case n.network == "unix" && n.addr == "":
		n.addr = filepath.Join(t.TempDir(), "node.sock")
	}
	ln, err := net.Listen(n.network, n.addr)
	if err != nil {
		t.Fatal(err)
	}
	n.ln, n.addr = ln, ln.Addr().String()
	n.wg.Add(1)
	go n.accept()
	t.Cleanup(n.Close)
	return n
}

// Addr is the node's address as a --to or AddStatic takes it: ip:port, or
// the unix socket's path. An HTTP node's is "http://" + Addr().
func (n *Node) Addr() string { return n.addr }

// SetHandler replaces the handler for the requests read from now on.
func (n *Node) SetHandler(h Handler) { n.handler.Store(&h) }

// Accepted is the number of connections accepted so far.
func (n *Node) Accepted() int { return int(n.accepted.Load()) }

// Open is the number of connections open now.
func (n *Node) Open() int { return int(n.open.Load()) }

// Served is the number of requests handed to the handler so far.
func (n *Node) Served() int { return int(n.served.Load()) }

// Requests returns the requests read so far, in the order they were read.
func (n *Node) Requests() []*Request {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]*Request(nil), n.reqs...)
}

// Last returns the latest request read, or nil.
func (n *Node) Last() *Request {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.reqs) == 0 {
		return nil
	}
	return n.reqs[len(n.reqs)-1]
}

// Close stops accepting (a connect is then refused), closes the open
// connections and waits for their handlers. Safe to call more than once.
func (n *Node) Close() {
	n.mu.Lock()
	n.done = true
	for c := range n.conns {
		c.Conn.Close()
	}
	n.mu.Unlock()
	n.ln.Close()
	n.wg.Wait()
}

func (n *Node) accept() {
	defer n.wg.Done()
	for i := 0; ; i++ {
		nc, err := n.ln.Accept()
		if err != nil {
			return
		}
		n.accepted.Add(1)
		c := &Conn{Conn: nc, r: n.reader(nc), n: n, id: i}
		n.mu.Lock()
		if n.done {
			n.mu.Unlock()
			nc.Close()
			return
		}
		n.conns[c] = true
		n.open.Add(1)
		n.wg.Add(1)
		n.mu.Unlock()
		go n.serve(c)
	}
}

func (n *Node) serve(c *Conn) {
	defer n.wg.Done()
	defer func() {
		n.mu.Lock()
		delete(n.conns, c)
		n.mu.Unlock()
		c.Conn.Close()
		n.open.Add(-1)
		if n.lean {
			c.r.Reset(nil)
			n.readers.Put(c.r)
		}
	}()
	_ = c.SetDeadline(time.Now().Add(n.deadline))
	c.lean.Conn = c.id
	for nth := 0; ; nth++ {
		r, err := &c.lean, error(nil)
		if n.lean {
			err = n.skip(c.r)
			r.Nth = nth
		} else if r, err = n.read(c); err == nil {
			r.Conn, r.Nth, r.Remote = c.id, nth, c.RemoteAddr().String()
		}
		if err != nil {
			return
		}
		if n.record {
			n.mu.Lock()
			n.reqs = append(n.reqs, r)
			n.mu.Unlock()
		}
		n.served.Add(1)
		(*n.handler.Load())(c, r)
		if n.proto != HTTP || c.closed.Load() {
			return
		}
	}
}

// read reads one request in the node's protocol.
func (n *Node) read(c *Conn) (*Request, error) {
	switch n.proto {
	case HTTP:
		req, err := http.ReadRequest(c.r)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		return &Request{HTTP: req, Body: body}, nil
	case Raw:
		b := make([]byte, 64<<10)
		k, err := c.r.Read(b)
		if k == 0 {
			return nil, fmt.Errorf("uwsgitest: nothing read: %w", err)
		}
		return &Request{Raw: b[:k]}, nil
	}
	return readUwsgi(c.r)
}

// reader returns a reader of nc: under Lean, one from the pool, so that a
// connection costs a benchmark no 4 KiB buffer.
func (n *Node) reader(nc net.Conn) *bufio.Reader {
	if n.lean {
		if br, ok := n.readers.Get().(*bufio.Reader); ok {
			br.Reset(nc)
			return br
		}
	}
	return bufio.NewReader(nc)
}

// skip reads one request as Lean does: a uwsgi packet's header and vars,
// or an HTTP head, into nothing. The reader is the connection's own
// buffer, so no byte is copied out of it.
func (n *Node) skip(br *bufio.Reader) error {
	if n.proto == HTTP {
		for {
			line, err := br.ReadSlice('\n')
			if err != nil {
				return err
			}
			if len(line) == 1 || len(line) == 2 && line[0] == '\r' {
				return nil
			}
		}
	}
	head, err := br.Peek(uwsgi.HeaderLen)
	if err != nil {
		return err
	}
	h, err := uwsgi.ParseHeader(head)
	if err != nil {
		return err
	}
	_, err = br.Discard(uwsgi.HeaderLen + int(h.Size))
	return err
}

// readUwsgi reads a uwsgi packet and its CONTENT_LENGTH body.
func readUwsgi(br *bufio.Reader) (*Request, error) {
	raw := make([]byte, uwsgi.HeaderLen)
	if _, err := io.ReadFull(br, raw); err != nil {
		return nil, err
	}
	h, err := uwsgi.ParseHeader(raw)
	if err != nil {
		return nil, err
	}
	raw = append(raw, make([]byte, h.Size)...)
	block := raw[uwsgi.HeaderLen:]
	if _, err := io.ReadFull(br, block); err != nil {
		return nil, err
	}
	r := &Request{Modifier1: h.Modifier1, Modifier2: h.Modifier2, Vars: map[string]string{}, Raw: raw}
	for off := 0; off < len(block); {
		k, v, next, err := uwsgi.NextVar(block, off)
		if err != nil {
			return nil, err
		}
		r.Vars[string(k)] = string(v)
		off = next
	}
	if cl := r.Vars["CONTENT_LENGTH"]; cl != "" {
		size, err := strconv.ParseInt(cl, 10, 64)
		if err != nil || size < 0 || size > 1<<30 {
			return nil, fmt.Errorf("uwsgitest: CONTENT_LENGTH %q", cl)
		}
		r.Body = make([]byte, size)
		if _, err := io.ReadFull(br, r.Body); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// Refused returns an address on 127.0.0.1 that nothing listens on (it did
// a moment ago): a connect there is refused, as to a node that is down.
func Refused(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// WaitFor polls cond every 5ms until it holds, failing the test after 10s
// (a bound generous enough for a loaded machine) with what it waited for.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
