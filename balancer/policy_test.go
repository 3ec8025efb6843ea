package balancer

import (
	"errors"
	"sync"
	"testing"
	"time"
)

func TestParseLimit(t *testing.T) {
	for in, want := range map[string]int64{"auto": LimitAuto, "0": 0, "4": 4, "1048576": 1 << 20} {
		if got, err := ParseLimit(in); err != nil || got != want {
			t.Errorf("ParseLimit(%q) = %d, %v; want %d", in, got, err, want)
		}
		if got, _ := ParseLimit(FormatLimit(want)); got != want {
			t.Errorf("round trip of %d gave %d", want, got)
		}
	}
	for _, in := range []string{"", "-1", "x", "1048577", "AUTO", "1.5"} {
		if _, err := ParseLimit(in); err == nil {
			t.Errorf("ParseLimit(%q) accepted", in)
		}
	}
}

func TestPolicyAlgoPrecedence(t *testing.T) {
	tb, _ := newTable(t, Config{DefaultAlgo: AlgoWRR})
	if err := tb.SetPolicies(Policy{}, map[string]Policy{"Filed.test": {Algo: AlgoP2C}, "capped.test": {MaxInflight: 2}}); err != nil {
		t.Fatal(err)
	}
	mk := func(key, algo string) Algo {
		t.Helper()
		if _, err := tb.Announce(&Announce{Key: []byte(key), Address: []byte(addr(0)), Algo: []byte(algo)}); err != nil {
			t.Fatal(err)
		}
		return tb.Pool(key).Algo()
	}
	// The file beats the datagram (keys match case-insensitively), the
	// datagram beats the default.
	if got := mk("filed.TEST", "lrc"); got != AlgoP2C {
		t.Errorf("file policy: algo %s, want p2c", got)
	}
	if got := mk("capped.test", "lrc"); got != AlgoLRC {
		t.Errorf("policy without algo: algo %s, want the datagram's lrc", got)
	}
	if got := mk("plain.test", ""); got != AlgoWRR {
		t.Errorf("no policy: algo %s, want default wrr", got)
	}
	pol := tb.Pool("capped.test").Policy()
	if pol.MaxInflight != 2 || pol.QueueSize != DefaultQueueSize || pol.QueueTimeout != DefaultQueueTimeout {
		t.Errorf("capped policy = %+v, want cap 2 with queue defaults", pol)
	}
	if pol := tb.Pool("plain.test").Policy(); pol.MaxInflight != 0 || pol.QueueSize != 0 {
		t.Errorf("plain policy = %+v, want no cap and no queue", pol)
	}
	// A reload changes caps of running pools but not their algorithm.
	if err := tb.SetPolicies(Policy{MaxInflight: LimitAuto}, map[string]Policy{"filed.test": {Algo: AlgoLRC}}); err != nil {
		t.Fatal(err)
	}
	if p := tb.Pool("filed.TEST"); p.Algo() != AlgoP2C || p.Policy().MaxInflight != LimitAuto {
		t.Errorf("after reload: algo %s cap %d; want p2c kept, cap auto", p.Algo(), p.Policy().MaxInflight)
	}
	if err := tb.SetPolicies(Policy{}, map[string]Policy{"a": {}, "A": {}}); err == nil {
		t.Error("two policies for one key accepted")
	}
	if err := tb.SetPolicies(Policy{}, map[string]Policy{"a b": {}}); err == nil {
		t.Error("bad key accepted")
	}
	if err := tb.SetPolicies(Policy{}, map[string]Policy{"a": {Algo: "nope"}}); err == nil {
		t.Error("bad algo accepted")
	}
}

// capTable returns a pool of two weight-1 nodes under policy pol.
func capTable(t *testing.T, algo Algo, pol Policy) (*Table, *Pool) {
	t.Helper()
	tb, _ := newTable(t, Config{Policy: pol})
	return tb, poolWith(t, tb, "cap.test", algo, 1, 1)
}

func TestCapNeverExceeded(t *testing.T) {
	for _, algo := range []Algo{AlgoWRR, AlgoLRC, AlgoWLRC, AlgoIPHash, AlgoP2C, AlgoHash} {
		t.Run(string(algo), func(t *testing.T) {
			tb, p := capTable(t, algo, Policy{MaxInflight: 2, QueueSize: 1, QueueTimeout: time.Millisecond})
			now := tb.Now().UnixNano()
			var held []*Node
			for i := range 4 {
				n, err := p.Acquire(now, nil, []byte{byte(i)}, nil)
				if err != nil {
					t.Fatalf("acquire %d: %v", i, err)
				}
				held = append(held, n)
			}
			for _, n := range p.Nodes() {
				if n.Inflight() != 2 {
					t.Errorf("%s in flight %d, want 2", n.Address, n.Inflight())
				}
			}
			if n := p.PickKey(now, nil, []byte("k")); n != nil {
				t.Fatalf("PickKey over the cap returned %s", n.Address)
			}
			if _, err := p.Acquire(now, nil, nil, nil); !errors.Is(err, ErrQueueTimeout) {
				t.Fatalf("Acquire at cap: %v, want queue timeout", err)
			}
			held[0].Done()
			if n, err := p.Acquire(now, nil, nil, nil); err != nil || n != held[0] {
				t.Fatalf("Acquire after a release: %v, %v; want the released node", n, err)
			}
		})
	}
}

