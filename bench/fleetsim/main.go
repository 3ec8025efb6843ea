// Command fleetsim simulates the harness's fleet scenario (bench/harness/fleet.go)
// offline, to tell what any balancer can reach on it: 4 nodes of 4 workers
// (M/G/c, each worker serving one request at a time), requests of 2–8 ms of
// work, one in 2000 of 300 ms, the last node 3× slower, Poisson arrivals at
// 80% of the fleet's capacity, evenly spaced as the harness's open-loop
// generator sends them (or Poisson, -poisson). A request's latency is its wait (in the
// router's queue or a node's) plus its service.
//
// The policies are the balancers of the harness's table and bounds on what
// any balancer can do:
//
//   - jsq: least requests in flight, immediate dispatch, the node queues
//     (nginx least_conn, fastrouter lrc without a cap);
//   - jsq-cap: the same with at most `workers` in flight per node and a FIFO
//     queue in the router (fastrouter lrc --max-inflight auto; HAProxy
//     leastconn + maxconn);
//   - sed-true-cap / sed-est-cap: shortest expected delay as in
//     balancer/latency.go, with each node's true mean service time or with
//     the estimate the router keeps (EWMA, τ = 250 ms, samples clamped to 8×,
//     idle decay), under the cap;
//   - fast-only: the slow node never used (the three fast ones behind one
//     FIFO queue);
//   - oracle: knows every request's size and every worker's remaining work,
//     and sends each request, in arrival order, to the worker that finishes
//     it first. Greedy: each request gets the best it can without delaying
//     an earlier one, which is not the best p99 (it sends too little to the
//     slow node to keep the fast nodes' queue short), so it is a strong
//     reference, not a bound;
//   - oracle-srpt: an oracle that knows the sizes and may also reorder its
//     queue, serving the shortest waiting request first whenever a worker
//     frees (non-FIFO; a router cannot know sizes, this only bounds it).
//
// The only hard bound is the work itself: no policy's p99 is below the
// p99 of a request's work on a fast node (U(2, 8) ms: 7.94 ms, plus the
// per-request overhead).
//
// Usage: go run ./fleetsim [-harness-mix -rate 2010] [-poisson] [-seconds 60] [-seeds 5] [-load 0.8]
package main

import (
	"container/heap"
	"flag"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
)

type config struct {
	nodes, workers int
	slowFactor     float64
	minMS, maxMS   float64
	slowFrac       float64
	slowMS         float64
	overheadMS     float64 // per request, on the worker (uWSGI's own parsing and answer, the network)
	load           float64
	rate           float64 // req/s; 0 = load × capacity
	harnessMix     bool    // the harness's own request sequence (bench/harness/openloop.go requestMix.paths, seed 2026)
	poisson        bool    // Poisson arrivals; else evenly spaced, as the harness's generator sends them
	seconds        float64
	warmup         float64
}

// meanService is a node's mean service time (ms) with the given factor.
func (c config) meanService(f float64) float64 {
	return ((1-c.slowFrac)*(c.minMS+c.maxMS)/2+c.slowFrac*c.slowMS)*f + c.overheadMS
}

// capacity is the fleet's request rate (per ms) with every worker busy.
func (c config) capacity() float64 {
	r := 0.0
	for i := range c.nodes {
		r += float64(c.workers) / c.meanService(c.factor(i))
	}
	return r
}

// arrivalRate is the arrival rate per ms.
func (c config) arrivalRate() float64 {
	if c.rate > 0 {
		return c.rate / 1000
	}
	return c.load * c.capacity()
}

func (c config) factor(i int) float64 {
	if i == c.nodes-1 {
		return c.slowFactor
	}
	return 1
}

// request is one arrival: its time and its work (ms on a factor-1 node).
type request struct {
	at, work float64
}

