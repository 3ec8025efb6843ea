// Package subscription is the subscription server: it receives the
// datagrams uWSGI 2.0 nodes send with --subscribe-to (over UDP or unix
// datagram sockets), applies them to the routing table, and expires nodes
// that stop announcing.
//
// Flow of one Server:
//
//	socket ─▶ reader ─▶ bounded queue ─▶ applier ─▶ Table.Announce / Unsubscribe
//	          (one per   (full: drop      (one; parses, resolves ":port",
//	           socket)    and count)       counts the result)
//	ticker ─▶ expiry ─▶ Table.Expire(tolerance)
//
// A reader never blocks on anything but its socket: it takes up to 16
// datagrams per system call (recvmmsg on Linux), copies each into a pooled
// buffer and offers it to the queue without waiting, so a flood of datagrams
// costs drops, never a stalled read loop, and nothing here holds a lock the
// request path waits on. Past a half-full queue it yields, so an applier
// sharing its core drains the queue before the socket buffer would have to. The applier handles datagrams in arrival
// order. The expiry goroutine removes silent nodes on a timer, whereas uWSGI
// only expires them lazily, when a request happens to look the key up.
//
// The wire format is decoded by internal/uwsgi (ParseSubscription); see
// README, "Subscriptions", and uWSGI's core/subscription.c
// (uwsgi_subscription_ub sends, plugins/corerouter/cr_common.c
// uwsgi_corerouter_manage_subscription receives) for the protocol.
package subscription

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/sockutil"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Table is the part of the routing table the subscription server changes.
// *balancer.Table implements it. Implementations must be safe for concurrent
// use: Announce and Unsubscribe are called from the applier goroutine while
// Expire runs on the expiry goroutine. Byte slices in an Announce are only
// valid during the call.
type Table interface {
	Announce(*balancer.Announce) (balancer.Result, error)
	// Unsubscribe drains the node (timeout 0 = the table's default
	// deadline) and removes it once drained; it reports whether it existed.
	Unsubscribe(key, address []byte, timeout time.Duration) bool
	Expire(tolerance time.Duration) int
}

// Defaults for zero Config fields.
const (
	DefaultTolerance  = 30 * time.Second
	DefaultQueueDepth = 4096
	DefaultQueueBytes = 16 << 20
)

// MaxDatagram is the largest datagram accepted. uWSGI reads 4096 bytes and
// silently truncates; we take anything a UDP datagram can carry and count a
// longer unix datagram as invalid rather than parse a truncated one.
const MaxDatagram = 64 << 10

// Limits that keep a configuration from asking for absurd memory.
const (
	maxQueueDepth = 1 << 20
	minTick       = 50 * time.Millisecond
	maxTick       = time.Second
)

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Addrs are the sockets to listen on. An address that contains '/' or
	// starts with '@' is a unix datagram socket path ('@' = Linux abstract
	// namespace); anything else is UDP "ip:port", "[ip6]:port" or ":port"
	// (all interfaces). Hosts must be numeric, as in uWSGI. Port 0 picks a
	// free port; Server.Addrs reports it. Empty: no socket, only the expiry
	// timer runs.
	Addrs []string
	// Tolerance removes a node that has not announced for this long.
	// Default DefaultTolerance (uWSGI's --subscription-tolerance is 17s).
	Tolerance time.Duration
	// QueueDepth bounds the datagrams received but not yet applied.
	// Default DefaultQueueDepth.
	QueueDepth int
	// QueueBytes bounds the buffer memory those datagrams hold, so a flood
	// of 64 KiB datagrams cannot pin QueueDepth×64 KiB. At least
	// MaxDatagram. Default DefaultQueueBytes.
	QueueBytes int
	// Logger receives logs. Anything that can happen once per datagram is
	// logged at debug level only. Default: discard.
	Logger *slog.Logger
	// Registerer receives the metrics (see metrics.go). Default: a private
	// registry, i.e. metrics are not exported.
	Registerer prometheus.Registerer
	// Now is the clock used to rate-limit warnings. Default time.Now. Node
	// expiry uses the Table's clock.
	Now func() time.Time
	// ListenPacket, if set, opens each socket instead of net.ListenUDP or
	// net.ListenUnixgram. The router passes (*upgrade.Upgrader).ListenPacket,
	// so that the sockets survive a binary upgrade. It is called with the
	// address exactly as configured: ("udp", ":2626"), ("udp4",
	// "127.0.0.1:2626"), ("udp6", "[::1]:2626"), or ("unixgram", a path or
	// "@name"), and must return a *net.UDPConn for udp networks and a
	// *net.UnixConn for unixgram; Start calls it once per address.
	//
	// For a unix path it may hand back a socket inherited from the previous
	// process, already bound there, or bind afresh. The server therefore
	// does not clear a stale socket file up front (it would find the
	// inherited socket live and refuse): only when the hook's fresh bind
	// fails with "address already in use" does it remove a stale socket
	// file (never a live socket, never a non-socket) and call the hook once
	// more.
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// Gate, if set, decides which datagrams may change the table (source
	// allow-list, signatures, replay, node allow-list; see package
	// subauth). Denied datagrams count as result "denied".
	Gate Gate
}

