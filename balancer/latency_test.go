package balancer

import (
	"testing"
	"time"
)

// sedPool announces one node per cores value (addresses addr(0..)) in a sed
// pool under pol.
func sedPool(t *testing.T, pol Policy, cores ...uint64) (*Pool, *fakeClock) {
	p, _, clk := sedTable(t, pol, cores...)
	return p, clk
}

func sedTable(t *testing.T, pol Policy, cores ...uint64) (*Pool, *Table, *fakeClock) {
	t.Helper()
	tb, clk := newTable(t, Config{Policy: pol})
	for i, c := range cores {
		if _, err := tb.Announce(&Announce{Key: []byte("sed.test"), Address: []byte(addr(i)), Cores: c, Algo: []byte(AlgoSED)}); err != nil {
			t.Fatal(err)
		}
	}
	p := tb.Pool("sed.test")
	if p == nil || p.Algo() != AlgoSED || !p.MeasuresLatency() {
		t.Fatalf("pool not created as sed")
	}
	return p, tb, clk
}

// serve picks a node at the clock's time and answers it after d.
func serve(t *testing.T, p *Pool, clk *fakeClock, d time.Duration) *Node {
	t.Helper()
	n := p.Pick(clk.Nano(), nil)
	if n == nil {
		t.Fatal("no pick")
	}
	n.ObserveLatency(clk.Nano()+int64(d), int64(d), false)
	n.Done()
	return n
}

func TestSEDProbesEveryUnmeasuredNode(t *testing.T) {
	p, tb, clk := sedTable(t, Policy{}, 4, 4, 4, 4)
	// One request at a time, as a warm-up or a quiet hour sends: every
	// node must be tried before the pool settles on the fastest.
	seen := map[string]bool{}
	for i := range 4 {
		seen[serve(t, p, clk, time.Duration(i+1)*time.Millisecond).Address] = true
		clk.Add(time.Millisecond)
	}
	if len(seen) != 4 {
		t.Fatalf("4 sequential picks reached %d nodes, want all 4 (unmeasured nodes first)", len(seen))
	}
	// Now measured: 1, 2, 3, 4 ms. An idle pool takes the fastest.
	for range 20 {
		if n := serve(t, p, clk, time.Millisecond); n.Address != addr(0) {
			t.Fatalf("idle pool picked %s, want the 1 ms node %s", n.Address, addr(0))
		}
		clk.Add(time.Millisecond)
	}
	// A node that joins now is tried by the next pick.
	if _, err := tb.Announce(&Announce{Key: []byte("sed.test"), Address: []byte(addr(9)), Cores: 4}); err != nil {
		t.Fatal(err)
	}
	if n := serve(t, p, clk, time.Millisecond); n.Address != addr(9) {
		t.Fatalf("after a node joined the pick was %s, want the new %s", n.Address, addr(9))
	}
}

func TestSEDCostWeighsQueue(t *testing.T) {
	p, clk := sedPool(t, Policy{}, 4, 4)
	fast, slow := p.Node(addr(0)), p.Node(addr(1))
	now := clk.Nano()
	fast.observe(now, int64(5*time.Millisecond), false)
	slow.observe(now, int64(15*time.Millisecond), false)
	// The fast node takes requests while (in+1)/4 × 5 ms ≤ 15 ms, i.e.
	// up to 11 in flight; the 12th goes to the slow node (5×13/4 > 15).
	var held []*Node
	for i := range 12 {
		n := p.Pick(now, nil)
		held = append(held, n)
		want := fast
		if i == 11 {
			want = slow
		}
		if n != want {
			t.Fatalf("pick %d with %d in flight on the fast node: %s, want %s", i, fast.Inflight(), n.Address, want.Address)
		}
	}
	for _, n := range held {
		n.Done()
	}
}

func TestSEDEstimate(t *testing.T) {
	p, clk := sedPool(t, Policy{}, 4)
	n := p.Node(addr(0))
	now := clk.Nano()
	if n.Latency(now) != 0 {
		t.Fatal("estimate before any sample")
	}
	n.observe(now, int64(4*time.Millisecond), false)
	if got := n.Latency(now); got != 4*time.Millisecond {
		t.Fatalf("first sample: estimate %v, want it (4ms)", got)
	}
	// A 300 ms outlier counts as 8 × 4 ms at most, weighed 1-e^(-Δt/τ).
	now += int64(latTau)
	n.observe(now, int64(300*time.Millisecond), false)
	want := 4 + (32-4)*(1-0.36787944)
	if got := float64(n.Latency(now)) / 1e6; got < want-0.01 || got > want+0.01 {
		t.Fatalf("after a clamped outlier one τ later: %.3f ms, want %.3f", got, want)
	}
	// A fast 5xx or failure counts as 250 ms.
	now += int64(10 * latTau)
	n.observe(now, int64(time.Millisecond), true)
	if got := n.Latency(now); got < 249*time.Millisecond {
		t.Fatalf("after a failure long after the last sample: %v, want ≈250ms", got)
	}
	// Idle, it halves per second down to 1/16.
	if got := n.Latency(now + int64(time.Second)); got < 124*time.Millisecond || got > 126*time.Millisecond {
		t.Fatalf("1 s idle: %v, want ≈125ms", got)
	}
	if got, floor := n.Latency(now+int64(time.Minute)), n.Latency(now)/16; got != floor {
		t.Fatalf("a minute idle: %v, want the floor 1/16 = %v", got, floor)
	}
	// Not while it has requests in flight: a node that answers nothing
	// must not look faster.
	held := p.Pick(now, nil)
	if got := n.Latency(now + int64(time.Minute)); got < 249*time.Millisecond {
		t.Fatalf("busy node decayed to %v", got)
	}
	held.Done()
	// Other algorithms keep no estimate.
	tb, _ := newTable(t, Config{})
	q := poolWith(t, tb, "k", AlgoLRC, 1)
	m := q.Nodes()[0]
	m.ObserveLatency(now, int64(time.Millisecond), false)
	if m.Latency(now) != 0 || q.MeasuresLatency() {
		t.Fatal("an lrc node kept a latency estimate")
	}
}

