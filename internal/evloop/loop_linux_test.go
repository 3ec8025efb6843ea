//go:build linux

package evloop

import (
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// testMode is the mode newLoop makes; TestLockedMode runs the others in
// the Locked one.
var testMode = Parked

func newLoop(t *testing.T) *Loop {
	t.Helper()
	l, err := NewLoop(testMode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

// on runs f on l's goroutine and waits for it.
func on(t *testing.T, l *Loop, f func()) {
	t.Helper()
	done := make(chan struct{})
	if err := l.Submit(func() { f(); close(done) }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("submitted function did not run")
	}
}

type funcHandler func(fd int, ev uint32)

func (f funcHandler) Event(fd int, ev uint32) { f(fd, ev) }

func socketpair(t *testing.T) (int, int) {
	t.Helper()
	p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	return p[0], p[1]
}

func TestTimersFireInOrder(t *testing.T) {
	l := newLoop(t)
	got := make(chan int, 4)
	var ts [4]Timer
	on(t, l, func() {
		now := l.Now()
		// Armed out of order; one re-armed earlier, one stopped.
		l.Reset(&ts[0], now.Add(30*time.Millisecond), func() { got <- 0 })
		l.Reset(&ts[1], now.Add(10*time.Millisecond), func() { got <- 1 })
		l.Reset(&ts[2], now.Add(50*time.Millisecond), func() { got <- 2 })
		l.Reset(&ts[3], now.Add(40*time.Millisecond), func() { got <- 3 })
		l.Reset(&ts[2], now.Add(20*time.Millisecond), func() { got <- 2 })
		if !l.Stop(&ts[3]) || l.Stop(&ts[3]) {
			t.Error("Stop: want true once, then false")
		}
	})
	for _, want := range []int{1, 2, 0} {
		select {
		case g := <-got:
			if g != want {
				t.Fatalf("timer %d fired, want %d", g, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("timer %d did not fire", want)
		}
	}
	select {
	case g := <-got:
		t.Fatalf("stopped timer %d fired", g)
	case <-time.After(60 * time.Millisecond):
	}
}

func TestTimerNotEarly(t *testing.T) {
	l := newLoop(t)
	fired := make(chan time.Time, 1)
	var tm Timer
	var at time.Time
	on(t, l, func() {
		at = time.Now().Add(25 * time.Millisecond)
		l.Reset(&tm, at, func() { fired <- time.Now() })
	})
	select {
	case f := <-fired:
		if f.Before(at) {
			t.Fatalf("fired %v early", at.Sub(f))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("did not fire")
	}
}

// A timer's function may re-arm its own timer (a deadline renewed).
func TestTimerRearmsItself(t *testing.T) {
	l := newLoop(t)
	var tm Timer
	var n atomic.Int32
	done := make(chan struct{})
	var f func()
	f = func() {
		if n.Add(1) == 3 {
			close(done)
			return
		}
		l.Reset(&tm, l.Now().Add(time.Millisecond), f)
	}
	on(t, l, func() { l.Reset(&tm, l.Now().Add(time.Millisecond), f) })
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatalf("fired %d times, want 3", n.Load())
	}
}

func TestHeapManyTimers(t *testing.T) {
	var h timerHeap
	ts := make([]Timer, 200)
	for i := range ts {
		ts[i].when = int64((i * 7919) % 200)
		ts[i].f = func() {}
		h.push(&ts[i])
	}
	for i := 0; i < len(ts); i += 3 {
		h.remove(ts[i].idx - 1)
	}
	last := int64(-1)
	for len(h) > 0 {
		w := h[0].when
		if w < last {
			t.Fatalf("out of order: %d after %d", w, last)
		}
		last = w
		h.remove(0)
	}
}

func TestReadiness(t *testing.T) {
	l := newLoop(t)
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	got := make(chan string, 1)
	on(t, l, func() {
		err := l.Add(a, In, funcHandler(func(fd int, ev uint32) {
			var buf [16]byte
			n, err := Read(fd, buf[:])
			if err != nil {
				return
			}
			got <- string(buf[:n])
		}))
		if err != nil {
			t.Error(err)
		}
	})
	if _, err := Write(b, []byte("ping")); err != nil {
		t.Fatal(err)
	}
	select {
	case s := <-got:
		if s != "ping" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no readiness event")
	}
	on(t, l, func() {
		if err := l.Remove(a); err != nil {
			t.Error(err)
		}
		if l.Registered(a) {
			t.Error("still registered after Remove")
		}
	})
}

// Two descriptors ready in the same batch: the first handler removes and
// closes the other, whose number a new registration then reuses. The stale
// event must reach neither the old handler nor the new one.
func TestStaleEventAfterCloseAndReuse(t *testing.T) {
	l := newLoop(t)
	a1, a2 := socketpair(t)
	b1, b2 := socketpair(t)
	defer unix.Close(a2)
	defer unix.Close(b2)
	result := make(chan string, 4)
	var first atomic.Int32
	var reused [2]int
	mk := func(other *int) Handler {
		return funcHandler(func(fd int, ev uint32) {
			var buf [8]byte
			_, _ = Read(fd, buf[:]) // level-triggered: drain
			if f := first.Load(); f != 0 && f != int32(fd) {
				result <- "stale event delivered to a removed registration"
				return
			}
			if !first.CompareAndSwap(0, int32(fd)) {
				return
			}
			o := *other
			_ = l.Remove(o)
			unix.Close(o)
			p, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
			if err != nil {
				result <- err.Error()
				return
			}
			reused = [2]int{p[0], p[1]}
			if p[0] != o && p[1] != o {
				result <- "skip: number not reused"
				return
			}
			nfd := p[0]
			if p[1] == o {
				nfd = p[1]
			}
			if err := l.Add(nfd, In, funcHandler(func(int, uint32) {
				result <- "stale event delivered to the new registration"
			})); err != nil {
				result <- err.Error()
				return
			}
			result <- "ok"
		})
	}
	var pa, pb = a1, b1
	on(t, l, func() {
		_ = l.Add(a1, In, mk(&pb))
		_ = l.Add(b1, In, mk(&pa))
	})
	// Both ready before the loop wakes: one write each while it waits.
	on(t, l, func() {
		_, _ = Write(a2, []byte("x"))
		_, _ = Write(b2, []byte("x"))
	})
	select {
	case r := <-result:
		if r == "skip: number not reused" {
			t.Skip(r)
		}
		if r != "ok" {
			t.Fatal(r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no event")
	}
	// Give a stale event every chance to show.
	on(t, l, func() {})
	select {
	case r := <-result:
		t.Fatal(r)
	case <-time.After(50 * time.Millisecond):
	}
	on(t, l, func() {
		for _, fd := range []int{int(first.Load()), reused[0], reused[1]} {
			_ = l.Remove(fd)
			unix.Close(fd)
		}
	})
}

func TestCloseWaitsAndRefusesSubmit(t *testing.T) {
	l, err := New()
	if err != nil {
		t.Fatal(err)
	}
	var ran atomic.Bool
	var tm Timer
	_ = l.Submit(func() {
		l.Reset(&tm, l.Now().Add(time.Hour), func() { t.Error("timer ran after Close") })
	})
	_ = l.Submit(func() { time.Sleep(20 * time.Millisecond); ran.Store(true) })
	l.Close()
	if !ran.Load() {
		t.Fatal("Close returned before a task submitted before it ran")
	}
	select {
	case <-l.Done():
	default:
		t.Fatal("Done not closed after Close")
	}
	if err := l.Submit(func() {}); err != ErrClosed {
		t.Fatalf("Submit after Close: %v, want ErrClosed", err)
	}
	l.Close() // twice: no panic, no hang
}

// Submit and Wake from many goroutines while the loop closes: no task is
// lost that Submit accepted, none runs after Close returns.
func TestSubmitRaceWithClose(t *testing.T) {
	for range 20 {
		l, err := New()
		if err != nil {
			t.Fatal(err)
		}
		var accepted, ran atomic.Int64
		stop := make(chan struct{})
		var wg [4]chan struct{}
		for i := range wg {
			wg[i] = make(chan struct{})
			go func() {
				defer close(wg[i])
				for {
					select {
					case <-stop:
						return
					default:
					}
					if l.Submit(func() { ran.Add(1) }) == nil {
						accepted.Add(1)
					}
					l.Wake()
				}
			}()
		}
		time.Sleep(2 * time.Millisecond)
		l.Close()
		after := ran.Load()
		close(stop)
		for _, c := range wg {
			<-c
		}
		if ran.Load() != after {
			t.Fatal("a task ran after Close returned")
		}
		if accepted.Load() != ran.Load() {
			t.Fatalf("accepted %d tasks, ran %d", accepted.Load(), ran.Load())
		}
	}
}

func TestListenAcceptReuseport(t *testing.T) {
	sa := &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	fd1, err := Listen(unix.AF_INET, sa, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd1)
	got, _ := unix.Getsockname(fd1)
	port := got.(*unix.SockaddrInet4).Port
	fd2, err := Listen(unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: port}, 16)
	if err != nil {
		t.Fatalf("second SO_REUSEPORT listener on port %d: %v", port, err)
	}
	defer unix.Close(fd2)
	if _, _, err := Accept(fd1); err != unix.EAGAIN {
		t.Fatalf("Accept with nothing waiting: %v, want EAGAIN", err)
	}
}

func BenchmarkSubmit(b *testing.B) {
	l, err := New()
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	done := make(chan struct{}, 1)
	f := func() { done <- struct{}{} }
	b.ReportAllocs()
	for b.Loop() {
		_ = l.Submit(f)
		<-done
	}
}

// Every test above, in the Locked mode.
func TestLockedMode(t *testing.T) {
	if testMode == Locked {
		return
	}
	testMode = Locked
	defer func() { testMode = Parked }()
	for name, f := range map[string]func(*testing.T){
		"timers": TestTimersFireInOrder, "not early": TestTimerNotEarly, "rearm": TestTimerRearmsItself,
		"readiness": TestReadiness, "stale": TestStaleEventAfterCloseAndReuse,
	} {
		t.Run(name, f)
	}
}

// The raw calls: a non-blocking connect to a listener, the peer address
// Accept returns, a disconnect and a second connect on the same socket,
// and a unix socket address.
func TestRawConnectDisconnectAccept(t *testing.T) {
	lfd, err := Listen(unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}, 16)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	got, _ := unix.Getsockname(lfd)
	var sa Sockaddr
	sa.SetAddrPort(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(got.(*unix.SockaddrInet4).Port)))
	if sa.Family() != unix.AF_INET {
		t.Fatalf("family %d", sa.Family())
	}
	fd, err := Socket(unix.AF_INET)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(fd)
	for round := range 2 {
		if err := Connect(fd, &sa); err != nil && err != unix.EINPROGRESS {
			t.Fatalf("round %d: connect: %v", round, err)
		}
		nfd, peer := acceptWithin(t, lfd)
		if err := SocketError(fd); err != nil {
			// The disconnect's reset is the socket's error until the
			// next connect clears it.
			t.Fatalf("round %d: SO_ERROR once connected: %v", round, err)
		}
		local, _ := unix.Getsockname(fd)
		l4 := local.(*unix.SockaddrInet4)
		if want := netip.AddrPortFrom(netip.AddrFrom4(l4.Addr), uint16(l4.Port)); peer != want {
			t.Fatalf("round %d: Accept's peer %v, want %v", round, peer, want)
		}
		if _, err := Write(fd, []byte("x")); err != nil {
			t.Fatalf("round %d: write: %v", round, err)
		}
		if err := Disconnect(fd); err != nil {
			t.Fatalf("round %d: disconnect: %v", round, err)
		}
		// The peer sees a reset, not an end of stream.
		var b [4]byte
		for {
			n, err := Read(nfd, b[:])
			if err == unix.EAGAIN {
				time.Sleep(time.Millisecond)
				continue
			}
			if err != unix.ECONNRESET && !(err == nil && n == 1) {
				t.Fatalf("round %d: after the disconnect the peer read %d, %v; want ECONNRESET", round, n, err)
			}
			if err == unix.ECONNRESET {
				break
			}
		}
		Close(nfd)
	}

	path := t.TempDir() + "/s"
	ufd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ufd)
	if err := unix.Bind(ufd, &unix.SockaddrUnix{Name: path}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ufd, 4); err != nil {
		t.Fatal(err)
	}
	var us Sockaddr
	if !us.SetUnix(path) || us.Family() != unix.AF_UNIX {
		t.Fatal("SetUnix refused a short path")
	}
	if us.SetUnix(strings.Repeat("x", 200)) {
		t.Fatal("SetUnix took a path longer than sun_path")
	}
	us.SetUnix(path)
	cfd, err := Socket(unix.AF_UNIX)
	if err != nil {
		t.Fatal(err)
	}
	defer Close(cfd)
	if err := Connect(cfd, &us); err != nil && err != unix.EINPROGRESS {
		t.Fatalf("unix connect: %v", err)
	}
	nfd, _ := acceptWithin(t, ufd)
	Close(nfd)
}

func acceptWithin(t *testing.T, lfd int) (int, netip.AddrPort) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		nfd, peer, err := Accept(lfd)
		if err == nil {
			return nfd, peer
		}
		if err != unix.EAGAIN || time.Now().After(deadline) {
			t.Fatalf("accept: %v", err)
		}
		time.Sleep(time.Millisecond)
	}
}

// Requeue keeps an EPOLLEXCLUSIVE registration (which EPOLL_CTL_MOD
// refuses) with its handler, and a descriptor ready when it is requeued
// is reported after.
func TestRequeueKeepsRegistrationAndReadiness(t *testing.T) {
	l := newLoop(t)
	a, b := socketpair(t)
	defer unix.Close(a)
	defer unix.Close(b)
	got := make(chan string, 4)
	h := funcHandler(func(fd int, _ uint32) {
		var buf [16]byte
		if n, err := Read(fd, buf[:]); err == nil && n > 0 {
			got <- string(buf[:n])
		}
	})
	on(t, l, func() {
		if err := l.Add(a, In|unix.EPOLLEXCLUSIVE, h); err != nil {
			t.Error(err)
		}
		if err := l.Modify(a, In|unix.EPOLLEXCLUSIVE); err == nil {
			t.Error("EPOLL_CTL_MOD took an exclusive registration: Requeue is not needed")
		}
		if _, err := Write(b, []byte("ready")); err != nil {
			t.Error(err)
		}
		if err := l.Requeue(a); err != nil {
			t.Error(err)
		}
		if !l.Registered(a) {
			t.Error("not registered after Requeue")
		}
		if err := l.Requeue(b); err != unix.ENOENT {
			t.Errorf("Requeue of an unregistered descriptor: %v, want ENOENT", err)
		}
	})
	select {
	case s := <-got:
		if s != "ready" {
			t.Fatalf("read %q", s)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the readiness from before Requeue was lost")
	}
	on(t, l, func() { _ = l.Remove(a) })
}