// Gate admits or denies datagrams. *subauth.Guard implements it.
type Gate interface {
	// AllowSource is called by every reader before a datagram is queued,
	// with the UDP source (the zero AddrPort for unix sockets). It must be
	// cheap, allocation-free and safe for concurrent use.
	AllowSource(src netip.AddrPort) bool
	// Admit is called by the applier for every datagram that parsed, with
	// the whole datagram and the node address after ":port" resolution.
	// A non-nil error denies the datagram. sub and the slices are only
	// valid during the call.
	Admit(sub *uwsgi.Subscription, datagram, address []byte) error
}

// DefaultConfig returns the defaults, listening on uWSGI's customary
// subscription port on loopback.
func DefaultConfig() Config {
	return Config{
		Addrs:      []string{"127.0.0.1:2626"},
		Tolerance:  DefaultTolerance,
		QueueDepth: DefaultQueueDepth,
		QueueBytes: DefaultQueueBytes,
	}
}

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("subscription: server closed")

var errStarted = errors.New("subscription: server already started")

// listenAddr is one validated Config.Addrs entry. Immutable.
type listenAddr struct {
	addr    string         // as configured
	unix    bool           // unix datagram socket at addr
	network string         // UDP: "udp", "udp4" or "udp6"
	udp     netip.AddrPort // UDP: address to bind; invalid Addr = all interfaces
}

func parseListenAddr(a string) (listenAddr, error) {
	if strings.Contains(a, "/") || strings.HasPrefix(a, "@") {
		if a == "@" || strings.IndexByte(a, 0) >= 0 {
			return listenAddr{}, errors.New("bad unix socket name")
		}
		return listenAddr{addr: a, unix: true}, nil
	}
	host, port, err := net.SplitHostPort(a)
	if err != nil {
		return listenAddr{}, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return listenAddr{}, fmt.Errorf("bad port %q", port)
	}
	la := listenAddr{addr: a, network: "udp"}
	if host == "" {
		la.udp = netip.AddrPortFrom(netip.Addr{}, uint16(p))
		return la, nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return listenAddr{}, fmt.Errorf("host %q is not an IP address", host)
	}
	la.network = "udp6"
	if ip.Is4() {
		la.network = "udp4"
	}
	la.udp = netip.AddrPortFrom(ip, uint16(p))
	return la, nil
}