func TestCapAutoUsesCores(t *testing.T) {
	tb, _ := newTable(t, Config{Policy: Policy{MaxInflight: LimitAuto, QueueSize: 1, QueueTimeout: time.Millisecond}})
	for _, a := range []*Announce{
		{Key: []byte("auto.test"), Address: []byte(addr(0)), Cores: 3},
		{Key: []byte("auto.test"), Address: []byte(addr(1)), Cores: 0}, // announced none: uncapped
	} {
		if _, err := tb.Announce(a); err != nil {
			t.Fatal(err)
		}
	}
	p := tb.Pool("auto.test")
	now := tb.Now().UnixNano()
	// Drain the uncapped node out of the way to see the cap of the other.
	if _, err := tb.Drain("auto.test", addr(1), time.Minute, true); err != nil {
		t.Fatal(err)
	}
	// auto = the 3 cores plus one waiting in the node's listen queue.
	for i := range 4 {
		if _, err := p.Acquire(now, nil, nil, nil); err != nil {
			t.Fatalf("acquire %d: %v", i, err)
		}
	}
	if _, err := p.Acquire(now, nil, nil, nil); !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("fifth acquire on a 3-core node: %v, want queue timeout", err)
	}
	if _, err := tb.Undrain("auto.test", addr(1)); err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		if n, err := p.Acquire(now, nil, nil, nil); err != nil || n.Address != addr(1) {
			t.Fatalf("acquire %d: %v %v; want the uncapped node", i, n, err)
		}
	}
}

func TestQueueFullAndNoNode(t *testing.T) {
	tb, p := capTable(t, AlgoLRC, Policy{MaxInflight: 1, QueueSize: 1, QueueTimeout: time.Hour})
	now := tb.Now().UnixNano()
	a, _ := p.Acquire(now, nil, nil, nil)
	b, _ := p.Acquire(now, nil, nil, nil)
	if a == nil || b == nil || a == b {
		t.Fatalf("first two acquires: %v %v", a, b)
	}
	done := make(chan struct{})
	waited := make(chan error, 1)
	go func() { _, err := p.Acquire(now, nil, nil, done); waited <- err }()
	deadline := time.Now().Add(5 * time.Second)
	for p.Waiting() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("waiter never queued")
		}
		time.Sleep(time.Millisecond)
	}
	if _, err := p.Acquire(now, nil, nil, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("acquire with a full queue: %v, want ErrQueueFull", err)
	}
	close(done)
	if err := <-waited; !errors.Is(err, ErrCanceled) {
		t.Fatalf("canceled waiter: %v", err)
	}
	// Tried nodes are excluded, not waited for.
	if _, err := p.Acquire(now, []*Node{a, b}, nil, nil); !errors.Is(err, ErrNoUsableNode) {
		t.Fatalf("all tried: %v, want ErrNoUsableNode", err)
	}
	// No cap: an empty pool is ErrNoUsableNode at once.
	tb2, _ := newTable(t, Config{})
	tb2.AddStatic("x", addr(0), 1)
	tb2.Drain("x", addr(0), time.Minute, true)
	if _, err := tb2.Pool("x").Acquire(now, nil, nil, nil); !errors.Is(err, ErrNoUsableNode) {
		t.Fatalf("drained pool: %v", err)
	}
}

// Many requests through a pool capped at 2 per node: never more than the cap
// in flight, and every request served (the queue absorbs the burst).
func TestQueueServesBurstUnderCap(t *testing.T) {
	tb, p := capTable(t, AlgoWRR, Policy{MaxInflight: 2, QueueSize: 64, QueueTimeout: 10 * time.Second})
	var wg sync.WaitGroup
	var mu sync.Mutex
	served := 0
	errs := make(chan error, 64)
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				n, err := p.Acquire(tb.Now().UnixNano(), nil, nil, nil)
				if err != nil {
					errs <- err
					return
				}
				if in := n.Inflight(); in > 2 {
					errs <- errors.New("cap exceeded")
				}
				time.Sleep(50 * time.Microsecond)
				mu.Lock()
				served++
				mu.Unlock()
				n.Done()
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if served != 64*20 {
		t.Fatalf("served %d, want %d", served, 64*20)
	}
	if p.Waiting() != 0 {
		t.Fatalf("%d still waiting", p.Waiting())
	}
}

// A waiter is woken by a node joining and by a cap being raised.
func TestQueueWokenByNewNodeAndReload(t *testing.T) {
	tb, p := capTable(t, AlgoLRC, Policy{MaxInflight: 1, QueueSize: 4, QueueTimeout: time.Minute})
	now := tb.Now().UnixNano()
	p.Acquire(now, nil, nil, nil)
	p.Acquire(now, nil, nil, nil)
	got := make(chan *Node, 2)
	for range 2 {
		go func() { n, _ := p.Acquire(now, nil, nil, nil); got <- n }()
	}
	for p.Waiting() != 2 {
		time.Sleep(time.Millisecond)
	}
	announce(t, tb, "cap.test", addr(7), 1)
	if n := <-got; n == nil || n.Address != addr(7) {
		t.Fatalf("woken by a new node: %v", n)
	}
	if err := tb.SetPolicies(Policy{MaxInflight: 5}, nil); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-got:
		if n == nil {
			t.Fatal("second waiter got nothing")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("raising the cap did not wake the waiter")
	}
}

