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
// one t: both set, t not earlier, and t - d below 1/64 of the time until t
// (so d has not passed either).
func lazyKeep(d, t time.Time) bool {
	return !t.IsZero() && !d.IsZero() && !t.Before(d) && t.Sub(d) < time.Until(t)>>lazyDeadlineShift
}
