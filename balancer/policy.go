package balancer

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Policy is how one pool balances and protects its nodes. The Table has a
// default Policy (Config.Policy) and per-key overrides (SetPolicies, from the
// pools: section of the configuration file); a zero field takes the
// default's value.
type Policy struct {
	// Algo is the pool's algorithm, fixed when the pool is created. It wins
	// over the algo= key of the subscription that creates the pool: the
	// operator's file outranks a datagram.
	Algo Algo
	// MaxInflight caps the requests in flight to each node: 0 = no cap,
	// LimitAuto = the cores the node announced (uWSGI sends processes ×
	// threads, i.e. its workers) plus a quarter, at least one (autoCap); a
	// node that announced none is not capped.
	// A request that finds every candidate at its cap waits in the pool's
	// queue instead of piling into uWSGI's listen queue, where it would wait
	// anyway but invisibly, unboundedly, and behind a worker that may be
	// stuck.
	MaxInflight int64
	// QueueSize bounds the requests of one pool waiting for a node under its
	// cap; more are refused at once (503 + Retry-After). 0 with a cap: the
	// default, 1024.
	QueueSize int
	// QueueTimeout bounds one wait; then 503 + Retry-After. Default 10s.
	QueueTimeout time.Duration
}

// LimitAuto as Policy.MaxInflight caps each node at autoCap of the cores
// it announced.
const LimitAuto = -1

// autoCap is a node's cap under LimitAuto: its cores, plus a quarter of
// them (at least one) waiting in its own listen queue.
//
// Why not the cores alone: a worker that finishes a request frees its slot
// only when the router has read the response; the router then wakes a
// queued request, connects and sends it, and the node accepts it. The
// worker idles through that round trip (a few hundred microseconds, far
// more on a busy machine), so a pool capped at exactly its workers serves
// measurably less than its workers could: in the fleet benchmark
// (docs/benchmarks.md) a pool at 80% of its measured capacity queued
// without bound. A request waiting in the node's listen queue is accepted
// the moment a worker is free. The headroom stays small so that little
// waits behind a stuck worker, which is what the cap is for.
func autoCap(cores uint64) int64 {
	c := int64(min(cores, 1<<20))
	return c + max(1, (c+3)/4)
}

// Queue defaults, applied when a pool has a cap but no queue settings.
// The queue takes over what uWSGI's listen queues would hold (100 per node
// by default), so it is sized for the backlog of a pool of several nodes
// through a burst or a node's loss: 1024 is about half a second of a pool
// serving 2000 requests a second. A waiting request holds no node.
const (
	DefaultQueueSize    = 1024
	DefaultQueueTimeout = 10 * time.Second
)

