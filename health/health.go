// Package health runs active health checks against the nodes of the pools
// that opt in: a uwsgi request, an HTTP request or a bare TCP connect every
// interval, with rise/fall thresholds. Verdicts go to the balancer
// (Node.SetHealthy); a node marked down gets no request until it rises again.
//
// Passive health (connect failures, in the router) needs traffic to notice
// a broken node and costs a client a retry each time; active checks notice a
// node that accepts connections but answers 500 (a Python app that failed to
// import, a lost database) before any client does.
package health

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
)

// Check is one pool's health check.
type Check struct {
	// Type is the probe: "uwsgi" (default: a GET over the node's own uwsgi
	// address; in HTTP for an http:// node), "http" (an HTTP/1.1 GET, for
	// nodes that also serve HTTP, e.g. uWSGI's --http-socket on Port) or
	// "tcp" (connect only).
	Type string
	// Path is the request path of uwsgi and http probes. Default "/".
	Path string
	// Host is the Host (HTTP_HOST) of the probe. Default: the pool key
	// without a path, or "localhost" for wildcard keys.
	Host string
	// Port, when set, probes that port on the node's IP instead of the
	// node's own port (TCP and http:// nodes only).
	Port uint16
	// Interval between probes of a node. Default 5s.
	Interval time.Duration
	// Timeout of one probe (connect, write, read). Default 2s; at most
	// Interval.
	Timeout time.Duration
	// Rise is how many consecutive passes bring a down node back (default
	// 2); Fall how many consecutive failures take a node down (default 3).
	Rise, Fall int
}

// Probe types.
const (
	TypeUWSGI = "uwsgi"
	TypeHTTP  = "http"
	TypeTCP   = "tcp"
)

// Normalize fills defaults and validates c.
func (c *Check) Normalize() error {
	switch c.Type {
	case "":
		c.Type = TypeUWSGI
	case TypeUWSGI, TypeHTTP, TypeTCP:
	default:
		return fmt.Errorf("health check type %q: want uwsgi, http or tcp", c.Type)
	}
	if c.Path == "" {
		c.Path = "/"
	}
	if c.Path[0] != '/' || len(c.Path) > 1024 || strings.ContainsAny(c.Path, " \r\n\t") || !printable(c.Path) {
		return fmt.Errorf("health check path %q: want an absolute path without spaces", c.Path)
	}
	if len(c.Host) > 255 || strings.ContainsAny(c.Host, " \r\n\t/") || !printable(c.Host) {
		return fmt.Errorf("health check host %q: not a host name", c.Host)
	}
	if c.Interval == 0 {
		c.Interval = 5 * time.Second
	}
	if c.Timeout == 0 {
		c.Timeout = min(2*time.Second, c.Interval)
	}
	if c.Interval < 100*time.Millisecond || c.Timeout <= 0 || c.Timeout > c.Interval {
		return fmt.Errorf("health check: interval %s must be at least 100ms and timeout %s between 0 and the interval", c.Interval, c.Timeout)
	}
	if c.Rise == 0 {
		c.Rise = 2
	}
	if c.Fall == 0 {
		c.Fall = 3
	}
	if c.Rise < 1 || c.Fall < 1 || c.Rise > 100 || c.Fall > 100 {
		return fmt.Errorf("health check: rise %d and fall %d must be between 1 and 100", c.Rise, c.Fall)
	}
	return nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return false
		}
	}
	return true
}

// Pools is what the checker needs of the routing table.
type Pools interface {
	Pools() []*balancer.Pool
}

// Config configures a Checker.
type Config struct {
	// Pools is the routing table. Required.
	Pools Pools
	// Checks are the health checks by pool key (matched case-insensitively).
	Checks map[string]Check
	// Logger receives up/down transitions. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives fastrouter_health_checks_total. Default: none.
	Registerer prometheus.Registerer
	// MaxConcurrent bounds probes in flight. Default 64.
	MaxConcurrent int
	// Tick is how often the scheduler looks for due probes. Default 100ms.
	Tick time.Duration
	// Dialer connects probes; tests may replace it. Default net.Dialer.
	Dialer interface {
		DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	}
}

