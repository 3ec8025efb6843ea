package cluster

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// What a peer decided is logged where it is applied, with source=cluster:
// a node joining, its drain and undrain, its unsubscribe, its removal.
func TestPeerChangesLogged(t *testing.T) {
	t.Parallel()
	a := newTestRouter(t, "a", routerOpts{})
	logs := &lockedBuf{}
	b := newTestRouter(t, "b", routerOpts{join: []string{a.c.Addr()}, log: slog.New(slog.NewTextHandler(logs, nil))})
	waitMembers(t, 2, a, b)
	// count counts the lines with msg and rest (after the logger's own
	// cluster_member attribute).
	count := func(msg, rest string) int {
		n := 0
		for _, l := range strings.Split(logs.String(), "\n") {
			if strings.Contains(l, `msg="`+msg+`"`) && strings.Contains(l, rest) {
				n++
			}
		}
		return n
	}
	waitLog := func(want string) {
		t.Helper()
		msg, rest, _ := strings.Cut(strings.TrimPrefix(want, `msg="`), `" `)
		waitFor(t, 5*time.Second, want, func() bool { return count(msg, rest) > 0 })
	}
	announceAt(t, a, "e.test", "10.0.0.1:3031", nil)
	announceAt(t, a, "e.test", "10.0.0.2:3031", nil)
	waitLog(`msg="node joined" pool=e.test node=10.0.0.1:3031 source=cluster`)
	waitLog(`msg="node joined" pool=e.test node=10.0.0.2:3031 source=cluster`)
	if _, err := a.o.Drain("e.test", "10.0.0.1:3031", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	waitLog(`msg="drain started" pool=e.test node=10.0.0.1:3031 source=cluster`)
	if _, err := a.o.Undrain("e.test", "10.0.0.1:3031"); err != nil {
		t.Fatal(err)
	}
	waitLog(`msg="node undrained" pool=e.test node=10.0.0.1:3031 source=cluster was=draining`)
	a.o.Unsubscribe([]byte("e.test"), []byte("10.0.0.1:3031"), 0)
	waitLog(`msg="node left" pool=e.test node=10.0.0.1:3031 source=cluster reason=unsubscribe`)
	a.o.RemoveNode("e.test", "10.0.0.2:3031")
	waitLog(`msg="node left" pool=e.test node=10.0.0.2:3031 source=cluster reason=deleted`)
	for _, msg := range []string{"node joined", "drain started", "node undrained"} {
		if n := count(msg, "pool=e.test node=10.0.0.1:3031"); n != 1 {
			t.Errorf("%q logged %d times for one change; want once:\n%s", msg, n, logs)
		}
	}
}
