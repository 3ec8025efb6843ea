//go:build linux

package router

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/chunked"
	"github.com/fastrouter/fastrouter/internal/evloop"
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/valyala/fasthttp"
	"golang.org/x/sys/unix"
)

// The HTTP/1.1 event loop (on unless Config.DisableH1EventLoop): for a
// clear-text --http listener, Config.H1Loops loops (internal/evloop; Parked
// mode for one loop, Locked for several: loopMode)
// take the listener's connections and serve the simple request to a uwsgi
// node from start to end without a goroutine switch: read and parse the
// head (fasthttp's RequestHeader), route, encode, pick, a non-blocking
// connect, the packet, the node's head (headScan, takeHead, relayHead: the
// rules of response.go and relay.go), the body relayed with back-pressure
// (a chunked one de-chunked by chunked.Decoder, which refuses what relay's
// decoder refuses, and chunked again), and the node socket registered for
// drain and shutdown deadlines (loopCut) as connect registers its own.
//
// Every loop watches a duplicate of the listener's socket with
// EPOLLEXCLUSIVE: one accept queue, and the kernel wakes one loop per
// connection. (The listener is the one the caller passed in, which may come
// from a reload or socket activation: SO_REUSEPORT sockets of the router's
// own could not share its address.)
//
// What the loop does not take goes to the goroutine path before the loop
// has written a byte to the client or the node: the descriptor and the
// bytes already read become a net.Conn (prefixConn) that the listener
// serves as if its accept loop had taken it (frontListener.accepted). Taken:
// HTTP/1.1 requests without a body (no Content-Length > 0, no
// Transfer-Encoding), Upgrade or Expect, that pass the strict rules, route to
// a pool whose nodes are all uwsgi nodes (TCP or unix), not an ACME
// challenge; in a capped pool (--max-inflight) a request that has to wait
// for a node waits in a goroutine of its own (queue). Not taken: HTTP/1.0, bodies,
// upgrades, h2c, heads the fasthttp path answers with an error (bad, too
// large), pools with http:// nodes.
//
// Loops start only without --max-conns and --proxy-protocol (serve).

// loopFront is a listener's loops. Owned by the frontListener.
type loopFront struct {
	l       *frontListener
	workers []*loopWorker
	open    atomic.Int64 // connections the loops serve
	// served and handed count the requests the loops answered and the
	// connections they handed to the goroutine path (tests read them).
	served, handed atomic.Int64
	opened         atomic.Int64  // node sockets the loops opened (tests read it)
	stopped        chan struct{} // closed by stopAccepting
	once           sync.Once
}

// loopWorker is one loop and the connections it owns. Every field but
// loop is the loop goroutine's.
type loopWorker struct {
	lf    *loopFront
	rt    *Router
	loop  *evloop.Loop
	lnfd  int
	conns map[*loopConn]struct{}
	// Parsing: a head is read through a bufio.Reader over the bytes
	// already in hand (fasthttp's parsers take one).
	rd      bytes.Reader
	br      *bufio.Reader
	errHead fasthttp.ResponseHeader // error pages' head
	hbuf    []byte                  // appendHead's
	// free lists of buffers (loop goroutine only: no locks)
	ins, bufs [][]byte
	socks     loopSocks // node sockets (h1loopsock_linux.go)
	accepted  int       // connections accepted in this loop's turn (Event)
	requeue   bool      // other loops share the listener (Event); set before the loop runs
	// load is the connections the loop serves and those handed to it not
	// yet admitted (place): other loops read it, any loop adds to it.
	load atomic.Int64
	// cut is set at the shutdown deadline (closeAll): a connection another
	// loop accepted and handed over after it is closed, not served. One
	// handed over after the loop stopped accepting is served as any
	// accepted one is, its response the last (draining): closing it
	// unanswered would fail a request the client had sent.
	cut     bool
	closing bool // shutdown: accept no more, pool no node socket
}

// startLoops starts the loops on l's listener when it is a TCP one; nil
// otherwise (the accept loop serves it).
func (l *frontListener) startLoops() *loopFront {
	tl, ok := l.ln.(*net.TCPListener)
	if !ok {
		return nil
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return nil
	}
	lf := &loopFront{l: l, stopped: make(chan struct{})}
	n := l.rt.cfg.H1Loops
	if n <= 0 {
		n = runtime.GOMAXPROCS(0)
	}
	for range n {
		w, err := lf.newWorker(rc, n > 1)
		if err != nil {
			l.rt.log.Warn("http event loop not started", "listener", l.name, "err", err)
			lf.closeLoops()
			for _, w := range lf.workers {
				unix.Close(w.lnfd) // never watched: the loops do not own them yet
			}
			return nil
		}
		lf.workers = append(lf.workers, w)
	}
	// Only now, with lf.workers complete (the loops read it when they
	// place a connection: Submit orders this goroutine's writes before),
	// do the loops watch the listener.
	for _, w := range lf.workers {
		if err := w.listen(); err != nil {
			l.rt.log.Warn("http event loop not started", "listener", l.name, "err", err)
			lf.stopAccepting()
			lf.closeLoops()
			return nil
		}
	}
	return lf
}

