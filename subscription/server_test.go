package subscription

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

func TestCapturedPacketsOverUDP(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}}, tbl)
	c := udpSender(t, s.Addrs()[0])

	send(t, c, captured(t))
	waitCount(t, s, resSubscribe, 1)
	if got := nodes(tbl, "example.com"); !slices.Equal(got, []string{"127.0.0.1:3031"}) {
		t.Fatalf("after subscribe: nodes = %q; want [127.0.0.1:3031]", got)
	}
	n := tbl.Pool("example.com").Node("127.0.0.1:3031")
	if w := n.Weight(); w != 1 {
		t.Errorf("weight = %d; want 1 (0 on the wire)", w)
	}

	send(t, c, captured(t))
	waitCount(t, s, resRefresh, 1)
	if got := nodes(tbl, "example.com"); len(got) != 1 {
		t.Fatalf("after refresh: nodes = %q; want one", got)
	}

	send(t, c, capturedUnsub(t))
	waitCount(t, s, resUnsubscribe, 1)
	if got := nodes(tbl, "example.com"); len(got) != 0 {
		t.Fatalf("after unsubscribe: nodes = %q; want none (the idle node is removed at once)", got)
	}
	if got := count(s, resInvalid) + count(s, resDropped); got != 0 {
		t.Fatalf("invalid+dropped = %d; want 0", got)
	}
}

func TestEncodedPacketsOverUnixgram(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	path := filepath.Join(t.TempDir(), "sub.sock")
	s := startServer(t, Config{Addrs: []string{path}}, tbl)
	if got := s.Addrs(); !slices.Equal(got, []string{path}) {
		t.Fatalf("Addrs() = %q; want [%s]", got, path)
	}
	c := unixSender(t, path)

	sub := uwsgi.Subscription{Key: []byte("app.test"), Address: []byte("/run/app.sock"), Modifier1: 5, Weight: 3, Cores: 4}
	send(t, c, encode(sub))
	waitCount(t, s, resSubscribe, 1)
	n := tbl.Pool("app.test").Node("/run/app.sock")
	if n == nil {
		t.Fatalf("nodes = %q; want /run/app.sock", nodes(tbl, "app.test"))
	}
	if n.Weight() != 3 || n.Modifier1 != 5 || n.Endpoint.Network != balancer.NetUnix {
		t.Fatalf("node = %+v; want weight 3, modifier1 5, unix", n.Info())
	}

	// ":port" means the sender's IP, and a unix sender has none.
	send(t, c, encode(uwsgi.Subscription{Key: []byte("app.test"), Address: []byte(":3031")}))
	waitCount(t, s, resInvalid, 1)

	sub.Unsubscribe = true
	send(t, c, encode(sub))
	waitCount(t, s, resUnsubscribe, 1)
	if got := nodes(tbl, "app.test"); len(got) != 0 {
		t.Fatalf("after unsubscribe: nodes = %q; want none", got)
	}
}

func TestAbstractUnixSocket(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" {
		t.Skip("abstract unix sockets are Linux-only")
	}
	tbl, _ := newTable(t)
	name := "@fastrouter-subscription-test-" + t.Name() + "-" + time.Now().Format("150405.000000000")
	s := startServer(t, Config{Addrs: []string{name}}, tbl)
	send(t, unixSender(t, name), captured(t))
	waitCount(t, s, resSubscribe, 1)
}

func TestPortAddressResolvesToSourceIP(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}}, tbl)
	c := udpSender(t, s.Addrs()[0])
	sub := uwsgi.Subscription{Key: []byte("port.test"), Address: []byte(":3204")}

	send(t, c, encode(sub))
	waitCount(t, s, resSubscribe, 1)
	if got := nodes(tbl, "port.test"); !slices.Equal(got, []string{"127.0.0.1:3204"}) {
		t.Fatalf("nodes = %q; want [127.0.0.1:3204]", got)
	}
	send(t, c, encode(sub))
	waitCount(t, s, resRefresh, 1)

	sub.Unsubscribe = true
	send(t, c, encode(sub))
	waitCount(t, s, resUnsubscribe, 1)
	if got := nodes(tbl, "port.test"); got != nil {
		t.Fatalf("after unsubscribe from the same host: nodes = %q", got)
	}
}

func TestPortAddressOverIPv6(t *testing.T) {
	t.Parallel()
	ln, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	ln.Close()
	tbl, _ := newTable(t)
	s := startServer(t, Config{Addrs: []string{"[::1]:0"}}, tbl)
	send(t, udpSender(t, s.Addrs()[0]), encode(uwsgi.Subscription{Key: []byte("v6.test"), Address: []byte(":3031")}))
	waitCount(t, s, resSubscribe, 1)
	if got := nodes(tbl, "v6.test"); !slices.Equal(got, []string{"[::1]:3031"}) {
		t.Fatalf("nodes = %q; want [[::1]:3031]", got)
	}
}