func arrivals(c config, seed uint64) []request {
	r := rand.New(rand.NewPCG(seed, 2026))
	if c.harnessMix {
		// requestMix.paths draws its own stream, two values per request,
		// and rounds to 0.01 ms; the generator sends it evenly spaced.
		r = rand.New(rand.NewPCG(2026, 21))
	}
	rate := c.arrivalRate()
	n := int((c.seconds + c.warmup) * 1000 * rate)
	out := make([]request, n)
	t := 0.0
	for i := range out {
		if c.poisson && !c.harnessMix {
			t += r.ExpFloat64() / rate
		} else {
			t = float64(i) / rate
		}
		w := c.minMS + r.Float64()*(c.maxMS-c.minMS)
		if r.Float64() < c.slowFrac {
			w = c.slowMS
		}
		if c.harnessMix {
			w = math.Round(w*100) / 100
		}
		out[i] = request{at: t, work: w}
	}
	return out
}

// service is what a request of work w costs node i's worker.
func (c config) service(i int, w float64) float64 { return w*c.factor(i) + c.overheadMS }

// ---- the event-driven router: a queue in front of nodes with a cap ----

type completion struct {
	at   float64
	node int
	lat  float64 // pick → done, for the estimate
}

type completions []completion

func (h completions) Len() int           { return len(h) }
func (h completions) Less(i, j int) bool { return h[i].at < h[j].at }
func (h completions) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *completions) Push(x any)        { *h = append(*h, x.(completion)) }
func (h *completions) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// estimate is balancer/latency.go's moving average, in ms.
type estimate struct {
	lat, at float64 // 0 lat: unmeasured
}

const (
	tauMS      = 250.0
	clampX     = 8.0
	idleHalfMS = 1000.0
	idleFloor  = 16.0
)

func (e *estimate) observe(now, d float64) {
	w := 1.0
	if e.at != 0 {
		w = -math.Expm1(-math.Max(now-e.at, 0) / tauMS)
	}
	e.at = now
	if e.lat > 0 && d > e.lat*clampX {
		d = e.lat * clampX
	}
	if e.lat == 0 {
		e.lat = d
		return
	}
	e.lat += w * (d - e.lat)
}

func (e *estimate) value(now float64, inflight int) float64 {
	if e.lat == 0 || inflight > 0 {
		return e.lat
	}
	f := math.Max(math.Exp2(-(now-e.at)/idleHalfMS), 1/idleFloor)
	return e.lat * f
}

// picker chooses a node for the request at the head of the router's queue
// (or a new arrival) given the nodes' in-flight counts; -1 means wait.
type picker func(now float64, inflight []int, waiting int) int

type capRouter struct {
	c config
	// shareWeight scales a full node's share of the queue in sed's cost
	// (balancer/latency.go: 1, the M/M/c expectation).
	shareWeight float64
	cap         int
	rng         *rand.Rand
	inflight    []int
	est         []estimate
}

// run simulates a router with an in-flight cap per node and a FIFO queue;
// it returns the latencies (ms) of the requests after the warm-up.
func (r *capRouter) run(reqs []request, pick picker) []float64 {
	c := r.c
	r.inflight = make([]int, c.nodes)
	var done completions
	var queue []request
	var lat []float64
	start := func(now float64, q request, n int) {
		r.inflight[n]++
		s := c.service(n, q.work)
		heap.Push(&done, completion{at: now + s, node: n, lat: s})
		if q.at >= c.warmup*1000 {
			lat = append(lat, now+s-q.at)
		}
	}
	i := 0
	for i < len(reqs) || done.Len() > 0 {
		if i < len(reqs) && (done.Len() == 0 || reqs[i].at <= done[0].at) {
			q := reqs[i]
			i++
			if len(queue) == 0 {
				if n := pick(q.at, r.inflight, 0); n >= 0 {
					start(q.at, q, n)
					continue
				}
			}
			queue = append(queue, q)
			continue
		}
		e := heap.Pop(&done).(completion)
		r.inflight[e.node]--
		if r.est != nil {
			r.est[e.node].observe(e.at, e.lat)
		}
		for len(queue) > 0 {
			n := pick(e.at, r.inflight, len(queue)-1)
			if n < 0 {
				break
			}
			start(e.at, queue[0], n)
			queue = queue[1:]
		}
	}
	return lat
}

