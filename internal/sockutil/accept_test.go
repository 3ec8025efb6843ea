package sockutil

import (
	"errors"
	"net"
	"syscall"
	"testing"
	"time"
)

// flakyListener fails with the queued errors, then accepts.
type flakyListener struct {
	net.Listener
	errs []error
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if len(l.errs) > 0 {
		err := l.errs[0]
		l.errs = l.errs[1:]
		return nil, err
	}
	return l.Listener.Accept()
}

// Running out of descriptors (EMFILE) or an aborted handshake is ridden
// out with a growing pause; a closed listener ends the loop.
func TestAcceptorRidesOutTemporaryErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	aborted := &net.OpError{Op: "accept", Net: "tcp", Err: syscall.ECONNABORTED}
	var pauses []time.Duration
	a := &Acceptor{Listener: &flakyListener{ln, []error{emfile, aborted}},
		OnRetry: func(_ error, d time.Duration) { pauses = append(pauses, d) }}
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			defer c.Close()
			time.Sleep(time.Second)
		}
	}()
	c, err := a.Accept()
	if err != nil {
		t.Fatalf("Accept after EMFILE and ECONNABORTED: %v", err)
	}
	c.Close()
	if len(pauses) != 2 || pauses[0] != 5*time.Millisecond || pauses[1] != 10*time.Millisecond {
		t.Fatalf("pauses %v; want [5ms 10ms]", pauses)
	}
	ln.Close()
	if _, err := a.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v; want net.ErrClosed", err)
	}
}

// An error that does not pass is returned at once.
func TestAcceptorReturnsLastingErrors(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	bad := errors.New("listener broken")
	a := &Acceptor{Listener: &flakyListener{ln, []error{bad}}}
	if _, err := a.Accept(); err != bad {
		t.Fatalf("Accept: %v; want %v", err, bad)
	}
}