// newWorker starts one loop and gives it a duplicate of the listener's
// socket, not watched yet (listen); requeue when other loops share it.
func (lf *loopFront) newWorker(rc interface {
	Control(func(uintptr)) error
}, requeue bool) (*loopWorker, error) {
	rt := lf.l.rt
	var fd int
	var derr error
	if err := rc.Control(func(s uintptr) { fd, derr = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, err
	}
	if derr != nil {
		return nil, derr
	}
	lp, err := evloop.NewLoop(loopMode(requeue))
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	w := &loopWorker{lf: lf, rt: rt, loop: lp, lnfd: fd, requeue: requeue, conns: make(map[*loopConn]struct{}),
		br: bufio.NewReaderSize(nil, rt.cfg.MaxHeaderBytes+16)}
	w.socks.sweepF = w.sweepSocks
	return w, nil
}

// loopMode is how the loops wait: Parked for one loop, Locked for
// several. A parked loop is woken by the runtime's poller, and the poller
// runs only when a P has nothing else to do (or from sysmon, every 10 ms
// at most): the thread that comes back from the poller with one loop
// runs it and none is left polling, so while that loop is busy another
// loop's events wait for its next park or for sysmon. Measured with two
// loops on two shared cores (wrk -c64, the backend on the same cores):
// Parked 19.9-21.0k req/s, p99 18-26 ms, 5-6 % of the CPU idle; Locked
// 18.9-21.7k req/s, p99 6.4-7.3 ms, 2 % idle (nginx 16.6-18.7k, p99
// 7.0-8.0 ms, 2 %). One loop parks only when it has nothing to run, so
// nothing waits on it, and Parked saves it the thread's sleep and wake-up.
func loopMode(several bool) evloop.Mode {
	if several {
		return evloop.Locked
	}
	return evloop.Parked
}

// listen registers the worker's listening descriptor in its loop. On
// failure the descriptor is closed and the loop stopped.
func (w *loopWorker) listen() error {
	errc := make(chan error, 1)
	if err := w.loop.Submit(func() { errc <- w.loop.Add(w.lnfd, evloop.In|unix.EPOLLEXCLUSIVE, w) }); err != nil {
		errc <- err
	}
	if err := <-errc; err != nil {
		w.loop.Close()
		unix.Close(w.lnfd)
		return err
	}
	return nil
}

// wait blocks until the loops stop accepting (Shutdown).
func (lf *loopFront) wait() { <-lf.stopped }

// stopAccepting closes every loop's listening descriptor: the listener's
// socket closes with the last of them.
func (lf *loopFront) stopAccepting() {
	if lf == nil {
		return
	}
	lf.once.Do(func() {
		for _, w := range lf.workers {
			done := make(chan struct{})
			if w.loop.Submit(func() {
				_ = w.loop.Remove(w.lnfd)
				unix.Close(w.lnfd)
				w.closing = true
				close(done)
			}) == nil {
				<-done
			}
		}
		close(lf.stopped)
	})
}

// shutdown closes the loops' idle connections and lets those with a
// request in flight finish it (draining makes it their last); at ctx's
// end the rest are cut. Then the loops stop.
func (lf *loopFront) shutdown(ctx context.Context) {
	if lf == nil {
		return
	}
	lf.stopAccepting()
	for _, w := range lf.workers {
		_ = w.loop.Submit(w.closeIdle)
	}
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for lf.open.Load() > 0 {
		select {
		case <-t.C:
			continue
		case <-ctx.Done():
		}
		break
	}
	for _, w := range lf.workers {
		_ = w.loop.Submit(w.closeAll)
	}
	lf.closeLoops()
}

func (lf *loopFront) closeLoops() {
	for _, w := range lf.workers {
		w.loop.Close()
	}
}

// acceptTurn is how many connections a loop accepts before it lets the
// other loops have the listener's next wake-ups (Event).
const acceptTurn = 16

// Event is the listening socket's: accept what is waiting, up to the
// rest of the loop's turn, and then, with more than one loop, go to the
// end of the listener's queue of exclusive waiters (evloop.Requeue).
// Without it the kernel wakes the first loop for every connection and one
// loop serves them all while the others idle (measured: 64 of 64 wrk
// connections on one loop of two). What stays in the accept queue keeps
// the listener ready (level-triggered): this loop or another takes it in
// its next round.
func (w *loopWorker) Event(fd int, _ uint32) {
	turn := acceptTurn
	if !w.requeue {
		turn = 64 // one loop: no one to share with; then the other descriptors' turn
	}
	for w.accepted < turn {
		nfd, peer, err := evloop.Accept(fd)
		if err != nil {
			if err != unix.EAGAIN {
				w.rt.log.Warn("accept failed", "listener", w.lf.l.name, "err", err)
			}
			return
		}
		w.accepted++
		w.place(nfd, peer)
	}
	w.accepted = 0
	if w.requeue {
		if err := w.loop.Requeue(fd); err != nil {
			w.rt.log.Warn("http event loop stopped accepting", "listener", w.lf.l.name, "err", err)
		}
	}
}

// place admits an accepted connection on this loop or, when another loop
// serves at least two fewer, hands it to that one (Submit: a wake-up, once
// per connection). The kernel's choice of loop is not even: the loop that
// runs when a connection comes takes it from the shared accept queue
// before a loop just woken for it does, and an unbalanced share is a
// queue behind one loop's thread while the other core has room (measured
// with 64 wrk connections on two loops: 56 and 9, 64 and 1, even with
// Requeue).
func (w *loopWorker) place(fd int, peer netip.AddrPort) {
	to, least := w, w.load.Load()
	for _, o := range w.lf.workers {
		if n := o.load.Load(); n < least {
			to, least = o, n
		}
	}
	if to == w || least+1 >= w.load.Load() {
		w.load.Add(1)
		w.admit(fd, peer)
		return
	}
	to.load.Add(1)
	if to.loop.Submit(func() { to.admit(fd, peer) }) != nil {
		to.load.Add(-1)
		evloop.Close(fd)
	}
}

// admit starts serving an accepted connection, counted in w.load already.
func (w *loopWorker) admit(fd int, peer netip.AddrPort) {
	if w.cut {
		w.load.Add(-1)
		evloop.Close(fd)
		return
	}
	// Without it a response's second write (a chunk after the head) would
	// wait for the client's delayed ACK; Go's accept sets it too.
	_ = evloop.SetsockoptInt(fd, unix.IPPROTO_TCP, unix.TCP_NODELAY, 1)
	c := &loopConn{w: w, fd: fd, bfd: -1, remote: peer, h1f: w.lf.l.gen.Load().h1f}
	c.cut.c = c
	c.expire = c.expired // one func value: arming the timer allocates nothing
	if err := w.loop.Add(fd, evloop.In|evloop.Out|evloop.RDHup|unix.EPOLLET, c); err != nil {
		w.load.Add(-1)
		evloop.Close(fd)
		return
	}
	w.conns[c] = struct{}{}
	w.lf.open.Add(1)
	c.h1f.connOpened()
	c.readable = true // the request may be there already
	c.armIdle(w.rt.timeouts().Header)
	c.readHead()
}

// closeIdle closes the keep-alive connections that wait for their next
// request (shutdown). One that has not sent its first request is left to
// its header timeout or the shutdown deadline, as the goroutine path's
// split leaves it.
func (w *loopWorker) closeIdle() {
	for c := range w.conns {
		if c.answered && c.state == lcHead && c.n == 0 && c.off == len(c.out) {
			c.close()
		}
	}
}

// closeAll cuts every connection (the shutdown deadline) and closes the
// pooled node sockets.
func (w *loopWorker) closeAll() {
	w.cut = true
	for c := range w.conns {
		c.abort(errShutdownCut)
	}
	w.closeSocks()
}

// appendHead appends the formatted head h to dst (fasthttp's AppendBytes
// writes from the start of its buffer).
func (w *loopWorker) appendHead(dst []byte, h *fasthttp.ResponseHeader) []byte {
	w.hbuf = h.AppendBytes(w.hbuf[:0])
	return append(dst, w.hbuf...)
}

func (w *loopWorker) getIn() []byte {
	if k := len(w.ins); k > 0 {
		b := w.ins[k-1]
		w.ins = w.ins[:k-1]
		return b
	}
	return make([]byte, w.rt.cfg.MaxHeaderBytes)
}

func (w *loopWorker) putIn(b []byte) {
	if len(w.ins) < 64 {
		w.ins = append(w.ins, b[:cap(b)])
	}
}

func (w *loopWorker) getBuf() []byte {
	if k := len(w.bufs); k > 0 {
		b := w.bufs[k-1]
		w.bufs = w.bufs[:k-1]
		return b[:0]
	}
	return make([]byte, 0, 40<<10)
}

func (w *loopWorker) putBuf(b []byte) {
	if b != nil && cap(b) <= 256<<10 && len(w.bufs) < 128 {
		w.bufs = append(w.bufs, b[:0])
	}
}

// loopConn states.
const (
	lcHead    = iota // reading a request head (idle between requests)
	lcQueued         // waiting in a capped pool's queue for a node (queue)
	lcConnect        // the node's connect in progress
	lcSend           // the packet partly written
	lcWait           // reading the node's response head
	lcBody           // relaying the body
	lcClosed
)

// loopConn is one client connection a loop serves, and the exchange in
// flight on it. Loop goroutine only.
type loopConn struct {
	w      *loopWorker
	h1f    *h1Front
	fd     int
	remote netip.AddrPort
	state  int
	timer  evloop.Timer
	// readable: the client socket may hold bytes not read yet (an
	// edge-triggered descriptor tells only of new ones).
	readable bool
	ended    bool   // the client closed its side (or failed): read to the end
	in       []byte // the request bytes read and not yet served; nil when none
	n        int
	headLen  int // the head of the request in flight, at the start of in
	expire   func()
	nsa      evloop.Sockaddr // the node's address, filled per dial
	req      fasthttp.RequestHeader
	x        *exchange
	out      []byte // client bytes to write, from off
	off      int
	// lastOut: close the connection once out is written.
	lastOut bool
	// broken: the node's body ended without its framing's end (a reset,
	// a bad or missing chunk): the client's chunked copy gets no last
	// chunk either, and the connection closes.
	broken bool
	// answered: a response went out on the connection (closeIdle).
	answered bool
	// closeReq: the request in flight said "Connection: close"; its
	// response says so too and is the connection's last, as fasthttp's.
	closeReq bool

	// The node side of the exchange in flight.
	bs       *loopSock // the node's socket; nil when none
	bfd      int       // bs's descriptor; -1 when none
	pool     *balancer.Pool
	pm       *poolMetrics
	node     *balancer.Node
	nodeNow  time.Time // the attempt's clock reading (connectFailed)
	at       attempts
	key      []byte
	start    time.Time
	sent     int // packet bytes written
	rbuf     []byte
	scan     headScan
	flags    headFlags
	head     fasthttp.ResponseHeader
	left     int64 // body bytes still to come (Content-Length), -1 until the node closes
	chunk    bool  // frame the body in chunks for the client
	dechunk  bool  // the node chunked it: dc decodes it first
	dc       chunked.Decoder
	got      int64 // body bytes from the node
	rec      *accessRecord
	bReadble bool // the node socket may hold bytes not read yet
	bEnded   bool // the node closed (or failed) its side: read to the end
	// cut stands for the node socket in the drain and shutdown books
	// (rt.track) while tracked, the node it is registered with, is set.
	cut     loopCut
	tracked *balancer.Node
}

// loopCut is what a loopConn registers, for the exchange in flight, with
// its node (a drain's deadline) and the router (the shutdown deadline), as
// the goroutine path registers its node connection (connect.go). The loop
// goroutine owns the socket, so Close, which any goroutine may call, does
// not close it: it submits the cut to the loop. The value lives in its
// loopConn, so tracking allocates nothing.
type loopCut struct {
	c *loopConn // set at admit
	// gen counts the exchanges that let go of their node (closeNode): a
	// cut submitted for one exchange does nothing to a later one. Written
	// by the loop goroutine, read by Close.
	gen atomic.Uint64
}

// Close cuts the exchange in flight now (cutNode), on the loop's
// goroutine. It returns before the cut is made. A Close that races with the
// exchange's end (the drain's snapshot taken just before) finds the
// connection's next exchange, which it cuts only when that one's node is
// draining too or the shutdown deadline has passed (mayCut).
func (k *loopCut) Close() error {
	gen, c := k.gen.Load(), k.c
	_ = c.w.loop.Submit(func() {
		if k.gen.Load() != gen || c.tracked == nil || !c.w.rt.mayCut(c.tracked) {
			return
		}
		c.cutNode()
	})
	return nil
}

// mayCut tells whether a cut may end an exchange with n: n is draining or
// the shutdown deadline has passed. A cut that raced with the end of the
// exchange it was meant for finds the connection's next one, which may be
// to a node that is not draining; that one is let be.
func (rt *Router) mayCut(n *balancer.Node) bool {
	if !n.Drain().Started.IsZero() {
		return true
	}
	select {
	case <-rt.cutCh:
		return true
	default:
		return false
	}
}

// cutNode ends the exchange in flight as the goroutine path's does when its
// node connection is closed under it (a drain's deadline, the shutdown
// deadline): a 502 before the node's head; after it, the body cut short
// and then the connection closed (what was relayed still goes out).
func (c *loopConn) cutNode() {
	switch c.state {
	case lcConnect, lcSend:
		c.fail(errBackendWrite)
	case lcWait:
		c.fail(errBadResponse)
	case lcBody:
		c.lastOut = true
		c.endNode()
		c.finish()
	}
}

// Event takes the events of the client's descriptor (the node's come
// through its loopSock).
func (c *loopConn) Event(_ int, ev uint32) {
	if ev&(evloop.Err|evloop.Hup) != 0 && c.state != lcHead {
		c.abort(errClientGone)
		return
	}
	if ev&(evloop.In|evloop.RDHup|evloop.Hup|evloop.Err) != 0 {
		c.readable = true
	}
	if ev&(evloop.RDHup|evloop.Hup|evloop.Err) != 0 {
		c.ended = true
	}
	if ev&evloop.Out != 0 && c.off < len(c.out) {
		c.flush()
		return
	}
	if c.state == lcHead {
		c.readHead()
	}
}

// armIdle sets the connection's deadline d from now.
func (c *loopConn) armIdle(d time.Duration) {
	c.w.loop.Reset(&c.timer, c.w.loop.Now().Add(d), c.expire)
}

// expired is the connection's deadline: the state says which.
func (c *loopConn) expired() {
	switch c.state {
	case lcHead:
		if c.n > 0 { // a head started and not finished: as fasthttp answers it
			c.errorPage(408, true)
			return
		}
		c.close()
	case lcConnect:
		c.connectFailed(os.ErrDeadlineExceeded)
	case lcSend, lcWait:
		c.fail(errBackendTimeout)
	case lcBody:
		c.abort(errBackendTimeout)
	}
}

// readHead reads until a whole request head is in hand and serves it.
func (c *loopConn) readHead() {
	w := c.w
	for c.state == lcHead {
		if end := headEnd(c.in[:c.n]); end > 0 {
			c.serve(end)
			continue
		}
		if !c.readable {
			return
		}
		if c.in == nil {
			c.in = w.getIn()
		}
		if c.n == len(c.in) {
			c.fallback() // too large for the loop: the fasthttp path answers 431
			return
		}
		m, err := evloop.Read(c.fd, c.in[c.n:])
		if err == unix.EAGAIN {
			c.readable = false
			c.releaseIn()
			return
		}
		if err != nil || m == 0 {
			if c.n > 0 && err == nil {
				c.fallback() // a request ended by the client's close: fasthttp's rules
				return
			}
			c.close()
			return
		}
		if c.n == 0 {
			c.armIdle(w.rt.timeouts().Header)
		}
		c.n += m
		c.readable = c.n == len(c.in) || c.ended // a short read drained the socket, unless its end is pending
	}
}

// releaseIn gives the input buffer back while it holds nothing.
func (c *loopConn) releaseIn() {
	if c.n == 0 && c.in != nil {
		c.w.putIn(c.in)
		c.in = nil
	}
}

// headEnd returns the length of the request head at the start of b
// (through its empty line), or 0 when it is not complete yet.
func headEnd(b []byte) int {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return 0
		}
		i += j + 1
		switch {
		case i < len(b) && b[i] == '\n':
			return i + 1
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i + 2
		}
	}
}