// jsqCap: least in flight among the nodes under the cap, ties at random.
func (r *capRouter) jsqCap(allow func(int) bool) picker {
	return func(_ float64, in []int, _ int) int {
		best, ties := -1, 0
		for n := range in {
			if in[n] >= r.cap || !allow(n) {
				continue
			}
			switch {
			case best < 0 || in[n] < in[best]:
				best, ties = n, 1
			case in[n] == in[best]:
				ties++
				if r.rng.IntN(ties) == 0 {
					best = n
				}
			}
		}
		return best
	}
}

// sedCap is balancer.pickSED: cost = latency × max(1, (in+1)/workers),
// a node at its cap weighed with its share of the queue; -1 when the
// cheapest is full (wait for it). lat(n) is the latency used for node n.
func (r *capRouter) sedCap(lat func(now float64, n, in int) float64) picker {
	return func(now float64, in []int, waiting int) int {
		full := 0
		for n := range in {
			if in[n] >= r.cap {
				full++
			}
		}
		share := 0.0
		if full > 0 {
			share = r.shareWeight * float64(waiting) / float64(full)
		}
		best, bestCost, bestFull := -1, 0.0, false
		off := r.rng.IntN(len(in))
		for k := range in {
			n := (k + off) % len(in)
			load := float64(in[n])
			isFull := in[n] >= r.cap
			if isFull {
				load += share
			}
			cost := lat(now, n, in[n]) * math.Max(1, (load+1)/float64(r.c.workers))
			if best < 0 || cost < bestCost {
				best, bestCost, bestFull = n, cost, isFull
			}
		}
		if bestFull {
			return -1
		}
		return best
	}
}

// ---- immediate dispatch: every node a FIFO M/G/c ----

// fifoNodes tracks each worker's time of becoming free, per node; a request
// dispatched to a node starts on its earliest-free worker (the node's own
// FIFO listen queue).
type fifoNodes struct {
	free    [][]float64
	finish  [][]float64 // finish times of requests assigned, to count in flight
	workers int
}

func newFifo(c config) *fifoNodes {
	f := &fifoNodes{workers: c.workers}
	for range c.nodes {
		f.free = append(f.free, make([]float64, c.workers))
		f.finish = append(f.finish, nil)
	}
	return f
}

func (f *fifoNodes) inflight(n int, now float64) int {
	k := 0
	keep := f.finish[n][:0]
	for _, t := range f.finish[n] {
		if t > now {
			k++
			keep = append(keep, t)
		}
	}
	f.finish[n] = keep
	return k
}

// startOn returns when a request arriving at now would start and on which
// worker of node n.
func (f *fifoNodes) startOn(n int, now float64) (float64, int) {
	w := 0
	for i, t := range f.free[n] {
		if t < f.free[n][w] {
			w = i
		}
	}
	return math.Max(now, f.free[n][w]), w
}

func (f *fifoNodes) assign(n, w int, finish float64) {
	f.free[n][w] = finish
	f.finish[n] = append(f.finish[n], finish)
}

func runJSQ(c config, reqs []request, rng *rand.Rand) []float64 {
	f := newFifo(c)
	var lat []float64
	for _, q := range reqs {
		best, ties, bestIn := -1, 0, 0
		for n := range c.nodes {
			in := f.inflight(n, q.at)
			switch {
			case best < 0 || in < bestIn:
				best, ties, bestIn = n, 1, in
			case in == bestIn:
				ties++
				if rng.IntN(ties) == 0 {
					best = n
				}
			}
		}
		s, w := f.startOn(best, q.at)
		end := s + c.service(best, q.work)
		f.assign(best, w, end)
		if q.at >= c.warmup*1000 {
			lat = append(lat, end-q.at)
		}
	}
	return lat
}

func runOracle(c config, reqs []request) []float64 {
	f := newFifo(c)
	var lat []float64
	for _, q := range reqs {
		best, bw, bestEnd := -1, 0, 0.0
		for n := range c.nodes {
			s, w := f.startOn(n, q.at)
			if end := s + c.service(n, q.work); best < 0 || end < bestEnd {
				best, bw, bestEnd = n, w, end
			}
		}
		f.assign(best, bw, bestEnd)
		if q.at >= c.warmup*1000 {
			lat = append(lat, bestEnd-q.at)
		}
	}
	return lat
}

