package acme

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/caddyserver/certmagic"
)

// Manager obtains, renews and serves ACME certificates, and answers the
// CA's challenges. Its methods are safe for concurrent use. New, then
// Start once, then Close.
//
// Goroutines, owned by the Manager and stopped by Close: syncLoop applies
// what peers share (files, challenge tokens) and reloads the certificates
// in service; orderLoop, on the leader only, orders and renews one name at
// a time.
type Manager struct {
	// Immutable after New.
	cfg   Config
	log   *slog.Logger
	m     *metrics
	now   func() time.Time
	store *storage
	iss   *issuer
	chal  *challenges
	cm    *certmagic.Config
	cache *certmagic.Cache // certmagic's; holds nothing (the served set does), stopped by Close

	limits *limits // on-demand rate limits (ondemand.go); safe for concurrent use

	snap     atomic.Pointer[servedSet] // the certificates in service (served.go)
	servedMu sync.Mutex                // serialises publish

	mu     sync.Mutex          // guards the fields below
	dirty  map[string]struct{} // blob keys peers changed, for syncLoop
	states map[string]*state   // order bookkeeping by name (order.go)

	syncWake, orderWake chan struct{} // buffered 1, never closed
	started             time.Time     // set by Start, before the loops run

	ctx       context.Context // ends orders in progress at Close
	cancel    context.CancelFunc
	stop      chan struct{} // closed by Close
	wg        sync.WaitGroup
	startOnce sync.Once
	closeOnce sync.Once
}

// New validates cfg, creates Dir (0700) and loads the certificates already
// in it, so that handshakes can use them at once; it orders nothing (Start
// does).
func New(cfg Config) (*Manager, error) {
	cfg.Domains = append([]string(nil), cfg.Domains...)
	cfg.Allow = append([]string(nil), cfg.Allow...)
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: directory: %w", err)
	}
	if err := os.Chmod(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("acme: directory: %w", err)
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = defaultHTTPClient(cfg)
	}
	log := cfg.Logger.With("component", "acme")
	mt, err := newMetrics(cfg.Registerer)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		cfg: cfg, log: log, m: mt, now: cfg.Now,
		store:     &storage{fs: &certmagic.FileStorage{Path: cfg.Dir}, cl: cfg.Cluster},
		limits:    newLimits(),
		dirty:     map[string]struct{}{},
		states:    map[string]*state{},
		syncWake:  make(chan struct{}, 1),
		orderWake: make(chan struct{}, 1),
		ctx:       ctx, cancel: cancel,
		stop: make(chan struct{}),
	}
	m.chal = &challenges{m: m, byName: map[string]*challenge{}}
	m.iss = newIssuer(m)
	zl := zapLogger(log)
	m.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return m.cm, nil },
		RenewCheckInterval: 24 * time.Hour, // nothing is managed in it: orderLoop renews
		Logger:             zl,
	})
	m.cm = certmagic.New(m.cache, certmagic.Config{
		Storage:            m.store,
		Issuers:            []certmagic.Issuer{m.iss},
		KeySource:          certmagic.StandardKeyGenerator{KeyType: certmagic.P256},
		RenewalWindowRatio: 1.0 / 3,
		Logger:             zl,
	})
	m.snap.Store(&servedSet{certs: map[string]*servedCert{}, changed: make(chan struct{})})
	m.reload(context.Background(), m.storedNames(context.Background())...)
	return m, nil
}

// defaultHTTPClient talks to the CA: its roots, the proxy from the
// environment, bounded dials, handshakes and responses.
func defaultHTTPClient(cfg Config) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			Proxy:                 http.ProxyFromEnvironment,
			DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
			TLSClientConfig:       &tls.Config{RootCAs: cfg.CARoots, MinVersion: tls.VersionTLS12},
			TLSHandshakeTimeout:   15 * time.Second,
			ResponseHeaderTimeout: 30 * time.Second,
			IdleConnTimeout:       90 * time.Second,
			MaxIdleConnsPerHost:   2,
		},
	}
}

// Start offers this router's files and configured names to the cluster
// and starts ordering (on the leader) and applying what peers share.
// Calls after the first, or after Close, do nothing.
func (m *Manager) Start() {
	m.startOnce.Do(func() {
		select {
		case <-m.stop:
			return
		default:
		}
		if n, err := m.store.seed(m.ctx, func(key string) { m.markDirty(blobStore + key) }); err != nil {
			m.log.Warn("acme: files not offered to the cluster", "err", err)
		} else if n > 0 {
			m.log.Debug("acme: files offered to the cluster", "files", n)
		}
		m.started = m.now()
		m.announceDomains()
		m.log.Info("acme: automatic HTTPS on", "ca", m.cfg.CA, "dir", m.cfg.Dir, "domains", m.cfg.Domains,
			"on_demand", m.cfg.OnDemand, "allow", m.cfg.Allow, "challenges", m.cfg.Challenges,
			"shared", m.cfg.Cluster != nil, "certificates", len(m.served().certs))
		m.wg.Add(2)
		go m.syncLoop()
		go m.orderLoop()
		kick(m.syncWake)
		kick(m.orderWake)
	})
}

