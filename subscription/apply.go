package subscription

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"runtime/debug"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// smallBuf is the capacity of pooled datagram buffers. Real announces are
// 100-300 bytes, signed ones with SNI paths under 2 KiB; anything larger
// gets a buffer of its own that is not pooled.
const smallBuf = 2048

// packet is one received datagram on its way from a reader to the applier.
// buf is owned by whoever holds the packet: the queue, then the applier,
// which releases it.
type packet struct {
	buf *[]byte
	src netip.AddrPort // sender; zero for unix sockets
	sk  *socket        // the listener it arrived on
}

// result is what happened to one datagram. It indexes metrics.packets.
type result uint8

const (
	resSubscribe   result = iota // new node (and maybe new pool)
	resRefresh                   // known node re-announced
	resUnsubscribe               // cmd != 0, whether or not the node existed
	resInvalid                   // malformed, or refused by the table
	resDropped                   // queue full
	resDenied                    // refused by the Gate (allow-lists, signature, replay)
	numResults
)

var resultNames = [numResults]string{"subscribe", "refresh", "unsubscribe", "invalid", "dropped", "denied"}

func (r result) String() string { return resultNames[r] }

// Errors for datagrams that parse but cannot be applied. Preallocated: this
// is input-driven.
var (
	errPortFromUnix = errors.New("subscription: \":port\" address received on a unix socket")
	errTooLarge     = errors.New("subscription: datagram larger than 64 KiB")
)

// readLoop owns sk's reads until the socket is closed. Its buffers are
// allocated once; every datagram is copied out before the next read.
func (s *Server) readLoop(ctx context.Context, sk *socket) {
	r := newDatagramReader(sk)
	for {
		n, err := r.read()
		if d := r.overflowed(); d > 0 {
			s.m.packets[resDropped].Add(float64(d))
			s.dropWarn()
		}
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			s.readError(ctx, sk, err)
			continue
		}
		for i := range n {
			b, src := r.datagram(i)
			if s.gate != nil && !s.gate.AllowSource(src) {
				s.m.packets[resDenied].Inc()
				continue
			}
			if len(b) > MaxDatagram {
				s.m.packets[resInvalid].Inc()
				s.logInvalid(errTooLarge, src, sk)
				continue
			}
			s.enqueue(b, src, sk)
		}
		// A reader that keeps finding datagrams would otherwise run its
		// whole time slice and, sharing a P with the applier (one core,
		// or all of them busy), fill the queue and drop what the socket
		// buffer could have held. Past half full, the applier gets a turn;
		// a few, as the scheduler sometimes picks the yielder again. Never
		// a wait: an applier that is stuck still means counted drops.
		for i := 0; i < 4 && len(s.queue) > cap(s.queue)/2; i++ {
			runtime.Gosched()
		}
	}
}

// readError logs a failed read (rate-limited) and pauses briefly, so that a
// persistent error cannot spin a core.
func (s *Server) readError(ctx context.Context, sk *socket, err error) {
	if s.errLog.allow(s.now()) {
		s.log.Warn("subscription: read failed", "listener", sk.addr, "err", err)
	}
	t := time.NewTimer(10 * time.Millisecond)
	select {
	case <-ctx.Done():
		t.Stop()
	case <-t.C:
	}
}

// enqueue copies b into a pooled buffer and offers it to the applier. It
// never blocks: when the queue (or its byte budget) is full the datagram is
// dropped and counted.
func (s *Server) enqueue(b []byte, src netip.AddrPort, sk *socket) {
	size := int64(smallBuf)
	if len(b) > smallBuf {
		size = int64(len(b))
	}
	if s.queued.Add(size) > s.queueBytes {
		s.queued.Add(-size)
		s.drop()
		return
	}
	var bp *[]byte
	if len(b) <= smallBuf {
		bp = s.bufs.Get().(*[]byte)
	} else {
		nb := make([]byte, 0, len(b))
		bp = &nb
	}
	*bp = append((*bp)[:0], b...)
	select {
	case s.queue <- packet{buf: bp, src: src, sk: sk}:
	default:
		s.release(bp)
		s.drop()
	}
}

func (s *Server) drop() {
	s.m.packets[resDropped].Inc()
	s.dropWarn()
}

// dropWarn logs, rate-limited, that datagrams are being dropped: the queue
// or the socket buffer under it is full because they come faster than the
// applier can apply them.
func (s *Server) dropWarn() {
	if s.dropLog.allow(s.now()) {
		s.log.Warn("subscription: datagrams arrive faster than they are applied, dropping some", "queue_depth", cap(s.queue))
	}
}

