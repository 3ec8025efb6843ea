package router

import (
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/valyala/fasthttp"
)

// Parking idle HTTP/1.1 connections.
//
// fasthttp serves a connection on one goroutine for its whole life. Between
// requests that goroutine sits in a read with a stack grown to 8 KiB or more
// by the request path (the idle path alone uses over a quarter of it, so the
// runtime never shrinks it), and with streamed request bodies fasthttp keeps
// the connection's read buffer as well. That made an idle keep-alive
// connection cost ~16 KiB, against nginx's ~0.6 KiB.
//
// A connection (clear text or TLS) that stays idle for parkAfter after a
// response leaves fasthttp: its serve loop ends (buffers and request context go back to
// fasthttp's pools, its goroutine ends), and the router's parker waits for
// the socket to become readable, with no goroutine of the connection's own
// (park_linux.go). Then the connection is served again, on a fresh
// goroutine, through ServeConn. A busy
// connection never parks, so the request path costs nothing extra: the only
// change on it is that the keep-alive read deadline is the earlier of the
// idle timeout and now+parkAfter.
//
// How the wrapper knows where fasthttp is. After the handler (h1.go) marks the
// exchange complete (armed), fasthttp's next SetReadDeadline is the one it
// sets before waiting for the next request (the idle timeout), and its next
// Read, if any, is that wait. Any other call disarms. A pipelined request
// already buffered is parsed without a Read, and fasthttp's following
// SetReadDeadline (the head timeout) disarms. The Read is the only place that
// may park, and only when the deadline that expired was ours, nothing was
// read and no sniffed bytes are waiting in a wrapper.
//
// TLS connections park too, waiting on the socket under the tls.Conn (see
// tlsParkConn for why nothing it buffers can be stranded); woken, its
// goroutine reads the first byte of plaintext itself, so that a record without a
// request goes back to waiting (awaitTLS). h2 connections are not served by
// fasthttp.

// parkAfter is how long a connection may stay idle inside fasthttp before it
// is parked. Short enough that idle fleets of keep-alive connections shed
// their memory at once, long enough that a loaded connection, whose next
// request comes within a round trip, never leaves fasthttp.
const parkAfter = 100 * time.Millisecond

// errParked ends fasthttp's serve loop for a connection that is being parked;
// fasthttp treats an error on the keep-alive wait as the connection ending
// quietly, and closes it (Close below does not).
var errParked = errors.New("router: idle connection parked")

const (
	parkNone  uint8 = iota
	parkArmed       // the handler finished an exchange that keeps the connection
	parkIdle        // fasthttp set its keep-alive deadline; the next Read is the wait
)

// parkConn is an HTTP/1.1 connection as fasthttp sees it (for TLS, through
// tlsParkConn).
//
// Ownership: state, idleDL and wdl belong to the goroutine serving the
// connection (its accept goroutine, or the one resuming it after a park;
// the parker's lock hands it over); fasthttp and the handler run on that
// goroutine. The rest is immutable.
type parkConn struct {
	net.Conn // the chain: maybe tls.Conn or prefixConn → proxiedConn → limitedConn → socket
	raw      syscall.RawConn
	tc       *tls.Conn // the chain's TLS layer; nil in clear text
	// under is the chain beneath the TLS layer (Conn in clear text):
	// closing it cuts the connection at once (closeNow). It is the
	// connection's key in its listener's connection sets (parkState).
	under  net.Conn
	served net.Conn // what fasthttp serves: p, or for TLS a tlsParkConn of p
	l      *frontListener
	front  *h1Front // counts the connection open until it really closes
	// first is the byte of plaintext resume read from the TLS layer
	// to tell a request from a record without one (awaitTLS); fasthttp
	// gets it first when hasFirst.
	first    [1]byte
	hasFirst bool

	state  uint8
	idleDL time.Time // fasthttp's keep-alive deadline (zero: none)
	wdl    time.Time // the write deadline armed (SetWriteDeadline; zero: none or unknown)
	// Read deadlines are armed by the Read they are for (SetReadDeadline,
	// Read): next, when hasNext, is the one set last and not armed yet;
	// rdl, when rdlKnown, the one armed through p. fasthttp sets three per
	// request (idle, head, body), each a timer update in the runtime's
	// poller and two readings of the clock; a GET reads no body, so its
	// body deadline is never armed, and a read that finds its bytes
	// already in the socket needs no later deadline than the one armed
	// (readDeferred).
	rdl, next         time.Time
	rdlKnown, hasNext bool
	// idle is the keep-alive timeout of the fasthttp server serving p
	// (set by serveConn): its keep-alive deadline is its reading of the
	// clock plus idle, so the park deadline needs no reading of its own.
	idle time.Duration
	// parked: the serve loop is ending because of a park, so Close is a
	// no-op. Atomic: fasthttp's Shutdown closes idle connections from its
	// own goroutine.
	parked atomic.Bool

	// While parked (park_linux.go), guarded by the router's parker.mu:
	// token is p's key in the parker, parkDL its idle deadline there,
	// timer (made at the first park) ends it then, inEpoll tells that the
	// socket is in the parker's epoll instance already.
	token   uint32
	parkDL  time.Time
	timer   *time.Timer
	inEpoll bool
}