// runSRPT: one queue in the router, ordered by size; whenever a worker is
// free the shortest waiting request goes to the free worker that finishes
// it first, unless waiting for a fast worker about to free would finish it
// sooner (the oracle knows when every worker frees).
func runSRPT(c config, reqs []request) []float64 {
	type worker struct {
		node int
		free float64
	}
	var ws []worker
	for n := range c.nodes {
		for range c.workers {
			ws = append(ws, worker{node: n})
		}
	}
	var lat []float64
	waiting := &sizeHeap{}
	i := 0
	now := 0.0
	for i < len(reqs) || waiting.Len() > 0 {
		// the next decision time: an arrival or a worker freeing
		next := math.Inf(1)
		if i < len(reqs) {
			next = reqs[i].at
		}
		if waiting.Len() > 0 {
			for _, w := range ws {
				if w.free > now && w.free < next {
					next = w.free
				}
			}
		}
		now = math.Max(now, next)
		for i < len(reqs) && reqs[i].at <= now {
			heap.Push(waiting, reqs[i])
			i++
		}
		// dispatch shortest first while it can start now on a worker where
		// it finishes no later than anywhere else
		for waiting.Len() > 0 {
			q := (*waiting)[0]
			bestNow, bestAny := -1, -1
			var endNow, endAny float64
			for k, w := range ws {
				end := math.Max(now, w.free) + c.service(w.node, q.work)
				if bestAny < 0 || end < endAny {
					bestAny, endAny = k, end
				}
				if w.free <= now && (bestNow < 0 || end < endNow) {
					bestNow, endNow = k, end
				}
			}
			if bestNow < 0 || endNow > endAny {
				break // the best worker for it is busy: it waits
			}
			heap.Pop(waiting)
			ws[bestNow].free = endNow
			if q.at >= c.warmup*1000 {
				lat = append(lat, endNow-q.at)
			}
		}
		if i >= len(reqs) && waiting.Len() > 0 {
			// advance to the next worker freeing
			t := math.Inf(1)
			for _, w := range ws {
				if w.free > now && w.free < t {
					t = w.free
				}
			}
			if math.IsInf(t, 1) {
				break
			}
			now = t
		}
	}
	return lat
}

type sizeHeap []request

func (h sizeHeap) Len() int           { return len(h) }
func (h sizeHeap) Less(i, j int) bool { return h[i].work < h[j].work }
func (h sizeHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *sizeHeap) Push(x any)        { *h = append(*h, x.(request)) }
func (h *sizeHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}

