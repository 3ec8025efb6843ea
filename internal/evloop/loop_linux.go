//go:build linux

package evloop

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Event bits a handler registers for and receives (epoll(7)).
const (
	In    = unix.EPOLLIN
	Out   = unix.EPOLLOUT
	RDHup = unix.EPOLLRDHUP
	Err   = unix.EPOLLERR
	Hup   = unix.EPOLLHUP
)

// ErrClosed is returned by Add and Submit once the loop has stopped.
var ErrClosed = errors.New("evloop: loop closed")

// Handler takes the readiness events of one descriptor. It runs on the
// loop's goroutine and must not block.
type Handler interface {
	Event(fd int, events uint32)
}

// reg is one registered descriptor. gen tells an event of this registration
// from a stale one of an earlier registration of the same number, queued in
// the same epoll_wait batch before a handler closed the descriptor and a
// later one (accept, connect) reused its number.
type reg struct {
	h      Handler
	gen    uint32
	events uint32 // as registered (Requeue)
}

// Loop is one event loop. See the package comment for its concurrency rules.
type Loop struct {
	epfd   int
	wakefd int
	regs   []reg  // by descriptor number; h nil: not registered
	gen    uint32 // last registration generation handed out
	events []unix.EpollEvent
	timers timerHeap
	now    int64  // the clock read after the last epoll_wait, unix ns
	batch  uint64 // epoll_wait calls so far (Batch)

	// Parked mode: epf holds epfd in the runtime's poller.
	epf    *os.File
	rc     syscall.RawConn
	ask    func(uintptr) bool
	got    int   // ask's result: events in l.events
	gotErr error // … or epoll_wait's error

	mu      sync.Mutex // guards tasks and stopped
	tasks   []func()
	spare   []func() // the task slice being run, reused: no allocation per wake-up
	stopped bool
	woken   atomic.Bool // a wake-up is pending on wakefd: Wake writes once
	done    chan struct{}
}

// New makes a loop and starts its goroutine: NewLoop with Parked.
func New() (*Loop, error) { return NewLoop(Parked) }

// Mode is how a loop waits for events.
type Mode uint8

const (
	// Locked: the loop's goroutine is locked to its OS thread
	// (runtime.LockOSThread) and blocks in epoll_wait. Each wait longer
	// than the scheduler's sysmon tick hands the goroutine's P to another
	// thread, and the wake-up takes it back: about one context switch per
	// wake-up more than Parked under light or shared load.
	Locked Mode = iota
	// Parked: the loop asks epoll_wait without blocking and, when nothing
	// is ready, parks its goroutine on the runtime's poller until its
	// epoll descriptor is readable (or the next timer is due): a goroutine
	// switch rather than a thread's sleep and wake-up, and the runtime's
	// one netpoll thread waits for every loop. But the poller runs only
	// when a P is out of work (or from sysmon, every 10 ms at most): with
	// several loops busy, the events of one that parked wait until another
	// parks, so several busy loops are better Locked.
	Parked
)

// NewLoop makes a loop that waits as mode says and starts its goroutine.
func NewLoop(mode Mode) (*Loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(wfd)}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(wfd)
		unix.Close(epfd)
		return nil, err
	}
	l := &Loop{epfd: epfd, wakefd: wfd, events: make([]unix.EpollEvent, 256), done: make(chan struct{})}
	l.now = time.Now().UnixNano()
	if mode == Parked {
		// The runtime's poller takes only a non-blocking descriptor; an
		// epoll descriptor is readable while events are ready.
		if err := unix.SetNonblock(epfd, true); err != nil {
			unix.Close(wfd)
			unix.Close(epfd)
			return nil, err
		}
		l.epf = os.NewFile(uintptr(epfd), "epoll")
		rc, err := l.epf.SyscallConn()
		if err != nil {
			l.epf.Close()
			unix.Close(wfd)
			return nil, err
		}
		l.rc = rc
		l.ask = l.poll // one func value: no allocation per wait
	}
	go l.run()
	return l, nil
}

// Add registers fd for events with h. Loop goroutine only.
func (l *Loop) Add(fd int, events uint32, h Handler) error {
	if fd < 0 || h == nil {
		return unix.EINVAL
	}
	for fd >= len(l.regs) {
		l.regs = append(l.regs, make([]reg, len(l.regs)+64)...)
	}
	l.gen++
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(l.gen)}
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	l.regs[fd] = reg{h: h, gen: l.gen, events: events}
	return nil
}

