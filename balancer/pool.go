package balancer

import (
	"errors"
	"hash/maphash"
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Algo names a balancing algorithm.
type Algo string

const (
	AlgoWRR    Algo = "wrr"    // smooth weighted round robin (nginx's), exact ratios
	AlgoLRC    Algo = "lrc"    // least in-flight requests, ties rotate
	AlgoWLRC   Algo = "wlrc"   // least in-flight ÷ weight, ties by smooth WRR
	AlgoIPHash Algo = "iphash" // rendezvous hashing of the client address
	AlgoP2C    Algo = "p2c"    // power of two random choices, failure penalty
	AlgoHash   Algo = "hash"   // rendezvous hashing of a header or cookie, bounded load
	AlgoSED    Algo = "sed"    // shortest expected delay: measured latency × queue length (latency.go)
)

// ParseAlgo validates an algorithm name.
func ParseAlgo(s string) (Algo, error) {
	switch a := Algo(s); a {
	case AlgoWRR, AlgoLRC, AlgoWLRC, AlgoIPHash, AlgoP2C, AlgoHash, AlgoSED:
		return a, nil
	}
	return "", ErrUnknownAlgo
}

type algoKind uint8

const (
	kindWRR algoKind = iota
	kindLRC
	kindWLRC
	kindIPHash
	kindP2C
	kindHash
	kindSED
)

func kindOf(a Algo) algoKind {
	switch a {
	case AlgoLRC:
		return kindLRC
	case AlgoWLRC:
		return kindWLRC
	case AlgoIPHash:
		return kindIPHash
	case AlgoP2C:
		return kindP2C
	case AlgoHash:
		return kindHash
	case AlgoSED:
		return kindSED
	}
	return kindWRR
}

// ErrUnknownAlgo is returned by ParseAlgo. A sentinel, because datagrams
// reach ParseAlgo and a bad one must not cost an allocation.
var ErrUnknownAlgo = errors.New("balancer: unknown algorithm (want wrr, lrc, wlrc, iphash, p2c, hash or sed)")

// Pool is the set of nodes serving one routing key.
//
// Key, algo, slowStart, now and rand are immutable. nodes is a copy-on-write
// slice: Pick reads it with one atomic load; writers (the Table, under its
// mutex) replace it. mu guards the smooth-WRR state (Node.cw) of the nodes,
// taken by wrr on every pick and by wlrc on ties, so picks in one pool
// serialise on it while pools never contend with each other. rot and rng are
// lock-free counters any picker may advance.
type Pool struct {
	Key string
	// watch is the table's list of nodes Tick has work for (watch.go);
	// nil for pools built outside a table.
	watch *watchList
	algo  Algo
	kind  algoKind // algo as a small integer: PickKey switches on it per request

	mu        sync.Mutex
	nodes     atomic.Pointer[[]*Node]
	slowStart int64 // ns

	// now is the table's clock, for State (computed on read).
	now func() time.Time
	// rand is Config.Rand; nil means the pool's own wyrand stream in rng.
	rand func() uint64
	rng  atomic.Uint64
	// rot rotates lrc's starting node so that ties share load.
	rot atomic.Uint64

	// emptySince is when the last node left (unix ns), 0 while it has nodes.
	emptySince atomic.Int64

	// Overload protection (policy.go). policy is the effective Policy,
	// replaced whole by the Table on reload; limit mirrors its MaxInflight
	// for the pick path. waiting counts requests in Acquire's queue; wake
	// carries wake-ups from Node.Done to them.
	policy  atomic.Pointer[Policy]
	limit   atomic.Int64
	waiting atomic.Int32
	wake    chan struct{}

	// Ext is a slot where a consumer caches per-pool data of its own (the
	// router keeps resolved metric children here), so the request path needs
	// no second lookup by key. The balancer never reads it.
	Ext atomic.Value
}

func newPool(key string, pol Policy, cfg *Config, watch *watchList) *Pool {
	algo := pol.Algo
	p := &Pool{Key: key, algo: algo, kind: kindOf(algo), slowStart: int64(cfg.SlowStart), now: cfg.Now, rand: cfg.Rand,
		wake: make(chan struct{}, 256), watch: watch}
	p.setPolicy(pol)
	if p.now == nil {
		p.now = time.Now
	}
	if p.rand == nil {
		// A random seed per pool: pools must not walk in lockstep, and a
		// process-wide generator would be a global the pick path contends on.
		p.rng.Store(maphash.String(maphash.MakeSeed(), key))
	}
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

// HasNodes reports whether the pool lists any node at all (usable or not).
func (p *Pool) HasNodes() bool { return len(p.Nodes()) > 0 }

// Pick is PickKey without a key: iphash and hash pools fall back to wrr.
func (p *Pool) Pick(now int64, tried []*Node) *Node { return p.PickKey(now, tried, nil) }

// PickKey chooses a node for a new request and counts it in flight; the
// caller must call Node.Done when the request ends. Nodes in tried are
// skipped (a retry after a failed connect). It returns nil when no node is
// usable. now is the current time in unix nanoseconds. PickKey allocates
// nothing and does not retain key.
//
// Only nodes of the lowest backup level that has a usable, untried node are
// considered: a backup level serves only while every lower one is down,
// drained or already tried.
//
// key is what iphash and hash pools hash: the client address (iphash) or a
// header or cookie value (hash). The same key maps to the same node for as
// long as that node is usable; other algorithms ignore it. An empty key
// makes iphash and hash pools pick by wrr, so requests without the header
// still spread by weight rather than all landing on one node.
func (p *Pool) PickKey(now int64, tried []*Node, key []byte) *Node {
	n, _ := p.pick(now, tried, key)
	return n
}

// pick is PickKey; busy reports, when it returns nil, that candidates exist
// but every one is at the pool's in-flight cap (Policy.MaxInflight).
func (p *Pool) pick(now int64, tried []*Node, key []byte) (best *Node, busy bool) {
	nodes := p.Nodes()
	lvl, ok := serveLevel(nodes, now, tried)
	if !ok {
		return nil, false
	}
	f := filter{now: now, tried: tried, level: lvl, limit: p.limit.Load()}
	// With a cap, the chosen node's slot is taken by compare-and-swap; a
	// picker that loses the race for a node's last slot picks again.
	for range 3 {
		switch {
		case p.kind == kindLRC:
			best = p.pickLRC(nodes, f)
		case p.kind == kindWLRC:
			best = p.pickWLRC(nodes, f)
		case p.kind == kindP2C:
			best = p.pickP2C(nodes, f)
		case p.kind == kindSED:
			best = p.pickSED(nodes, f)
		case p.kind == kindIPHash && len(key) > 0:
			best = pickHRW(nodes, f, hashBytes(key))
		case p.kind == kindHash && len(key) > 0:
			best = pickBounded(nodes, f, hashBytes(key))
		default:
			p.mu.Lock()
			best = pickSWRR(nodes, f, p.slowStart)
			p.mu.Unlock()
		}
		if best == nil {
			// serveLevel found a candidate, so only caps can exclude
			// them all.
			return nil, f.limit != 0
		}
		if f.limit == 0 {
			best.inflight.Add(1)
			break
		}
		if acquireCapped(best, f.limit) {
			break
		}
		best = nil
	}
	if best == nil {
		return nil, true
	}
	best.requests.Add(1)
	return best, false
}

// random returns the next value of Config.Rand or of the pool's wyrand
// stream (Wang Yi's wyrand: one atomic add and a 64×64→128 multiply, so
// concurrent pickers each get a distinct state without a lock).
func (p *Pool) random() uint64 {
	if p.rand != nil {
		return p.rand()
	}
	s := p.rng.Add(0xa0761d6478bd642f)
	hi, lo := bits.Mul64(s, s^0xe7037ed1a0b428db)
	return hi ^ lo
}