// serve takes the request whose head is c.in[:end], or hands the
// connection over to the goroutine path.
func (c *loopConn) serve(end int) {
	w, rt := c.w, c.w.rt
	c.req.Reset()
	c.req.DisableNormalizing()
	w.rd.Reset(c.in[:end])
	w.br.Reset(&w.rd)
	if err := c.req.Read(w.br); err != nil || !simpleRequest(rt, &c.req) {
		c.fallback()
		return
	}
	c.closeReq = c.req.ConnectionClose()
	x := getExchange()
	if c.h1f.fillRequest(x, &c.req, c.remote) != strict.None {
		putExchange(x)
		c.fallback()
		return
	}
	x.sink = c
	rt.observe(x)
	pool, err := rt.route(x)
	if err != nil || !loopNodesOnly(pool) {
		putExchange(x)
		c.fallback()
		return
	}
	x.wire = wireNone
	if x.encode(wireUwsgi) != nil {
		putExchange(x)
		c.fallback()
		return
	}
	// Taken. The head's bytes stay until the exchange ends (consumeHead):
	// a fallback before anything is written hands them over.
	c.headLen = end
	c.x, c.pool = x, pool
	c.pm = rt.poolMetrics(x, pool)
	c.pm.inflight.Inc()
	c.start = rt.now()
	c.key = rt.affinityKey(x, pool.Algo())
	c.at.init()
	c.at.start = c.start
	c.state = lcConnect
	c.pick()
}

