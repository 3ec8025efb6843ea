package acme

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"time"

	"github.com/caddyserver/certmagic"
	acmeproto "github.com/mholt/acmez/v3/acme"
)

// Ordering. One router orders for the whole cluster: the leader, the live
// member with the lowest name (cluster.Leader), chosen as the drain
// notifier is; alone, the router itself. Its orderLoop keeps every wanted
// name's certificate current, one order at a time:
//
//   - a name without a certificate is ordered (certmagic ObtainCertSync:
//     a new P-256 key, a CSR, this package's issuer);
//   - one whose renewal is due is renewed (RenewCertSync): at the time the
//     CA's renewal information chose, else two thirds into its lifetime;
//   - a failure is retried with back-off: from RetryBase doubling to
//     RetryMax while the CA cannot be reached, from ProblemRetryBase
//     doubling to ProblemRetryMax when the CA refused (an ACME problem),
//     while the certificate in service, if any, keeps serving.
//
// Wanted names: this router's Domains; every live member's Domains (each
// announces them as want blobs); on-demand requests (ondemand.go); and, for
// renewal, stored certificates of names still eligible on demand.
//
// While membership changes two routers may both believe they lead for a
// moment and order the same name twice; certmagic's lock files prevent it
// between two processes on one directory (a binary upgrade).

// state is the leader's bookkeeping for one name. Guarded by Manager.mu.
type state struct {
	onDemand  bool
	next      time.Time // no attempt before (back-off); zero: when due
	failures  int
	lastErr   string
	lastErrAt time.Time
	force     bool // renew now (OCSP said revoked)
}

// wantRecord is a want blob: a router asks the leader to keep a name's
// certificate. Configured wants (the router's --acme-domain) last while
// that router is a live member; on-demand ones until the leader ordered.
type wantRecord struct {
	Configured bool `json:"configured"`
}

// errRecord is an err blob: the leader's last failure for a name, so every
// router's admin API shows it.
type errRecord struct {
	Error string    `json:"error"`
	At    time.Time `json:"at"`
	Next  time.Time `json:"next"`
}

func (m *Manager) orderLoop() {
	defer m.wg.Done()
	fetched := map[string]time.Time{} // OCSP fetches, by staple key
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-m.orderWake:
		case <-t.C:
		}
		wait := m.orderPass(fetched)
		if !t.Stop() {
			select {
			case <-t.C:
			default:
			}
		}
		t.Reset(wait)
	}
}

