package cluster

import (
	"errors"
	"fmt"
	"log"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/memberlist"

	"github.com/fastrouter/fastrouter/balancer"
)

// cutTransport is memberlist's NetTransport with a switch that drops
// everything sent to a set of addresses: a partition, when both sides cut
// each other.
type cutTransport struct {
	*memberlist.NetTransport
	mu  sync.Mutex
	cut map[string]bool
}

var errCut = errors.New("test: partitioned")

func (t *cutTransport) blocked(addr string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.cut[addr]
}

func (t *cutTransport) set(addrs []string, on bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, a := range addrs {
		t.cut[a] = on
	}
}

func (t *cutTransport) WriteTo(b []byte, addr string) (time.Time, error) {
	if t.blocked(addr) {
		return time.Now(), nil // lost on the wire
	}
	return t.NetTransport.WriteTo(b, addr)
}

func (t *cutTransport) WriteToAddress(b []byte, a memberlist.Address) (time.Time, error) {
	if t.blocked(a.Addr) {
		return time.Now(), nil
	}
	return t.NetTransport.WriteToAddress(b, a)
}

func (t *cutTransport) DialTimeout(addr string, d time.Duration) (net.Conn, error) {
	if t.blocked(addr) {
		return nil, errCut
	}
	return t.NetTransport.DialTimeout(addr, d)
}

func (t *cutTransport) DialAddressTimeout(a memberlist.Address, d time.Duration) (net.Conn, error) {
	if t.blocked(a.Addr) {
		return nil, errCut
	}
	return t.NetTransport.DialAddressTimeout(a, d)
}

func newCutRouter(t *testing.T, name string, join []string) (*testRouter, *cutTransport) {
	t.Helper()
	nt, err := memberlist.NewNetTransport(&memberlist.NetTransportConfig{
		BindAddrs: []string{"127.0.0.1"}, Logger: log.New(testLogWriter(t, name), "", 0)})
	if err != nil {
		t.Fatal(err)
	}
	ct := &cutTransport{NetTransport: nt, cut: map[string]bool{}}
	port := nt.GetAutoBindPort()
	r := newTestRouter(t, name, routerOpts{join: join, tune: func(mc *memberlist.Config) {
		mc.Transport = ct
		mc.BindPort, mc.AdvertisePort = port, port
	}})
	return r, ct
}