// ---- report ----

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return math.NaN()
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func main() {
	c := config{nodes: 4, workers: 4, slowFactor: 3, minMS: 2, maxMS: 8, slowFrac: 1.0 / 2000, slowMS: 300}
	flag.Float64Var(&c.load, "load", 0.8, "arrival rate as a fraction of the fleet's capacity")
	flag.Float64Var(&c.rate, "rate", 0, "fixed arrival rate in req/s instead of -load")
	flag.BoolVar(&c.harnessMix, "harness-mix", false, "replay the harness's own request sequence, evenly spaced (what every harness run sends; -seeds then only vary ties)")
	flag.BoolVar(&c.poisson, "poisson", false, "Poisson arrivals (default: evenly spaced, request i due at i/rate, as bench/harness/openloop.go sends them)")
	flag.Float64Var(&c.seconds, "seconds", 60, "simulated seconds measured per run (after a 3 s warm-up)")
	flag.Float64Var(&c.overheadMS, "overhead", 0.28, "ms per request on the worker besides its work (0.28 makes the capacity the harness measured, 2463 req/s)")
	flag.Float64Var(&c.slowFactor, "slow-factor", 3, "the last node runs this many times slower")
	shareWeight := flag.Float64("share-weight", 1, "sed: weight of a full node's share of the router's queue in its cost (balancer/latency.go uses 1, the expected wait; more sends to the slow node sooner)")
	seeds := flag.Int("seeds", 5, "runs per policy, each with its own arrivals")
	only := flag.String("policies", "", "comma-separated policies to run (default all)")
	flag.Parse()
	c.warmup = 3

	means := make([]float64, c.nodes)
	for n := range means {
		means[n] = c.meanService(c.factor(n))
	}
	type policy struct {
		name string
		run  func(reqs []request, rng *rand.Rand) []float64
	}
	capped := func(rng *rand.Rand) *capRouter {
		return &capRouter{c: c, cap: c.workers, rng: rng, shareWeight: *shareWeight}
	}
	policies := []policy{
		{"jsq", func(reqs []request, rng *rand.Rand) []float64 { return runJSQ(c, reqs, rng) }},
		{"jsq-cap", func(reqs []request, rng *rand.Rand) []float64 {
			r := capped(rng)
			return r.run(reqs, r.jsqCap(func(int) bool { return true }))
		}},
		{"sed-true-cap", func(reqs []request, rng *rand.Rand) []float64 {
			r := capped(rng)
			return r.run(reqs, r.sedCap(func(_ float64, n, _ int) float64 { return means[n] }))
		}},
		{"sed-est-cap", func(reqs []request, rng *rand.Rand) []float64 {
			r := capped(rng)
			r.est = make([]estimate, c.nodes)
			return r.run(reqs, r.sedCap(func(now float64, n, in int) float64 {
				if v := r.est[n].value(now, in); v > 0 {
					return v
				}
				best := 0.0
				for k := range r.est {
					if v := r.est[k].value(now, r.inflight[k]); v > 0 && (best == 0 || v < best) {
						best = v
					}
				}
				return math.Max(best, 1e-9)
			}))
		}},
		{"fast-only", func(reqs []request, rng *rand.Rand) []float64 {
			r := capped(rng)
			return r.run(reqs, r.jsqCap(func(n int) bool { return n != c.nodes-1 }))
		}},
		{"oracle", func(reqs []request, _ *rand.Rand) []float64 { return runOracle(c, reqs) }},
		{"oracle-srpt", func(reqs []request, _ *rand.Rand) []float64 { return runSRPT(c, reqs) }},
	}
	if *only != "" {
		want := strings.Split(*only, ",")
		policies = slices.DeleteFunc(policies, func(p policy) bool { return !slices.Contains(want, p.name) })
	}
	fmt.Printf("fleet: %d nodes × %d workers, work U(%.0f, %.0f) ms, 1 in %.0f of %.0f ms, node %d %.0f× slower, +%.2f ms per request\n",
		c.nodes, c.workers, c.minMS, c.maxMS, 1/c.slowFrac, c.slowMS, c.nodes-1, c.slowFactor, c.overheadMS)
	kind := "evenly spaced"
	if c.poisson {
		kind = "Poisson"
	}
	fmt.Printf("capacity %.0f req/s, %s arrivals at %.0f req/s (%.0f%%), %d runs of %.0f s per policy\n\n",
		c.capacity()*1000, kind, c.arrivalRate()*1000, c.arrivalRate()/c.capacity()*100, *seeds, c.seconds)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "policy\tp50 ms\tp99 ms\tp99.9 ms\tp99 range\t")
	for _, p := range policies {
		var p50, p99, p999 []float64
		for s := range *seeds {
			reqs := arrivals(c, uint64(s+1))
			lat := p.run(reqs, rand.New(rand.NewPCG(uint64(s+1), 7)))
			sort.Float64s(lat)
			p50 = append(p50, pct(lat, 0.5))
			p99 = append(p99, pct(lat, 0.99))
			p999 = append(p999, pct(lat, 0.999))
		}
		fmt.Fprintf(tw, "%s\t%.2f\t%.2f\t%.2f\t%.2f–%.2f\t\n", p.name, median(p50), median(p99), median(p999), slices.Min(p99), slices.Max(p99))
	}
	tw.Flush()
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	return s[len(s)/2]
}
