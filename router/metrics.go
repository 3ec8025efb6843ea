package router

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics holds the router's metric families, registered on the registry
// passed to New. Per-pool children are resolved once per pool and cached on
// the pool (balancer.Pool.Ext), so the request path does no label hashing.
type metrics struct {
	requests    *prometheus.CounterVec
	duration    *prometheus.HistogramVec
	backendErrs *prometheus.CounterVec
	inflight    *prometheus.GaugeVec
	overloaded  *prometheus.CounterVec
	clientConns *prometheus.GaugeVec
	// tlsHandshakeErrors counts failed TLS handshakes (scanners, clients
	// asking for a name with no certificate, timeouts).
	tlsHandshakeErrors prometheus.Counter
	ws                 *wsMetrics // upgraded tunnels (tunnel.go)

	mu    sync.Mutex              // guards pools
	pools map[string]*poolMetrics // by pool key; kept when a pool is re-created, until pruned
	none  *poolMetrics            // requests that matched no pool (label pool="")
	// overflow takes the requests of pools created once maxPoolSeries pools
	// have series, so a flood of subscribed keys cannot grow /metrics
	// without bound. Created on first use; guarded by mu.
	overflow *poolMetrics
}

// maxPoolSeries bounds the pool label values the router's families carry.
// A pool beyond it is counted under pool="(overflow)" until pruning (of
// pools that left the table) makes room. Keys cannot contain a space, but
// they can contain parentheses: the name was chosen to be unlikely, not
// impossible.
const maxPoolSeries = 10000

// overflowKey labels the requests of pools beyond maxPoolSeries.
const overflowKey = "(overflow)"

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_requests_total",
			Help: "Requests answered, by pool key and HTTP status code.",
		}, []string{"pool", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "fastrouter_request_duration_seconds",
			Help:    "Time from routing a request to the end of its response body.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
		}, []string{"pool"}),
		backendErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_backend_errors_total",
			Help: "Backend failures, by pool key and reason.",
		}, []string{"pool", "reason"}),
		inflight: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fastrouter_inflight_requests",
			Help: "Requests currently being forwarded, by pool key.",
		}, []string{"pool"}),
		overloaded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_overload_rejections_total",
			Help: "Requests answered 503 because every node was at its in-flight cap, by pool key and reason (queue_full, queue_timeout).",
		}, []string{"pool", "reason"}),
		clientConns: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "fastrouter_client_connections",
			Help: "Open client connections, by listener and protocol.",
		}, []string{"listener", "proto"}),
		tlsHandshakeErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_tls_handshake_errors_total",
			Help: "TLS handshakes that failed or timed out.",
		}),
		pools: map[string]*poolMetrics{},
	}
	for _, c := range []prometheus.Collector{m.requests, m.duration, m.backendErrs, m.inflight, m.overloaded, m.clientConns, m.tlsHandshakeErrors} {
		if err := reg.Register(c); err != nil {
			return nil, err
		}
	}
	var err error
	if m.ws, err = newWSMetrics(reg); err != nil {
		return nil, err
	}
	m.none = m.newPoolMetrics("")
	return m, nil
}