// A partition splits {a, b} from {c}: each side sees the other fail, keeps
// working, and when the partition heals, membership and state converge:
// what changed on either side while apart is known on both.
func TestPartitionHeals(t *testing.T) {
	t.Parallel()
	a, ta := newCutRouter(t, "a", nil)
	b, tb := newCutRouter(t, "b", []string{a.c.Addr()})
	c, tc := newCutRouter(t, "c", []string{a.c.Addr()})
	all := []*testRouter{a, b, c}
	waitMembers(t, 3, all...)
	announceAt(t, a, "before.test", "10.0.3.1:1", nil)
	waitState(t, 5*time.Second, "before.test", "10.0.3.1:1", "active", all...)

	ta.set([]string{c.c.Addr()}, true)
	tb.set([]string{c.c.Addr()}, true)
	tc.set([]string{a.c.Addr(), b.c.Addr()}, true)
	waitMembers(t, 2, a, b)
	waitMembers(t, 1, c)

	// Each side changes something.
	announceAt(t, a, "ab-side.test", "10.0.3.2:1", nil)
	announceAt(t, c, "c-side.test", "10.0.3.3:1", nil)
	if _, err := c.o.Drain("before.test", "10.0.3.1:1", time.Minute, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if s := a.state("c-side.test", "10.0.3.3:1"); s != "absent" {
		t.Fatalf("a sees c's node across the partition: %s", s)
	}

	ta.set([]string{c.c.Addr()}, false)
	tb.set([]string{c.c.Addr()}, false)
	tc.set([]string{a.c.Addr(), b.c.Addr()}, false)
	start := time.Now()
	waitMembers(t, 3, all...)
	waitState(t, 10*time.Second, "ab-side.test", "10.0.3.2:1", "active", all...)
	waitState(t, 10*time.Second, "c-side.test", "10.0.3.3:1", "active", all...)
	waitState(t, 10*time.Second, "before.test", "10.0.3.1:1", "draining", all...)
	t.Logf("partition healed and converged in %s", time.Since(start))
}

// A router that dies (no Leave) stops counting for drains once memberlist
// declares it dead; if the drain started there, the live member with the
// lowest name takes over the notice.
func TestDeadRouterReleasesDrains(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b", "c")
	a, b, c := rs[0], rs[1], rs[2]
	announceAt(t, a, "dead.test", "10.0.4.1:1", nil)
	announceAt(t, a, "dead.test", "10.0.4.2:1", nil)
	waitState(t, 5*time.Second, "dead.test", "10.0.4.1:1", "active", rs...)
	// c holds a request and starts the drain, then dies.
	var held *balancer.Node
	for held == nil {
		n := c.table.Pool("dead.test").Pick(time.Now().UnixNano(), nil)
		if n.Address == "10.0.4.1:1" {
			held = n
		} else {
			n.Done()
		}
	}
	if _, err := c.o.Drain("dead.test", "10.0.4.1:1", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, "dead.test", "10.0.4.1:1", "draining", a, b)
	time.Sleep(200 * time.Millisecond) // c's report (1 in flight) reaches a and b
	if evs := tickAll(a, b); len(evs) > 0 {
		t.Fatalf("drained while c has a request in flight: %v", evs)
	}
	c.c.Shutdown() // a crash: no Leave
	start := time.Now()
	waitMembers(t, 2, a, b)
	ended := map[string]balancer.DrainEvent{}
	waitFor(t, 5*time.Second, "drained at a and b", func() bool {
		for name, evs := range tickAll(a, b) {
			ended[name] = evs[0]
		}
		return len(ended) == 2
	})
	t.Logf("dead router dropped and drain released after %s", time.Since(start))
	if !a.c.ShouldNotify(ended["a"]) || b.c.ShouldNotify(ended["b"]) {
		t.Fatal("with the origin c dead, a (lowest live name) must notify, b must not")
	}
	held.Done()
}

// A router restarted under the same name and address (after a crash, or
// the new process of a binary upgrade) gets the state back and rejoins.
func TestRestartSameName(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b")
	a, b := rs[0], rs[1]
	for i := 0; i < 10; i++ {
		announceAt(t, a, "r.test", fmt.Sprintf("10.0.5.%d:1", i+1), nil)
	}
	waitFor(t, 5*time.Second, "10 nodes at b", func() bool {
		p := b.table.Pool("r.test")
		return p != nil && len(p.Nodes()) == 10
	})
	addr := b.c.Addr()
	b.c.Shutdown()
	_, port, _ := net.SplitHostPort(addr)
	b2 := newTestRouter(t, "b", routerOpts{noStart: true, join: []string{a.c.Addr()}})
	b2.c.cfg.BindAddr = "127.0.0.1:" + port
	b2.c.cfg.BindRetry = 5 * time.Second
	if err := b2.c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "10 nodes at the restarted b", func() bool {
		p := b2.table.Pool("r.test")
		return p != nil && len(p.Nodes()) == 10
	})
	waitMembers(t, 2, a, b2)
	announceAt(t, a, "r2.test", "10.0.5.99:1", nil)
	waitState(t, 10*time.Second, "r2.test", "10.0.5.99:1", "active", b2)
}

