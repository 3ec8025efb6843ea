package balancer

import (
	"encoding/binary"
	"math"
	"math/bits"
	"slices"
)

// The pick functions. Every one runs on the request path, so none may
// allocate; each takes the pool's node list and a filter that admits only the
// candidates of this pick (usable, untried, at the serving backup level).

// filter admits the candidates of one pick.
type filter struct {
	now   int64
	tried []*Node
	level uint64 // the backup level being served
	limit int64  // the pool's in-flight cap: 0 none, LimitAuto, or a count
}

// ok admits the candidates of the pick. Loops call it as
// f.quick(n) || f.ok(n): quick is the common case (an active node at the
// served level, nothing tried yet) in three loads that inline, where ok with
// its call to slices.Contains is over the inlining budget and would cost a
// call per node.
func (f *filter) ok(n *Node) bool {
	return n.level.Load() == f.level && n.usable(f.now) && !slices.Contains(f.tried, n) && capOK(n, f.limit)
}

func (f *filter) quick(n *Node) bool {
	return len(f.tried) == 0 && f.limit == 0 && n.state.Load() == uint32(StateActive) && !n.down.Load() && n.level.Load() == f.level
}

// serveLevel returns the lowest backup level with a usable node not in
// tried; ok is false when there is none. It stops at the first level-0
// candidate, so a pool without backups (or with a usable primary near the
// front) pays one or two node checks for it.
func serveLevel(nodes []*Node, now int64, tried []*Node) (level uint64, ok bool) {
	for _, n := range nodes {
		l := n.level.Load()
		if ok && l >= level || !n.usable(now) || slices.Contains(tried, n) {
			continue
		}
		if l == 0 {
			return 0, true
		}
		level, ok = l, true
	}
	return level, ok
}