func TestHealthDownSkipsNode(t *testing.T) {
	tb, p := capTable(t, AlgoWRR, Policy{})
	now := tb.Now().UnixNano()
	down := p.Nodes()[0]
	down.SetHealthy(false)
	if down.State() != StateFailed || down.Healthy() {
		t.Fatalf("down node state %s", down.State())
	}
	for _, a := range picks(p, 20, now, nil) {
		if a == down.Address {
			t.Fatal("a node marked down was picked")
		}
	}
	// A drain and undrain do not resurrect it.
	tb.Drain("cap.test", down.Address, time.Minute, true)
	tb.Undrain("cap.test", down.Address)
	if down.State() != StateFailed {
		t.Fatalf("after undrain: %s", down.State())
	}
	down.SetHealthy(true)
	if c := count(picks(p, 20, now, nil)); c[down.Address] != 10 {
		t.Fatalf("after recovery: %v", c)
	}
	// The only node down: nothing usable, not "busy".
	p.Nodes()[1].SetHealthy(false)
	down.SetHealthy(false)
	if _, err := p.Acquire(now, nil, nil, nil); !errors.Is(err, ErrNoUsableNode) {
		t.Fatalf("all down: %v", err)
	}
}

// A request that finds others waiting queues behind them even when a slot
// is free at that moment (one freed for a waiter not yet scheduled): taking
// it would serve the queue last-come first. With the queue full it takes
// the slot, rather than a 503.
func TestAcquireDoesNotPassWaiters(t *testing.T) {
	tb, _ := newTable(t, Config{Policy: Policy{MaxInflight: 1, QueueSize: 3, QueueTimeout: 30 * time.Millisecond}})
	if _, err := tb.Announce(&Announce{Key: []byte("fifo.test"), Address: []byte(addr(0))}); err != nil {
		t.Fatal(err)
	}
	p := tb.Pool("fifo.test")
	now := tb.Now().UnixNano()
	p.waiting.Add(1) // a waiter woken for the free slot, not yet running
	if n, err := p.Acquire(now, nil, nil, nil); !errors.Is(err, ErrQueueTimeout) {
		t.Fatalf("arrival behind a waiter: %v, %v; want it to wait (queue timeout), not take the slot", n, err)
	}
	p.waiting.Add(2) // the queue is full
	n, err := p.Acquire(now, nil, nil, nil)
	if err != nil {
		t.Fatalf("arrival with the queue full: %v; want the free node", err)
	}
	n.Done()
	p.waiting.Add(-3)
	// Alone, a request takes the free node at once.
	if n, err := p.Acquire(now, nil, nil, nil); err != nil {
		t.Fatalf("alone: %v", err)
	} else {
		n.Done()
	}
}

// TryAcquire answers at once: a node where one is under its cap, and
// ErrWouldWait where Acquire would queue (every node at its cap, or others
// waiting), ErrQueueFull where the queue has no room; it never allocates.
func TestTryAcquire(t *testing.T) {
	tb, p := capTable(t, AlgoLRC, Policy{MaxInflight: 1, QueueSize: 2, QueueTimeout: time.Hour})
	now := tb.Now().UnixNano()
	a, errA := p.TryAcquire(now, nil, nil)
	b, errB := p.TryAcquire(now, nil, nil)
	if errA != nil || errB != nil || a == b {
		t.Fatalf("first two: %v %v, %v %v", a, errA, b, errB)
	}
	if n, err := p.TryAcquire(now, nil, nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("both at their cap: %v %v, want ErrWouldWait", n, err)
	}
	a.Done()
	p.waiting.Add(1) // a waiter woken for the free slot, not yet running
	if n, err := p.TryAcquire(now, nil, nil); !errors.Is(err, ErrWouldWait) {
		t.Fatalf("behind a waiter: %v %v, want ErrWouldWait", n, err)
	}
	p.waiting.Add(1) // the queue is full: the free node beats a 503
	if n, err := p.TryAcquire(now, nil, nil); err != nil || n != a {
		t.Fatalf("queue full with a free node: %v %v, want %v", n, err, a)
	}
	if n, err := p.TryAcquire(now, nil, nil); !errors.Is(err, ErrQueueFull) {
		t.Fatalf("queue full, nodes at their cap: %v %v, want ErrQueueFull", n, err)
	}
	p.waiting.Add(-2)
	a.Done()
	if allocs := testing.AllocsPerRun(100, func() {
		n, _ := p.TryAcquire(now, nil, nil)
		n.Done()
	}); allocs != 0 {
		t.Errorf("TryAcquire allocates %v times", allocs)
	}
	b.Done()
}