// parkedKey is p as a member of its listener's parked set, whose Close
// (closeAll, at shutdown) cuts a parked connection.
type parkedKey parkConn

func (k *parkedKey) Close() error {
	(*parkConn)(k).cancelPark()
	return nil
}

// newParkConn wraps c, served by front f, when the socket under it can be
// waited on; nil otherwise.
func newParkConn(c net.Conn, l *frontListener, f *h1Front) *parkConn {
	if !canPark {
		return nil
	}
	sc, ok := innermost(c).(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	p := &parkConn{Conn: c, under: c, raw: raw, l: l, front: f}
	p.served = p
	if tc, ok := c.(*tls.Conn); ok {
		p.tc, p.under = tc, tc.NetConn()
		p.served = tlsParkConn{p}
	}
	return p
}

// tlsParkConn is how fasthttp sees a TLS parkConn: with the tls.Conn's
// Handshake and ConnectionState, by which fasthttp (IsTLS, the URI scheme)
// and clientDN tell TLS.
//
// Parking a TLS connection is safe for the same reason as a clear-text one.
// tls.Conn.Read times out with nothing read only when it holds no
// plaintext and no complete record (it decrypts a buffered record without
// touching the socket), so all it may keep across the park is part of a
// record, and the rest of that record has to arrive on the socket, which
// wakes the parker. A read timeout does not break a tls.Conn (net.Error
// Temporary), unlike a write timeout.
type tlsParkConn struct{ *parkConn }

func (c tlsParkConn) Handshake() error                     { return c.tc.Handshake() }
func (c tlsParkConn) ConnectionState() tls.ConnectionState { return c.tc.ConnectionState() }

// parkOf returns the parkConn fasthttp serves as c (nil: none).
func parkOf(c net.Conn) *parkConn {
	switch c := c.(type) {
	case *parkConn:
		return c
	case tlsParkConn:
		return c.parkConn
	}
	return nil
}

// closeNow closes p at once: under its TLS layer, if it has one, so that no
// close_notify alert is written (which may wait up to 5 s for a client that
// does not read). Whatever uses the tls.Conn then fails and closes it.
func (p *parkConn) closeNow() { _ = p.under.Close() }

// unwrap returns the connection under one of the router's own wrappers and
// the bytes that wrapper still replays; nil when c is not one of them.
func unwrap(c net.Conn) (net.Conn, []byte) {
	switch w := c.(type) {
	case *prefixConn:
		return w.Conn, w.pre
	case *proxiedConn:
		return w.Conn, w.pre
	case *limitedConn:
		return w.Conn, nil
	case *tls.Conn:
		return w.NetConn(), nil // what it buffers is in the tls.Conn: see tlsParkConn
	}
	return nil, nil
}

// innermost is the connection under all of the router's wrappers.
func innermost(c net.Conn) net.Conn {
	for {
		in, _ := unwrap(c)
		if in == nil {
			return c
		}
		c = in
	}
}

// replaying reports whether a wrapper still holds bytes read from the
// socket before fasthttp got the connection.
func (p *parkConn) replaying() bool {
	if p.hasFirst {
		return true
	}
	for c := p.Conn; c != nil; {
		in, pre := unwrap(c)
		if len(pre) > 0 {
			return true
		}
		c = in
	}
	return false
}

// arm is called by the handler when the exchange it served leaves the
// connection at a request boundary (body consumed, no upgrade).
func (p *parkConn) arm() { p.state = parkArmed }

// SetReadDeadline sets the deadline the next Read arms (p.next). Its error
// is the arming's, returned by that Read.
func (p *parkConn) SetReadDeadline(t time.Time) error {
	if p.state != parkArmed {
		p.state = parkNone
		p.next, p.hasNext = t, true
		return nil
	}
	p.idleDL = t
	p.state = parkIdle
	var soon time.Time
	if !t.IsZero() && p.idle > 0 {
		soon = t.Add(parkAfter - p.idle) // fasthttp's now + parkAfter
	} else {
		soon = p.l.rt.now().Add(parkAfter)
	}
	if t.IsZero() || soon.Before(t) {
		t = soon
	}
	p.next, p.hasNext = t, true
	return nil
}

// armRead arms p.next on the connection.
func (p *parkConn) armRead() error {
	p.hasNext, p.rdlKnown = false, false
	if err := p.Conn.SetReadDeadline(p.next); err != nil {
		return err
	}
	p.rdl, p.rdlKnown = p.next, true
	return nil
}

// forget makes p's read deadline state unknown: something beneath p (the
// parker, awaitTLS, resume) set the deadline directly.
func (p *parkConn) forget() { p.hasNext, p.rdlKnown = false, false }

// readDeferred reads under the deadline set last. When it is not earlier
// than the one armed (or is none), the read goes first under the armed
// one: bytes already in the socket come back before any deadline counts,
// and only a read that times out arms the deadline it was meant to have
// and reads again. A timeout does not break the connection (for a
// tls.Conn, see tlsParkConn), so no byte is lost. An earlier one is armed
// first: a deadline may come early, never late.
func (p *parkConn) readDeferred(b []byte) (int, error) {
	if p.hasNext && !(p.rdlKnown && !p.rdl.IsZero() && (p.next.IsZero() || !p.next.Before(p.rdl))) {
		if err := p.armRead(); err != nil {
			return 0, err
		}
	}
	n, err := p.Conn.Read(b)
	if n == 0 && p.hasNext && errors.Is(err, os.ErrDeadlineExceeded) {
		if err := p.armRead(); err != nil {
			return 0, err
		}
		return p.Conn.Read(b)
	}
	return n, err
}

// SetWriteDeadline renews the write deadline lazily (lazyKeep): every
// response arms it (h1.go) and every read of its body renews it (relay.go).
// All write deadlines of the connection go through here or SetDeadline,
// on the goroutine serving it, so p.wdl is the one armed.
func (p *parkConn) SetWriteDeadline(t time.Time) error {
	return p.renewWriteDeadline(t, time.Now())
}

// renewWriteDeadline is SetWriteDeadline(t) with t computed from now
// (writeRenewer): the request's own reading of the clock.
func (p *parkConn) renewWriteDeadline(t, now time.Time) error {
	if lazyKeep(p.wdl, t, now) {
		return nil
	}
	p.wdl = time.Time{} // unknown if the call fails
	if err := p.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	p.wdl = t
	return nil
}

// SetDeadline is the embedded conn's, keeping p.wdl (SetWriteDeadline)
// and p.rdl (SetReadDeadline).
func (p *parkConn) SetDeadline(t time.Time) error {
	p.wdl = time.Time{}
	p.forget()
	if err := p.Conn.SetDeadline(t); err != nil {
		return err
	}
	p.wdl, p.rdl, p.rdlKnown = t, t, true
	return nil
}

func (p *parkConn) Read(b []byte) (int, error) {
	if p.hasFirst && len(b) > 0 { // read by resume (awaitTLS)
		p.state, p.hasFirst = parkNone, false
		b[0] = p.first[0]
		return 1, nil
	}
	if p.state != parkIdle {
		p.state = parkNone
		return p.readDeferred(b)
	}
	// The keep-alive wait: its deadline (parkAfter) decides the park.
	p.state = parkNone
	if p.hasNext {
		if err := p.armRead(); err != nil {
			return 0, err
		}
	}
	n, err := p.Conn.Read(b)
	if n == 0 && errors.Is(err, os.ErrDeadlineExceeded) && !p.replaying() &&
		(p.idleDL.IsZero() || p.l.rt.now().Before(p.idleDL)) {
		p.parked.Store(true)
		return 0, errParked
	}
	return n, err
}

// Close closes the connection, unless fasthttp is letting go of it to park.
func (p *parkConn) Close() error {
	if p.parked.Load() {
		return nil
	}
	return p.Conn.Close()
}

// closed is the ConnState hook's StateClosed (or StateHijacked) for p. It
// is fasthttp's last touch of the connection, so only now may another
// goroutine take it: a parked connection goes to the parker; false means it
// really closed (or now belongs to a tunnel) and is no longer tracked.
func (p *parkConn) closed() (parked bool) {
	if !p.parked.Load() {
		p.l.untrack(p)
		return false
	}
	p.l.park(p)
	return true
}

// track adds p to the listener's live connections; false (p closed, not
// counted) once the listener has closed them all.
func (l *frontListener) track(p *parkConn) bool {
	if !l.conns.add(p.under) {
		p.closeNow()
		return false
	}
	return true
}

// untrack takes p off the live connections (idempotent).
func (l *frontListener) untrack(p *parkConn) { l.conns.remove(p.under) }

// park hands p to the router's parker (park_linux.go), or closes p when
// the listener is shutting down.
func (l *frontListener) park(p *parkConn) {
	p.parked.Store(false)
	// In the parked set until it is served again or closed: shutdown
	// waits for it.
	if !l.parked.add((*parkedKey)(p)) {
		p.drop()
		return
	}
	l.parks.Add(1)
	l.rt.trim.parked()
	p.wait()
}

// dropParked closes p, parked, and lets go of it.
func (l *frontListener) dropParked(p *parkConn) {
	p.drop()
	l.parked.remove((*parkedKey)(p))
}

// closeParked closes every parked connection (each is taken off the
// parker and accounted, or cut under the goroutine resuming it) and parks
// none from now on. Called at shutdown, after the grace
// in which idle connections may still bring a request.
func (l *frontListener) closeParked() { l.parked.closeAll() }

// closeConns closes every HTTP/1.1 connection it tracks, requests in
// flight included, and admits none from now on: Shutdown's context ended.
// Their goroutines see the close at their next client read or write (a
// response stalled on its node ends with the node's inactivity timeout),
// account and exit.
func (l *frontListener) closeConns() {
	l.parked.closeAll()
	l.conns.closeAll()
}

// awaitTLS tells, once bytes have arrived on a parked TLS connection,
// whether they start a request. A TLS record may carry none: a TLS 1.3
// KeyUpdate (RFC 8446 §4.6.3), a warning alert or user_canceled, an empty
// record. crypto/tls handles those inside Read, which returns only with
// plaintext or an error, so resume reads one byte of plaintext itself
// (kept in p.first for fasthttp) within parkAfter: again reports that none
// came (the records carried no request, or the rest of a record is still
// on its way; a read timeout does not break a tls.Conn) and the connection
// goes back to waiting, under the same idle deadline. Handed to fasthttp
// instead, it would have had the header timeout for a request the client
// never meant to send.
func (p *parkConn) awaitTLS() (again bool, err error) {
	rt := p.l.rt
	now := rt.now()
	dl := now.Add(parkAfter)
	if !p.idleDL.IsZero() && p.idleDL.Before(dl) {
		dl = p.idleDL
	}
	_ = p.tc.SetReadDeadline(dl)
	// A KeyUpdate that asks for ours makes Read write one: a write that
	// times out would break the connection for good.
	_ = p.SetWriteDeadline(now.Add(rt.timeouts().Timeout))
	n, err := p.tc.Read(p.first[:])
	switch {
	case n == 1:
		p.hasFirst = true
		return false, nil
	case err == nil:
		return false, io.ErrNoProgress
	case isTimeout(err) && (p.idleDL.IsZero() || rt.now().Before(p.idleDL)):
		return true, nil
	}
	return false, err
}

// serveConn serves p until it closes, parks or is hijacked, with the
// current generation's server, held meanwhile: after a park, a reload since
// applies at once.
func (l *frontListener) serveConn(p *parkConn) {
	p.forget() // a resume, a park, awaitTLS set deadlines beneath p
	g := l.acquire()
	defer l.release(g)
	// fasthttp's keep-alive wait: IdleTimeout, else ReadTimeout
	// (fasthttp.Server.idleTimeout).
	p.idle = g.h1.IdleTimeout
	if p.idle <= 0 {
		p.idle = g.h1.ReadTimeout
	}
	err := g.h1.ServeConn(p.served)
	switch {
	case err == fasthttp.ErrConcurrencyLimit:
		// Refused before serving: closed without the StateClosed hook.
		l.untrack(p)
		p.front.connClosed()
	case err != nil:
		l.rt.log.Debug("http front: connection ended", "listener", l.name, "remote", p.RemoteAddr(), "err", err)
	}
}

// drop closes a connection fasthttp no longer serves and stops counting it.
func (p *parkConn) drop() {
	_ = p.Conn.Close()
	p.l.untrack(p)
	p.front.connClosed()
}

// parkState is what a listener keeps for its HTTP/1.1 connections that can
// park. Both sets are keyed by parkConn.under.
type parkState struct {
	conns  connSet      // every live one
	parked connSet      // those parked (parkedKey), until served again or closed; cut: no more parking
	parks  atomic.Int64 // connections parked so far
}

// parkedCount counts the connections parked now.
func (s *parkState) parkedCount() int { return s.parked.size() }