// ParseLimit parses a MaxInflight setting: "auto", or a count (0 = off).
func ParseLimit(s string) (int64, error) {
	if s == "auto" {
		return LimitAuto, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 || n > 1<<20 {
		return 0, fmt.Errorf("max in-flight %q: want auto or a count from 0 to 1048576", s)
	}
	return n, nil
}

// FormatLimit is the inverse of ParseLimit.
func FormatLimit(n int64) string {
	if n == LimitAuto {
		return "auto"
	}
	return strconv.FormatInt(n, 10)
}

// Validate checks a policy's fields.
func (pol Policy) Validate() error {
	if pol.Algo != "" {
		if _, err := ParseAlgo(string(pol.Algo)); err != nil {
			return err
		}
	}
	if pol.MaxInflight < LimitAuto || pol.MaxInflight > 1<<20 {
		return fmt.Errorf("balancer: max in-flight %d out of range", pol.MaxInflight)
	}
	if pol.QueueSize < 0 || pol.QueueSize > 1<<20 {
		return fmt.Errorf("balancer: queue size %d out of range", pol.QueueSize)
	}
	if pol.QueueTimeout < 0 {
		return errors.New("balancer: negative queue timeout")
	}
	return nil
}

// over returns pol with its zero fields taken from def, and queue defaults
// filled in when the result has a cap.
func (pol Policy) over(def Policy) Policy {
	if pol.Algo == "" {
		pol.Algo = def.Algo
	}
	if pol.MaxInflight == 0 {
		pol.MaxInflight = def.MaxInflight
	}
	if pol.QueueSize == 0 {
		pol.QueueSize = def.QueueSize
	}
	if pol.QueueTimeout == 0 {
		pol.QueueTimeout = def.QueueTimeout
	}
	if pol.MaxInflight != 0 {
		if pol.QueueSize == 0 {
			pol.QueueSize = DefaultQueueSize
		}
		if pol.QueueTimeout == 0 {
			pol.QueueTimeout = DefaultQueueTimeout
		}
	}
	return pol
}

// policies is an immutable snapshot of the per-key overrides, keyed by the
// lower-cased pool key.
type policies map[string]Policy

func normalizePolicies(in map[string]Policy) (policies, error) {
	out := make(policies, len(in))
	for k, pol := range in {
		if k == "" || len(k) > maxKeyLen || !validKey([]byte(k)) {
			return nil, fmt.Errorf("balancer: policy for bad pool key %q", k)
		}
		if err := pol.Validate(); err != nil {
			return nil, fmt.Errorf("pool %s: %w", k, err)
		}
		lk := strings.ToLower(k)
		if _, dup := out[lk]; dup {
			return nil, fmt.Errorf("balancer: two policies for pool key %q (keys are case-insensitive)", k)
		}
		out[lk] = pol
	}
	return out, nil
}

// policyFor is the effective policy of the pool with this key. Caller holds
// t.mu (the snapshot and default change under it).
func (t *Table) policyFor(key string) Policy {
	def := t.cfg.Policy
	def.Algo = t.cfg.DefaultAlgo
	return t.policies[strings.ToLower(key)].over(def)
}

// SetPolicies replaces the per-key policies and the default policy's
// overload settings (its Algo is Config.DefaultAlgo, see SetDefaultAlgo).
// Caps and queues of existing pools change at once; algorithms only for
// pools created from now on, as with SetDefaultAlgo: a running pool keeps
// its algorithm, so affinity and WRR state are not reshuffled by a reload.
func (t *Table) SetPolicies(def Policy, perKey map[string]Policy) error {
	def.Algo = ""
	if err := def.Validate(); err != nil {
		return err
	}
	ps, err := normalizePolicies(perKey)
	if err != nil {
		return err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.cfg.Policy, t.policies = def, ps
	for i := range t.shards {
		for _, p := range t.shards[i].Load().exact {
			p.setPolicy(t.policyFor(p.Key))
		}
	}
	return nil
}

// Policy returns the pool's effective policy.
func (p *Pool) Policy() Policy {
	if pol := p.policy.Load(); pol != nil {
		return *pol
	}
	return Policy{Algo: p.algo}
}

// setPolicy publishes pol's overload settings for the pick path. The
// algorithm is left alone (see SetPolicies).
func (p *Pool) setPolicy(pol Policy) {
	pol.Algo = p.algo
	p.policy.Store(&pol)
	p.limit.Store(pol.MaxInflight)
	p.signal(int(p.waiting.Load())) // a raised cap frees waiters now
}

// Errors of Acquire. Sentinels: they are returned on the request path.
var (
	// ErrNoUsableNode: the pool has no usable node (none, or all draining,
	// failed, tried).
	ErrNoUsableNode = errors.New("balancer: pool has no usable node")
	// ErrQueueFull: every node is at its cap and the pool's queue is full.
	ErrQueueFull = errors.New("balancer: every node is at its in-flight cap and the queue is full")
	// ErrQueueTimeout: the request waited Policy.QueueTimeout for a node.
	ErrQueueTimeout = errors.New("balancer: timed out waiting for a node under its in-flight cap")
	// ErrCanceled: done closed while the request waited.
	ErrCanceled = errors.New("balancer: wait canceled")
	// ErrWouldWait (TryAcquire only): the request would wait in the
	// pool's queue.
	ErrWouldWait = errors.New("balancer: the request would wait in the pool's queue")
)

// Acquire is PickKey under the pool's overload policy. Without a cap it is
// PickKey. With one, a request that finds every candidate at its cap waits
// (bounded by Policy.QueueSize and QueueTimeout) until a request to one of
// them ends, then picks again; done (may be nil) abandons the wait.
//
// Waiters are served in arrival order (sed's pools excepted, below): a
// request that finds others waiting (and room behind them) queues rather
// than taking the next free slot, and wake-ups reach the waiters in the
// order they blocked (Go's channel receive queue is FIFO). Were arrivals allowed to take a slot that frees
// while a woken waiter is still being scheduled, they would, nearly always
// under load: the queue would serve last-come first and its oldest waiters
// would wait on until their timeout. Every wake-up picks afresh, so the
// algorithm still decides which node. Only the waiting path allocates (its
// timer).
func (p *Pool) Acquire(now int64, tried []*Node, key []byte, done <-chan struct{}) (*Node, error) {
	n, err := p.TryAcquire(now, tried, key)
	if err != ErrWouldWait {
		return n, err
	}
	return p.wait(tried, key, done)
}

// TryAcquire is Acquire for a caller that must not block (the HTTP/1.1
// event loop): ErrWouldWait where Acquire would wait in the queue, and the
// caller then calls Acquire where it may block. Never allocates.
func (p *Pool) TryAcquire(now int64, tried []*Node, key []byte) (*Node, error) {
	pol := p.policy.Load()
	noQueue := pol == nil || pol.QueueSize <= 0
	// With the queue full there is no place behind the others: a free
	// node beats a 503. sed's arrivals always pick: its pick weighs the
	// queue's length against a free slower node (latency.go), and a
	// woken waiter only ever sees the slot that just freed, so were
	// arrivals to queue unasked the slower nodes would get nothing and
	// the queue would grow without bound.
	w := p.waiting.Load()
	if noQueue || w == 0 || int(w) >= pol.QueueSize || p.kind == kindSED {
		n, busy := p.pick(now, tried, key)
		if n != nil {
			return n, nil
		}
		if !busy {
			return nil, ErrNoUsableNode
		}
		if noQueue {
			return nil, ErrQueueFull
		}
	}
	if int(p.waiting.Load()) >= pol.QueueSize {
		return nil, ErrQueueFull
	}
	return nil, ErrWouldWait
}

// wait is Acquire's wait in the queue.
func (p *Pool) wait(tried []*Node, key []byte, done <-chan struct{}) (*Node, error) {
	pol := p.policy.Load()
	if pol == nil || pol.QueueSize <= 0 { // a reload took the queue away since TryAcquire
		return p.TryAcquire(p.now().UnixNano(), tried, key)
	}
	w := int(p.waiting.Add(1))
	if w > pol.QueueSize {
		p.waiting.Add(-1)
		return nil, ErrQueueFull
	}
	defer p.waiting.Add(-1)
	timer := time.NewTimer(pol.QueueTimeout)
	defer timer.Stop()
	// Alone in the queue, it picks at once; behind others, it waits for a
	// wake-up first. Registered in waiting before any pick, so a request
	// ending after the pick sees a waiter and signals: no lost wake-up.
	wait := w > 1
	for {
		if !wait {
			n, busy := p.pick(p.now().UnixNano(), tried, key)
			if n != nil {
				return n, nil
			}
			if !busy {
				return nil, ErrNoUsableNode
			}
		}
		wait = false
		select {
		case <-p.wake:
		case <-timer.C:
			return nil, ErrQueueTimeout
		case <-done:
			return nil, ErrCanceled
		}
	}
}

// Waiting returns the number of requests waiting in the pool's queue.
func (p *Pool) Waiting() int { return int(p.waiting.Load()) }

// signal wakes up to k waiters without blocking. A token sent when no
// waiter is blocked stays buffered and wakes the next one, which picks again
// and waits again if it finds nothing: spurious wake-ups are harmless, lost
// ones are not, and a full buffer means enough wake-ups are already pending.
func (p *Pool) signal(k int) {
	for ; k > 0; k-- {
		select {
		case p.wake <- struct{}{}:
		default:
			return
		}
	}
}

// capOK reports whether n is below the cap limit (0 = none).
func capOK(n *Node, limit int64) bool {
	switch {
	case limit == 0:
		return true
	case limit == LimitAuto:
		c := n.cores.Load()
		return c == 0 || n.inflight.Load() < autoCap(c)
	default:
		return n.inflight.Load() < limit
	}
}

// acquireCapped takes one in-flight slot of n under the cap, atomically: two
// pickers that both saw room cannot both take the last slot.
func acquireCapped(n *Node, limit int64) bool {
	lim := limit
	if limit == LimitAuto {
		c := n.cores.Load()
		if c == 0 {
			n.inflight.Add(1)
			return true
		}
		lim = autoCap(c)
	}
	for {
		cur := n.inflight.Load()
		if cur >= lim {
			return false
		}
		if n.inflight.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}
