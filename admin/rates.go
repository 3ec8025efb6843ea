package admin

import (
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// rates turns the router's counters into the request and error rates the
// status page shows. It samples fastrouter_requests_total (and the open
// client connections) from the metrics Gatherer every interval and keeps a
// short window of samples, so the request path keeps nothing extra for it.
//
// The goroutine started by start is owned by the Handler and stopped by
// Handler.Close.
type rates struct {
	g        prometheus.Gatherer // immutable
	interval time.Duration       // immutable
	keep     int                 // samples in the window; immutable
	now      func() time.Time    // immutable

	mu      sync.Mutex
	samples []sample // oldest first, at most keep; guarded by mu

	stop chan struct{} // closed by close
	done chan struct{} // closed when the goroutine returns
}

// sample is the counters at one instant.
type sample struct {
	at    time.Time
	pools map[string]counts // by pool label; "" is requests that matched no pool
	conns float64           // open client connections
}

// counts are cumulative request counts.
type counts struct {
	requests float64
	errors   float64 // 5xx: answered by the router or the node with a server error
}

// rate is a pool's (or the router's) per-second rates over the window.
type rate struct {
	Requests, Errors float64
	OK               bool // false until the window has two samples
}

func newRates(g prometheus.Gatherer, interval time.Duration, window time.Duration, now func() time.Time) *rates {
	return &rates{
		g: g, interval: interval, now: now,
		keep: max(2, int(window/interval)+1),
		stop: make(chan struct{}), done: make(chan struct{}),
	}
}

// start takes a first sample at once and then one per interval.
func (r *rates) start() {
	r.sample()
	go func() {
		defer close(r.done)
		t := time.NewTicker(r.interval)
		defer t.Stop()
		for {
			select {
			case <-r.stop:
				return
			case <-t.C:
				r.sample()
			}
		}
	}()
}

func (r *rates) close() {
	close(r.stop)
	<-r.done
}

// sample gathers the metrics once and appends a sample.
func (r *rates) sample() {
	mfs, err := r.g.Gather()
	if err != nil && len(mfs) == 0 {
		return // a partial gather still has what we need
	}
	s := sample{at: r.now(), pools: map[string]counts{}}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "fastrouter_requests_total":
			for _, m := range mf.GetMetric() {
				var pool string
				var code int
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "pool":
						pool = l.GetValue()
					case "code":
						code, _ = strconv.Atoi(l.GetValue())
					}
				}
				c := s.pools[pool]
				v := m.GetCounter().GetValue()
				c.requests += v
				if code >= 500 && code <= 599 {
					c.errors += v
				}
				s.pools[pool] = c
			}
		case "fastrouter_client_connections":
			for _, m := range mf.GetMetric() {
				s.conns += m.GetGauge().GetValue()
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.samples = append(r.samples, s)
	if len(r.samples) > r.keep {
		r.samples = append(r.samples[:0], r.samples[len(r.samples)-r.keep:]...)
	}
}

// snapshot returns the per-pool rates, the router's total and the open
// connections of the newest sample.
func (r *rates) snapshot() (pools map[string]rate, total rate, conns float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	pools = map[string]rate{}
	if len(r.samples) == 0 {
		return pools, rate{}, 0
	}
	newest := r.samples[len(r.samples)-1]
	conns = newest.conns
	if len(r.samples) < 2 {
		return pools, rate{}, conns
	}
	oldest := r.samples[0]
	dt := newest.at.Sub(oldest.at).Seconds()
	if dt <= 0 {
		return pools, rate{}, conns
	}
	total.OK = true
	for k, n := range newest.pools {
		o := oldest.pools[k] // zero when the pool is new
		pr := rate{Requests: increase(o.requests, n.requests) / dt, Errors: increase(o.errors, n.errors) / dt, OK: true}
		pools[k] = pr
		total.Requests += pr.Requests
		total.Errors += pr.Errors
	}
	return pools, total, conns
}

// increase is a counter's increase from old to cur; a counter that went
// down was reset (its pool's series were pruned and re-created), so all of
// cur is new, as Prometheus's rate() reads it.
func increase(old, cur float64) float64 {
	if cur < old {
		return cur
	}
	return cur - old
}