// simpleRequest reports a request head the loop takes (see the top).
func simpleRequest(rt *Router, h *fasthttp.RequestHeader) bool {
	// fasthttp says -2 (identity) for a request without Content-Length.
	if cl := h.ContentLength(); !h.IsHTTP11() || cl != 0 && cl != -2 || len(h.Peek("Transfer-Encoding")) > 0 ||
		len(h.Peek("Expect")) > 0 || len(h.Peek("Upgrade")) > 0 || bytes.Equal(h.Method(), []byte("PRI")) {
		return false
	}
	if rt.cfg.Challenges != nil && bytes.HasPrefix(h.RequestURI(), acmePrefix) {
		return false
	}
	return true
}

// fallback hands the connection, with the bytes read and not served, to
// the goroutine path. Nothing of the current request was written.
func (c *loopConn) fallback() {
	w := c.w
	w.lf.handed.Add(1)
	pre := c.in[:c.n]
	fd := c.fd
	_ = w.loop.Remove(fd)
	c.detach()
	f := os.NewFile(uintptr(fd), "")
	nc, err := net.FileConn(f) // a duplicate in the runtime poller
	f.Close()
	var pc net.Conn
	if err == nil {
		pc = newPrefixConn(nc, pre)
	}
	c.releaseBuffers()
	if err != nil {
		w.rt.log.Warn("http event loop: handing a connection over failed", "err", err)
		return
	}
	w.lf.l.accepted(pc)
}