// Modify changes the events fd is registered for. Loop goroutine only.
func (l *Loop) Modify(fd int, events uint32) error {
	if fd < 0 || fd >= len(l.regs) || l.regs[fd].h == nil {
		return unix.ENOENT
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(l.regs[fd].gen)}
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev); err != nil {
		return err
	}
	l.regs[fd].events = events
	return nil
}

// Requeue registers fd again, as it is (events, handler, the events
// already queued for it): for a descriptor several loops watch with
// EPOLLEXCLUSIVE. Linux wakes the first exclusive waiter on the file's
// wait queue that wants the event, so the loop that registered first
// takes every wake-up, and with it (a listener) nearly every connection;
// taking the registration out and adding it again puts this loop last in
// that queue and lets the others have the next ones. (nginx does the same
// every 16 accepts: ngx_reorder_accept_events.) epoll_ctl(EPOLL_CTL_MOD)
// cannot do it: it refuses EPOLLEXCLUSIVE. A level-triggered descriptor
// still ready when it is added back is ready again at once: nothing is
// lost in between. Loop goroutine only.
func (l *Loop) Requeue(fd int) error {
	if fd < 0 || fd >= len(l.regs) || l.regs[fd].h == nil {
		return unix.ENOENT
	}
	r := l.regs[fd]
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil {
		return err
	}
	ev := unix.EpollEvent{Events: r.events, Fd: int32(fd), Pad: int32(r.gen)}
	if err := epollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.regs[fd] = reg{}
		return err
	}
	return nil
}

// Remove unregisters fd; events of it still queued are dropped. The caller
// closes fd after. Loop goroutine only.
func (l *Loop) Remove(fd int) error {
	if fd < 0 || fd >= len(l.regs) || l.regs[fd].h == nil {
		return unix.ENOENT
	}
	l.regs[fd] = reg{}
	return epollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
}

// Forget unregisters fd without a system call, for a caller that closes
// it right after: closing the last descriptor of a file takes it out of
// the epoll set. A descriptor duplicated (dup, net.FileConn) stays in the
// set: Remove it instead. Loop goroutine only.
func (l *Loop) Forget(fd int) {
	if fd >= 0 && fd < len(l.regs) {
		l.regs[fd] = reg{}
	}
}

// Registered reports whether fd is registered. Loop goroutine only.
func (l *Loop) Registered(fd int) bool {
	return fd >= 0 && fd < len(l.regs) && l.regs[fd].h != nil
}

// Now is the loop's clock: read once after each epoll_wait, so every
// handler of a batch sees the same time. Loop goroutine only.
func (l *Loop) Now() time.Time { return time.Unix(0, l.now) }

// Batch numbers the loop's rounds: it changes with every epoll_wait, so
// a handler that reuses a registered descriptor for something new can tell
// the events of its old use, queued in the current batch, from the new
// one's, which come in a later batch. Loop goroutine only.
func (l *Loop) Batch() uint64 { return l.batch }

// NowNano is Now in unix nanoseconds.
func (l *Loop) NowNano() int64 { return l.now }

// Submit runs f on the loop's goroutine soon; any goroutine may call it.
// ErrClosed once the loop has stopped (f will not run).
func (l *Loop) Submit(f func()) error {
	l.mu.Lock()
	if l.stopped {
		l.mu.Unlock()
		return ErrClosed
	}
	l.tasks = append(l.tasks, f)
	l.mu.Unlock()
	l.Wake()
	return nil
}

// Wake interrupts the loop's epoll_wait; any goroutine may call it.
func (l *Loop) Wake() {
	if l.woken.Swap(true) {
		return
	}
	var one = [8]byte{1}
	_, _ = unix.Write(l.wakefd, one[:])
}

// Close stops the loop and waits for its goroutine: the tasks submitted
// before it still run, then no handler or timer runs again. Descriptors
// still registered stay open (their registrants own them). It must not be
// called on the loop's goroutine. Safe to call more than once.
func (l *Loop) Close() {
	l.mu.Lock()
	already := l.stopped
	l.stopped = true
	l.mu.Unlock()
	if !already {
		l.woken.Store(false)
		l.Wake()
	}
	<-l.done
}

// Done is closed once the loop's goroutine has ended.
func (l *Loop) Done() <-chan struct{} { return l.done }