func TestSEDIdleSlowNodeIsProbedAgain(t *testing.T) {
	p, clk := sedPool(t, Policy{}, 4, 4)
	fast, slow := p.Node(addr(0)), p.Node(addr(1))
	fast.observe(clk.Nano(), int64(5*time.Millisecond), false)
	slow.observe(clk.Nano(), int64(15*time.Millisecond), false)
	// Sequential traffic keeps the fast node's estimate fresh; the slow
	// one decays until it wins a pick (15 ms halves below 5 ms in ~1.6 s).
	for i := range 400 {
		clk.Add(10 * time.Millisecond)
		if n := serve(t, p, clk, 5*time.Millisecond); n == slow {
			if i < 100 || i > 250 {
				t.Fatalf("slow node probed after %d ms, want ≈1.6 s", i*10)
			}
			return
		}
	}
	t.Fatal("an idle slow node was never tried again")
}

func TestSEDFailingNodeProbedAfterBackoff(t *testing.T) {
	p, clk := sedPool(t, Policy{}, 4, 4)
	a, b := p.Node(addr(0)), p.Node(addr(1))
	a.observe(clk.Nano(), int64(5*time.Millisecond), false)
	b.observe(clk.Nano(), int64(5*time.Millisecond), false)
	b.ObserveLatency(clk.Nano(), 0, true)
	b.ReportFailure(clk.Now())
	for range 10 {
		if n := serve(t, p, clk, 5*time.Millisecond); n != a {
			t.Fatalf("a failed node was picked during its back-off")
		}
	}
	clk.Add(time.Second) // past the first back-off (500 ms)
	n := p.Pick(clk.Nano(), nil)
	if n != b {
		t.Fatalf("after its back-off the failed node was not probed first: %s", n.Address)
	}
	// As the router orders them: the connect succeeds, then the head.
	if !b.ReportSuccess() {
		t.Fatal("probe did not revive the node")
	}
	b.ObserveLatency(clk.Nano(), int64(6*time.Millisecond), false)
	n.Done()
	if got := b.Latency(clk.Nano()); got != 6*time.Millisecond {
		t.Fatalf("revived node's estimate %v, want its first sample after the revival, 6ms", got)
	}
}

func TestSEDWaitsForFasterFullNode(t *testing.T) {
	p, clk := sedPool(t, Policy{MaxInflight: LimitAuto, QueueSize: 2, QueueTimeout: 10 * time.Second}, 2, 2)
	fast, slow := p.Node(addr(0)), p.Node(addr(1))
	now := clk.Nano()
	fast.observe(now, int64(2*time.Millisecond), false)
	slow.observe(now, int64(20*time.Millisecond), false)
	for i := range 3 {
		if n, _ := p.Acquire(now, nil, nil, nil); n != fast {
			t.Fatalf("pick %d: %v, want the fast node", i, n)
		}
	}
	// The fast node is at its cap (2 cores + 1): waiting for it
	// (2 × 4/2 = 4 ms) beats the free slow node (20 ms).
	if n, _ := p.pick(now, nil, nil); n != nil {
		t.Fatalf("picked %s instead of waiting for the fast node", n.Address)
	}
	done := make(chan *Node)
	go func() {
		n, err := p.Acquire(now, nil, nil, nil)
		if err != nil {
			t.Error(err)
		}
		done <- n
	}()
	for i := 0; p.Waiting() == 0; i++ {
		if i == 5000 {
			t.Fatal("the fourth request did not wait")
		}
		time.Sleep(time.Millisecond)
	}
	fast.Done()
	if n := <-done; n != fast {
		t.Fatalf("waiter got %s, want the fast node", n.Address)
	}
	// With the queue full, the free slow node is used rather than a 503.
	p.waiting.Add(2)
	n, err := p.Acquire(now, nil, nil, nil)
	p.waiting.Add(-2)
	if err != nil || n != slow {
		t.Fatalf("with a full queue: %v %v, want the free slow node", n, err)
	}
	n.Done()
	// A full fast node whose queue share makes it dearer than the slow
	// node loses to it: 2 ms × (3 + 1 + 20)/2 = 24 ms > 20 ms.
	p.waiting.Add(20)
	pol := *p.policy.Load()
	pol.QueueSize = 100
	pol.QueueTimeout = 100 * time.Millisecond
	p.setPolicy(pol)
	n, busy := p.pick(now, nil, nil)
	if n != slow {
		t.Fatalf("with 20 waiting: %v (busy %v), want the slow node", n, busy)
	}
	n.Done()
	// An arrival weighs the same (Acquire does not queue it unasked
	// behind the waiters, as it would in a pool of another algorithm).
	for len(p.wake) > 0 {
		<-p.wake // no wake-up pending: a queued arrival would time out
	}
	n, err = p.Acquire(now, nil, nil, nil)
	p.waiting.Add(-20)
	if err != nil || n != slow {
		t.Fatalf("Acquire with 20 waiting: %v %v, want the slow node", n, err)
	}
	n.Done()
	for range 3 {
		fast.Done()
	}
	if fast.Inflight() != 0 || slow.Inflight() != 0 {
		t.Fatalf("in flight left: %d %d", fast.Inflight(), slow.Inflight())
	}
}
