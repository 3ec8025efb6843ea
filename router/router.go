// Package router is the HTTP front of fastrouter: it accepts client
// requests, maps each request's host to a balancer pool, and forwards it to
// one node over the uwsgi protocol (or HTTP/1.1 to http:// nodes), streaming
// bodies both ways.
//
// The forwarding core (forward.go names the request path file by file:
// route, body, head, pick, round trip, relay) is protocol-neutral; fronts
// fill a request view and hand the core a place to write the response. The
// HTTP/1.1 front is valyala/fasthttp, the HTTP/2 front internal/h2srv
// (on golang.org/x/net/http2's Framer); a listener splits connections between them
// (serve.go). Each kind of node is an upstream behind one interface
// (upstream.go); each front tracks its connections in a connSet and has a
// Shutdown (shutdown.go).
package router

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/prometheus/client_golang/prometheus"
)

// Pools is what the router needs from the routing table.
type Pools interface {
	// LookupPath finds the pool of a request by host and decoded path
	// (mount points); path may be nil when HasMounts is false.
	LookupPath(host, path []byte) *balancer.Pool
	// HasMounts reports whether any pool key is a mount point, i.e.
	// whether LookupPath needs the path at all.
	HasMounts() bool
}

// Config configures a Router. Zero durations and sizes take the defaults
// documented on each field.
type Config struct {
	// Pools maps hosts to pools. Required.
	Pools Pools
	// ConnectTimeout bounds a backend connect. Default 3s.
	ConnectTimeout time.Duration
	// Timeout is the inactivity timeout for backend and client I/O once a
	// request is being forwarded, and the idle keep-alive timeout. Default 60s.
	Timeout time.Duration
	// HeaderTimeout bounds how long a client may take to send its request
	// headers. Default 10s.
	HeaderTimeout time.Duration
	// MaxHeaderBytes is the largest request head accepted; larger → 431.
	// Default 65536.
	MaxHeaderBytes int
	// MaxHeaderCount is the most header lines accepted; more → 431. Default 100.
	MaxHeaderCount int
	// MaxConns bounds the open client connections of each listener; over
	// it a new connection is answered 503 (TLS: closed) without reading a
	// request. 0: no limit.
	MaxConns int
	// MaxBufferedBody bounds a chunked request body, which is buffered to
	// learn the CONTENT_LENGTH uwsgi apps need. Larger → 413. Default 8 MiB.
	MaxBufferedBody int
	// MaxBodyBytes bounds every request body: a larger Content-Length, or a
	// body of unknown length growing past it, is answered 413. Bodies of
	// unknown length over MaxBufferedBody are spilled to a temporary file
	// (spill.go). Default 1 GiB.
	MaxBodyBytes int64
	// RequestBuffering: a request body of known length up to this many
	// bytes (and over the 16 KiB that ride with the head) is read whole
	// before a node is picked, in memory up to 1 MiB, beyond in a
	// temporary file (clientbody.go); larger ones stream to the node as
	// they come. 0: every body of known length streams.
	RequestBuffering int64
	// TempDir holds spilled bodies. Default os.TempDir().
	TempDir string
	// TrustedProxies are peers whose X-Forwarded-For/-Proto are kept and
	// appended to. Default: loopback.
	TrustedProxies []netip.Prefix
	// ProxyProtocol lets connections from TrustedProxies start with a PROXY
	// protocol v1 or v2 header (optional per connection) that sets the
	// client address; see proxyproto.go.
	ProxyProtocol bool
	// DisableH1EventLoop serves every request of the clear-text --http
	// listeners on the goroutine path. Without it (the default), on Linux
	// and without ProxyProtocol or MaxConns, their simple HTTP/1.1 requests
	// to uwsgi nodes are served on an event loop per core (h1loop_linux.go)
	// and the rest go the goroutine path; elsewhere it changes nothing.
	DisableH1EventLoop bool
	// H1Loops is the number of event loops per --http listener; 0 is
	// GOMAXPROCS. Several loops wait for events in epoll_wait, each
	// holding its P while it does: with no P idle, the scheduler's sysmon
	// takes a waiting loop's P and wakes a thread to look for work on it
	// (runtime/proc.go, retake and handoffp), a futex wake and two context
	// switches per wait, and sysmon itself then polls every 20 µs. One P
	// more than loops keeps one idle, and retake leaves a waiting loop
	// alone (fastrouter's serve sets GOMAXPROCS to H1Loops + 1).
	H1Loops int
	// HTTP3: the --https listeners' addresses also serve HTTP/3
	// (ServeHTTP3, h3.go), and their TCP responses say so with Alt-Svc.
	HTTP3 bool
	// HTTP3EarlyData accepts 0-RTT on HTTP/3, for GET and HEAD only
	// (h3.go); off, a resumed client waits for the handshake.
	HTTP3EarlyData bool
	// HashKey is where pools with the hash algorithm find their key:
	// "header:NAME" or "cookie:NAME". Empty: hash pools balance as wrr.
	HashKey string
	// Logger receives operational logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the router's metrics. Default: a private registry.
	Registerer prometheus.Registerer
	// AccessLog, when set, receives one JSON line per request (format in
	// accesslog.go). Each Write is one complete line that must not be
	// retained, and Write must not block on I/O: a slow disk must not stall
	// requests (package accesslog buffers and flushes on its own goroutine).
	AccessLog io.Writer
	// Challenges, if set, answers ACME HTTP-01 challenges on the clear
	// text listeners before routing (acme.go).
	Challenges Challenges
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Timeouts are the router's timeouts that a configuration reload may
// change (see Config for their meaning). New connections get the new values;
// connections already open keep the ones they started with (an HTTP/1.1
// connection parked while idle takes the new ones at its next request).
type Timeouts struct {
	Connect, Timeout, Header time.Duration
}

func (t Timeouts) validate() error {
	if t.Connect <= 0 || t.Timeout <= 0 || t.Header <= 0 {
		return errors.New("router: timeouts must be positive")
	}
	return nil
}

// Router forwards HTTP requests to uwsgi nodes. Its methods are safe for
// concurrent use.
type Router struct {
	cfg     Config // immutable after New; timeouts live in tm
	log     *slog.Logger
	tm      atomic.Pointer[Timeouts]
	hash    hashSource
	metrics *metrics
	now     func() time.Time
	ids     *idGen    // X-Request-Id generator
	alog    io.Writer // Config.AccessLog; nil: no access log
	// headRejects, bodyRejects and connsRefused count the strict-HTTP, the
	// request-body and the --max-conns refusals (strict.go, limit.go).
	headRejects  [strict.NumRejects]prometheus.Counter
	bodyRejects  [numBodyReasons]prometheus.Counter
	connsRefused *prometheus.CounterVec
	// h2Errors counts the HTTP/2 errors x/net and the h2 guard answer
	// (h2guard.go).
	h2Errors *prometheus.CounterVec
	// self holds the router's own sockets, never dialled (loop.go); nil
	// until SetOwnAddrs.
	self atomic.Pointer[selfSockets]

	mu      sync.Mutex // guards fronts, closing
	fronts  []front    // every listener served, in the order they started
	closing bool       // Shutdown began: no front starts

	// draining is set by Shutdown: every HTTP/1.1 response closes its
	// connection. h1Open counts open HTTP/1.1 client connections.
	draining atomic.Bool
	h1Open   atomic.Int64

	// backends are the node connections of exchanges in flight, cut at
	// the shutdown deadline; cutCh is closed then (shutdown.go).
	backends connSet
	cutCh    chan struct{}
	cutOnce  sync.Once
	// socks are idle uwsgi node sockets for the next dials
	// (sockpool_linux.go); Shutdown closes them.
	socks sockPool
	// trim returns the memory of bursts of parked connections to the OS
	// (idletrim.go); Shutdown stops it.
	trim *idleTrim
	// parker holds the parked HTTP/1.1 connections (park_linux.go);
	// Shutdown stops it.
	parker parker
}

// New validates cfg and returns a Router.
func New(cfg Config) (*Router, error) {
	if cfg.Pools == nil {
		return nil, errors.New("router: Config.Pools is required")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&cfg.ConnectTimeout, 3*time.Second)
	def(&cfg.Timeout, 60*time.Second)
	def(&cfg.HeaderTimeout, 10*time.Second)
	tm := &Timeouts{Connect: cfg.ConnectTimeout, Timeout: cfg.Timeout, Header: cfg.HeaderTimeout}
	if err := tm.validate(); err != nil {
		return nil, err
	}
	if cfg.MaxHeaderBytes == 0 {
		cfg.MaxHeaderBytes = 65536
	}
	if cfg.MaxHeaderBytes < 1024 || cfg.MaxHeaderBytes > 1<<20 {
		return nil, fmt.Errorf("router: max header bytes %d out of range [1024, 1048576]", cfg.MaxHeaderBytes)
	}
	if cfg.MaxHeaderCount == 0 {
		cfg.MaxHeaderCount = 100
	}
	if cfg.MaxConns < 0 {
		return nil, fmt.Errorf("router: negative MaxConns %d", cfg.MaxConns)
	}
	if cfg.H1Loops < 0 {
		return nil, fmt.Errorf("router: negative H1Loops %d", cfg.H1Loops)
	}
	if cfg.MaxBufferedBody == 0 {
		cfg.MaxBufferedBody = 8 << 20
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = 1 << 30
	}
	if cfg.MaxBodyBytes < 0 || cfg.MaxBufferedBody < 0 || cfg.RequestBuffering < 0 {
		return nil, errors.New("router: body limits must not be negative")
	}
	if cfg.TrustedProxies == nil {
		cfg.TrustedProxies = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8"), netip.MustParsePrefix("::1/128")}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	var hash hashSource
	if cfg.HashKey != "" {
		var err error
		if hash, err = parseHashKey(cfg.HashKey); err != nil {
			return nil, err
		}
	}
	m, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, fmt.Errorf("router: metrics: %w", err)
	}
	rt := &Router{
		hash:    hash,
		cfg:     cfg,
		log:     cfg.Logger,
		metrics: m,
		now:     cfg.Now,
		ids:     newIDGen(),
		alog:    cfg.AccessLog,
		cutCh:   make(chan struct{}),
		trim:    newIdleTrim(defaultTrimPolicy),
	}
	if rt.headRejects, rt.bodyRejects, rt.connsRefused, err = newSecurityMetrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("router: metrics: %w", err)
	}
	if rt.h2Errors, err = newH2Metrics(cfg.Registerer); err != nil {
		return nil, fmt.Errorf("router: metrics: %w", err)
	}
	rt.tm.Store(tm)
	return rt, nil
}

// timeouts returns the current timeouts. The hot path loads them once per
// use; a reload swaps the pointer.
func (rt *Router) timeouts() *Timeouts { return rt.tm.Load() }

// RateCollectors are the router's collectors the status page's rates need
// (fastrouter_requests_total, fastrouter_client_connections), for a small
// registry of their own: gathering them alone is far cheaper than gathering
// every series.
func (rt *Router) RateCollectors() []prometheus.Collector {
	return []prometheus.Collector{rt.metrics.requests, rt.metrics.clientConns}
}

// SetTimeouts replaces the timeouts (SIGHUP reload). Backend I/O uses the
// new values from the next request on; each listener starts serving new
// connections with servers built from them, while connections already open
// finish with the values they started with, so no connection is dropped.
// --http-to-https listeners keep their start-up timeouts.
func (rt *Router) SetTimeouts(t Timeouts) error {
	if err := t.validate(); err != nil {
		return err
	}
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if *rt.tm.Load() == t {
		return nil
	}
	rt.tm.Store(&t)
	if rt.closing {
		return nil
	}
	for _, l := range rt.frontListenersLocked() {
		l.renew(&t)
	}
	return nil
}

func (rt *Router) trusted(a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range rt.cfg.TrustedProxies {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