// poolMetrics are one pool's resolved children.
type poolMetrics struct {
	m        *metrics
	key      string
	duration prometheus.Observer
	inflight prometheus.Gauge

	mu    sync.Mutex                    // serialises creating children, and pruning
	codes atomic.Pointer[[]codeCounter] // copy-on-write, a handful of entries
	// errs are the backend_errors_total children by reason, resolved on
	// first use so a pool without errors exports none.
	errs [numReasons]atomic.Pointer[prometheus.Counter]
	// dead is set when pruning deleted this pool's series: a pool that
	// still caches it (in Pool.Ext) resolves fresh children.
	dead atomic.Bool
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

func (m *metrics) newPoolMetrics(key string) *poolMetrics {
	pm := &poolMetrics{
		m:        m,
		key:      key,
		duration: m.duration.WithLabelValues(key),
		inflight: m.inflight.WithLabelValues(key),
	}
	pm.codes.Store(&[]codeCounter{})
	return pm
}

// forKey returns the children of pool key, creating them unless
// maxPoolSeries pools have some (then: the overflow children, and ok false).
func (m *metrics) forKey(key string) (pm *poolMetrics, ok bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pm := m.pools[key]; pm != nil {
		return pm, true
	}
	if len(m.pools) >= maxPoolSeries {
		if m.overflow == nil {
			m.overflow = m.newPoolMetrics(overflowKey)
		}
		return m.overflow, false
	}
	pm = m.newPoolMetrics(key)
	m.pools[key] = pm
	return pm, true
}

func (m *metrics) forPool(p *balancer.Pool) *poolMetrics {
	if pm, ok := p.Ext.Load().(*poolMetrics); ok && !pm.dead.Load() {
		return pm
	}
	pm, ok := m.forKey(p.Key)
	if ok {
		// Not cached when overflowing: the pool gets its own series as
		// soon as pruning makes room.
		p.Ext.Store(pm)
	}
	return pm
}

// prune deletes the series of every pool for which exists reports false,
// and returns how many pools it pruned. A request in flight for a pruned
// pool finishes on detached children (its counts are lost); a pool created
// again under the same key gets fresh series.
func (m *metrics) prune(exists func(key string) bool) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for key, pm := range m.pools {
		if exists(key) {
			continue
		}
		// Under pm.mu, which child creation also takes: no request can
		// add a child for this key after its series are deleted.
		pm.mu.Lock()
		pm.dead.Store(true)
		delete(m.pools, key)
		l := prometheus.Labels{"pool": key}
		m.requests.DeletePartialMatch(l)
		m.duration.DeletePartialMatch(l)
		m.inflight.DeletePartialMatch(l)
		m.backendErrs.DeletePartialMatch(l)
		m.overloaded.DeletePartialMatch(l)
		pm.mu.Unlock()
		n++
	}
	return n
}

// PruneMetrics deletes the per-pool series of pools that no longer exist:
// exists reports whether a pool key is still in the routing table. Pools
// come and go with subscriptions, so without pruning the pool label would
// grow with every key ever announced. Safe for concurrent use; run it from
// a timer (cmd/fastrouter does, every 30s).
func (rt *Router) PruneMetrics(exists func(key string) bool) int {
	return rt.metrics.prune(exists)
}

// count increments requests_total{pool, code}. Allocation-free once the code
// has been seen for the pool.
func (pm *poolMetrics) count(code int) {
	for _, cc := range *pm.codes.Load() {
		if cc.code == code {
			cc.c.Inc()
			return
		}
	}
	pm.mu.Lock()
	if pm.dead.Load() {
		pm.mu.Unlock()
		return // pruned: a new child would be a series nobody deletes
	}
	cur := *pm.codes.Load()
	for _, cc := range cur {
		if cc.code == code {
			pm.mu.Unlock()
			cc.c.Inc()
			return
		}
	}
	next := append(append(make([]codeCounter, 0, len(cur)+1), cur...),
		codeCounter{code, pm.m.requests.WithLabelValues(pm.key, strconv.Itoa(code))})
	pm.codes.Store(&next)
	pm.mu.Unlock()
	next[len(next)-1].c.Inc()
}

// backendError increments backend_errors_total{pool, reason}.
// Allocation-free once the reason has been seen for the pool.
func (pm *poolMetrics) backendError(err error) {
	r := backendReason(err)
	slot := &pm.errs[r]
	c := slot.Load()
	if c == nil {
		pm.mu.Lock()
		if pm.dead.Load() {
			pm.mu.Unlock()
			return // pruned, as in count
		}
		if c = slot.Load(); c == nil {
			nc := pm.m.backendErrs.WithLabelValues(pm.key, reasonNames[r])
			c = &nc
			slot.Store(c)
		}
		pm.mu.Unlock()
	}
	(*c).Inc()
}

// overloaded counts a request refused by the pool's overload protection.
// Not the hot path: only requests that found every node at its cap get here.
func (pm *poolMetrics) overloaded(err error) {
	reason := "queue_timeout"
	if err == errQueueFull {
		reason = "queue_full"
	}
	pm.m.overloaded.WithLabelValues(pm.key, reason).Inc()
}
