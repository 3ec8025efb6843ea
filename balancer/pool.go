package balancer

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// Algo names a balancing algorithm.
type Algo string

const (
	AlgoWRR Algo = "wrr" // smooth weighted round robin (nginx's), exact ratios
	AlgoLRC Algo = "lrc" // least in-flight requests
)

// ParseAlgo validates an algorithm name.
func ParseAlgo(s string) (Algo, error) {
	switch a := Algo(s); a {
	case AlgoWRR, AlgoLRC:
		return a, nil
	}
	return "", ErrUnknownAlgo
}

// ErrUnknownAlgo is returned by ParseAlgo. A sentinel, because datagrams
// reach ParseAlgo and a bad one must not cost an allocation.
var ErrUnknownAlgo = errors.New("balancer: unknown algorithm (want wrr or lrc)")

// Pool is the set of nodes serving one routing key.
//
// Key and algo are immutable. nodes is a copy-on-write slice: Pick reads it
// with one atomic load; writers (the Table, under its mutex) replace it.
// mu guards the smooth-WRR state (Node.cw) of the nodes, so picks in one pool
// serialise on it while pools never contend with each other.
type Pool struct {
	Key  string
	algo Algo

	mu        sync.Mutex
	nodes     atomic.Pointer[[]*Node]
	slowStart int64 // ns; immutable

	// emptySince is when the last node left (unix ns), 0 while it has nodes.
	emptySince atomic.Int64

	// Ext is a slot where a consumer caches per-pool data of its own (the
	// router keeps resolved metric children here), so the request path needs
	// no second lookup by key. The balancer never reads it.
	Ext atomic.Value
}

func newPool(key string, algo Algo, slowStart time.Duration) *Pool {
	p := &Pool{Key: key, algo: algo, slowStart: int64(slowStart)}
	p.nodes.Store(&[]*Node{})
	return p
}

// Algo returns the pool's balancing algorithm.
func (p *Pool) Algo() Algo { return p.algo }

// Nodes returns the current node list. The slice must not be modified.
func (p *Pool) Nodes() []*Node { return *p.nodes.Load() }

// Node returns the node with exactly this address, or nil.
func (p *Pool) Node(address string) *Node {
	for _, n := range p.Nodes() {
		if n.Address == address {
			return n
		}
	}
	return nil
}

// Pick chooses a node for a new request and counts it in flight; the caller
// must call Node.Done when the request ends. Nodes in tried are skipped (a
// retry after a failed connect). It returns nil when no node is usable.
// now is the current time in unix nanoseconds. Pick allocates nothing.
func (p *Pool) Pick(now int64, tried []*Node) *Node {
	nodes := p.Nodes()
	var best *Node
	switch p.algo {
	case AlgoLRC:
		best = pickLRC(nodes, now, tried)
	default:
		p.mu.Lock()
		best = pickSWRR(nodes, now, tried, p.slowStart)
		p.mu.Unlock()
	}
	if best != nil {
		best.inflight.Add(1)
		best.requests.Add(1)
	}
	return best
}

// pickSWRR is nginx's smooth weighted round robin: every usable node gains
// its weight, the richest is chosen and pays the total. Over any window of
// sum(weights) picks each node is chosen exactly weight times, and the picks
// are interleaved rather than bunched. Caller holds the pool mutex.
func pickSWRR(nodes []*Node, now int64, tried []*Node, slowStart int64) *Node {
	var best *Node
	var total int64
	for _, n := range nodes {
		if !n.usable(now) || slices.Contains(tried, n) {
			continue
		}
		w := n.weight.Load() << 4 // scaled so slow start can ramp weight-1 nodes
		if slowStart > 0 {
			if age := now - n.joined.Load(); age < slowStart {
				// In float: w (up to 2^24) times age in ns overflows int64
				// once the ramp passes ~9 minutes at the maximum weight.
				w = max(w>>4, int64(float64(w)*float64(max(age, 0))/float64(slowStart)))
			}
		}
		n.cw += w
		total += w
		if best == nil || n.cw > best.cw {
			best = n
		}
	}
	if best != nil {
		best.cw -= total
	}
	return best
}

// pickLRC chooses the usable node with the fewest requests in flight,
// breaking ties by list order.
func pickLRC(nodes []*Node, now int64, tried []*Node) *Node {
	var best *Node
	var bestIn int64
	for _, n := range nodes {
		if !n.usable(now) || slices.Contains(tried, n) {
			continue
		}
		in := n.inflight.Load()
		if best == nil || in < bestIn {
			best, bestIn = n, in
		}
	}
	return best
}

// HasNodes reports whether the pool lists any node at all (usable or not).
func (p *Pool) HasNodes() bool { return len(p.Nodes()) > 0 }
