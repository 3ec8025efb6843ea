// Package subscription is the subscription server: it receives the
// datagrams uWSGI nodes send with --subscribe-to (UDP or unix datagram
// sockets), applies them to the routing table, and expires nodes that stop
// announcing.
//
// Flow: one reader goroutine per socket copies each datagram into a pooled
// buffer and hands it to a bounded queue; when the queue is full the datagram
// is dropped and counted, so a flood can never block a socket read loop, and
// nothing here ever takes a lock the request path waits on. One applier
// goroutine parses and applies datagrams in arrival order. An expiry
// goroutine removes silent nodes on a timer (uWSGI only expires lazily, when
// a request happens to look the key up).
package subscription

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Table is what the subscription server changes in the routing table.
type Table interface {
	Announce(*balancer.Announce) (balancer.Result, error)
	RemoveNode(key, address string) bool
	Expire(tolerance time.Duration) int
}

// Config configures a Server. Zero values take the documented defaults.
type Config struct {
	// Addrs are the sockets to listen on: "host:port" for UDP, or a path
	// (containing '/', or starting with '@' for the abstract namespace) for a
	// unix datagram socket. Required.
	Addrs []string
	// Tolerance removes a node that has not announced for this long.
	// Default 30s.
	Tolerance time.Duration
	// QueueDepth bounds the datagrams waiting to be applied. Default 4096.
	QueueDepth int
	// Logger receives logs; per-datagram problems are logged at debug level
	// only. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics. Default: a private registry.
	Registerer prometheus.Registerer
}

// MaxDatagram is the largest datagram read whole (uWSGI reads 4096 bytes and
// truncates; we accept anything a UDP datagram can carry).
const MaxDatagram = 64 << 10

// Server is a running subscription server. Start it once, Close it once.
type Server struct {
	cfg   Config
	table Table
	log   *slog.Logger
	m     *metrics

	queue chan packet   // reader goroutines → applier; never closed
	stop  chan struct{} // closed by Close
	wg    sync.WaitGroup

	// Set by Start, read-only afterwards.
	conns []net.PacketConn
	paths []string // unix socket files to remove on Close
	addrs []string
}