// Server receives subscription datagrams and applies them to a Table.
// Its methods are safe for concurrent use. Start it once; Close it when done.
type Server struct {
	// Immutable after New.
	table      Table
	listen     []listenAddr
	tolerance  time.Duration
	tick       time.Duration
	queueBytes int64
	log        *slog.Logger
	now        func() time.Time
	listenPkt  func(network, addr string) (net.PacketConn, error) // nil: bind directly
	gate       Gate                                               // nil: everything that parses is applied
	m          *metrics
	queue      chan packet // readers send without blocking; the applier receives

	queued atomic.Int64 // buffer bytes held by queued packets; readers add, the applier subtracts
	bufs   sync.Pool    // *[]byte of capacity smallBuf; readers Get, the applier Puts

	dropLog  logLimiter // warning about a full queue
	errLog   logLimiter // read errors and recovered panics
	applying applier    // owned by the applier goroutine (tests drive it directly on an unstarted server)

	mu        sync.Mutex // guards state, socks, cancel, handedOff
	state     serverState
	socks     []*socket
	cancel    context.CancelFunc
	handedOff bool           // Close leaves unix socket files to the successor process
	wg        sync.WaitGroup // one count per goroutine Start starts; Close waits for all
}

type serverState uint8

const (
	stateNew serverState = iota
	stateStarted
	stateClosed
)

// New validates cfg once and returns a server that is not yet listening. It
// registers the metrics on cfg.Registerer.
func New(cfg Config, table Table) (*Server, error) {
	if table == nil {
		return nil, errors.New("subscription: nil table")
	}
	seen := make(map[string]bool, len(cfg.Addrs))
	listen := make([]listenAddr, 0, len(cfg.Addrs))
	for _, a := range cfg.Addrs {
		la, err := parseListenAddr(a)
		if err != nil {
			return nil, fmt.Errorf("subscription server %s: %w", a, err)
		}
		if seen[a] {
			return nil, fmt.Errorf("subscription server %s: listed twice", a)
		}
		seen[a] = true
		listen = append(listen, la)
	}
	switch {
	case cfg.Tolerance < 0:
		return nil, fmt.Errorf("subscription: negative tolerance %s", cfg.Tolerance)
	case cfg.Tolerance == 0:
		cfg.Tolerance = DefaultTolerance
	}
	switch {
	case cfg.QueueDepth < 0 || cfg.QueueDepth > maxQueueDepth:
		return nil, fmt.Errorf("subscription: queue depth %d out of range 1..%d", cfg.QueueDepth, maxQueueDepth)
	case cfg.QueueDepth == 0:
		cfg.QueueDepth = DefaultQueueDepth
	}
	switch {
	case cfg.QueueBytes == 0:
		cfg.QueueBytes = DefaultQueueBytes
	case cfg.QueueBytes < MaxDatagram:
		return nil, fmt.Errorf("subscription: queue bytes %d below %d", cfg.QueueBytes, MaxDatagram)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	s := &Server{
		table:      table,
		listen:     listen,
		tolerance:  cfg.Tolerance,
		tick:       min(max(cfg.Tolerance/4, minTick), maxTick),
		queueBytes: int64(cfg.QueueBytes),
		log:        cfg.Logger,
		now:        cfg.Now,
		listenPkt:  cfg.ListenPacket,
		gate:       cfg.Gate,
		m:          m,
		queue:      make(chan packet, cfg.QueueDepth),
	}
	s.bufs.New = func() any { b := make([]byte, 0, smallBuf); return &b }
	return s, nil
}

// Start binds every socket, then starts the reader, applier and expiry
// goroutines. If a bind fails, the sockets already bound are closed, no
// goroutine is left running, and the error names the address
// ("subscription server 127.0.0.1:2626: bind: address already in use").
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch s.state {
	case stateStarted:
		return errStarted
	case stateClosed:
		return ErrClosed
	}
	socks := make([]*socket, 0, len(s.listen))
	for _, la := range s.listen {
		sk, err := bind(la, s.listenPkt)
		if err != nil {
			for _, o := range socks {
				_ = o.close()
			}
			return fmt.Errorf("subscription server %s: %w", la.addr, err)
		}
		socks = append(socks, sk)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s.socks, s.cancel, s.state = socks, cancel, stateStarted
	for _, sk := range socks {
		s.goSafe(ctx, "reader "+sk.addr, func() { s.readLoop(ctx, sk) })
	}
	s.goSafe(ctx, "applier", func() { s.applyLoop(ctx) })
	s.goSafe(ctx, "expiry", func() { s.expireLoop(ctx) })
	return nil
}

// Addrs returns the addresses the server listens on: after Start the bound
// ones (with the real port when 0 was asked for), before it the configured
// ones.
func (s *Server) Addrs() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.listen))
	if s.socks != nil {
		for _, sk := range s.socks {
			out = append(out, sk.addr)
		}
		return out
	}
	for _, la := range s.listen {
		out = append(out, la.addr)
	}
	return out
}