// run is the loop's goroutine: wait, dispatch, timers, tasks, until Close.
func (l *Loop) run() {
	if l.epf == nil {
		runtime.LockOSThread()
	}
	defer func() {
		unix.Close(l.wakefd)
		if l.epf != nil {
			l.epf.Close()
		} else {
			unix.Close(l.epfd)
		}
		close(l.done)
	}()
	for {
		n, err := l.wait()
		l.batch++
		l.now = time.Now().UnixNano()
		if err != nil && err != unix.EINTR {
			panic("evloop: epoll_wait: " + err.Error()) // EBADF/EFAULT/EINVAL: a bug here
		}
		for i := range n {
			l.dispatch(&l.events[i])
		}
		l.timers.expire(l.now)
		if !l.runTasks() {
			return
		}
	}
}

// wait returns the next batch of events. Locked: a raw epoll_wait that
// does not block (ready) first, which a busy loop's batch nearly always
// comes from, invisible to the scheduler's sysmon (io_linux.go); when
// nothing is ready, epoll_wait through unix.EpollWait, which is Syscall6,
// not RawSyscall: the goroutine is in a system call while it waits, so the
// GC can stop the world without waiting for an event. Parked: see Parked.
func (l *Loop) wait() (int, error) {
	if l.epf == nil {
		if n, err := l.ready(); n > 0 || err != nil {
			return n, err
		}
		return unix.EpollWait(l.epfd, l.events, l.timeout())
	}
	ms := l.timeout()
	if ms == 0 {
		return l.ready()
	}
	dl := time.Time{}
	if ms > 0 {
		dl = time.Now().Add(time.Duration(ms) * time.Millisecond)
	}
	_ = l.epf.SetReadDeadline(dl)
	l.got, l.gotErr = 0, nil
	if err := l.rc.Read(l.ask); err != nil {
		return 0, nil // the deadline: the timers are due
	}
	return l.got, l.gotErr
}

// poll is Parked's RawConn.Read callback: done when events are ready (or
// epoll_wait failed), else the runtime parks the goroutine until epfd is
// readable. Asking epoll itself on every call makes the wait safe against
// the readiness the poller resets before its first call.
func (l *Loop) poll(uintptr) bool {
	n, err := l.ready()
	if err == unix.EINTR {
		return false
	}
	l.got, l.gotErr = n, err
	return n > 0 || err != nil
}

// ready is epoll_wait without blocking, a raw call (io_linux.go).
func (l *Loop) ready() (int, error) {
	n, _, e := unix.RawSyscall6(unix.SYS_EPOLL_PWAIT, uintptr(l.epfd), uintptr(unsafe.Pointer(&l.events[0])),
		uintptr(len(l.events)), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return int(n), nil
}

// epollCtl is epoll_ctl, a raw call (io_linux.go).
func epollCtl(epfd, op, fd int, ev *unix.EpollEvent) error {
	_, _, e := unix.RawSyscall6(unix.SYS_EPOLL_CTL, uintptr(epfd), uintptr(op), uintptr(fd),
		uintptr(unsafe.Pointer(ev)), 0, 0)
	return errno(e)
}

// dispatch hands one event to its registration, unless it is stale.
func (l *Loop) dispatch(ev *unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd == l.wakefd {
		var b [8]byte
		_, _ = Read(l.wakefd, b[:])
		l.woken.Store(false)
		return
	}
	if fd >= len(l.regs) {
		return
	}
	r := l.regs[fd]
	if r.h == nil || r.gen != uint32(ev.Pad) {
		return // removed (and maybe reused) earlier in this batch
	}
	r.h.Event(fd, ev.Events)
}

// runTasks runs the submitted functions; false once the loop is to stop.
func (l *Loop) runTasks() bool {
	l.mu.Lock()
	tasks, stopped := l.tasks, l.stopped
	l.tasks = l.spare[:0]
	l.mu.Unlock()
	for i, f := range tasks {
		f()
		tasks[i] = nil
	}
	l.spare = tasks[:0]
	// Once stopped is seen no Submit succeeds: nothing is left behind.
	return !stopped
}

// timeout is epoll_wait's: until the next timer, -1 when there is none,
// rounded up to the millisecond so a timer never fires early.
func (l *Loop) timeout() int {
	at, ok := l.timers.next()
	if !ok {
		return -1
	}
	d := at - time.Now().UnixNano()
	if d <= 0 {
		return 0
	}
	ms := (d + int64(time.Millisecond) - 1) / int64(time.Millisecond)
	if ms > 1<<30 {
		ms = 1 << 30
	}
	return int(ms)
}
