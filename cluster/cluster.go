// Package cluster makes several routers one: pools, nodes and drains that
// one router learns are known to all of them, through
// hashicorp/memberlist (membership, failure detection, gossip, push/pull).
// It is the only importer of memberlist.
//
// Flow:
//
//	subscription server ─┐                       ┌─▶ broadcast queue ─▶ gossip (UDP)
//	admin API ───────────┴▶ Origin ─▶ local table ┤
//	                        (changes made here)   └─▶ replicated state ◀─ push/pull (TCP)
//
//	gossip / push/pull ─▶ merge into replicated state ─▶ dirty queue ─▶ applier ─▶ local table
//
// Changes made at this router reach the table through Origin, which records
// them in the replicated state and broadcasts them. Changes from other
// routers are merged into the replicated state (state.go says how) and
// applied to the table by one applier goroutine, straight to the table: they
// never pass through Origin, so they are never broadcast again (loop-free),
// and applying one never resets the node's local counters. The full state
// travels on join and every SyncInterval (memberlist push/pull), so a missed
// broadcast heals and a router that restarts regains everything.
//
// Drains end cluster-wide: every router reports its in-flight count for
// each draining node; a node becomes drained (on every router) when all
// live routers report 0, or at the deadline, which is the same instant
// everywhere. One router sends the drain notice: the one where the drain
// started, or if it is gone, the live router with the lowest name.
//
// Expiry stays local but consistent: announces received anywhere advance
// the node's last-seen time everywhere (carried with the origin's clock), so
// a node silent everywhere expires everywhere at the same time, and a node
// announcing to router A stays alive on router B. Routers' clocks must be
// synchronised (NTP) for that, as for any use of wall time across hosts.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/memberlist"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/balancer"
)

// Defaults for zero Config fields.
const (
	DefaultPort         = 7946
	DefaultSyncInterval = 15 * time.Second
	DefaultLeaveTimeout = 2 * time.Second
)

// Config configures a Cluster. Zero values take the documented defaults.
type Config struct {
	// Table is the routing table the cluster keeps in step. Required.
	Table *balancer.Table
	// Name is this router's member name, unique in the cluster. Required.
	Name string
	// Label is the cluster's name: memberlist stamps it on every packet and
	// stream and drops those with another label, so two clusters sharing
	// a network (or a mistyped --cluster-join) never merge. Empty: none.
	Label string
	// BindAddr is "ip:port" for memberlist's UDP and TCP sockets (the same
	// port for both); ":port" binds every interface. Port 0 picks a free
	// one (tests). Required.
	BindAddr string
	// AdvertiseAddr is the "ip:port" peers reach this router at, when it
	// differs from BindAddr (NAT). Empty: memberlist derives it.
	AdvertiseAddr string
	// Join lists peers ("host:port") to join. The first join happens in
	// the background, retried until one succeeds, so routers may start in
	// any order. Empty: this router waits to be joined.
	Join []string
	// SecretKey encrypts and authenticates all cluster traffic (AES, 16,
	// 24 or 32 bytes; see LoadSecret). Nil: plain text, and anyone who can
	// reach BindAddr can change the routing table.
	SecretKey []byte
	// SyncInterval is memberlist's push/pull interval: how often a router
	// exchanges its full state with a random peer, healing lost broadcasts.
	// Default DefaultSyncInterval.
	SyncInterval time.Duration
	// Tolerance is the subscription tolerance (--subscription-tolerance): a
	// node not announced anywhere for this long is gone. Default 30s.
	Tolerance time.Duration
	// DrainTimeout is the deadline of an unsubscribe drain when the caller
	// gives none (--drain-timeout). Default 30s.
	DrainTimeout time.Duration
	// RefreshInterval bounds how often a node's announces are gossiped:
	// new nodes and changes of state, weight, backup or notify go out at
	// once; the last-seen time (and cores/load) of refreshes at most once
	// per interval per node. Default Tolerance/8, between 250ms and 5s.
	RefreshInterval time.Duration
	// ReportInterval is how often in-flight counts of draining nodes are
	// checked and, when changed, reported. Default 100ms.
	ReportInterval time.Duration
	// ReconnectInterval is how often a router that is alone retries its
	// Join peers, and retries members that failed (a healed partition
	// rejoins this way). Default 5s. Failed members are retried for
	// ReconnectTimeout (default 1h).
	ReconnectInterval time.Duration
	ReconnectTimeout  time.Duration
	// MaxQueue bounds the broadcasts waiting to be gossiped; beyond it the
	// oldest are dropped (push/pull repairs). Default 16384.
	MaxQueue int
	// BindRetry keeps Start retrying a bind that fails for this long: after
	// a binary upgrade the old process holds the port until it hands over.
	// Zero: fail at once.
	BindRetry time.Duration
	// Admission, if set, decides whether a node a peer relays may enter
	// this router's table, or be revived or changed in it: the rules this
	// router applies to its own datagrams (subauth.Guard: --node-allow,
	// signatures checked on the datagram the peer relays). An entry it
	// refuses stays in the replicated state, since every router decides
	// for itself, but is not applied here; it counts in
	// fastrouter_cluster_denied_total{reason}. Nil: peers are believed.
	Admission Admission
	// Signed, if set, is the replay memory (subauth.Guard) that travels
	// with the full state, so that a router that joins, and every peer at
	// each sync, refuses a signed datagram older than the newest any
	// router accepted.
	Signed SignedTimes
	// MaxBlobBytes bounds the replicated blobs' keys and values together
	// (blobs.go). Default DefaultMaxBlobBytes.
	MaxBlobBytes int
	// Logger receives the cluster's and memberlist's logs. Default: discard.
	Logger *slog.Logger
	// Registerer receives the metrics. Default: a private registry.
	Registerer prometheus.Registerer
	// Now is the wall clock. Default time.Now.
	Now func() time.Time
	// Memberlist, if set, adjusts memberlist's configuration last (tests
	// tighten its timers, or set a Transport).
	Memberlist func(*memberlist.Config)
}

