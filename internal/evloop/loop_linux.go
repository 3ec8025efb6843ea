//go:build linux

package evloop

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

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
	h   Handler
	gen uint32
}

// Loop is one event loop. See the package comment for its concurrency rules.
type Loop struct {
	epfd   int
	wakefd int
	regs   []reg  // by descriptor number; h nil: not registered
	gen    uint32 // last registration generation handed out
	events []unix.EpollEvent
	timers timerHeap
	now    int64 // the clock read after the last epoll_wait, unix ns

	mu      sync.Mutex // guards tasks and stopped
	tasks   []func()
	spare   []func() // the task slice being run, reused: no allocation per wake-up
	stopped bool
	woken   atomic.Bool // a wake-up is pending on wakefd: Wake writes once
	done    chan struct{}
}

// New makes a loop and starts its goroutine.
func New() (*Loop, error) {
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
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		return err
	}
	l.regs[fd] = reg{h: h, gen: l.gen}
	return nil
}

// Modify changes the events fd is registered for. Loop goroutine only.
func (l *Loop) Modify(fd int, events uint32) error {
	if fd < 0 || fd >= len(l.regs) || l.regs[fd].h == nil {
		return unix.ENOENT
	}
	ev := unix.EpollEvent{Events: events, Fd: int32(fd), Pad: int32(l.regs[fd].gen)}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, fd, &ev)
}

// Remove unregisters fd; events of it still queued are dropped. The caller
// closes fd after. Loop goroutine only.
func (l *Loop) Remove(fd int) error {
	if fd < 0 || fd >= len(l.regs) || l.regs[fd].h == nil {
		return unix.ENOENT
	}
	l.regs[fd] = reg{}
	return unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, fd, nil)
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
	runtime.LockOSThread()
	defer func() {
		unix.Close(l.wakefd)
		unix.Close(l.epfd)
		close(l.done)
	}()
	for {
		// epoll_wait through unix.EpollWait is Syscall6, not RawSyscall:
		// the goroutine is in a system call while it waits, so the GC can
		// stop the world without waiting for an event.
		n, err := unix.EpollWait(l.epfd, l.events, l.timeout())
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

// dispatch hands one event to its registration, unless it is stale.
func (l *Loop) dispatch(ev *unix.EpollEvent) {
	fd := int(ev.Fd)
	if fd == l.wakefd {
		var b [8]byte
		_, _ = unix.Read(l.wakefd, b[:])
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