// Checker schedules and runs the probes. Start it once; Close stops it and
// waits for probes in flight.
type Checker struct {
	cfg     Config
	log     *slog.Logger
	checks  atomic.Pointer[map[string]Check] // lower-cased key → normalized check
	results *prometheus.CounterVec

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	sem    chan struct{}

	// nodes is the per-node probe state, owned by the scheduler goroutine
	// (run); probe goroutines report through their target's atomics.
	nodes map[*balancer.Node]*target
}

// target is one node's probe state. running, passes and fails are touched
// by the probe goroutine of the moment and read by the scheduler.
type target struct {
	next    time.Time   // scheduler only
	seen    bool        // scheduler only: still listed on this tick
	running atomic.Bool // a probe is in flight
	passes  atomic.Int32
	fails   atomic.Int32
}

// New validates cfg and returns a stopped Checker.
func New(cfg Config) (*Checker, error) {
	if cfg.Pools == nil {
		return nil, errors.New("health: Config.Pools is required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxConcurrent <= 0 {
		cfg.MaxConcurrent = 64
	}
	if cfg.Tick <= 0 {
		cfg.Tick = 100 * time.Millisecond
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	c := &Checker{cfg: cfg, log: cfg.Logger, sem: make(chan struct{}, cfg.MaxConcurrent), nodes: map[*balancer.Node]*target{}}
	c.results = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_health_checks_total",
		Help: "Active health check probes, by pool key (configured checks only) and result (pass, fail).",
	}, []string{"pool", "result"})
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(c.results); err != nil {
			return nil, err
		}
	}
	if err := c.SetChecks(cfg.Checks); err != nil {
		return nil, err
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// SetChecks replaces the checks (a configuration reload). Nodes of pools
// whose check went away are marked up: nothing judges them any more.
func (c *Checker) SetChecks(checks map[string]Check) error {
	m := make(map[string]Check, len(checks))
	for k, ch := range checks {
		if err := ch.Normalize(); err != nil {
			return fmt.Errorf("pool %s: %w", k, err)
		}
		lk := strings.ToLower(k)
		if _, dup := m[lk]; dup {
			return fmt.Errorf("health: two checks for pool key %q (keys are case-insensitive)", k)
		}
		m[lk] = ch
	}
	old := c.checks.Swap(&m)
	if old != nil {
		for _, p := range c.cfg.Pools.Pools() {
			lk := strings.ToLower(p.Key)
			if _, was := (*old)[lk]; was {
				if _, is := m[lk]; !is {
					for _, n := range p.Nodes() {
						n.SetHealthy(true)
					}
				}
			}
		}
	}
	return nil
}

// Start runs the scheduler until Close.
func (c *Checker) Start() {
	c.wg.Add(1)
	go c.run()
}

// Close stops scheduling, cancels probes in flight and waits for them.
func (c *Checker) Close() {
	c.cancel()
	c.wg.Wait()
}

func (c *Checker) run() {
	defer c.wg.Done()
	t := time.NewTicker(c.cfg.Tick)
	defer t.Stop()
	for {
		c.schedule(time.Now())
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
	}
}

// schedule starts the probes that are due. A new node is probed at a random
// point of its first interval, so a pool of many nodes (or a restart) does
// not probe them all at once.
func (c *Checker) schedule(now time.Time) {
	checks := *c.checks.Load()
	for _, tg := range c.nodes {
		tg.seen = false
	}
	if len(checks) > 0 {
		for _, p := range c.cfg.Pools.Pools() {
			ch, ok := checks[strings.ToLower(p.Key)]
			if !ok {
				continue
			}
			for _, n := range p.Nodes() {
				tg := c.nodes[n]
				if tg == nil {
					tg = &target{next: now.Add(jitter(n.Address, ch.Interval))}
					c.nodes[n] = tg
				}
				tg.seen = true
				if s := n.State(); s == balancer.StateDraining || s == balancer.StateDrained {
					continue // leaving on purpose; its process may be stopping
				}
				if now.Before(tg.next) || tg.running.Load() {
					continue
				}
				select {
				case c.sem <- struct{}{}:
				default:
					continue // at MaxConcurrent: next tick
				}
				tg.next = now.Add(ch.Interval)
				tg.running.Store(true)
				c.wg.Add(1)
				go c.probe(p.Key, n, ch, tg)
			}
		}
	}
	for n, tg := range c.nodes {
		if !tg.seen && !tg.running.Load() {
			delete(c.nodes, n) // gone from its pool, or the check was removed
		}
	}
}

// jitter spreads first probes over the interval, deterministically per
// address so tests and restarts behave the same.
func jitter(addr string, interval time.Duration) time.Duration {
	h := uint32(2166136261)
	for i := 0; i < len(addr); i++ {
		h = (h ^ uint32(addr[i])) * 16777619
	}
	return time.Duration(uint64(h) * uint64(interval/4) >> 32)
}

func (c *Checker) probe(pool string, n *balancer.Node, ch Check, tg *target) {
	defer c.wg.Done()
	defer func() { <-c.sem; tg.running.Store(false) }()
	ctx, cancel := context.WithTimeout(c.ctx, ch.Timeout)
	err := c.run1(ctx, pool, n, &ch)
	cancel()
	if c.ctx.Err() != nil {
		return // shutting down: no verdict
	}
	if err == nil {
		c.results.WithLabelValues(pool, "pass").Inc()
		tg.fails.Store(0)
		if p := tg.passes.Add(1); !n.Healthy() && int(p) >= ch.Rise {
			n.SetHealthy(true)
			// WARN like the failure, so that a log read at warn level
			// pairs every failure with its recovery.
			c.log.Warn("node recovered", "pool", pool, "node", n.Address, "reason", "health check", "passes", p)
		}
		return
	}
	c.results.WithLabelValues(pool, "fail").Inc()
	tg.passes.Store(0)
	f := tg.fails.Add(1)
	if n.Healthy() && int(f) >= ch.Fall {
		n.SetHealthy(false)
		c.log.Warn("node failed", "pool", pool, "node", n.Address, "reason", "health check", "failures", f, "err", err)
		return
	}
	c.log.Debug("health probe failed", "pool", pool, "node", n.Address, "err", err)
}

// run1 runs one probe of n.
func (c *Checker) run1(ctx context.Context, pool string, n *balancer.Node, ch *Check) error {
	network, addr := "tcp", n.Endpoint.Dial
	if n.Endpoint.Network == balancer.NetUnix {
		network = "unix"
	} else if ch.Port != 0 {
		addr = net.JoinHostPort(n.Endpoint.AddrPort.Addr().String(), strconv.Itoa(int(ch.Port)))
	}
	conn, err := c.cfg.Dialer.DialContext(ctx, network, addr)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	if ch.Type == TypeTCP {
		return nil
	}
	dl, _ := ctx.Deadline()
	_ = conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.Close() }) // Close cancels at once
	defer stop()

	host := ch.Host
	if host == "" {
		host = defaultHost(pool)
	}
	var req []byte
	// An http:// node speaks HTTP on its own socket: a uwsgi check of it
	// is the same GET in HTTP.
	if ch.Type == TypeHTTP || n.Endpoint.Network == balancer.NetHTTP {
		req = httpRequest(ch.Path, host)
	} else {
		req = uwsgiRequest(n.Modifier1, n.Modifier2, ch.Path, host)
	}
	if _, err := conn.Write(req); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	var buf [512]byte
	got := 0
	for {
		m, err := conn.Read(buf[got:])
		got += m
		if code, ok, perr := ParseStatusLine(buf[:got]); ok || perr != nil {
			if perr != nil {
				return perr
			}
			if code < 200 || code >= 400 {
				return fmt.Errorf("status %d", code)
			}
			return nil
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if got == len(buf) {
			return ErrBadStatusLine
		}
	}
}

// defaultHost is the Host of a probe when none is configured: the pool
// key without a mount path, or "localhost" for wildcard keys.
func defaultHost(pool string) string {
	if i := strings.IndexByte(pool, '/'); i >= 0 {
		pool = pool[:i]
	}
	if pool == "" || pool[0] == '*' || pool[0] == '.' {
		return "localhost"
	}
	return pool
}

func httpRequest(path, host string) []byte {
	return []byte("GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUser-Agent: fastrouter-health\r\nConnection: close\r\n\r\n")
}