// Admission is what the applier asks before a peer's entry creates,
// revives or changes a node here. *subauth.Guard implements it.
type Admission interface {
	// AdmitRelayed returns nil to admit the node (key, address) that a
	// peer relays with proof, the signed datagram it accepted (nil if
	// none); else an error, whose Reason() string method, if any, labels
	// the denied counter. The slices are not retained.
	AdmitRelayed(key, address, proof []byte) error
}

// SignedTimes is a replay memory that travels with the full state.
// *subauth.Guard implements it.
type SignedTimes interface {
	// SignedTimes calls fn for each remembered time and its opaque
	// datagram id; fn must not call back.
	SignedTimes(fn func(key, address string, unix int64, sig uint64))
	// RememberSigned imports a time a peer reported. The slices are not
	// retained.
	RememberSigned(key, address []byte, unix int64, sig uint64)
}

// Cluster keeps a routing table in step with the other routers'. Its
// methods are safe for concurrent use. New, then Start once, then Leave or
// Shutdown once.
type Cluster struct {
	// Immutable after New.
	cfg   Config
	table *balancer.Table
	id    uint64
	log   *slog.Logger
	now   func() time.Time
	z     *compressor
	m     *metrics

	clock clock
	queue *memberlist.TransmitLimitedQueue // safe for concurrent use

	// applyMu serialises every table change the cluster is involved in:
	// Origin's (a local change and its record in the state) and the
	// applier's (a remote entry and the table change it implies). Without
	// it the applier could apply a stale entry over a newer local change.
	// Lock order: applyMu, then mu. Neither is held while waiting on
	// memberlist.
	applyMu sync.Mutex

	mu        sync.Mutex
	pools     map[string]map[string]*entry // key → address → entry
	entries   int
	dirty     []*entry              // entries the applier must bring the table in line with
	flush     map[*entry]struct{}   // entries whose last-seen/cores/load go out at the next refresh
	draining  map[*entry]struct{}   // entries with a coordinated drain in progress
	members   map[uint64]memberInfo // live members (self included), from memberlist's events
	failed    map[string]time.Time  // address of a failed member → when it failed
	lastState int                   // size of the last encoded state, to pre-size the next
	blobs     map[string]*blob      // replicated blobs by key, tombstones included (blobs.go)
	blobBytes int                   // len(key)+len(val) over blobs
	acks      map[string]*ackWait   // PutBlob calls waiting for acknowledgements, by key

	watcher  atomic.Pointer[BlobWatcher] // SetBlobWatcher; nil: none
	reliable chan []byte                 // large blob messages for reliableLoop; never closed

	wake chan struct{} // applier wake-up; buffered 1, never closed

	memberCount atomic.Int32 // len(members), readable without mu

	startMu  sync.Mutex // orders Start's publication of ml against Shutdown
	ml       atomic.Pointer[memberlist.Memberlist]
	stopped  atomic.Bool // Leave or Shutdown began: the drain gate opens
	stopOnce sync.Once
	stop     chan struct{} // closed by Leave/Shutdown; stops the goroutines
	wg       sync.WaitGroup
}

