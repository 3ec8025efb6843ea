package balancer

import (
	"math"
	"time"
)

// sed: shortest expected delay. Every node of a sed pool keeps an estimate
// of how long a request takes on it, from the pick to the response head
// (connect, queueing in the node, service), and a pick takes the candidate
// whose next request is expected to finish first:
//
//	cost = latency × max(1, (in flight + 1) ÷ workers)
//
// A node with free workers is charged its latency alone; one whose workers
// are all busy is charged the wait for one of them as well, as in an
// M/M/c queue where each of the c servers frees after latency ÷ c on
// average. lrc and p2c count requests only, so a node three times slower
// than the others still gets its share of them, and its share of requests
// is served three times slower: that share is the pool's tail.
//
// The estimate is a time-weighted moving average (the peak-EWMA of
// Finagle's and Linkerd's balancers, without the peak): a sample weighs
// 1 - e^(-Δt/τ), Δt the time since the node's previous sample, so the
// estimate follows the last τ of traffic whatever the request rate.

const (
	// latTau is the time constant of the average: a node that turns 3×
	// slower is seen at two thirds of its new latency within ~τ.
	latTau = 250 * time.Millisecond
	// latClamp bounds one sample to this many times the estimate: a rare
	// request that is slow because of what it asks (a report, an export)
	// says little of the next one, and a single 300 ms sample must not
	// make a 5 ms node look like a 300 ms one for the next τ.
	latClamp = 8
	// latFailure is what a failed request (connect failure, no answer,
	// 5xx) counts as at least: a node that fails fast must not look fast.
	latFailure = int64(250 * time.Millisecond)
	// latIdleFloor: the estimate of a node with nothing in flight halves
	// every latIdleHalf since its last sample, down to 1/latIdleFloor of
	// it. A node that was slow once is thereby tried again within a few
	// seconds (its next sample replaces the old estimate at once: Δt ≫ τ),
	// so one bad spell does not exile it.
	latIdleFloor = 16
	latIdleHalf  = time.Second
)

// ObserveLatency records one request to n: d is the time from its pick to
// the response head (unix ns, as now), failed that it got none (connect
// failure, node closed or stalled) or a 5xx. Only sed pools keep the
// estimate; for any other node it does nothing. Lock-free, no allocation.
func (n *Node) ObserveLatency(now, d int64, failed bool) {
	if n.pool == nil || n.pool.kind != kindSED {
		return
	}
	n.observe(now, d, failed)
}

func (n *Node) observe(now, d int64, failed bool) {
	prev := n.latAt.Swap(now)
	var w float64 = 1 // a node's first sample is its estimate
	if prev != 0 {
		w = -math.Expm1(-float64(max(now-prev, 0)) / float64(latTau))
	}
	d = max(d, 1)
	for {
		old := n.lat.Load()
		s := d
		if old > 0 && s > old*latClamp {
			s = old * latClamp
		}
		if failed {
			s = max(s, latFailure)
		}
		est := s
		if old > 0 {
			est = max(old+int64(w*float64(s-old)), 1)
		}
		if n.lat.CompareAndSwap(old, est) {
			return
		}
	}
}

// forgetLatency makes n unmeasured: a node that (re)joins or recovers from
// a failure is charged the best estimate in the pool until its own first
// sample, and wins ties meanwhile, so it is probed at once.
func (n *Node) forgetLatency() {
	n.lat.Store(0)
	n.latAt.Store(0)
}

// Latency returns n's current latency estimate (0 when it has none yet, or
// its pool is not sed), with the idle decay applied at now (unix ns).
func (n *Node) Latency(now int64) time.Duration { return time.Duration(n.latency(now)) }

// latency is the estimate a pick uses: the average, decayed while the node
// is idle. 0 means unmeasured.
func (n *Node) latency(now int64) int64 {
	est := n.lat.Load()
	if est == 0 || n.inflight.Load() > 0 {
		return est
	}
	idle := now - n.latAt.Load()
	if idle < int64(latIdleHalf)/8 { // the common case: a busy node
		return est
	}
	f := max(math.Exp2(-float64(idle)/float64(latIdleHalf)), 1.0/latIdleFloor)
	return max(int64(float64(est)*f), 1)
}

// unmeasured reports whether a pick should charge n the best estimate of
// the pool and prefer it on ties: it has no sample yet, or it is failing
// and its back-off is over (its estimate is that of its failures; the pick
// is the probe that tells whether it is back, as with every algorithm).
func (n *Node) unmeasured() bool {
	return n.lat.Load() == 0 || n.consecFails.Load() != 0
}

// sedCost is cost = latency × max(1, (in+1)/workers) for a node with in
// requests in flight (plus its share of the pool's queue) and workers
// workers (the cores it announced; 1 when it announced none).
func sedCost(lat int64, in float64, workers uint64) float64 {
	w := float64(max(workers, 1))
	return float64(lat) * max(1, (in+1)/w)
}

// pickSED chooses the candidate of least sedCost. Unmeasured candidates are
// charged the least estimate among the measured ones (any, if none is) and
// win ties, so a new node gets requests at once and an idle pool tries
// every node before it settles; equal costs otherwise go to the first
// found from a start that rotates per pick, as lrc's ties do.
//
// With an in-flight cap, a candidate at its cap is weighed too, its
// in-flight count raised by its share of the requests already waiting: when
// such a node is still the cheapest, the request waits for it (pick
// returns busy) rather than go to a slower node with a free worker. That is
// the point of sed in front of a node much slower than the others: the
// wait for a fast node's worker is shorter than the slow node's service.
// Once the queue is full it takes the cheapest free node instead, so
// preferring to wait never turns into a 503.
func (p *Pool) pickSED(nodes []*Node, f filter) *Node {
	limit := f.limit
	f.limit = 0 // candidates at their cap are weighed too; capOK below
	best := int64(0)
	full := 0
	for _, n := range nodes {
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		if !n.unmeasured() {
			if l := n.latency(f.now); best == 0 || l < best {
				best = l
			}
		}
		if limit != 0 && !capOK(n, limit) {
			full++
		}
	}
	if best == 0 {
		best = 1
	}
	var share float64
	canWait := false
	if full > 0 {
		waiting := p.waiting.Load()
		share = float64(waiting) / float64(full)
		pol := p.policy.Load()
		canWait = pol != nil && int(waiting) < pol.QueueSize
	}
	start := p.scanStart(len(nodes))
	var pick *Node
	var pickCost float64
	pickNew, pickFull := false, false
	for i := range nodes {
		n := rotated(nodes, start, i)
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		in := float64(max(n.inflight.Load(), 0))
		free := limit == 0 || capOK(n, limit)
		if !free {
			if !canWait {
				continue
			}
			in += share
		}
		lat, isNew := best, n.unmeasured()
		if !isNew {
			lat = n.latency(f.now)
		}
		if c := sedCost(lat, in, n.cores.Load()); pick == nil || c < pickCost || c == pickCost && isNew && !pickNew {
			pick, pickCost, pickNew, pickFull = n, c, isNew, !free
		}
	}
	if pickFull {
		return nil // the cheapest is at its cap: wait for it
	}
	return pick
}

// MeasuresLatency reports whether the pool's algorithm uses the latency
// its nodes are given by Node.ObserveLatency (sed), so that a caller can
// skip timing the requests of other pools.
func (p *Pool) MeasuresLatency() bool { return p.kind == kindSED }