func TestLargestDatagrams(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	path := filepath.Join(t.TempDir(), "sub.sock")
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0", path}}, tbl)

	// A valid announce padded with an unknown key to 60000 bytes: accepted
	// whole (uWSGI would truncate it at 4096 bytes).
	big := encode(uwsgi.Subscription{Key: []byte("big.test"), Address: []byte("127.0.0.1:3031")})
	big = uwsgi.AppendVar(big, []byte("padding"), make([]byte, 60000-len(big)-4-len("padding")))
	send(t, udpSender(t, s.Addrs()[0]), big)
	waitCount(t, s, resSubscribe, 1)

	// A unix datagram over 64 KiB is refused rather than parsed truncated.
	u := unixSender(t, path)
	if _, err := u.Write(make([]byte, MaxDatagram+100)); err != nil {
		t.Skipf("cannot send a %d-byte unix datagram here: %v", MaxDatagram+100, err)
	}
	waitCount(t, s, resInvalid, 1)
}

func TestGarbageOverUDP(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}}, tbl)
	c := udpSender(t, s.Addrs()[0])
	send(t, c, captured(t))
	waitCount(t, s, resSubscribe, 1)

	rng := rand.New(rand.NewPCG(7, 11))
	const sent = 500
	for i := range sent {
		p := make([]byte, rng.IntN(400))
		for j := range p {
			p[j] = byte(rng.Uint32())
		}
		if i%2 == 0 && len(p) >= 4 {
			copy(p, []byte{224, byte(len(p) - 4), byte((len(p) - 4) >> 8), 0})
		}
		send(t, c, p)
		if i%50 == 0 {
			time.Sleep(time.Millisecond) // pace the sender: loopback UDP drops too
		}
	}
	eventually(t, "every garbage datagram counted", func() bool {
		return count(s, resInvalid)+count(s, resDropped) == sent
	})
	// The real node survived and still refreshes.
	send(t, c, captured(t))
	waitCount(t, s, resRefresh, 1)
	if got := nodes(tbl, "example.com"); len(got) != 1 {
		t.Fatalf("nodes = %q; want the one real node", got)
	}
}

// blockingTable blocks every Announce until release is closed.
type blockingTable struct {
	calls   atomic.Int64
	release chan struct{}
}

func (b *blockingTable) Announce(*balancer.Announce) (balancer.Result, error) {
	b.calls.Add(1)
	<-b.release
	return balancer.CreatedNode, nil
}
func (b *blockingTable) Unsubscribe([]byte, []byte, time.Duration) bool { return false }
func (b *blockingTable) Expire(time.Duration) int                       { return 0 }

func TestQueueFullDropsAndCounts(t *testing.T) {
	t.Parallel()
	bt := &blockingTable{release: make(chan struct{})}
	const depth, extra = 4, 6
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, QueueDepth: depth}, bt)
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			close(bt.release)
		}
	}
	t.Cleanup(release) // runs before Close: the applier is stuck in Announce
	c := udpSender(t, s.Addrs()[0])

	send(t, c, captured(t))
	eventually(t, "applier blocked in Announce", func() bool { return bt.calls.Load() == 1 })
	for range depth + extra {
		send(t, c, captured(t))
	}
	waitCount(t, s, resDropped, extra)
	if n := len(s.queue); n != depth {
		t.Fatalf("queue holds %d; want %d", n, depth)
	}

	release()
	waitCount(t, s, resSubscribe, 1+depth)
	if got := bt.calls.Load(); got != 1+depth {
		t.Fatalf("Announce calls = %d; want %d", got, 1+depth)
	}
}

func TestQueueByteBudget(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := newServer(t, Config{QueueDepth: 100, QueueBytes: MaxDatagram}, tbl)
	big := make([]byte, 40<<10)
	s.enqueue(big, localSrc, nil)
	s.enqueue(big, localSrc, nil) // 80 KiB > 64 KiB budget
	s.enqueue(captured(t), localSrc, nil)
	if got := count(s, resDropped); got != 1 {
		t.Fatalf("dropped = %d; want 1", got)
	}
	if len(s.queue) != 2 {
		t.Fatalf("queue holds %d; want 2", len(s.queue))
	}
	for len(s.queue) > 0 {
		p := <-s.queue
		s.release(p.buf)
	}
	if q := s.queued.Load(); q != 0 {
		t.Fatalf("queued bytes after draining = %d; want 0", q)
	}
}

