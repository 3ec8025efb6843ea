package sockutil

import (
	"errors"
	"net"
	"time"
)

// Acceptor accepts from a listener and rides out the errors that pass: a
// timeout, or a temporary one such as EMFILE or ECONNABORTED, backs off
// (5 ms doubling up to 1 s) and tries again instead of spinning or ending
// the server. Every accept loop of the router uses one, so running out of
// file descriptors never stops a front. An Acceptor belongs to the one
// goroutine that runs the loop.
type Acceptor struct {
	Listener net.Listener
	// OnRetry, if set, is told of each error that is ridden out and the
	// pause before the next try (for a log line).
	OnRetry func(err error, backoff time.Duration)

	backoff time.Duration
}

// Accept returns the next connection, or the first error that does not
// pass: net.ErrClosed once the listener is closed.
func (a *Acceptor) Accept() (net.Conn, error) {
	for {
		c, err := a.Listener.Accept()
		if err == nil {
			a.backoff = 0
			return c, nil
		}
		if errors.Is(err, net.ErrClosed) || !passing(err) {
			return nil, err
		}
		a.backoff = min(max(2*a.backoff, 5*time.Millisecond), time.Second)
		if a.OnRetry != nil {
			a.OnRetry(err, a.backoff)
		}
		time.Sleep(a.backoff)
	}
}

func passing(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	var t interface{ Temporary() bool }
	return errors.As(err, &t) && t.Temporary()
}