// detach forgets the connection in the loop's books: it is closed or
// handed over.
func (c *loopConn) detach() {
	w := c.w
	w.loop.Stop(&c.timer)
	delete(w.conns, c)
	w.load.Add(-1)
	w.lf.open.Add(-1)
	c.h1f.connClosed()
	c.state = lcClosed
}

func (c *loopConn) releaseBuffers() {
	if c.in != nil {
		c.w.putIn(c.in)
		c.in, c.n = nil, 0
	}
	c.w.putBuf(c.out)
	c.out, c.off = nil, 0
}

// close closes the client connection; no exchange is in flight.
func (c *loopConn) close() {
	if c.state == lcClosed {
		return
	}
	c.w.loop.Forget(c.fd)
	evloop.Close(c.fd) // the last reference: it leaves the epoll set
	c.detach()
	c.releaseBuffers()
}

// pick picks a node and dials it without blocking, trying others as
// connect does. Where the pick would wait in a capped pool's queue, the
// wait is queue's.
func (c *loopConn) pick() {
	for c.at.n < maxAttempts {
		now := c.at.clock(c.w.rt)
		n, perr := c.pool.TryAcquire(now.UnixNano(), c.at.tried(), c.key)
		if perr == balancer.ErrWouldWait {
			c.queue(now)
			return
		}
		if !c.take(n, perr, now) {
			return
		}
	}
	c.failBeforeNode(c.at.err)
}

// take goes on with Acquire's answer (n, perr), as connect does with
// pickNode's: it dials the node, or ends the request, or hands the
// connection over; true when pick should try another node instead.
func (c *loopConn) take(n *balancer.Node, perr error, now time.Time) bool {
	n, err := c.w.rt.acquired(context.Background(), c.pool, c.pm, c.x, n, perr, now, &c.at)
	if err != nil {
		c.failBeforeNode(err)
		return false
	}
	if n == nil {
		return true
	}
	if !c.nodeSockaddr(n) { // an http:// node, an IPv6 zone: the goroutine path
		n.Done()
		c.pm.inflight.Dec()
		c.endExchange()
		c.fallback()
		return false
	}
	c.node, c.nodeNow = n, now
	return !c.dial()
}

// queue waits for a node of a capped pool whose every candidate is at its
// cap (or whose queue has others waiting): a goroutine waits in the pool's
// queue (Acquire, in arrival order with the goroutine path's waiters, up
// to --queue-timeout or the shutdown deadline) and submits the answer to
// the loop (dequeued), which meanwhile serves its other connections. Only
// this path allocates: the goroutine, and copies of what it reads, as the
// connection may be cut while it waits.
func (c *loopConn) queue(now time.Time) {
	c.state = lcQueued
	c.w.loop.Stop(&c.timer)
	lp, pool, cut := c.w.loop, c.pool, c.w.rt.cutCh
	tried := slices.Clone(c.at.tried())
	key := bytes.Clone(c.key)
	go func() {
		n, perr := pool.Acquire(now.UnixNano(), tried, key, cut)
		if lp.Submit(func() { c.dequeued(n, perr, now) }) != nil && n != nil {
			n.Done() // the loop has stopped
		}
	}()
}

// dequeued is queue's answer, on the loop's goroutine. A connection cut
// while it waited (closed: abort accounted for the request) lets the node
// go.
func (c *loopConn) dequeued(n *balancer.Node, perr error, now time.Time) {
	if c.state != lcQueued {
		if n != nil {
			n.Done()
		}
		return
	}
	c.state = lcConnect
	if c.take(n, perr, now) {
		c.pick()
	}
}

// loopNodesOnly reports a pool whose every node is one the loop dials
// (nodeSockaddr). A pool with others is the goroutine path's whole: handing
// over a request whose pick was such a node would have the goroutine path
// pick again, and a weighted round robin would then pass that node over
// every time. O(nodes), as a pick is.
func loopNodesOnly(pool *balancer.Pool) bool {
	for _, n := range pool.Nodes() {
		if ep := n.Endpoint; ep.Network == balancer.NetHTTP || ep.Network != balancer.NetUnix && ep.AddrPort.Addr().Zone() != "" {
			return false
		}
	}
	return true
}

