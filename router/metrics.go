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
	ws                 *wsMetrics // upgraded tunnels (websocket.go)

	mu    sync.Mutex              // guards pools
	pools map[string]*poolMetrics // by pool key; kept when a pool is re-created
	none  *poolMetrics            // requests that matched no pool
}

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
	m.none = m.forKey("")
	return m, nil
}

// poolMetrics are one pool's resolved children.
type poolMetrics struct {
	m        *metrics
	key      string
	duration prometheus.Observer
	inflight prometheus.Gauge

	mu    sync.Mutex                    // serialises adding a status code
	codes atomic.Pointer[[]codeCounter] // copy-on-write, a handful of entries
}

type codeCounter struct {
	code int
	c    prometheus.Counter
}

func (m *metrics) forKey(key string) *poolMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	if pm := m.pools[key]; pm != nil {
		return pm
	}
	pm := &poolMetrics{
		m:        m,
		key:      key,
		duration: m.duration.WithLabelValues(key),
		inflight: m.inflight.WithLabelValues(key),
	}
	pm.codes.Store(&[]codeCounter{})
	m.pools[key] = pm
	return pm
}

func (m *metrics) forPool(p *balancer.Pool) *poolMetrics {
	if pm, ok := p.Ext.Load().(*poolMetrics); ok {
		return pm
	}
	pm := m.forKey(p.Key)
	p.Ext.Store(pm)
	return pm
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

func (pm *poolMetrics) backendError(err error) {
	pm.m.backendErrs.WithLabelValues(pm.key, backendReason(err)).Inc()
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