type memberInfo struct {
	name, addr string
}

// New validates cfg. It binds nothing; Start does.
func New(cfg Config) (*Cluster, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	cfg.setDefaults()
	z, err := newCompressor()
	if err != nil {
		return nil, err
	}
	c := &Cluster{
		cfg:      cfg,
		table:    cfg.Table,
		id:       routerID(cfg.Name),
		log:      cfg.Logger.With("cluster_member", cfg.Name),
		now:      cfg.Now,
		z:        z,
		pools:    map[string]map[string]*entry{},
		flush:    map[*entry]struct{}{},
		draining: map[*entry]struct{}{},
		members:  map[uint64]memberInfo{},
		failed:   map[string]time.Time{},
		blobs:    map[string]*blob{},
		acks:     map[string]*ackWait{},
		reliable: make(chan []byte, reliableQueue),
		wake:     make(chan struct{}, 1),
		stop:     make(chan struct{}),
	}
	c.clock.now = cfg.Now
	c.queue = &memberlist.TransmitLimitedQueue{NumNodes: c.numMembers, RetransmitMult: 4}
	if c.m, err = newMetrics(cfg.Registerer, c); err != nil {
		return nil, err
	}
	return c, nil
}

// check refuses a configuration New cannot run with.
func (c *Config) check() error {
	if c.Table == nil {
		return errors.New("cluster: Config.Table is required")
	}
	if c.Name == "" {
		return errors.New("cluster: a member name is required")
	}
	if len(c.Label) > 255 {
		return errors.New("cluster: name (label) longer than 255 bytes")
	}
	if _, _, err := splitBind(c.BindAddr); err != nil {
		return fmt.Errorf("cluster: bind address %q: %w", c.BindAddr, err)
	}
	if c.AdvertiseAddr != "" {
		if _, _, err := splitBind(c.AdvertiseAddr); err != nil {
			return fmt.Errorf("cluster: advertise address %q: %w", c.AdvertiseAddr, err)
		}
	}
	switch len(c.SecretKey) {
	case 0, 16, 24, 32:
	default:
		return fmt.Errorf("cluster: secret key is %d bytes; want 16, 24 or 32", len(c.SecretKey))
	}
	for _, d := range []time.Duration{c.SyncInterval, c.Tolerance, c.DrainTimeout, c.RefreshInterval,
		c.ReportInterval, c.ReconnectInterval, c.ReconnectTimeout, c.BindRetry} {
		if d < 0 {
			return errors.New("cluster: negative duration in config")
		}
	}
	return nil
}