// nodeSockaddr fills the socket address of a uwsgi node in c.nsa; false
// for a node the loop does not dial.
func (c *loopConn) nodeSockaddr(n *balancer.Node) bool {
	ep := n.Endpoint
	switch {
	case ep.Network == balancer.NetUnix:
		return c.nsa.SetUnix(ep.Dial)
	case ep.Network == balancer.NetHTTP, ep.AddrPort.Addr().Zone() != "":
		return false
	}
	c.nsa.SetAddrPort(ep.AddrPort)
	return true
}

// dial opens the node's socket and starts the connect; false when it
// failed at once and pick should go on.
func (c *loopConn) dial() bool {
	s, err := c.w.takeSock(c.nsa.Family(), c)
	if err != nil {
		c.nodeFailed(os.NewSyscallError("socket", err))
		return false
	}
	c.bs, c.bfd = s, s.fd
	switch err := evloop.Connect(s.fd, &c.nsa); err {
	case nil, unix.EINPROGRESS, unix.EINTR:
	default:
		c.closeNode()
		c.nodeFailed(os.NewSyscallError("connect", err))
		return false
	}
	// A drain or the shutdown deadline may need to cut it (connect.go).
	if !c.w.rt.track(c.node, &c.cut) {
		c.closeNode()
		c.node.Done()
		c.node = nil
		c.failBeforeNode(errShutdownCut)
		return true
	}
	c.tracked = c.node
	c.bReadble, c.bEnded = false, false
	c.sent = 0
	c.state = lcConnect
	c.w.loop.Reset(&c.timer, c.w.loop.Now().Add(c.w.rt.timeouts().Connect), c.expire)
	// Write at once: a connect still in progress says so (EAGAIN), and on
	// loopback the handshake is over already.
	c.send()
	return true
}

// nodeFailed records a failed connect to c.node and releases it.
func (c *loopConn) nodeFailed(err error) {
	n := c.node
	c.node = nil
	n.Done()
	_ = c.w.rt.connectFailed(context.Background(), c.pool, c.pm, c.x, n, err, c.nodeNow, &c.at)
}

// connectFailed is a connect that failed after dial returned: try another
// node.
func (c *loopConn) connectFailed(err error) {
	c.closeNode()
	c.nodeFailed(err)
	c.pick()
}

// nodeEvent takes the events of the node's descriptor.
func (c *loopConn) nodeEvent(ev uint32) {
	if ev&(evloop.In|evloop.RDHup|evloop.Hup|evloop.Err) != 0 {
		c.bReadble = true
	}
	if ev&(evloop.RDHup|evloop.Hup|evloop.Err) != 0 {
		c.bEnded = true // read on to the end: no event will say it again
	}
	switch c.state {
	case lcConnect, lcSend:
		if ev&evloop.Err != 0 && c.state == lcConnect {
			c.connectFailed(os.NewSyscallError("connect", evloop.SocketError(c.bfd)))
			return
		}
		if ev&(evloop.Out|evloop.Err|evloop.Hup) != 0 {
			c.send()
		}
	case lcWait, lcBody:
		if c.bReadble {
			c.readNode()
		}
	}
}

// send writes the packet; the first write also tells whether the connect
// finished.
func (c *loopConn) send() {
	rt := c.w.rt
	p := c.x.buf
	m, err := evloop.Write(c.bfd, p[c.sent:])
	c.sent += m
	if err == unix.EAGAIN {
		return // connect in progress or a full socket: Out follows
	}
	if err != nil {
		if c.state == lcConnect { // the handshake failed
			c.connectFailed(os.NewSyscallError("connect", err))
			return
		}
		c.fail(errBackendWrite)
		return
	}
	if c.state == lcConnect {
		if c.node.ReportSuccess() {
			rt.log.Warn("node recovered", "pool", c.pool.Key, "node", c.node.Address, "reason", "connect")
		}
		rt.observeConnect(c.x, c.node, c.start)
		c.state = lcSend
		c.w.loop.Reset(&c.timer, c.w.loop.Now().Add(rt.timeouts().Timeout), c.expire)
	}
	if c.sent < len(p) {
		return
	}
	c.state = lcWait
	c.rbuf = c.w.getBuf()
	c.scan = headScan{}
	c.w.loop.Reset(&c.timer, c.w.loop.Now().Add(rt.timeouts().Timeout), c.expire)
	if c.bReadble {
		c.readNode()
	}
}

// readNode reads what the node sent: its head, then its body, while the
// client takes it.
func (c *loopConn) readNode() {
	for c.bReadble && c.off == len(c.out) && (c.state == lcWait || c.state == lcBody) {
		b := c.rbuf[len(c.rbuf):maxNodeHead] // a head within the 16 KiB scanHead allows
		if c.state == lcBody {
			b = c.rbuf[:cap(c.rbuf)]
			if c.left > 0 && int64(len(b)) > c.left {
				b = b[:c.left]
			}
		}
		if len(b) == 0 {
			c.fail(errBadResponse) // the head does not fit: as scanHead says
			return
		}
		m, err := evloop.Read(c.bfd, b)
		if err == unix.EAGAIN {
			c.bReadble = false
			return
		}
		c.bReadble = m == len(b) || c.bEnded // a short read drained the socket, unless its end is pending
		if c.state == lcBody {
			// Inactivity: every read renews it. The head's deadline is
			// set once (send), as on the goroutine path: a trickled head
			// is a 504.
			c.w.loop.Reset(&c.timer, c.w.loop.Now().Add(c.w.rt.timeouts().Timeout), c.expire)
		}
		if c.state == lcWait {
			c.gotHead(m, err)
			continue
		}
		if err != nil && m == 0 {
			c.lastOut, c.broken = true, true // reset mid-body: no clean end for the client
		}
		c.gotBody(b[:m], m == 0 || err != nil)
	}
}