func TestExpiryTimerRemovesSilentNodes(t *testing.T) {
	t.Parallel()
	tbl, clk := newTable(t)
	const tolerance = time.Second // ticks every 250ms
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, Tolerance: tolerance}, tbl)
	c := udpSender(t, s.Addrs()[0])

	send(t, c, encode(uwsgi.Subscription{Key: []byte("exp.test"), Address: []byte("127.0.0.1:1001")}))
	waitCount(t, s, resSubscribe, 1)
	clk.Advance(800 * time.Millisecond)
	send(t, c, encode(uwsgi.Subscription{Key: []byte("exp.test"), Address: []byte("127.0.0.1:1002")}))
	waitCount(t, s, resSubscribe, 2)
	if err := tbl.AddStatic("exp.test", "127.0.0.1:1003", 1); err != nil {
		t.Fatal(err)
	}
	clk.Advance(400 * time.Millisecond) // 1001 silent 1.2s, 1002 0.4s; static never expires

	// Nothing looks the key up: only the timer can remove the node.
	eventually(t, "silent node expired", func() bool { return tbl.Pool("exp.test").Node("127.0.0.1:1001") == nil })
	if got := nodes(tbl, "exp.test"); !slices.Equal(got, []string{"127.0.0.1:1002", "127.0.0.1:1003"}) {
		t.Fatalf("nodes = %q; want the fresh and the static one", got)
	}
	if got := testutil.ToFloat64(s.m.expired); got != 1 {
		t.Fatalf("expired = %v; want 1", got)
	}
}

func TestCloseStopsEverything(t *testing.T) {
	// Not parallel: it counts goroutines.
	before := runtime.NumGoroutine()
	tbl, _ := newTable(t)
	path := filepath.Join(t.TempDir(), "sub.sock")
	s := newServer(t, Config{Addrs: []string{"127.0.0.1:0", path}, Tolerance: 200 * time.Millisecond}, tbl)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	udp := s.Addrs()[0]
	send(t, udpSender(t, udp), captured(t))
	waitCount(t, s, resSubscribe, 1)

	start := time.Now()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("Close took %s", d)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file after Close: %v; want it removed", err)
	}
	if err := s.Start(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Start after Close = %v; want ErrClosed", err)
	}
	// The port is free again.
	c, err := net.ListenPacket("udp", udp)
	if err != nil {
		t.Fatalf("rebinding %s after Close: %v", udp, err)
	}
	c.Close()
	eventually(t, "goroutines to exit", func() bool { return runtime.NumGoroutine() <= before })
}

func TestStartBindErrorNamesAddress(t *testing.T) {
	t.Parallel()
	busy, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	addr := busy.LocalAddr().String()
	tbl, _ := newTable(t)
	path := filepath.Join(t.TempDir(), "first.sock")
	s := newServer(t, Config{Addrs: []string{path, addr}}, tbl)
	err = s.Start()
	want := "subscription server " + addr + ": bind: "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Start() = %v; want %q... wrapping EADDRINUSE", err, want)
	}
	// The socket bound before the failure was released, file included.
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("%s after failed Start: %v; want it removed", path, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestStartTwice(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}}, tbl)
	if err := s.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
}