// packet is one received datagram. data is a pooled buffer owned by the
// queue until the applier returns it.
type packet struct {
	data *[]byte
	from netip.AddrPort // zero for unix sockets
}

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// New validates cfg.
func New(cfg Config, table Table) (*Server, error) {
	if table == nil {
		return nil, errors.New("subscription: nil table")
	}
	if len(cfg.Addrs) == 0 {
		return nil, errors.New("subscription: no listen address")
	}
	for _, a := range cfg.Addrs {
		if !isUnixPath(a) {
			if _, err := net.ResolveUDPAddr("udp", a); err != nil {
				return nil, fmt.Errorf("subscription server %s: %w", a, err)
			}
		}
	}
	if cfg.Tolerance == 0 {
		cfg.Tolerance = 30 * time.Second
	}
	if cfg.Tolerance < 0 {
		return nil, errors.New("subscription: negative tolerance")
	}
	if cfg.QueueDepth <= 0 {
		cfg.QueueDepth = 4096
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	return &Server{
		cfg:   cfg,
		table: table,
		log:   cfg.Logger,
		m:     m,
		queue: make(chan packet, cfg.QueueDepth),
		stop:  make(chan struct{}),
	}, nil
}

func isUnixPath(a string) bool { return strings.HasPrefix(a, "@") || strings.Contains(a, "/") }

// Start binds every socket, then starts the goroutines. On a bind error
// nothing is left open and the error names the address.
func (s *Server) Start() error {
	for _, a := range s.cfg.Addrs {
		var c net.PacketConn
		var err error
		if isUnixPath(a) {
			if !strings.HasPrefix(a, "@") {
				// A socket file left by a crashed run would make bind fail.
				if fi, serr := os.Lstat(a); serr == nil && fi.Mode()&os.ModeSocket != 0 {
					_ = os.Remove(a)
				}
				s.paths = append(s.paths, a)
			}
			c, err = net.ListenUnixgram("unixgram", &net.UnixAddr{Name: a, Net: "unixgram"})
		} else {
			c, err = net.ListenPacket("udp", a)
		}
		if err != nil {
			s.closeConns()
			return fmt.Errorf("subscription server %s: %w", a, err)
		}
		if uc, ok := c.(*net.UDPConn); ok {
			_ = uc.SetReadBuffer(4 << 20) // absorb bursts (all nodes announcing at once)
		}
		s.conns = append(s.conns, c)
		s.addrs = append(s.addrs, c.LocalAddr().String())
	}
	for _, c := range s.conns {
		s.wg.Add(1)
		go s.readLoop(c)
	}
	s.wg.Add(2)
	go s.applyLoop()
	go s.expireLoop()
	return nil
}

// Addrs returns the bound addresses (useful with port 0).
func (s *Server) Addrs() []string { return s.addrs }

// Close stops every goroutine, waits for them and removes unix socket files.
func (s *Server) Close() error {
	close(s.stop)
	s.closeConns()
	s.wg.Wait()
	return nil
}

func (s *Server) closeConns() {
	for _, c := range s.conns {
		c.Close()
	}
	for _, p := range s.paths {
		_ = os.Remove(p)
	}
}

// readLoop owns conn's reads until conn is closed.
func (s *Server) readLoop(c net.PacketConn) {
	defer s.wg.Done()
	buf := make([]byte, MaxDatagram)
	udp, _ := c.(*net.UDPConn)
	for {
		var n int
		var from netip.AddrPort
		var err error
		if udp != nil {
			n, from, err = udp.ReadFromUDPAddrPort(buf)
		} else {
			n, _, err = c.ReadFrom(buf)
		}
		if err != nil {
			select {
			case <-s.stop:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) {
				return
			}
			s.log.Debug("subscription read", "err", err)
			continue
		}
		bp := bufPool.Get().(*[]byte)
		*bp = append((*bp)[:0], buf[:n]...)
		select {
		case s.queue <- packet{data: bp, from: from}:
		default:
			bufPool.Put(bp)
			s.m.dropped.Inc()
		}
	}
}

// applyLoop owns the parse state and is the only writer of announces.
func (s *Server) applyLoop() {
	defer s.wg.Done()
	var sub uwsgi.Subscription
	var addrBuf []byte
	for {
		select {
		case <-s.stop:
			return
		case p := <-s.queue:
			addrBuf = s.apply(*p.data, p.from, &sub, addrBuf[:0])
			if cap(*p.data) <= 4096 {
				bufPool.Put(p.data)
			}
		}
	}
}

// apply parses and applies one datagram, counting the outcome. scratch is
// reused for address resolution; the extended slice is returned.
func (s *Server) apply(data []byte, from netip.AddrPort, sub *uwsgi.Subscription, scratch []byte) []byte {
	if err := uwsgi.ParseSubscription(data, sub); err != nil {
		s.invalid(from, err)
		return scratch
	}
	addr := sub.Address
	if addr[0] == ':' {
		// ":port" means "the host this datagram came from".
		if !from.IsValid() {
			s.invalid(from, errPortNeedsIP)
			return scratch
		}
		port, err := strconv.ParseUint(string(addr[1:]), 10, 16)
		if err != nil || port == 0 {
			s.invalid(from, errBadPort)
			return scratch
		}
		scratch = netip.AddrPortFrom(from.Addr().Unmap(), uint16(port)).AppendTo(scratch)
		addr = scratch
	}
	if sub.Unsubscribe {
		if s.table.RemoveNode(string(sub.Key), string(addr)) {
			s.log.Info("node unsubscribed", "key", string(sub.Key), "node", string(addr))
		}
		s.m.unsubscribe.Inc()
		return scratch
	}
	res, err := s.table.Announce(&balancer.Announce{
		Key: sub.Key, Address: addr,
		Modifier1: sub.Modifier1, Modifier2: sub.Modifier2,
		Weight: sub.Weight, Cores: sub.Cores, Load: sub.Load,
		Notify: sub.Notify, Algo: sub.Algo,
	})
	switch {
	case err != nil:
		s.invalid(from, err)
	case res == balancer.Refreshed:
		s.m.refresh.Inc()
	default:
		s.m.subscribe.Inc()
		s.log.Info("node subscribed", "key", string(sub.Key), "node", string(addr), "weight", max(sub.Weight, 1))
	}
	return scratch
}

var (
	errPortNeedsIP = errors.New("subscription: \":port\" address from a unix socket")
	errBadPort     = errors.New("subscription: bad port in \":port\" address")
)

func (s *Server) invalid(from netip.AddrPort, err error) {
	s.m.invalid.Inc()
	if s.log.Enabled(context.Background(), slog.LevelDebug) {
		s.log.Debug("invalid subscription datagram", "from", from, "err", err)
	}
}

// expireLoop removes silent nodes on a timer.
func (s *Server) expireLoop() {
	defer s.wg.Done()
	every := min(s.cfg.Tolerance/4, time.Second)
	every = max(every, 50*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			if n := s.table.Expire(s.cfg.Tolerance); n > 0 {
				s.m.expired.Add(float64(n))
				s.log.Info("expired silent nodes", "count", n, "tolerance", s.cfg.Tolerance)
			}
		}
	}
}

// metrics are the server's counters, children resolved once.
type metrics struct {
	subscribe, refresh, unsubscribe, invalid, dropped prometheus.Counter
	expired                                           prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	packets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_subscription_packets_total",
		Help: "Subscription datagrams received, by result: subscribe (new node), refresh, unsubscribe, invalid (dropped as malformed or refused), dropped (queue full).",
	}, []string{"result"})
	expired := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fastrouter_subscription_expired_total",
		Help: "Nodes removed because they stopped announcing for --subscription-tolerance.",
	})
	for _, c := range []prometheus.Collector{packets, expired} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("subscription: metrics: %w", err)
		}
	}
	return &metrics{
		subscribe:   packets.WithLabelValues("subscribe"),
		refresh:     packets.WithLabelValues("refresh"),
		unsubscribe: packets.WithLabelValues("unsubscribe"),
		invalid:     packets.WithLabelValues("invalid"),
		dropped:     packets.WithLabelValues("dropped"),
		expired:     expired,
	}, nil
}