// release returns a packet buffer and its share of the byte budget.
func (s *Server) release(bp *[]byte) {
	if cap(*bp) == smallBuf {
		s.queued.Add(-smallBuf)
		*bp = (*bp)[:0]
		s.bufs.Put(bp)
		return
	}
	s.queued.Add(-int64(cap(*bp)))
}

// applyLoop is the applier goroutine: the only caller of s.applying.
func (s *Server) applyLoop(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-s.queue:
			s.handle(*p.buf, p.src, p.sk)
			s.release(p.buf)
		}
	}
}

// handle applies one datagram and counts its result. A panic while applying
// is a bug, not a property of the input, but it must not take subscriptions
// down with it: the datagram is counted invalid and the error logged at most
// once per logInterval.
func (s *Server) handle(datagram []byte, src netip.AddrPort, sk *socket) {
	defer func() {
		if r := recover(); r != nil {
			s.m.packets[resInvalid].Inc()
			if s.errLog.allow(s.now()) {
				s.log.Error("subscription: BUG: panic applying a datagram", "panic", r,
					"source", srcString(src), "listener", sk.name(), "stack", string(debug.Stack()))
			}
		}
	}()
	s.m.packets[s.applying.apply(s, datagram, src, sk)].Inc()
}

// applier is the parse state of the applier goroutine, reused for every
// datagram so that a refresh allocates nothing here. Owned by one goroutine.
type applier struct {
	sub  uwsgi.Subscription // aliases the current datagram during apply
	ann  balancer.Announce  // reused: a pointer passed through the Table interface escapes
	addr []byte             // ":port" resolution scratch
	http []byte             // "http://" + address for proto=h announces
}

// apply parses datagram and applies it to s.table. It does not count the
// result; handle does. The datagram is not retained.
//
// The command is the header's modifier2: 0 subscribes or refreshes, anything
// else unsubscribes (uWSGI senders use 1; 5 was observed to work too).
// modifier1 is not checked. Address ":port" is the sender's IP with that
// port.
func (ap *applier) apply(s *Server, datagram []byte, src netip.AddrPort, sk *socket) result {
	sub := &ap.sub
	if err := uwsgi.ParseSubscription(datagram, sub); err != nil {
		s.logInvalid(err, src, sk)
		return resInvalid
	}
	addr, ok := ap.resolve(sub.Address, src)
	if !ok {
		s.logInvalid(errPortFromUnix, src, sk)
		return resInvalid
	}
	if sub.IsHTTP() && !hasHTTPScheme(addr) {
		// uWSGI master's proto=h: the node speaks HTTP at "ip:port". Its
		// identity here is the http:// form, in subscribes and
		// unsubscribes alike, so it is one node whichever way it is named.
		ap.http = append(append(ap.http[:0], "http://"...), addr...)
		addr = ap.http
	}
	if s.gate != nil {
		if err := s.gate.Admit(sub, datagram, addr); err != nil {
			s.logInvalid(err, src, sk)
			return resDenied
		}
	}
	if sub.Unsubscribe {
		// An unsubscribe is a drain with the default deadline: requests in
		// flight finish, then the node is removed (README, "Drains").
		known := s.table.Unsubscribe(sub.Key, addr, time.Duration(sub.DrainTimeout)*time.Second)
		if known {
			// A node with requests in flight drains first and is removed
			// once drained (the lifecycle logs "node drained").
			draining := stateOf(s.table, sub.Key, addr) == balancer.StateDraining
			s.log.Info("node left", "pool", string(sub.Key), "node", string(addr), "source", "datagram",
				"reason", "unsubscribe", "draining", draining, "sender", srcString(src))
		}
		return resUnsubscribe
	}
	a := &ap.ann
	*a = balancer.Announce{
		Key:       sub.Key,
		Address:   addr,
		Modifier1: sub.Modifier1,
		Modifier2: sub.Modifier2,
		Weight:    sub.Weight, // 0 → 1 in the balancer, as uWSGI
		Cores:     sub.Cores,
		Load:      sub.Load,
		Notify:    sub.Notify,
		Algo:      sub.Algo,
		Backup:    sub.Backup, // backup=N: serves only when no lower level can
		// drain=1 (our extension, ignored by uWSGI routers) starts a drain.
		Drain:        sub.Drain,
		DrainTimeout: time.Duration(sub.DrainTimeout) * time.Second,
	}
	if sub.Sign != nil && sub.HasUnix {
		// Whether or not this router checks signatures, its cluster peers
		// may: they verify the datagram itself (subauth.AdmitRelayed).
		a.Proof = datagram
	}
	was := balancer.StateActive
	if sub.Drain { // rare: only then is the node looked up twice
		was = stateOf(s.table, sub.Key, addr)
	}
	res, err := s.table.Announce(a)
	*a = balancer.Announce{} // do not keep the datagram reachable
	if err != nil {
		s.logInvalid(err, src, sk)
		return resInvalid
	}
	r := resSubscribe
	if res == balancer.Refreshed {
		r = resRefresh
	}
	// Plain refreshes arrive every few seconds from every node: not logged.
	switch {
	case r == resSubscribe:
		s.log.Info("node joined", "pool", string(sub.Key), "node", string(addr), "source", "datagram",
			"weight", max(sub.Weight, 1), "backup", sub.Backup, "draining", sub.Drain, "sender", srcString(src))
	case sub.Drain && was != balancer.StateDraining && was != balancer.StateDrained &&
		stateOf(s.table, sub.Key, addr) == balancer.StateDraining:
		s.log.Info("drain started", "pool", string(sub.Key), "node", string(addr), "source", "datagram",
			"sender", srcString(src))
	}
	if s.log.Enabled(context.Background(), slog.LevelDebug) && (r == resSubscribe || sub.Drain) {
		s.log.Debug("subscription: "+r.String(), "key", string(sub.Key), "address", string(addr),
			"modifier1", sub.Modifier1, "drain", sub.Drain, "source", srcString(src), "listener", sk.name())
	}
	return r
}