func TestStaleUnixSocket(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	dir := t.TempDir()

	// A socket file nobody is bound to any more (a crashed run) is replaced.
	stale := filepath.Join(dir, "stale.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: stale, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	c.Close() // unixgram sockets leave their file behind
	if _, err := os.Lstat(stale); err != nil {
		t.Fatalf("expected a stale socket file: %v", err)
	}
	s := startServer(t, Config{Addrs: []string{stale}}, tbl)
	send(t, unixSender(t, stale), captured(t))
	waitCount(t, s, resSubscribe, 1)

	// A live socket is not stolen.
	s2 := newServer(t, Config{Addrs: []string{stale}}, tbl)
	if err := s2.Start(); err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		s2.Close()
		t.Fatalf("Start on a live socket = %v; want EADDRINUSE", err)
	}

	// A regular file is never removed.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	s3 := newServer(t, Config{Addrs: []string{file}}, tbl)
	if err := s3.Start(); err == nil {
		s3.Close()
		t.Fatal("Start over a regular file succeeded")
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "keep" {
		t.Fatalf("regular file damaged: %q, %v", b, err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	for _, tc := range []struct {
		name string
		cfg  Config
	}{
		{"hostname", Config{Addrs: []string{"localhost:2626"}}},
		{"no port", Config{Addrs: []string{"127.0.0.1"}}},
		{"bad port", Config{Addrs: []string{"127.0.0.1:99999"}}},
		{"unbracketed v6", Config{Addrs: []string{"::1:2626"}}},
		{"empty", Config{Addrs: []string{""}}},
		{"bare @", Config{Addrs: []string{"@"}}},
		{"duplicate", Config{Addrs: []string{"127.0.0.1:2626", "127.0.0.1:2626"}}},
		{"negative tolerance", Config{Tolerance: -time.Second}},
		{"negative depth", Config{QueueDepth: -1}},
		{"tiny byte budget", Config{QueueBytes: 1000}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := New(tc.cfg, tbl); err == nil {
				t.Fatalf("New(%+v) succeeded; want an error", tc.cfg)
			}
		})
	}
	if _, err := New(Config{}, nil); err == nil {
		t.Fatal("New with a nil table succeeded")
	}
	for _, ok := range []string{"127.0.0.1:0", "[::1]:2626", ":2626", "0.0.0.0:2626", "/tmp/x.sock", "rel/x.sock", "@abstract"} {
		if _, err := New(Config{Addrs: []string{ok}}, tbl); err != nil {
			t.Errorf("New(%q) = %v; want ok", ok, err)
		}
	}
	s := newServer(t, Config{Addrs: []string{"127.0.0.1:2626"}}, tbl)
	if got := s.Addrs(); !slices.Equal(got, []string{"127.0.0.1:2626"}) {
		t.Errorf("Addrs() before Start = %q", got)
	}
	if s.tolerance != DefaultTolerance || cap(s.queue) != DefaultQueueDepth || s.tick != time.Second {
		t.Errorf("defaults: tolerance %s, depth %d, tick %s", s.tolerance, cap(s.queue), s.tick)
	}
	if d := DefaultConfig(); d.Tolerance != DefaultTolerance || len(d.Addrs) != 1 {
		t.Errorf("DefaultConfig() = %+v", d)
	}
}

func TestTick(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	for _, tc := range []struct{ tolerance, want time.Duration }{
		{30 * time.Second, time.Second},
		{2 * time.Second, 500 * time.Millisecond},
		{100 * time.Millisecond, 50 * time.Millisecond},
	} {
		if got := newServer(t, Config{Tolerance: tc.tolerance}, tbl).tick; got != tc.want {
			t.Errorf("tick for tolerance %s = %s; want %s", tc.tolerance, got, tc.want)
		}
	}
}

func TestMetricsRegistered(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	reg := prometheus.NewRegistry()
	newServer(t, Config{Registerer: reg}, tbl)
	// Every result is exported from the start, at zero.
	if n, err := testutil.GatherAndCount(reg, "fastrouter_subscription_packets_total"); err != nil || n != int(numResults) {
		t.Fatalf("packets_total series = %d, %v; want %d", n, err, numResults)
	}
	if n, err := testutil.GatherAndCount(reg, "fastrouter_subscription_expired_total"); err != nil || n != 1 {
		t.Fatalf("expired_total series = %d, %v; want 1", n, err)
	}
	if _, err := New(Config{Registerer: reg}, tbl); err == nil {
		t.Fatal("registering twice on one registry succeeded")
	}
}

// A burst that the socket buffer holds is applied whole even when the
// reader and the applier share one P: the reader gives the applier a turn
// before the queue fills, instead of reading the burst in one time slice
// and dropping most of it. Not parallel: it sets GOMAXPROCS.
func TestBurstOnOneProcessorNotDropped(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	const burst, depth = 200, 16
	tbl, _ := newTable(t)
	hook := func(network, addr string) (net.PacketConn, error) {
		c, err := net.ListenPacket(network, addr)
		if err != nil {
			return nil, err
		}
		// Fill the socket before the reader starts.
		_ = c.(*net.UDPConn).SetReadBuffer(4 << 20)
		snd, err := net.Dial("udp", c.LocalAddr().String())
		if err != nil {
			c.Close()
			return nil, err
		}
		defer snd.Close()
		for i := range burst {
			if _, err := snd.Write(encode(uwsgi.Subscription{Key: []byte("burst.test"), Address: fmt.Appendf(nil, "127.0.0.1:%d", 20000+i)})); err != nil {
				c.Close()
				return nil, err
			}
		}
		return c, nil
	}
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, QueueDepth: depth, ListenPacket: hook}, tbl)
	eventually(t, "the burst applied or dropped", func() bool {
		return count(s, resSubscribe)+count(s, resDropped) == burst
	})
	if d := count(s, resDropped); d != 0 {
		t.Fatalf("%d of %d datagrams dropped with a queue of %d on one P; want none", d, burst, depth)
	}
}
