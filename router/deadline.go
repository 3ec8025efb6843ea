package router

import "time"

// lazyDeadlineShift sets how far a new deadline may lie after the one
// already armed and still be left to it: less than 1/64 of the time it is
// away. A request renews its node socket's read deadline (sendAwait, each
// body read) and its client's write deadline (h1.go, each body read) within
// microseconds, each a timer update in the runtime's poller under its
// locks; nginx keeps a timer whose new expiry is within
// NGX_TIMER_LAZY_DELAY of the old for the same reason
// (src/event/ngx_event_timer.h, ngx_event_add_timer). An inactivity
// timeout may so end up to 1/64 early, never late.
const lazyDeadlineShift = 6

// lazyKeep reports whether a deadline d already armed may stand for a new
// one t, now being the time the caller computed t from (so lazyKeep need
// not read the clock again): both set, t not earlier, and t - d below 1/64
// of the time from now to t (so d has not passed either).
func lazyKeep(d, t, now time.Time) bool {
	return !t.IsZero() && !d.IsZero() && !t.Before(d) && t.Sub(d) < t.Sub(now)>>lazyDeadlineShift
}

// A request reads the clock once per phase (its start, its response head,
// its end) and hands that reading down; the connections whose deadlines
// renew lazily take it with the new deadline instead of reading the clock
// for lazyKeep. readRenewer: a uwsgi node's socket (dial_linux.go);
// writeRenewer: an HTTP/1.1 client's connection (park.go).
type (
	readRenewer  interface{ renewReadDeadline(t, now time.Time) error }
	writeRenewer interface{ renewWriteDeadline(t, now time.Time) error }
)

// renewRead is c.SetReadDeadline(t), t computed from now.
func renewRead(c deadliner, t, now time.Time) error {
	if r, ok := c.(readRenewer); ok {
		return r.renewReadDeadline(t, now)
	}
	return c.SetReadDeadline(t)
}

// renewWrite is c.SetWriteDeadline(t), t computed from now.
func renewWrite(c deadliner, t, now time.Time) error {
	if w, ok := c.(writeRenewer); ok {
		return w.renewWriteDeadline(t, now)
	}
	return c.SetWriteDeadline(t)
}
