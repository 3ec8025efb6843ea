//go:build linux

package evloop

import "time"

// Timer is a deadline on a loop: at its time, its function runs on the
// loop's goroutine (after that batch's events). It is meant to be embedded
// in its owner (a connection) so that arming one allocates nothing. The
// zero Timer is stopped. Loop goroutine only.
type Timer struct {
	when int64 // unix ns
	idx  int   // position in the heap + 1; 0: not armed
	f    func()
}

// Armed reports whether t is waiting to fire.
func (t *Timer) Armed() bool { return t.idx > 0 }

// Reset arms t to run f at at, replacing what it was armed for.
func (l *Loop) Reset(t *Timer, at time.Time, f func()) {
	t.f = f
	t.when = at.UnixNano()
	if t.idx > 0 {
		l.timers.fix(t.idx - 1)
		return
	}
	l.timers.push(t)
}

// Stop disarms t; it reports whether t was armed.
func (l *Loop) Stop(t *Timer) bool {
	if t.idx == 0 {
		return false
	}
	l.timers.remove(t.idx - 1)
	return true
}

// timerHeap is a binary min-heap of armed timers by when.
type timerHeap []*Timer

func (h timerHeap) next() (int64, bool) {
	if len(h) == 0 {
		return 0, false
	}
	return h[0].when, true
}

// expire runs every timer due at now, earliest first. A timer's function may
// arm or stop timers, itself included.
func (h *timerHeap) expire(now int64) {
	for len(*h) > 0 && (*h)[0].when <= now {
		t := (*h)[0]
		h.remove(0)
		t.f()
	}
}

func (h *timerHeap) push(t *Timer) {
	*h = append(*h, t)
	i := len(*h) - 1
	t.idx = i + 1
	h.up(i)
}

func (h *timerHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	s[i].idx = 0
	if i != last {
		s[i] = s[last]
		s[i].idx = i + 1
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		h.fix(i)
	}
}

func (h timerHeap) fix(i int) {
	if !h.up(i) {
		h.down(i)
	}
}

func (h timerHeap) up(i int) bool {
	moved := false
	for i > 0 {
		p := (i - 1) / 2
		if h[p].when <= h[i].when {
			break
		}
		h.swap(i, p)
		i = p
		moved = true
	}
	return moved
}

func (h timerHeap) down(i int) {
	for {
		c := 2*i + 1
		if c >= len(h) {
			return
		}
		if r := c + 1; r < len(h) && h[r].when < h[c].when {
			c = r
		}
		if h[i].when <= h[c].when {
			return
		}
		h.swap(i, c)
		i = c
	}
}

func (h timerHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i + 1
	h[j].idx = j + 1
}