// Handoff makes Close leave the unix socket files in place: a successor
// process (see internal/upgrade) inherited the sockets and serves those
// paths now. Call it after a successful upgrade and before Close.
func (s *Server) Handoff() {
	s.mu.Lock()
	s.handedOff = true
	s.mu.Unlock()
}

// Close stops every goroutine, waits for them, closes the sockets and removes
// the unix socket files it created (unless Handoff was called). Datagrams
// still queued are discarded. It may be called more than once and before
// Start; every call returns only once the goroutines are gone.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.state != stateStarted {
		s.state = stateClosed
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.state = stateClosed
	s.cancel()
	// Closing a conn is what unblocks its reader's read.
	var errs []error
	for _, sk := range s.socks {
		if err := sk.conn.Close(); err != nil {
			errs = append(errs, fmt.Errorf("subscription server %s: %w", sk.addr, err))
		}
	}
	socks := s.socks
	if s.handedOff {
		socks = nil // the files belong to the successor now
	}
	s.mu.Unlock()
	s.wg.Wait()
	for _, sk := range socks {
		if err := sk.removeFile(); err != nil {
			errs = append(errs, fmt.Errorf("subscription server %s: %w", sk.addr, err))
		}
	}
	for {
		select {
		case p := <-s.queue:
			s.release(p.buf)
		default:
			return errors.Join(errs...)
		}
	}
}

// goSafe runs f on a goroutine owned by s.wg. A panic (a bug: input never
// panics) is logged and f is restarted after a second, so one bad path
// cannot silently stop subscriptions or expiry for the life of the process.
func (s *Server) goSafe(ctx context.Context, name string, f func()) {
	s.wg.Go(func() {
		for {
			if !s.runRecovered(name, f) || ctx.Err() != nil {
				return
			}
			t := time.NewTimer(time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case <-t.C:
			}
		}
	})
}

// runRecovered calls f and reports whether it panicked.
func (s *Server) runRecovered(name string, f func()) (panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
			s.log.Error("subscription: BUG: goroutine panicked; restarting it", "goroutine", name,
				"panic", r, "stack", string(debug.Stack()))
		}
	}()
	f()
	return false
}

// socket is one bound listener. Immutable after bind; conn is closed by
// Server.Close.
type socket struct {
	addr string       // bound address (UDP: with the real port) or unix path
	conn net.Conn     // *net.UDPConn or *net.UnixConn
	udp  *net.UDPConn // set for UDP sockets
	file os.FileInfo  // unix path sockets: the file bind created; nil otherwise
}

// listenFunc is Config.ListenPacket.
type listenFunc = func(network, addr string) (net.PacketConn, error)