// setDefaults fills the zero fields with their defaults (Config's fields
// document them).
func (c *Config) setDefaults() {
	if c.SyncInterval == 0 {
		c.SyncInterval = DefaultSyncInterval
	}
	if c.Tolerance == 0 {
		c.Tolerance = 30 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.RefreshInterval == 0 {
		c.RefreshInterval = min(max(c.Tolerance/8, 250*time.Millisecond), 5*time.Second)
	}
	if c.ReportInterval == 0 {
		c.ReportInterval = 100 * time.Millisecond
	}
	if c.ReconnectInterval == 0 {
		c.ReconnectInterval = 5 * time.Second
	}
	if c.ReconnectTimeout == 0 {
		c.ReconnectTimeout = time.Hour
	}
	if c.MaxQueue <= 0 {
		c.MaxQueue = 16384
	}
	if c.MaxBlobBytes <= 0 {
		c.MaxBlobBytes = DefaultMaxBlobBytes
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registerer == nil {
		c.Registerer = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

var errStopped = errors.New("cluster: shut down")

// splitBind parses "ip:port", ":port" or "ip" (port DefaultPort).
func splitBind(addr string) (string, int, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if ip := net.ParseIP(addr); ip != nil {
			return addr, DefaultPort, nil
		}
		return "", 0, err
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("bad port %q", port)
	}
	if host == "" {
		host = "0.0.0.0"
	}
	if net.ParseIP(host) == nil {
		return "", 0, fmt.Errorf("host %q is not an IP address", host)
	}
	return host, int(p), nil
}

// Start binds memberlist's sockets and starts the cluster's goroutines;
// joining the Join peers happens in the background. It fails when the bind
// fails (after BindRetry) or ctx ends first.
func (c *Cluster) Start(ctx context.Context) error {
	mc := memberlist.DefaultLANConfig()
	mc.Name = c.cfg.Name
	mc.BindAddr, mc.BindPort, _ = splitBind(c.cfg.BindAddr)
	mc.AdvertisePort = mc.BindPort
	if c.cfg.AdvertiseAddr != "" {
		mc.AdvertiseAddr, mc.AdvertisePort, _ = splitBind(c.cfg.AdvertiseAddr)
	}
	mc.Label = c.cfg.Label
	mc.SecretKey = c.cfg.SecretKey
	mc.PushPullInterval = c.cfg.SyncInterval
	// Router clusters are a handful of members: gossiping twice as often
	// as the LAN profile halves convergence for ~10 small packets a second.
	mc.GossipInterval = 100 * time.Millisecond
	// States are compressed here (zstd, much faster than memberlist's LZW);
	// gossip packets are small.
	mc.EnableCompression = false
	mc.Delegate = (*delegate)(c)
	mc.Events = (*events)(c)
	mc.Logger = log.New(&logWriter{log: c.log}, "", 0)
	if c.cfg.Memberlist != nil {
		c.cfg.Memberlist(mc)
	}
	deadline := time.Now().Add(c.cfg.BindRetry)
	var ml *memberlist.Memberlist
	for {
		var err error
		if ml, err = memberlist.Create(mc); err == nil {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("cluster: bind %s: %w", c.cfg.BindAddr, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("cluster: bind %s: %w", c.cfg.BindAddr, ctx.Err())
		case <-c.stop:
			return errStopped
		case <-time.After(100 * time.Millisecond):
		}
	}
	c.startMu.Lock()
	defer c.startMu.Unlock()
	if c.stopped.Load() { // Shutdown ran while we were binding
		_ = ml.Shutdown()
		return errStopped
	}
	c.ml.Store(ml)
	c.log.Info("cluster: member started", "bind", c.cfg.BindAddr, "advertise", ml.LocalNode().Address(),
		"label", c.cfg.Label, "encrypted", len(c.cfg.SecretKey) > 0, "join", c.cfg.Join)
	c.wg.Add(4)
	go c.applyLoop()
	go c.houseLoop()
	go c.joinLoop()
	go c.reliableLoop()
	return nil
}

// Addr returns the address peers reach this router at ("ip:port"), or ""
// before Start.
func (c *Cluster) Addr() string {
	if ml := c.ml.Load(); ml != nil {
		return ml.LocalNode().Address()
	}
	return ""
}

// Name returns this router's member name.
func (c *Cluster) Name() string { return c.cfg.Name }

// Leave announces that this router leaves, waiting up to timeout for the
// announcement to go out, then shuts down. Peers drop it from membership at
// once instead of after failure detection. Safe to call more than once,
// and without Start.
func (c *Cluster) Leave(timeout time.Duration) error {
	var err error
	if ml := c.ml.Load(); ml != nil && !c.stopped.Load() {
		c.stopped.Store(true)
		err = ml.Leave(timeout)
	}
	c.Shutdown()
	return err
}

// Shutdown stops the cluster without announcing it: peers see this member
// fail. After a binary upgrade the new process answers at the same address
// under the same name, so peers never declare it dead and it rejoins
// without a seed. Safe to call more than once.
func (c *Cluster) Shutdown() {
	c.startMu.Lock()
	c.stopped.Store(true)
	c.startMu.Unlock()
	c.stopOnce.Do(func() {
		close(c.stop)
		if ml := c.ml.Load(); ml != nil {
			_ = ml.Shutdown()
		}
		c.wg.Wait()
	})
}

// numMembers is the live member count (self included; 1 before Start).
// It takes no lock: the broadcast queue calls it holding its own lock,
// while Origin queues broadcasts holding mu.
func (c *Cluster) numMembers() int { return max(int(c.memberCount.Load()), 1) }

// --- background loops ---

// applyLoop is the applier: the only goroutine that applies other routers'
// changes to the table.
func (c *Cluster) applyLoop() {
	defer c.wg.Done()
	var batch []*entry
	for {
		select {
		case <-c.stop:
			return
		case <-c.wake:
		}
		for {
			c.mu.Lock()
			n := min(len(c.dirty), 512)
			batch = append(batch[:0], c.dirty[:n]...)
			c.dirty = c.dirty[n:]
			if len(c.dirty) == 0 {
				c.dirty = nil // let a large backlog's array go
			}
			c.mu.Unlock()
			if n == 0 {
				break
			}
			for _, e := range batch {
				c.applyMu.Lock()
				c.apply(e)
				c.applyMu.Unlock()
			}
			select {
			case <-c.stop:
				return
			default:
			}
		}
	}
}

// houseLoop reports in-flight counts of draining nodes, gossips pending
// refreshes, and collects expired entries and tombstones.
func (c *Cluster) houseLoop() {
	defer c.wg.Done()
	report := time.NewTicker(c.cfg.ReportInterval)
	defer report.Stop()
	refresh := time.NewTicker(c.cfg.RefreshInterval)
	defer refresh.Stop()
	gc := time.NewTicker(max(c.cfg.Tolerance/4, time.Second))
	defer gc.Stop()
	for {
		select {
		case <-c.stop:
			return
		case <-report.C:
			c.reportDrains()
		case <-refresh.C:
			c.flushRefreshes()
		case <-gc.C:
			c.collect()
		}
	}
}

// joinLoop joins the configured peers (retrying until one answers) and,
// while this router is alone or members have failed, retries them, so a
// partition that outlives memberlist's own gossip to the dead heals.
func (c *Cluster) joinLoop() {
	defer c.wg.Done()
	t := time.NewTimer(0)
	defer t.Stop()
	// Until a first join succeeds, retry quickly (routers of a cluster
	// often start together, in any order), backing off to the interval.
	wait, joined := 250*time.Millisecond, false
	for {
		select {
		case <-c.stop:
			return
		case <-t.C:
		}
		if targets := c.joinTargets(); len(targets) > 0 {
			if ml := c.ml.Load(); ml != nil {
				n, err := ml.Join(targets) // bounded: TCPTimeout per target
				if n > 0 {
					joined = true
					c.log.Info("cluster: joined", "targets", targets, "reached", n)
				} else {
					c.log.Debug("cluster: join failed; retrying", "targets", targets, "err", err)
				}
			}
		}
		if joined {
			wait = c.cfg.ReconnectInterval
		} else {
			wait = min(2*wait, c.cfg.ReconnectInterval)
		}
		t.Reset(wait)
	}
}

// joinTargets: the seeds while alone, plus members that failed (not left)
// less than ReconnectTimeout ago.
func (c *Cluster) joinTargets() []string {
	self := c.Addr()
	now := c.now()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	if len(c.members) <= 1 {
		for _, j := range c.cfg.Join {
			if j != self {
				out = append(out, j)
			}
		}
	}
	for addr, at := range c.failed {
		if now.Sub(at) > c.cfg.ReconnectTimeout {
			delete(c.failed, addr)
			continue
		}
		if addr != self && !slices.Contains(out, addr) {
			out = append(out, addr)
		}
	}
	return out
}
