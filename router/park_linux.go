package router

import (
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

const canPark = true

// parker waits for the router's parked connections without a goroutine
// each (a goroutine's stack and descriptor were a quarter of a parked TLS
// connection's memory, docs/operations.md): their sockets are in an epoll
// instance of its own, one-shot, and one goroutine waits on that instance
// through Go's poller (an epoll descriptor is readable while it has events,
// epoll(7)). A connection whose socket becomes readable is taken off and
// resumed on a fresh goroutine (parkConn.resume); its idle deadline is a
// timer (no goroutine until it fires).
//
// A parked connection belongs to the parker while it is in m: whoever takes
// it off (readiness, its timer, the shutdown's close) owns it next, so
// exactly one of them acts. Its timer is armed and stopped under mu, with
// the membership.
type parker struct {
	mu      sync.Mutex
	m       map[uint32]*parkConn // guarded by mu: parked, by epoll token
	next    uint32               // guarded by mu: the last token given
	started bool                 // guarded by mu
	stopped bool                 // guarded by mu
	ep      *os.File             // the epoll instance, in Go's poller; nil before start
	epfd    int
	done    chan struct{}
}

// startLocked starts the parker's goroutine if it has not; false (the
// connection is to be dropped) once stopped or if epoll failed. Caller
// holds k.mu.
func (k *parker) startLocked(rt *Router) bool {
	if k.stopped {
		return false
	}
	if k.started {
		return true
	}
	epfd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
	if err == nil {
		err = syscall.SetNonblock(epfd, true)
		if err != nil {
			syscall.Close(epfd)
		}
	}
	if err != nil {
		rt.log.Error("parking idle connections: epoll", "err", err)
		return false
	}
	k.ep, k.epfd = os.NewFile(uintptr(epfd), "parker-epoll"), epfd
	raw, err := k.ep.SyscallConn()
	if err != nil {
		_ = k.ep.Close()
		rt.log.Error("parking idle connections: epoll", "err", err)
		return false
	}
	k.m = make(map[uint32]*parkConn, 64)
	k.done = make(chan struct{})
	k.started = true
	go k.run(rt, raw)
	return true
}

// run waits for the parked sockets' events until the epoll file closes
// (stop).
func (k *parker) run(rt *Router, raw syscall.RawConn) {
	defer close(k.done)
	var evs [64]syscall.EpollEvent
	var werr error
	err := raw.Read(func(fd uintptr) bool {
		for {
			n, err := syscall.EpollWait(int(fd), evs[:], 0)
			if err == syscall.EINTR {
				continue
			}
			if err != nil {
				werr = err
				return true
			}
			for _, ev := range evs[:n] {
				if p := k.take(uint32(ev.Fd), time.Time{}); p != nil {
					go p.resume()
				}
			}
			if n < len(evs) {
				return false // drained: wait for more
			}
		}
	})
	if err == nil {
		err = werr
	}
	k.mu.Lock()
	if k.stopped { // closed by stop: the end
		k.mu.Unlock()
		return
	}
	// epoll failed (it does not, short of a bug): nothing would wake the
	// parked connections, so close them (their clients reconnect), and
	// park none from now on.
	k.stopped = true
	var left []*parkConn
	for _, p := range k.m {
		left = append(left, p)
	}
	for _, p := range left {
		k.removeLocked(p)
	}
	k.mu.Unlock()
	_ = k.ep.Close()
	rt.log.Error("parking idle connections: epoll_wait", "err", err, "closed", len(left))
	for _, p := range left {
		p.l.dropParked(p)
	}
}

// park hands p, counted in its listener's parked set, to the parker until
// its socket is readable or its idle deadline (p.idleDL) passes. Called by
// p's owner, which lets go of p.
func (k *parker) park(p *parkConn) {
	k.mu.Lock()
	if !k.startLocked(p.l.rt) {
		k.mu.Unlock()
		p.l.dropParked(p)
		return
	}
	for k.next++; k.next == 0 || k.m[k.next] != nil; k.next++ {
	}
	p.token = k.next
	p.parkDL = p.idleDL
	k.m[p.token] = p
	if !p.parkDL.IsZero() {
		if p.timer == nil {
			p.timer = time.AfterFunc(time.Until(p.parkDL), p.expire)
		} else {
			p.timer.Reset(time.Until(p.parkDL))
		}
	}
	op := syscall.EPOLL_CTL_ADD
	if p.inEpoll {
		op = syscall.EPOLL_CTL_MOD // one-shot: disabled since its last event
	}
	p.inEpoll = true
	epfd, token := k.epfd, p.token
	k.mu.Unlock()
	// After the unlock: once registered, p may be taken at once.
	var cerr error
	err := p.raw.Control(func(fd uintptr) {
		ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(token)}
		cerr = syscall.EpollCtl(epfd, op, int(fd), &ev)
		if cerr == syscall.ENOENT && op == syscall.EPOLL_CTL_MOD {
			cerr = syscall.EpollCtl(epfd, syscall.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	if err == nil && cerr != nil {
		err = fmt.Errorf("epoll_ctl: %w", cerr)
	}
	if err != nil { // closed meanwhile (shutdown), or epoll refused
		if q := k.take(token, time.Time{}); q != nil {
			p.l.rt.log.Debug("http front: parked connection dropped", "remote", p.RemoteAddr(), "err", err)
			p.l.dropParked(p)
		}
	}
}

// take takes the connection of token off the parker, nil when none (taken
// already). With a non-zero now (its timer), only when its deadline has
// passed: a timer that fired for an earlier park of a connection parked
// again is stale.
func (k *parker) take(token uint32, now time.Time) *parkConn {
	k.mu.Lock()
	defer k.mu.Unlock()
	p := k.m[token]
	if p == nil {
		return nil
	}
	if !now.IsZero() && now.Before(p.parkDL) {
		p.timer.Reset(p.parkDL.Sub(now))
		return nil
	}
	k.removeLocked(p)
	return p
}

// takeConn takes p off the parker; false when it is not on it.
func (k *parker) takeConn(p *parkConn) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	if p.token == 0 || k.m[p.token] != p {
		return false
	}
	k.removeLocked(p)
	return true
}

func (k *parker) removeLocked(p *parkConn) {
	delete(k.m, p.token)
	if p.timer != nil {
		p.timer.Stop()
	}
}

// stop ends the parker's goroutine and parks nothing from now on. Called
// by Router.Shutdown once its fronts have let go of their connections.
func (k *parker) stop() {
	k.mu.Lock()
	started := k.started && !k.stopped
	k.stopped = true
	k.mu.Unlock()
	if started {
		_ = k.ep.Close() // wakes run
		<-k.done
	}
}

// expire is p's timer: its idle deadline passed while parked.
func (p *parkConn) expire() {
	k := &p.l.rt.parker
	k.mu.Lock()
	token := p.token
	k.mu.Unlock()
	if k.take(token, time.Now()) == p {
		p.l.dropParked(p)
	}
}

// resume runs on a fresh goroutine once p's socket is readable: a TLS
// connection reads the first byte of plaintext (awaitTLS), and may park
// again; then p is served again, or closed on error.
func (p *parkConn) resume() {
	if err := p.Conn.SetReadDeadline(p.idleDL); err != nil { // fasthttp's own, in place of ours
		p.l.dropParked(p)
		return
	}
	if p.tc != nil {
		again, err := p.awaitTLS()
		if again {
			p.l.rt.parker.park(p)
			return
		}
		if err != nil {
			p.l.dropParked(p)
			return
		}
	}
	// Served outside the parked set, as from the accept loop (serve.go).
	p.l.parked.remove((*parkedKey)(p))
	p.l.serveConn(p)
}

// wait hands p to the parker (park.go).
func (p *parkConn) wait() { p.l.rt.parker.park(p) }

// cancelPark closes p at shutdown: taken off the parker, closed and
// accounted; if it is not on it (being parked or resumed), cut under its
// owner, which then accounts.
func (p *parkConn) cancelPark() {
	if p.l.rt.parker.takeConn(p) {
		p.l.dropParked(p)
		return
	}
	p.closeNow()
}