// stateOf is the state of the node (key, addr) when t can look nodes up
// (*balancer.Table and the cluster's Origin can), else StateActive; a node
// that is not there is StateActive too. For the log only: it does not
// lock anything.
func stateOf(t Table, key, addr []byte) balancer.State {
	l, ok := t.(interface{ Pool(string) *balancer.Pool })
	if !ok {
		return balancer.StateActive
	}
	if p := l.Pool(string(key)); p != nil {
		if n := p.Node(string(addr)); n != nil {
			return n.State()
		}
	}
	return balancer.StateActive
}

// resolve turns ":port" into "ip:port" ("[ip6]:port") using the sender's
// address; other addresses are returned as they are. ok is false for ":port"
// from a unix socket, which has no IP. The port is not checked here: the
// table validates the resulting address like any other.
func (ap *applier) resolve(addr []byte, src netip.AddrPort) (_ []byte, ok bool) {
	if len(addr) == 0 || addr[0] != ':' {
		return addr, true
	}
	if !src.IsValid() {
		return nil, false
	}
	ip := src.Addr().Unmap() // a dual-stack socket reports IPv4 senders as ::ffff:a.b.c.d
	b := ap.addr[:0]
	if ip.Is6() {
		b = append(b, '[')
		b = ip.AppendTo(b)
		b = append(b, ']')
	} else {
		b = ip.AppendTo(b)
	}
	b = append(b, addr...)
	ap.addr = b
	return b, true
}

// logInvalid logs a refused datagram at debug level; building the record
// costs nothing when debug is off.
func (s *Server) logInvalid(err error, src netip.AddrPort, sk *socket) {
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("subscription: invalid datagram", "err", err,
			"source", srcString(src), "listener", sk.name())
	}
}

func srcString(src netip.AddrPort) string {
	if !src.IsValid() {
		return "unix"
	}
	return src.String()
}

// name is the listener's bound address; "" for nil (tests apply datagrams
// without a socket).
func (sk *socket) name() string {
	if sk == nil {
		return ""
	}
	return sk.addr
}

// expireLoop is the expiry goroutine: it removes nodes silent for longer
// than the tolerance, checking every tolerance/4 (50ms..1s), so a node is
// gone at most tolerance+tick after its last announce, whether or not any
// request asks for its key.
func (s *Server) expireLoop(ctx context.Context) {
	t := time.NewTicker(s.tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if n := s.table.Expire(s.tolerance); n > 0 {
				s.m.expired.Add(float64(n))
				s.log.Debug("subscription: expired silent nodes", "removed", n, "tolerance", s.tolerance)
			}
		}
	}
}

func hasHTTPScheme(a []byte) bool {
	return len(a) >= 7 && bytes.EqualFold(a[:7], []byte("http://"))
}