// bind opens one socket, through listen if it is not nil.
func bind(la listenAddr, listen listenFunc) (*socket, error) {
	if la.unix {
		return bindUnix(la.addr, listen)
	}
	var c *net.UDPConn
	if listen != nil {
		pc, err := listen(la.network, la.addr)
		if err != nil {
			return nil, unwrapOpError(err)
		}
		var ok bool
		if c, ok = pc.(*net.UDPConn); !ok {
			if pc != nil {
				pc.Close()
			}
			return nil, fmt.Errorf("listen hook returned a %T; want *net.UDPConn", pc)
		}
	} else {
		laddr := &net.UDPAddr{Port: int(la.udp.Port())}
		if la.udp.Addr().IsValid() {
			laddr = net.UDPAddrFromAddrPort(la.udp)
		}
		var err error
		if c, err = net.ListenUDP(la.network, laddr); err != nil {
			return nil, unwrapOpError(err)
		}
	}
	// Absorb bursts (every node announcing at once after a router restart);
	// the kernel caps it at net.core.rmem_max, which is fine.
	_ = c.SetReadBuffer(4 << 20)
	return &socket{addr: c.LocalAddr().String(), conn: c, udp: c}, nil
}

func bindUnix(path string, listen listenFunc) (*socket, error) {
	abstract := path[0] == '@'
	var c *net.UnixConn
	var err error
	if listen != nil {
		if c, err = listenUnixHook(path, abstract, listen); err != nil {
			return nil, err
		}
	} else {
		if !abstract {
			if err := removeStale(path); err != nil {
				return nil, err
			}
		}
		if c, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"}); err != nil {
			return nil, unwrapOpError(err)
		}
	}
	// For an inherited socket the file is the one the previous process
	// bound: the same socket, so "still ours" at Close all the same.
	sk := &socket{addr: path, conn: c}
	if !abstract {
		if sk.file, err = os.Lstat(path); err != nil {
			c.Close()
			return nil, err
		}
	}
	return sk, nil
}

// listenUnixHook opens a unix datagram socket through the Config hook. It
// calls removeStale only after a fresh bind failed on an existing file, so
// an inherited socket (bound by the previous process, hence live) is never
// taken for someone else's.
func listenUnixHook(path string, abstract bool, listen listenFunc) (*net.UnixConn, error) {
	pc, err := listen("unixgram", path)
	if err != nil && !abstract && errors.Is(err, syscall.EADDRINUSE) {
		if rerr := removeStale(path); rerr != nil {
			return nil, rerr
		}
		pc, err = listen("unixgram", path)
	}
	if err != nil {
		return nil, unwrapOpError(err)
	}
	c, ok := pc.(*net.UnixConn)
	if !ok {
		if pc != nil {
			pc.Close()
		}
		return nil, fmt.Errorf("listen hook returned a %T; want *net.UnixConn", pc)
	}
	return c, nil
}

// removeStale removes a socket file a previous run left behind, which would
// make bind fail (see sockutil.RemoveStale); a refusal reads "bind: address
// already in use (a live socket is bound there)".
func removeStale(path string) error {
	err := sockutil.RemoveStale("unixgram", path)
	if errors.Is(err, syscall.EADDRINUSE) {
		err = fmt.Errorf("bind: %w", err)
	}
	return err
}

// unwrapOpError drops net's "listen udp ADDR:" prefix, since the caller
// names the address itself: the result reads "bind: address already in use".
func unwrapOpError(err error) error {
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Err != nil {
		return oe.Err
	}
	return err
}

func (sk *socket) close() error {
	err := sk.conn.Close()
	return errors.Join(err, sk.removeFile())
}

// removeFile removes the unix socket file if it is still the one bind
// created (another process may have replaced it since).
func (sk *socket) removeFile() error {
	if sk.file == nil {
		return nil
	}
	fi, err := os.Lstat(sk.addr)
	if err != nil || !os.SameFile(fi, sk.file) {
		return nil
	}
	if err := os.Remove(sk.addr); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// logLimiter lets one log line through per interval; the rest are dropped.
// Safe for concurrent use.
type logLimiter struct {
	next atomic.Int64 // unix ns before which nothing is logged
}

const logInterval = 10 * time.Second

func (l *logLimiter) allow(now time.Time) bool {
	n := now.UnixNano()
	next := l.next.Load()
	return n >= next && l.next.CompareAndSwap(next, n+int64(logInterval))
}