// maxNodeHead bounds a node's response head, as readerPool's buffer does
// on the goroutine path.
const maxNodeHead = 16 << 10

// gotHead takes m more bytes of the node's head (err: its read ended).
func (c *loopConn) gotHead(m int, err error) {
	rt, x := c.w.rt, c.x
	if m == 0 || err != nil {
		if len(c.rbuf) == 0 && x.interims == 0 && (err == nil || err == unix.ECONNRESET) {
			c.closedEarly()
			return
		}
		c.fail(errBadResponse)
		return
	}
	c.rbuf = c.rbuf[:len(c.rbuf)+m]
	for {
		done, ok := c.scan.feed(c.rbuf)
		if !ok {
			c.fail(errBadResponse)
			return
		}
		if !done {
			return
		}
		end := c.scan.off
		c.head.Reset()
		c.head.DisableNormalizing()
		c.head.SetNoDefaultContentType(true)
		c.w.rd.Reset(c.rbuf[:end])
		c.w.br.Reset(&c.w.rd)
		if err := c.head.Read(c.w.br); err != nil {
			c.fail(errBadResponse)
			return
		}
		f, err := checkFraming(&c.head, c.scan.flags)
		if err == nil {
			var final bool
			if final, err = rt.takeHead(x, &c.head, f); err == nil && !final {
				c.rbuf = c.rbuf[:copy(c.rbuf, c.rbuf[end:])]
				c.scan = headScan{}
				continue
			}
		}
		if err != nil {
			c.fail(err)
			return
		}
		c.flags = f
		c.respond(c.rbuf[end:])
		return
	}
}

// closedEarly: the node closed before a byte of an answer.
func (c *loopConn) closedEarly() {
	if !c.x.retryable() {
		c.fail(errNodeClosedEarly)
		return
	}
	c.w.rt.noteClosedEarly(c.x, c.pm, c.pool, c.node, &c.at)
	c.closeNode()
	c.node.Done()
	c.node = nil
	c.w.putBuf(c.rbuf)
	c.rbuf = nil
	c.pick()
}

// respond writes the final head for the client and what of the body came
// with it (proxy, uwsgiUpstream.response, h1Front.respond).
func (c *loopConn) respond(body []byte) {
	rt, x, h := c.w.rt, c.x, &c.head
	x.headAt = rt.now()
	code := h.StatusCode()
	rt.observeLatency(c.pool, c.node, &c.at, code >= 500, x.headAt)
	rt.observeHead(x, c.node, c.start, int64(len(x.buf)))
	c.pm.count(code)
	x.closeClient = c.flags&hfClose != 0
	hasBody := relayHead(x, h, c.flags)
	c.rec = rt.startAccess(x, code)
	cl := h.ContentLength()
	switch {
	case !hasBody:
	case cl > 0:
		c.left = int64(cl)
	case cl == -1: // chunked by the node: de-chunked and chunked again, as relay does
		c.left, c.chunk, c.dechunk = -1, true, true
		c.dc = chunked.Decoder{}
	default: // until the node's close: chunked for the client
		c.left, c.chunk = -1, true
		h.SetContentLength(-1)
	}
	if x.closeClient || c.closeReq || rt.draining.Load() {
		h.SetConnectionClose()
		c.lastOut = true
	}
	if c.out == nil {
		c.out = c.w.getBuf()
	}
	c.out = c.w.appendHead(c.out, h) // after any interim response still unwritten
	if !hasBody {
		c.endNode()
		c.finish()
		return
	}
	c.state = lcBody
	c.rbuf = c.rbuf[:0] // body still reads its bytes: gotBody copies them first
	c.gotBody(body, false)
}

// gotBody relays body bytes b of the node; end: the node closed.
func (c *loopConn) gotBody(b []byte, end bool) {
	last := false // the node's last chunk
	if c.dechunk {
		n, done, err := c.dc.Feed(b)
		b, last = b[:n], done
		if err != nil || end && !done {
			// Refused or cut short: as on the goroutine path (partial.go),
			// the data so far goes out, then the connection closes
			// without the last chunk, and nothing else the node sent
			// reaches the client.
			end, c.lastOut, c.broken = true, true, true
		}
	}
	if c.left > 0 && int64(len(b)) > c.left {
		b = b[:c.left] // what a node sends past its Content-Length is not the body
	}
	if len(b) > 0 {
		c.got += int64(len(b))
		if c.chunk {
			c.out = strconv.AppendInt(c.out, int64(len(b)), 16)
			c.out = append(c.out, "\r\n"...)
			c.out = append(c.out, b...)
			c.out = append(c.out, "\r\n"...)
		} else {
			c.out = append(c.out, b...)
		}
		if c.left > 0 {
			c.left -= int64(len(b))
		}
	}
	switch {
	case c.left == 0: // Content-Length reached
		c.endNode()
		c.finish()
		return
	case last: // what follows the last chunk (trailers) is dropped, as relay's decoder leaves it unread
		c.out = append(c.out, "0\r\n\r\n"...)
		c.endNode()
		c.finish()
		return
	case end && c.left > 0: // closed before its Content-Length: the client's framing is broken
		c.lastOut = true
		c.endNode()
		c.finish()
		return
	case end:
		if c.chunk && !c.broken {
			c.out = append(c.out, "0\r\n\r\n"...)
		}
		c.endNode()
		c.finish()
		return
	}
	c.flush()
}