// Routers with different keys, or different labels, never form a cluster.
func TestKeyMismatchIsolates(t *testing.T) {
	t.Parallel()
	k1 := []byte("0123456789abcdef0123456789abcdef")
	k2 := []byte("fedcba9876543210")
	a := newTestRouter(t, "a", routerOpts{secret: k1})
	b := newTestRouter(t, "b", routerOpts{secret: k1, join: []string{a.c.Addr()}})
	x := newTestRouter(t, "x", routerOpts{secret: k2, join: []string{a.c.Addr()}})
	y := newTestRouter(t, "y", routerOpts{join: []string{a.c.Addr()}}) // no key at all
	waitMembers(t, 2, a, b)
	announceAt(t, a, "k.test", "10.0.6.1:1", nil)
	waitState(t, 5*time.Second, "k.test", "10.0.6.1:1", "active", b)
	time.Sleep(time.Second)
	for _, r := range []*testRouter{x, y} {
		if n := r.c.numMembers(); n != 1 {
			t.Errorf("%s (wrong key) sees %d members", r.name, n)
		}
		if s := r.state("k.test", "10.0.6.1:1"); s != "absent" {
			t.Errorf("%s (wrong key) got the node: %s", r.name, s)
		}
	}
	if n := a.c.numMembers(); n != 2 {
		t.Errorf("a sees %d members; want 2", n)
	}
}

// Static nodes belong to each router's configuration: never created
// elsewhere, but drained and undrained everywhere they exist.
func TestStaticNodesShareDrainsOnly(t *testing.T) {
	t.Parallel()
	rs := clusterOf(t, "a", "b", "c")
	a, b, c := rs[0], rs[1], rs[2]
	for _, r := range rs[:2] { // a and b configure it; c does not
		if err := r.table.AddStatic("s.test", "10.0.7.1:1", 1); err != nil {
			t.Fatal(err)
		}
		if err := r.table.AddStatic("s.test", "10.0.7.2:1", 1); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.o.Drain("s.test", "10.0.7.1:1", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, "s.test", "10.0.7.1:1", "draining", a, b)
	time.Sleep(200 * time.Millisecond)
	if s := c.state("s.test", "10.0.7.1:1"); s != "absent" {
		t.Fatalf("c, without the static node, has it: %s", s)
	}
	if _, err := b.o.Undrain("s.test", "10.0.7.1:1"); err != nil {
		t.Fatal(err)
	}
	waitState(t, 5*time.Second, "s.test", "10.0.7.1:1", "active", a, b)
	// A subscription cannot take over a static node anywhere.
	if _, err := c.o.Announce(&balancer.Announce{Key: []byte("s.test"), Address: []byte("10.0.7.2:1"), Weight: 9}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	for _, r := range rs[:2] {
		if w := r.nodeOf("s.test", "10.0.7.2:1").Weight(); w != 1 {
			t.Errorf("%s: static node weight %d after c's subscription; want 1", r.name, w)
		}
	}
}

// A node announcing only at a stays alive at b, whose own expiry sweep
// runs; silent, it expires at both from the same last-seen time.
func TestRefreshTravelsForExpiry(t *testing.T) {
	t.Parallel()
	const tol = 800 * time.Millisecond
	a := newTestRouter(t, "a", routerOpts{tolerance: tol})
	b := newTestRouter(t, "b", routerOpts{tolerance: tol, join: []string{a.c.Addr()}})
	waitMembers(t, 2, a, b)
	deadline := time.Now().Add(3 * tol)
	for time.Now().Before(deadline) {
		announceAt(t, a, "x.test", "10.0.8.1:1", nil)
		a.table.Expire(tol)
		b.table.Expire(tol)
		time.Sleep(50 * time.Millisecond)
	}
	if s := b.state("x.test", "10.0.8.1:1"); s != "active" {
		t.Fatalf("b expired a node that announces at a: %s", s)
	}
	// Silent now: after the last refresh is flushed, both hold the same
	// last-seen time.
	waitFor(t, 2*time.Second, "the same last-seen at a and b", func() bool {
		na, nb := a.nodeOf("x.test", "10.0.8.1:1"), b.nodeOf("x.test", "10.0.8.1:1")
		return na != nil && nb != nil && na.LastSeen().Equal(nb.LastSeen())
	})
	waitFor(t, 3*tol, "expired at both", func() bool {
		a.table.Expire(tol)
		b.table.Expire(tol)
		return a.state("x.test", "10.0.8.1:1") == "absent" && b.state("x.test", "10.0.8.1:1") == "absent"
	})
}
