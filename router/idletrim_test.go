package router

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
)

// fakeClock is a clock that moves only when the test says so; the
// trimmer's timers are real, so that with it the trimmer's decisions
// depend on the test's times only, never on the machine's load.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// testTrim is an idleTrim of small thresholds on a fake clock, counting
// its trims instead of freeing memory; stopped at the test's end.
func testTrim(t *testing.T) (*idleTrim, *fakeClock) {
	t.Helper()
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	tr := newIdleTrim(trimPolicy{MinParks: 10, Quiet: 20 * time.Millisecond, Every: 200 * time.Millisecond})
	tr.now, tr.epoch = clock.now, clock.now()
	tr.free = func() {}
	t.Cleanup(tr.Stop)
	return tr, clock
}

// expectTrims checks that the trimmer has trimmed want times, and then
// that no further trim comes during a few of its Quiet periods of real
// time (the fake clock stands still: whatever it would do, it has had the
// chance to).
func expectTrims(t *testing.T, tr *idleTrim, want int64, what string) {
	t.Helper()
	waitFor(t, what, func() bool { return tr.trims.Load() >= want })
	time.Sleep(5 * tr.policy.Quiet)
	if got := tr.trims.Load(); got != want {
		t.Fatalf("%s: %d trims; want %d", what, got, want)
	}
}

func TestTrimPolicyDue(t *testing.T) {
	p := trimPolicy{MinParks: 1000, Quiet: 250 * time.Millisecond, Every: 10 * time.Second}
	t0 := time.Unix(1e9, 0)
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	for _, c := range []struct {
		name               string
		now                time.Time
		parks              int64
		lastPark, lastTrim time.Time
		trim               bool
		next               time.Time
	}{
		{"too few parks", at(time.Hour), 999, t0, time.Time{}, false, time.Time{}},
		{"burst going on", at(100 * time.Millisecond), 5000, t0, time.Time{}, false, at(250 * time.Millisecond)},
		{"burst over", at(250 * time.Millisecond), 5000, t0, time.Time{}, true, time.Time{}},
		{"burst over, trimmed lately", at(time.Second), 1000, t0, at(-5 * time.Second), false, at(5 * time.Second)},
		{"burst over, trimmed long ago", at(time.Second), 1000, t0, at(-10 * time.Second), true, time.Time{}},
		{"rate limit then still parking", at(5 * time.Second), 1000, at(9900 * time.Millisecond), at(-5 * time.Second), false, at(10150 * time.Millisecond)},
	} {
		trim, next := p.due(c.now, c.parks, c.lastPark, c.lastTrim)
		if trim != c.trim || !next.Equal(c.next) {
			t.Errorf("%s: due = %v, %v; want %v, %v", c.name, trim, next.Sub(t0), c.trim, c.next.Sub(t0))
		}
	}
}

// A burst of parks is trimmed after once it is over, not while it goes on,
// and not at all when it is too small.
func TestIdleTrimAfterBurst(t *testing.T) {
	tr, clock := testTrim(t)
	for range 9 {
		tr.parked()
	}
	clock.advance(time.Hour)
	expectTrims(t, tr, 0, "fewer parks than MinParks")

	// Parks keep coming (the clock stays within Quiet of the last one).
	for range 30 {
		tr.parked()
		clock.advance(tr.policy.Quiet / 4)
		time.Sleep(tr.policy.Quiet / 4)
	}
	if got := tr.trims.Load(); got != 0 {
		t.Fatalf("%d trims while connections were still parking; want 0", got)
	}
	clock.advance(tr.policy.Quiet)
	expectTrims(t, tr, 1, "the trim after the burst")
}

// Trims are at least Every apart: a burst over sooner after the last trim
// is trimmed when Every has passed.
func TestIdleTrimRateLimit(t *testing.T) {
	tr, clock := testTrim(t)
	burst := func() {
		for range 10 {
			tr.parked()
		}
		clock.advance(tr.policy.Quiet)
	}
	burst()
	expectTrims(t, tr, 1, "the first trim")
	burst()
	expectTrims(t, tr, 1, "a second burst within Every")
	clock.advance(tr.policy.Every)
	expectTrims(t, tr, 2, "the second trim, Every after the first")
}

// The router's parks feed its trimmer, which Shutdown stops; none starts
// after.
func TestIdleTrimStopsOnShutdown(t *testing.T) {
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	// Parking is the goroutine path's: the event loop's idle connections
	// have no goroutine to park.
	rt, err := New(Config{Pools: table, ConnectTimeout: time.Second, Timeout: 5 * time.Second, DisableH1EventLoop: true})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	freed := 0
	rt.trim = newIdleTrim(trimPolicy{MinParks: 3, Quiet: 20 * time.Millisecond, Every: time.Hour})
	rt.trim.free = func() { mu.Lock(); freed++; mu.Unlock() }
	r := &testRouter{addr: serveUntilCleanup(t, rt, rt.Serve, "tcp", "test"), table: table, rt: rt}
	n := startFakeNode(t, okReply("hi"))
	r.table.AddStatic("p.test", n.addr(), 1)
	for range 3 {
		dialKeepAlive(t, r.addr).get(getP, 1, "hi") // each parks parkAfter later
	}
	waitFor(t, "the trim after the connections parked", func() bool { return rt.trim.trims.Load() == 1 })
	mu.Lock()
	if freed != 1 {
		t.Errorf("memory freed %d times; want 1", freed)
	}
	mu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := rt.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	select {
	case <-rt.trim.done:
	default:
		t.Fatal("the trimmer still runs after Shutdown")
	}

	// A trimmer stopped before any park never starts.
	tr := newIdleTrim(defaultTrimPolicy)
	tr.Stop()
	tr.parked()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if tr.started {
		t.Fatal("a park after Stop started the trimmer")
	}
}