// flush writes out to the client; a full socket waits for Out, the node
// unread meanwhile (back-pressure).
func (c *loopConn) flush() {
	if c.off < len(c.out) {
		m, err := evloop.Write(c.fd, c.out[c.off:])
		c.off += m
		if err == unix.EAGAIN {
			c.w.loop.Reset(&c.timer, c.w.loop.Now().Add(c.w.rt.timeouts().Timeout), c.expire)
			return
		}
		if err != nil {
			c.abort(errClientGone)
			return
		}
	}
	c.out, c.off = c.out[:0], 0
	switch c.state {
	case lcBody:
		c.readNode()
	case lcHead: // the response is out: an idle connection holds no buffer
		c.w.putBuf(c.out)
		c.out = nil
		if c.lastOut {
			c.close()
			return
		}
		c.armIdle(c.w.rt.timeouts().Timeout)
		c.readHead()
	}
}

// interim writes an interim response to the client (response.go).
func (c *loopConn) interim(_ *exchange, head *fasthttp.ResponseHeader) error {
	if c.out == nil {
		c.out = c.w.getBuf()
	}
	c.out = appendInterim(c.out, head)
	m, err := evloop.Write(c.fd, c.out[c.off:])
	c.off += m
	if err != nil && err != unix.EAGAIN {
		return errClientGone
	}
	if c.off == len(c.out) {
		c.out, c.off = c.out[:0], 0
	}
	return nil
}

// endNode ends the node's side of a response: the connection reset
// (closeNode: nothing more is read), the node released, the request's
// metrics recorded.
func (c *loopConn) endNode() {
	rt := c.w.rt
	c.closeNode()
	c.node.AddTraffic(0, uint64(c.got))
	c.node.Done()
	c.node = nil
	end := rt.now()
	c.pm.inflight.Dec()
	c.pm.duration.Observe(end.Sub(c.start).Seconds())
	if c.rec != nil {
		rt.finishAccess(c.rec, c.got, end)
		c.rec = nil
	}
}

// closeNode ends the use of the node's socket: a TCP one is reset (no
// TIME_WAIT on either side) and pooled (putSock).
func (c *loopConn) closeNode() {
	if c.bs == nil {
		return
	}
	if c.tracked != nil {
		c.w.rt.untrack(c.tracked, &c.cut)
		c.tracked = nil
		c.cut.gen.Add(1)
	}
	c.w.putSock(c.bs)
	c.bs, c.bfd = nil, -1
	c.w.putBuf(c.rbuf)
	c.rbuf = nil
}

// finish ends the exchange on the client side: the rest of the response
// goes out, then the next request.
func (c *loopConn) finish() {
	c.w.lf.served.Add(1)
	c.consumeHead()
	c.endExchange()
	c.state = lcHead
	c.answered = true
	c.flush()
}

// consumeHead drops the served request's head from in, keeping what was
// pipelined after it.
func (c *loopConn) consumeHead() {
	if c.headLen > 0 {
		c.n = copy(c.in, c.in[c.headLen:c.n])
		c.headLen = 0
	}
}

// endExchange recycles the exchange's state.
func (c *loopConn) endExchange() {
	if c.x != nil {
		putExchange(c.x)
		c.x = nil
	}
	c.pool, c.pm, c.key, c.left, c.chunk, c.dechunk, c.broken, c.got, c.flags = nil, nil, nil, 0, false, false, false, 0, 0
}

// failBeforeNode ends the request with err before a node held it (proxy's
// accounting of connect's errors).
func (c *loopConn) failBeforeNode(err error) {
	pm := c.pm
	pm.inflight.Dec()
	pm.connectError(err)
	c.w.rt.failed(pm, err)
	c.errorAnswer(err)
}

// fail ends the request with err while a node holds it (nodeCall.fail).
func (c *loopConn) fail(err error) {
	rt := c.w.rt
	if err != errClientGone {
		rt.observeLatency(c.pool, c.node, &c.at, true, rt.now())
	}
	pm := c.pm
	c.rec = nil
	c.endNode()
	if err != errClientGone {
		pm.backendError(err)
	}
	rt.failed(pm, err)
	c.errorAnswer(err)
}

// errorAnswer logs the failed request and answers it with its error page.
func (c *loopConn) errorAnswer(err error) {
	c.w.rt.logResponse(c.x, nil, err, nil)
	code := statusOf(err)
	c.consumeHead()
	c.endExchange()
	if err == errClientGone {
		c.close()
		return
	}
	c.w.lf.served.Add(1)
	c.errorPage(code, code == 400 || code == 413 || code == 431)
}

// errorPage answers with the error page for code (writeError's).
func (c *loopConn) errorPage(code int, last bool) {
	h := &c.w.errHead
	h.Reset()
	errorHeader(h, code)
	body := errorBodies[code]
	h.SetContentLength(len(body))
	if last || c.closeReq || c.w.rt.draining.Load() {
		h.SetConnectionClose()
		c.lastOut = true
	}
	if c.out == nil {
		c.out = c.w.getBuf()
	}
	c.out = c.w.appendHead(c.out, h)
	c.out = append(c.out, body...)
	c.state = lcHead
	c.answered = true
	if code == 408 {
		c.n = 0
	}
	c.flush()
}

// abort cuts the connection with the exchange in flight, if any (client
// gone, a stalled body, the shutdown deadline).
func (c *loopConn) abort(err error) {
	if c.state == lcClosed {
		return
	}
	if c.node != nil {
		if c.state == lcBody {
			c.endNode()
		} else {
			c.pm.inflight.Dec()
			c.closeNode()
			c.node.Done()
			c.node = nil
			c.w.rt.failed(c.pm, err)
			c.w.rt.logResponse(c.x, nil, err, nil)
		}
	} else if c.x != nil && c.pm != nil {
		c.pm.inflight.Dec()
		if c.state == lcQueued {
			c.w.rt.failed(c.pm, err)
			c.w.rt.logResponse(c.x, nil, err, nil)
		}
	}
	c.endExchange()
	c.close()
}
