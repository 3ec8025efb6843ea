package router

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Returning the memory of a burst of connections that went idle.
//
// A connection that parks (park.go) lets go of everything fasthttp and the
// request path gave it, and a TLS one the transient memory of its
// handshake (certificate chain, key shares, transcript) too. The heap
// shrinks, but nothing tells the OS: the next GC comes only when the heap
// grows past a goal set at the burst's peak (or after 2 minutes), and the
// background scavenger then returns freed pages gradually, at about 1 % of
// a CPU (runtime/mgcscavenge.go). So after thousands of clients connect and
// go quiet the process's RSS stays near the handshake peak for minutes. When a burst of parks is over, the router calls
// debug.FreeOSMemory once: a forced GC, then every free page returned at
// once. It is rate-limited, and never runs while connections are still
// parking (the burst is not over: the pages would be needed again at once).

// trimPolicy says when parks call for a trim. Fields, not constants, so
// that tests can shrink them.
type trimPolicy struct {
	// MinParks is how many parks since the last trim make a burst worth
	// trimming after.
	MinParks int64
	// Quiet is how long no connection may have parked for the burst to be
	// over.
	Quiet time.Duration
	// Every is the least time between two trims.
	Every time.Duration
}

// defaultTrimPolicy: a thousand idle connections hold well over 10 MiB
// before the trim (docs/operations.md); a quarter of a second without a
// park is long past a burst of clients connecting at once; a forced GC
// every 10 s at most costs nothing measurable.
var defaultTrimPolicy = trimPolicy{MinParks: 1000, Quiet: 250 * time.Millisecond, Every: 10 * time.Second}

// due decides, at now, given how many parks there have been since the last
// trim and when the latest was, whether to trim now and, if not, when to
// look again (zero: not until more connections park).
func (p trimPolicy) due(now time.Time, parks int64, lastPark, lastTrim time.Time) (trim bool, next time.Time) {
	if parks < p.MinParks {
		return false, time.Time{}
	}
	at := lastPark.Add(p.Quiet)
	if !lastTrim.IsZero() {
		if r := lastTrim.Add(p.Every); r.After(at) {
			at = r
		}
	}
	if now.Before(at) {
		return false, at
	}
	return true, time.Time{}
}

// idleTrim counts the router's parks and runs the trimmer goroutine, which
// it starts at the first park and Router.Shutdown stops.
type idleTrim struct {
	policy trimPolicy
	now    func() time.Time // time.Now; monotonic readings
	free   func()           // debug.FreeOSMemory

	epoch    time.Time    // lastPark is nanoseconds since epoch
	parks    atomic.Int64 // since the last trim (the trimmer resets it)
	lastPark atomic.Int64
	trims    atomic.Int64 // done so far
	kick     chan struct{}

	mu      sync.Mutex // guards started, stopped
	started bool
	stopped bool
	stop    chan struct{}
	done    chan struct{}
}

func newIdleTrim(p trimPolicy) *idleTrim {
	t := &idleTrim{policy: p, now: time.Now, free: debug.FreeOSMemory,
		kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	t.epoch = t.now()
	return t
}

// parked counts one park (frontListener.park), and starts the trimmer
// if it has not started yet and the router is not shut down.
func (t *idleTrim) parked() {
	t.lastPark.Store(int64(t.now().Sub(t.epoch)))
	t.parks.Add(1)
	t.mu.Lock()
	if !t.started && !t.stopped {
		t.started = true
		go t.run()
	}
	t.mu.Unlock()
	select {
	case t.kick <- struct{}{}:
	default: // the trimmer has a wake-up pending already
	}
}

// Stop stops the trimmer, if it started, and waits for it to end. No
// trimmer starts after it.
func (t *idleTrim) Stop() {
	t.mu.Lock()
	started := t.started
	if !t.stopped {
		t.stopped = true
		close(t.stop)
	}
	t.mu.Unlock()
	if started {
		<-t.done
	}
}

// run is the trimmer: it wakes at parks and at the times due names, and
// trims when due says so.
func (t *idleTrim) run() {
	defer close(t.done)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var lastTrim time.Time
	for {
		select {
		case <-t.stop:
			return
		case <-t.kick:
		case <-timer.C:
		}
		now := t.now()
		parks := t.parks.Load()
		trim, next := t.policy.due(now, parks, t.epoch.Add(time.Duration(t.lastPark.Load())), lastTrim)
		if trim {
			t.parks.Add(-parks) // later ones count towards the next trim
			t.free()
			t.trims.Add(1)
			lastTrim = t.now()
			continue
		}
		if !next.IsZero() {
			timer.Reset(next.Sub(now))
		}
	}
}