// pickSWRR is nginx's smooth weighted round robin: every candidate gains
// its weight, the richest is chosen and pays the total. Over any window of
// sum(weights) picks each node is chosen exactly weight times, and the picks
// are interleaved rather than bunched. Caller holds the pool mutex.
func pickSWRR(nodes []*Node, f filter, slowStart int64) *Node {
	var best *Node
	var total int64
	for _, n := range nodes {
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		w := n.weight.Load() << 4 // scaled so slow start can ramp weight-1 nodes
		if slowStart > 0 {
			if age := f.now - n.joined.Load(); age < slowStart {
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

// scanStart is where the next rotating scan of n nodes begins: one node
// further on every pick, so that a scan keeping the first of equals lets
// idle nodes take turns.
func (p *Pool) scanStart(n int) int { return int((p.rot.Add(1) - 1) % uint64(n)) }

// rotated is the i-th of nodes counted from start (both below len(nodes)).
func rotated(nodes []*Node, start, i int) *Node {
	if j := start + i; j < len(nodes) {
		return nodes[j]
	}
	return nodes[start+i-len(nodes)]
}

// pickLRC chooses the candidate with the fewest requests in flight. The scan
// starts one node further on every pick and keeps the first of equals, so
// idle nodes take turns instead of the first listed taking every request
// that finds the pool idle. (A node right after a busier one wins ties a
// little more often; counts converge as soon as requests overlap.)
func (p *Pool) pickLRC(nodes []*Node, f filter) *Node {
	start := p.scanStart(len(nodes))
	var best *Node
	var bestIn int64
	for i := range nodes {
		n := rotated(nodes, start, i)
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		if in := n.inflight.Load(); best == nil || in < bestIn {
			best, bestIn = n, in
		}
	}
	return best
}

// pickWLRC chooses the candidate with the least in-flight ÷ weight, compared
// by cross-multiplication (weights are at most 2^20, so products stay in
// int64 while in-flight counts are below 2^43). Equal ratios are broken by
// smooth WRR among the tied nodes, as nginx's least_conn does, so a pool that
// is often idle (all at 0) still splits by weight. Only ties take the mutex.
func (p *Pool) pickWLRC(nodes []*Node, f filter) *Node {
	var best *Node
	var bestIn, bestW int64
	ties := 0
	for _, n := range nodes {
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		in, w := max(n.inflight.Load(), 0), n.weight.Load()
		if best == nil {
			best, bestIn, bestW, ties = n, in, w, 1
			continue
		}
		switch l, r := in*bestW, bestIn*w; {
		case l < r:
			best, bestIn, bestW, ties = n, in, w, 1
		case l == r:
			ties++
		}
	}
	if ties < 2 {
		return best
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	var pick *Node
	var total int64
	for _, n := range nodes {
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		in, w := max(n.inflight.Load(), 0), n.weight.Load()
		if in*bestW != bestIn*w {
			continue
		}
		n.cw += w
		total += w
		if pick == nil || n.cw > pick.cw {
			pick = n
		}
	}
	if pick == nil { // the counts moved between the passes
		return best
	}
	pick.cw -= total
	return pick
}

// pickP2C draws two distinct candidates at random and keeps the one with the
// lower p2cCost; on equal cost the first drawn (itself random) wins.
//
// The fast path draws from the whole list and is O(1); only when a drawn
// node is not a candidate (down, tried, other backup level) does it count the
// candidates and draw again among them. The pair is uniform over candidate
// pairs either way.
func (p *Pool) pickP2C(nodes []*Node, f filter) *Node {
	if len(nodes) >= 2 {
		i, j := draw2(p.random(), len(nodes))
		if a, b := nodes[i], nodes[j]; (f.quick(a) || f.ok(a)) && (f.quick(b) || f.ok(b)) {
			return cheaper(a, b)
		}
	}
	c := 0
	var only *Node
	for _, n := range nodes {
		if f.quick(n) || f.ok(n) {
			c++
			only = n
		}
	}
	if c < 2 {
		return only
	}
	i, j := draw2(p.random(), c)
	var a, b *Node
	k := 0
	for _, n := range nodes {
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		switch k {
		case i:
			a = n
		case j:
			b = n
		}
		k++
	}
	if a == nil || b == nil { // a node changed state between the passes
		return only
	}
	return cheaper(a, b)
}

// draw2 maps one random value to two distinct indexes below n (n >= 2): the
// high half of r×n is the first, the low half (the unused fraction) drawn
// again over n-1 the second (Lemire's multiply-shift, no division).
func draw2(r uint64, n int) (i, j int) {
	hi, lo := bits.Mul64(r, uint64(n))
	hj, _ := bits.Mul64(lo, uint64(n-1))
	i, j = int(hi), int(hj)
	if j >= i {
		j++
	}
	return i, j
}

// p2cCost is the load p2c compares: in-flight plus one, doubled for every
// consecutive connect failure (up to 2^16). A node that fails fast holds no
// requests and would otherwise look least loaded and draw the traffic that
// then fails over; with the penalty it never beats a healthy idle node (cost
// 1 against 2 or more), and after k failures it is tried again (its probe)
// only when the node it is drawn against has at least 2^k - 1 requests in
// flight — or when every candidate is failing. ReportSuccess clears it.
// Weights are ignored, as by lrc; wlrc weighs.
func p2cCost(n *Node) int64 {
	return (max(n.inflight.Load(), 0) + 1) << min(max(n.consecFails.Load(), 0), 16)
}

func cheaper(a, b *Node) *Node {
	if p2cCost(b) < p2cCost(a) {
		return b
	}
	return a
}

// Rendezvous (highest random weight) hashing: every candidate scores the key
// and the best score wins. Removing a node moves only the keys it held; a
// node coming back takes back exactly those. Weighted by the logarithmic
// method (Schindelhauer & Schomaker): score = w / -ln(x), x uniform in
// (0,1) from hash(key, node), gives each node a share of keys proportional to
// its weight.
//
// The logarithm is mostly avoided: candidates of equal weight compare x
// directly, and since -ln(x) >= 1-x, a candidate with w <= best·(1-x) cannot
// win and is dropped with one multiplication. Only about ln(n) candidates of
// a scan ever need the logarithm.

type hrw struct {
	best   *Node
	u      uint64
	w      int64
	s      float64 // score of best, valid when scored
	scored bool
}

func (h *hrw) offer(n *Node, u uint64, w int64) {
	if h.best != nil {
		if w == h.w {
			if u <= h.u {
				return
			}
		} else {
			if !h.scored {
				h.s, h.scored = hrwScore(unit(h.u), h.w), true
			}
			x := unit(u)
			if float64(w) <= h.s*(1-x) {
				return
			}
			s := hrwScore(x, w)
			if s <= h.s {
				return
			}
			h.best, h.u, h.w, h.s = n, u, w, s
			return
		}
	}
	h.best, h.u, h.w, h.scored = n, u, w, false
}

// unit maps a hash to (0, 1).
func unit(u uint64) float64 { return (float64(u>>11) + 0.5) / (1 << 53) }

func hrwScore(x float64, w int64) float64 { return float64(w) / -math.Log(x) }

// pickHRW is iphash: the rendezvous winner among the candidates.
func pickHRW(nodes []*Node, f filter, key uint64) *Node {
	var h hrw
	for _, n := range nodes {
		if f.quick(n) || f.ok(n) {
			h.offer(n, fmix64(key^n.hash), n.weight.Load())
		}
	}
	return h.best
}

// pickBounded is hash: consistent hashing with bounded loads (Mirrokni,
// Thorup, Zadimoghaddam 2016) over rendezvous order. A candidate may take
// the request only while its in-flight count is below
// ceil(1.25 × (in-flight of all candidates + 1) × weight ÷ total weight),
// i.e. 1.25 times its fair share counting this request; the best-scoring
// candidate under its bound wins, which is exactly walking the key's
// rendezvous order to the first node with room. The bounds add up to more
// than the load, so some candidate always has room. A key therefore sticks to
// its node until that node is 25% over its share, and a hot key spills over
// to its next nodes instead of overloading one.
func pickBounded(nodes []*Node, f filter, key uint64) *Node {
	var total, wsum uint64
	for _, n := range nodes {
		if f.quick(n) || f.ok(n) {
			total += uint64(max(n.inflight.Load(), 0))
			wsum += uint64(n.weight.Load())
		}
	}
	var h hrw
	for _, n := range nodes {
		if !f.quick(n) && !f.ok(n) {
			continue
		}
		in, w := uint64(max(n.inflight.Load(), 0)), n.weight.Load()
		// in < 5(total+1)w / 4wsum, in 128 bits: no overflow, no division.
		lh, ll := bits.Mul64(4*wsum, in)
		rh, rl := bits.Mul64(5*(total+1), uint64(w))
		if lh < rh || lh == rh && ll < rl {
			h.offer(n, fmix64(key^n.hash), w)
		}
	}
	if h.best == nil { // loads rose between the passes
		return pickHRW(nodes, f, key)
	}
	return h.best
}

// hashBytes hashes a routing key (client address, header or cookie value)
// 8 bytes at a time. It must stay the same across versions and processes:
// routers behind one address and a router after an upgrade must send a key
// to the same node. (So no maphash, whose seed is per process.)
func hashBytes(b []byte) uint64 {
	h := uint64(len(b)) * 0x9e3779b97f4a7c15
	for ; len(b) >= 8; b = b[8:] {
		h = fmix64(h ^ binary.LittleEndian.Uint64(b))
	}
	var t uint64
	for i, c := range b {
		t |= uint64(c) << (8 * i)
	}
	return fmix64(h ^ t)
}

// fmix64 is MurmurHash3's finaliser: a bijection in which every input bit
// affects every output bit.
func fmix64(h uint64) uint64 {
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