// Close stops ordering (an order in progress is abandoned) and the
// goroutines, and waits for them. Certificates stay in service.
func (m *Manager) Close() error {
	m.closeOnce.Do(func() {
		close(m.stop)
		m.cancel()
		m.startOnce.Do(func() {})
		m.wg.Wait()
		m.cache.Stop()
	})
	return nil
}

func kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// BlobChanged is the cluster's BlobWatcher hook: a peer changed key.
func (m *Manager) BlobChanged(key string) {
	if strings.HasPrefix(key, "acme/") {
		m.markDirty(key)
	}
}

// MembersChanged is the cluster's BlobWatcher hook: the leader may have
// changed.
func (m *Manager) MembersChanged() { kick(m.orderWake) }

func (m *Manager) markDirty(key string) {
	m.mu.Lock()
	m.dirty[key] = struct{}{}
	m.mu.Unlock()
	kick(m.syncWake)
}

// leader reports whether this router orders: alone, or the cluster's
// leader.
func (m *Manager) leader() bool {
	cl := m.cfg.Cluster
	return cl == nil || cl.Leader() == cl.Name()
}

// orderer names the router that orders, for the admin API.
func (m *Manager) orderer() string {
	if cl := m.cfg.Cluster; cl != nil {
		return cl.Leader()
	}
	return ""
}

// syncLoop applies what peers changed.
func (m *Manager) syncLoop() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.syncWake:
		}
		m.syncPass()
	}
}

// syncPass applies the blobs peers changed since the last pass: files are
// written (or removed) and their certificates reloaded; challenge tokens
// are taken; order requests wake the orderLoop. A panic is logged, not
// fatal: serving goes on with what was loaded.
func (m *Manager) syncPass() {
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("acme: BUG: sync pass panicked", "panic", r)
		}
	}()
	m.mu.Lock()
	keys := m.dirty
	m.dirty = map[string]struct{}{}
	m.mu.Unlock()
	cl := m.cfg.Cluster
	if cl == nil {
		return
	}
	names := map[string]bool{}
	wakeOrders := false
	for key := range keys {
		val, at, ok := cl.Blob(key)
		switch {
		case strings.HasPrefix(key, blobStore):
			k := key[len(blobStore):]
			if !validKey(k) {
				m.log.Debug("acme: peer's storage key refused", "key", k)
				continue
			}
			if err := m.store.applyPeer(m.ctx, k, val, at, ok); err != nil {
				m.log.Warn("acme: peer's file not written", "key", k, "err", err)
				continue
			}
			m.peerFileChanged(k, names)
		case strings.HasPrefix(key, blobChal):
			m.chal.applyPeerChallenge(key[len(blobChal):], val, ok)
		case strings.HasPrefix(key, blobWant):
			m.dropStaleWant(key, val, ok)
			wakeOrders = true
		}
	}
	if len(names) > 0 {
		list := make([]string, 0, len(names))
		for n := range names {
			list = append(list, n)
		}
		sort.Strings(list)
		m.reload(m.ctx, list...)
		m.clearErrors(list)
	}
	if wakeOrders {
		kick(m.orderWake)
	}
}

// clearErrors forgets the failures of names a peer's certificate now
// serves: that order is moot.
func (m *Manager) clearErrors(names []string) {
	snap := m.served()
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, n := range names {
		if st := m.states[n]; st != nil && snap.certs[n] != nil && !st.force {
			delete(m.states, n)
		}
	}
}

// peerFileChanged notes which certificates in service a changed file
// affects, and forgets a cached account a peer replaced.
func (m *Manager) peerFileChanged(key string, names map[string]bool) {
	prefix := certmagic.StorageKeys.CertsPrefix(m.iss.key) + "/"
	switch {
	case strings.HasPrefix(key, prefix):
		if name, _, ok := strings.Cut(key[len(prefix):], "/"); ok {
			names[name] = true
		}
	case strings.HasPrefix(key, "ocsp/"):
		if i := strings.LastIndexByte(key, '-'); i > len("ocsp/") {
			names[key[len("ocsp/"):i]] = true
		}
	case key == m.iss.accountKey():
		m.iss.mu.Lock()
		m.iss.account = nil
		m.iss.mu.Unlock()
	}
}