// orderPass acts on every name that is due and returns how long to sleep.
// A panic is logged, not fatal.
func (m *Manager) orderPass(fetched map[string]time.Time) (wait time.Duration) {
	wait = time.Minute
	defer func() {
		if r := recover(); r != nil {
			m.log.Error("acme: BUG: order pass panicked", "panic", r)
		}
	}()
	if !m.leader() {
		return time.Minute // MembersChanged wakes us sooner
	}
	if w := m.joinWait(); w > 0 {
		return w
	}
	wanted := m.wanted(m.ctx)
	names := make([]string, 0, len(wanted))
	for n := range wanted {
		names = append(names, n)
	}
	sort.Strings(names)
	next := m.now().Add(time.Hour)
	for _, name := range names {
		select {
		case <-m.stop:
			return 0
		default:
		}
		if at := m.dueAt(name, m.now()); at.After(m.now()) {
			next = minTime(next, at)
			continue
		}
		m.orderOne(name, wanted[name])
		next = minTime(next, m.dueAt(name, m.now()))
	}
	m.refreshStaples(m.ctx, fetched)
	return max(next.Sub(m.now()), 50*time.Millisecond)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

// dueAt is when name needs the orderLoop next: after its back-off, at once
// when it has no certificate or a renewal is forced, else when its renewal
// is due.
func (m *Manager) dueAt(name string, now time.Time) time.Time {
	m.mu.Lock()
	st := m.states[name]
	var next time.Time
	force := false
	if st != nil {
		next, force = st.next, st.force
	}
	m.mu.Unlock()
	if next.After(now) {
		return next
	}
	sc := m.served().certs[name]
	if sc == nil || force {
		return now
	}
	return sc.due
}

// wanted returns the names the leader keeps, and whether each is on demand.
func (m *Manager) wanted(ctx context.Context) map[string]bool {
	out := map[string]bool{}
	for _, d := range m.cfg.Domains {
		out[d] = false
	}
	if cl := m.cfg.Cluster; cl != nil {
		live := map[string]bool{}
		for _, n := range cl.Members() {
			live[n] = true
		}
		for _, key := range cl.BlobKeys(blobWant) {
			name, by, ok := splitWant(key)
			if !ok {
				continue
			}
			val, _, ok := cl.Blob(key)
			if !ok {
				continue
			}
			w, err := parseWant(val)
			switch {
			case err != nil:
			case w.Configured && live[by]:
				out[name] = false
			case !w.Configured && m.eligible(name):
				if _, configured := out[name]; !configured {
					out[name] = true
				}
			}
		}
	}
	for _, name := range m.limits.pendingNames(m.now()) {
		if _, ok := out[name]; !ok && m.eligible(name) {
			out[name] = true
		}
	}
	for _, name := range m.storedNames(ctx) {
		if _, ok := out[name]; !ok && m.cfg.OnDemand && m.eligible(name) {
			out[name] = true
		}
	}
	return out
}

// eligible: on-demand issuance may order name (ondemand.go explains).
func (m *Manager) eligible(name string) bool {
	return m.cfg.OnDemand && m.cfg.allowed(name) && m.cfg.Pools.HasPool(name)
}

// joinWait is how much longer a router alone in its cluster waits for
// peers before ordering (Config.JoinWait), or 0.
func (m *Manager) joinWait() time.Duration {
	cl := m.cfg.Cluster
	if cl == nil || len(cl.Members()) > 1 {
		return 0
	}
	return max(m.started.Add(m.cfg.JoinWait).Sub(m.now()), 0)
}

// lockRecord is a lock blob: the leader orders the name until Until.
// Another router that becomes leader meanwhile waits for it rather than
// order the same name again.
type lockRecord struct {
	By    string    `json:"by"`
	Until time.Time `json:"until"`
}

// parseLock decodes a lock blob from a peer (FuzzParsePeerRecords).
func parseLock(b []byte) (lockRecord, error) {
	var l lockRecord
	if len(b) > 512 {
		return l, errors.New("acme: lock record too large")
	}
	err := json.Unmarshal(b, &l)
	return l, err
}

// busyElsewhere reports until when another live router orders name, or
// whether the cluster already holds a certificate that this router has not
// written yet (syncLoop will): ordering now would order twice.
func (m *Manager) busyElsewhere(name string, now time.Time) (time.Time, bool) {
	cl := m.cfg.Cluster
	if cl == nil {
		return time.Time{}, false
	}
	if val, _, ok := cl.Blob(blobLock + name); ok {
		if l, err := parseLock(val); err == nil && l.By != cl.Name() && now.Before(l.Until) && slices.Contains(cl.Members(), l.By) {
			return l.Until, true
		}
	}
	if m.served().certs[name] == nil {
		if _, _, ok := cl.Blob(blobStore + certmagic.StorageKeys.SiteCert(m.iss.key, name)); ok {
			kick(m.syncWake)
			return now.Add(time.Second), true
		}
	}
	return time.Time{}, false
}

// orderOne orders or renews name now and records the outcome.
func (m *Manager) orderOne(name string, onDemand bool) {
	now := m.now()
	if until, busy := m.busyElsewhere(name, now); busy {
		m.setNext(name, until)
		return
	}
	sc := m.served().certs[name]
	renewal := sc != nil || m.store.Exists(m.ctx, certmagic.StorageKeys.SiteCert(m.iss.key, name))
	if !renewal && onDemand && !m.limits.takeOrder(now) {
		m.m.onDemandLimited.Inc()
		m.setNext(name, now.Add(onDemandRefill))
		return
	}
	if cl := m.cfg.Cluster; cl != nil {
		b, _ := json.Marshal(lockRecord{By: cl.Name(), Until: now.Add(m.cfg.OrderTimeout)})
		_ = cl.PutBlob(m.ctx, blobLock+name, b, false)
		defer func() { _ = cl.DeleteBlob(blobLock + name) }()
	}
	ctx, cancel := context.WithTimeout(m.ctx, m.cfg.OrderTimeout)
	start := m.now()
	var err error
	if renewal {
		err = m.cm.RenewCertSync(ctx, name, true)
	} else {
		err = m.cm.ObtainCertSync(ctx, name)
	}
	cancel()
	if m.ctx.Err() != nil {
		return // shutting down: neither a success nor a failure
	}
	if err == nil {
		m.reload(m.ctx, name)
		if m.served().certs[name] == nil {
			err = errors.New("acme: the stored certificate is not usable")
		}
	}
	m.record(name, renewal, onDemand, err, m.now().Sub(start))
}

// record counts, logs and remembers an order's outcome.
func (m *Manager) record(name string, renewal, onDemand bool, err error, took time.Duration) {
	what, okC, errC := "obtained", m.m.ordersOK, m.m.ordersErr
	if renewal {
		what, okC, errC = "renewed", m.m.renewalsOK, m.m.renewalsErr
	}
	cl := m.cfg.Cluster
	if err == nil {
		okC.Inc()
		m.mu.Lock()
		delete(m.states, name)
		m.mu.Unlock()
		m.limits.done(name)
		sc := m.served().certs[name]
		m.log.Info("acme: certificate "+what, "name", name, "not_after", sc.notAfter.UTC().Format(time.RFC3339),
			"next_renewal", sc.due.UTC().Format(time.RFC3339), "on_demand", onDemand, "took", took.Round(time.Millisecond))
		if cl != nil {
			_ = cl.DeleteBlob(blobErr + name)
			m.dropOnDemandWants(name)
		}
		return
	}
	errC.Inc()
	now := m.now()
	m.mu.Lock()
	st := m.states[name]
	if st == nil {
		st = &state{}
		m.states[name] = st
	}
	st.onDemand, st.force = onDemand, false
	st.failures++
	st.lastErr, st.lastErrAt = trimErr(err), now
	st.next = now.Add(m.backoff(err, st.failures))
	failures, next, lastErr := st.failures, st.next, st.lastErr
	m.mu.Unlock()
	serving := "the default certificate"
	if m.served().certs[name] != nil {
		serving = "the current certificate"
	}
	m.log.Error("acme: certificate not "+what+"; retrying", "name", name, "err", err, "failures", failures,
		"retry_in", next.Sub(now).Round(time.Second), "serving", serving)
	if onDemand && !renewal {
		m.limits.failed(name, now, next.Sub(now))
		if cl != nil {
			m.dropOnDemandWants(name) // a new handshake asks again, rate-limited
		}
	}
	if cl != nil {
		b, _ := json.Marshal(errRecord{Error: lastErr, At: now, Next: next})
		_ = cl.PutBlob(m.ctx, blobErr+name, b, false)
	}
	// Waiters on an on-demand name stop waiting.
	m.publish(func(map[string]*servedCert) {})
}

// backoff is the wait before attempt failures+1: ACME problems (the CA
// refused) back off from ProblemRetryBase, anything else (the CA not
// reached) from RetryBase; each doubles to its maximum.
func (m *Manager) backoff(err error, failures int) time.Duration {
	base, limit := m.cfg.RetryBase, m.cfg.RetryMax
	var prob acmeproto.Problem
	if errors.As(err, &prob) {
		base, limit = m.cfg.ProblemRetryBase, m.cfg.ProblemRetryMax
	}
	d := base
	for i := 1; i < failures && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

func trimErr(err error) string {
	s := err.Error()
	if len(s) > 1024 {
		s = s[:1024] + "…"
	}
	return s
}

func (m *Manager) setNext(name string, at time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	st := m.states[name]
	if st == nil {
		st = &state{}
		m.states[name] = st
	}
	st.next = at
}

// forceRenewal renews name at the next pass (its certificate was revoked).
func (m *Manager) forceRenewal(name string) {
	m.mu.Lock()
	st := m.states[name]
	if st == nil {
		st = &state{}
		m.states[name] = st
	}
	st.force, st.next = true, time.Time{}
	m.mu.Unlock()
	kick(m.orderWake)
}

// announceDomains publishes this router's Domains as configured wants, so
// that the leader keeps them whichever router it is.
func (m *Manager) announceDomains() {
	cl := m.cfg.Cluster
	if cl == nil {
		return
	}
	b, _ := json.Marshal(wantRecord{Configured: true})
	for _, d := range m.cfg.Domains {
		if err := cl.PutBlob(m.ctx, wantKey(d, cl.Name()), b, false); err != nil {
			m.log.Warn("acme: domain not announced to the cluster", "name", d, "err", err)
		}
	}
}

// dropStaleWant deletes a configured want this router made in an earlier
// life for a name it no longer configures.
func (m *Manager) dropStaleWant(key string, val []byte, ok bool) {
	cl := m.cfg.Cluster
	name, by, valid := splitWant(key)
	if !ok || !valid || by != cl.Name() || slices.Contains(m.cfg.Domains, name) {
		return
	}
	if w, err := parseWant(val); err == nil && w.Configured {
		_ = cl.DeleteBlob(key)
	}
}

// dropOnDemandWants deletes every router's on-demand want for name.
func (m *Manager) dropOnDemandWants(name string) {
	cl := m.cfg.Cluster
	for _, key := range cl.BlobKeys(blobWant + name + "/") {
		if val, _, ok := cl.Blob(key); ok {
			if w, err := parseWant(val); err == nil && !w.Configured {
				_ = cl.DeleteBlob(key)
			}
		}
	}
}

func wantKey(name, router string) string { return blobWant + name + "/" + router }

// splitWant splits a want blob key into its name and router.
func splitWant(key string) (name, by string, ok bool) {
	if len(key) <= len(blobWant) {
		return "", "", false
	}
	name, by, ok = cutOnce(key[len(blobWant):], '/')
	if n, valid := normalizeName(name); !ok || !valid || n != name || by == "" {
		return "", "", false
	}
	return name, by, true
}

func cutOnce(s string, sep byte) (string, string, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] == sep {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

// parseWant decodes a want blob from a peer (FuzzParseWant).
func parseWant(b []byte) (wantRecord, error) {
	var w wantRecord
	if len(b) > 256 {
		return w, errors.New("acme: want record too large")
	}
	err := json.Unmarshal(b, &w)
	return w, err
}
