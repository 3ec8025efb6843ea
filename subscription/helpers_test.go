package subscription

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

var _ Table = (*balancer.Table)(nil)

// capturedHex is the datagram a uWSGI 2.0 node sent for
// --subscribe-to 127.0.0.1:4040:example.com with socket 127.0.0.1:3031
// (built by uWSGI's core/subscription.c uwsgi_subscription_ub).
const capturedHex = "e0 6500 00 | 0300 6b6579 0b00 6578616d706c652e636f6d | 0700 61646472657373 0e00 3132372e302e302e313a33303331" +
	" | 0900 6d6f64696669657231 0100 30 | 0900 6d6f64696669657232 0100 30 | 0500 636f726573 0100 31" +
	" | 0400 6c6f6164 0100 30 | 0600 776569676874 0100 30"

// captured returns a fresh copy of the captured subscribe datagram.
func captured(tb testing.TB) []byte {
	tb.Helper()
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "").Replace(capturedHex))
	if err != nil {
		tb.Fatal(err)
	}
	if len(b) != 4+0x65 {
		tb.Fatalf("captured packet is %d bytes; want %d", len(b), 4+0x65)
	}
	return b
}

// capturedUnsub is the captured unsubscribe: identical but for byte 3.
func capturedUnsub(tb testing.TB) []byte {
	b := captured(tb)
	b[3] = 1
	return b
}

func encode(s uwsgi.Subscription) []byte { return uwsgi.AppendSubscription(nil, &s) }

// fakeClock is a settable clock for the balancer.
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }

func newTable(tb testing.TB) (*balancer.Table, *fakeClock) {
	tb.Helper()
	clk := newFakeClock()
	tbl, err := balancer.New(balancer.Config{Now: clk.Now})
	if err != nil {
		tb.Fatal(err)
	}
	return tbl, clk
}

// newServer returns a server that is not started: tests drive
// s.applying.apply or s.handle directly, from the test goroutine only.
func newServer(tb testing.TB, cfg Config, tbl Table) *Server {
	tb.Helper()
	s, err := New(cfg, tbl)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

// startServer starts a server and closes it at cleanup.
func startServer(tb testing.TB, cfg Config, tbl Table) *Server {
	tb.Helper()
	s := newServer(tb, cfg, tbl)
	if err := s.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s
}

func count(s *Server, r result) int { return int(testutil.ToFloat64(s.m.packets[r])) }

// eventually polls cond every 5ms until it holds or 5s have passed.
func eventually(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitCount waits until the counter for r reaches want.
func waitCount(tb testing.TB, s *Server, r result, want int) {
	tb.Helper()
	eventually(tb, r.String()+" count", func() bool { return count(s, r) >= want })
	if got := count(s, r); got != want {
		tb.Fatalf("%s count = %d; want %d", r, got, want)
	}
}

// nodes returns the addresses in pool key, nil when the pool does not exist.
func nodes(tbl *balancer.Table, key string) []string {
	p := tbl.Pool(key)
	if p == nil {
		return nil
	}
	var out []string
	for _, n := range p.Nodes() {
		out = append(out, n.Address)
	}
	return out
}

func udpSender(tb testing.TB, addr string) net.Conn {
	tb.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func unixSender(tb testing.TB, path string) net.Conn {
	tb.Helper()
	c, err := net.Dial("unixgram", path)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { c.Close() })
	return c
}

func send(tb testing.TB, c net.Conn, datagram []byte) {
	tb.Helper()
	if _, err := c.Write(datagram); err != nil {
		tb.Fatal(err)
	}
}

// localSrc is the sender address used when tests call apply directly.
var localSrc = netip.MustParseAddrPort("127.0.0.1:40000")
