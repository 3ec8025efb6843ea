package acme

import (
	"crypto/tls"
	"encoding/json"
	"sort"
	"sync"
	"time"
)

// On-demand issuance (--acme-on-demand). A handshake for a name without a
// certificate triggers an order only when all of these hold:
//
//   - the name is exactly the key of an existing pool (not a wildcard or
//     mount key, and not merely routed by --fallback-key): a node
//     subscribed for it, or it is configured;
//   - it equals or is a subdomain of an --acme-allow suffix;
//   - the rate limits allow: this router asks for at most onDemandBurst
//     new names at once and one more every onDemandRefill (the leader
//     orders at that rate too, for the whole cluster), and a name whose
//     order failed waits its back-off before it is asked for again.
//
// Any other name gets the default certificate at once, and nothing is
// ordered; an attacker choosing SNI names cannot make the router order,
// nor spend the CA's rate limits. The handshake that triggers an order
// waits up to OnDemandWait for it, then gets the default certificate; the
// next handshake gets the new certificate.

// On-demand rate limits.
const (
	onDemandBurst   = 10
	onDemandRefill  = 30 * time.Second // so at most 120 new names an hour
	onDemandPending = 3 * time.Minute  // a request unanswered this long failed
	maxTrackedNames = 10000
)

// limits are the on-demand rate limits. Safe for concurrent use.
type limits struct {
	mu       sync.Mutex
	requests bucket                // new names this router asks for
	orders   bucket                // new names the leader orders
	names    map[string]*nameLimit // names asked for or failed recently
}

type nameLimit struct {
	pendingSince time.Time // zero: not pending
	failures     int
	notBefore    time.Time // not asked for again before
}

// bucket is a token bucket of onDemandBurst, refilled one per
// onDemandRefill.
type bucket struct {
	tokens float64
	at     time.Time
}

func (b *bucket) take(now time.Time) bool {
	if b.at.IsZero() {
		b.tokens, b.at = onDemandBurst, now
	}
	if now.After(b.at) {
		b.tokens = min(onDemandBurst, b.tokens+float64(now.Sub(b.at))/float64(onDemandRefill))
		b.at = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

func newLimits() *limits { return &limits{names: map[string]*nameLimit{}} }

// Outcomes of limits.request.
const (
	reqNew = iota
	reqPending
	reqLimited
)

// request decides what a handshake for name does: ask for it (reqNew),
// wait for an order already asked for (reqPending), or get the default
// certificate (reqLimited).
func (l *limits) request(name string, now time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.names[name]
	if st != nil && !st.pendingSince.IsZero() {
		if now.Sub(st.pendingSince) < onDemandPending {
			return reqPending
		}
		st.pendingSince = time.Time{} // never answered: a failure
		st.failures++
		st.notBefore = now.Add(onDemandRefill << min(st.failures, 7))
	}
	if st != nil && now.Before(st.notBefore) {
		return reqLimited
	}
	if st == nil && len(l.names) >= maxTrackedNames {
		l.pruneLocked(now)
		if len(l.names) >= maxTrackedNames {
			return reqLimited
		}
	}
	if !l.requests.take(now) {
		return reqLimited
	}
	if st == nil {
		st = &nameLimit{}
		l.names[name] = st
	}
	st.pendingSince = now
	return reqNew
}

// pending reports whether an order for name is asked for and unanswered.
func (l *limits) pending(name string, now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.names[name]
	return st != nil && !st.pendingSince.IsZero() && now.Sub(st.pendingSince) < onDemandPending
}

// pendingNames lists the names asked for here and unanswered.
func (l *limits) pendingNames(now time.Time) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for n, st := range l.names {
		if !st.pendingSince.IsZero() && now.Sub(st.pendingSince) < onDemandPending {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// takeOrder spends the leader's token for a new on-demand order.
func (l *limits) takeOrder(now time.Time) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.orders.take(now)
}

// done forgets name: it has a certificate.
func (l *limits) done(name string) {
	l.mu.Lock()
	delete(l.names, name)
	l.mu.Unlock()
}

// failed records a failed order for name: not asked for again for wait.
func (l *limits) failed(name string, now time.Time, wait time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	st := l.names[name]
	if st == nil {
		st = &nameLimit{}
		l.names[name] = st
	}
	st.pendingSince = time.Time{}
	st.failures++
	st.notBefore = now.Add(wait)
}

// pruneLocked forgets names neither pending nor held back any more.
func (l *limits) pruneLocked(now time.Time) {
	for n, st := range l.names {
		if st.pendingSince.IsZero() && !now.Before(st.notBefore) {
			delete(l.names, n)
		}
	}
}

// onDemand is GetCertificate for a name without a certificate.
func (m *Manager) onDemand(name string) (*tls.Certificate, error) {
	if !m.cfg.allowed(name) {
		m.m.onDemandNotAllowed.Inc()
		return nil, nil
	}
	if !m.cfg.Pools.HasPool(name) {
		m.m.onDemandNotPool.Inc()
		return nil, nil
	}
	switch m.limits.request(name, m.now()) {
	case reqLimited:
		m.m.onDemandLimited.Inc()
		return nil, nil
	case reqNew:
		m.m.onDemandRequested.Inc()
		m.ask(name)
	}
	return m.waitServed(name, m.cfg.OnDemandWait), nil
}

// ask has the leader order name: this router's orderLoop, or the leader's
// through a want blob.
func (m *Manager) ask(name string) {
	if m.leader() {
		kick(m.orderWake)
		return
	}
	cl := m.cfg.Cluster
	b, _ := json.Marshal(wantRecord{})
	if err := cl.PutBlob(m.ctx, wantKey(name, cl.Name()), b, false); err != nil {
		m.log.Warn("acme: on-demand request not sent to the leader", "name", name, "leader", cl.Leader(), "err", err)
	}
}
