package lifecycle

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastrouter/fastrouter/balancer"
)

func newTable(t *testing.T) *balancer.Table {
	t.Helper()
	tb, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func TestDrainCompletesNotifiesAndCounts(t *testing.T) {
	tb := newTable(t)
	sock := filepath.Join(t.TempDir(), "notify.sock")
	ln, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	tb.Announce(&balancer.Announce{Key: []byte("k"), Address: []byte("10.0.0.1:1"), Notify: []byte(sock)})
	tb.Announce(&balancer.Announce{Key: []byte("k"), Address: []byte("10.0.0.2:1")})
	reg := prometheus.NewPedanticRegistry()
	m, err := New(Config{Interval: 10 * time.Millisecond, Registerer: reg}, tb)
	if err != nil {
		t.Fatal(err)
	}
	m.Start()
	defer m.Close()

	n := tb.Pool("k").Pick(time.Now().UnixNano(), nil) // first pick: a request in flight
	for n.Address != "10.0.0.1:1" {
		n.Done()
		n = tb.Pool("k").Pick(time.Now().UnixNano(), nil)
	}
	if _, err := tb.Drain("k", "10.0.0.1:1", time.Minute, false); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if s := n.State(); s != balancer.StateDraining {
		t.Fatalf("with a request in flight: %s; want draining", s)
	}
	n.Done()
	_ = ln.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	k, err := ln.Read(buf)
	if err != nil {
		t.Fatalf("no drain notification: %v", err)
	}
	var msg map[string]any
	if err := json.Unmarshal(buf[:k], &msg); err != nil || msg["event"] != "drained" || msg["key"] != "k" ||
		msg["address"] != "10.0.0.1:1" || msg["result"] != "completed" {
		t.Fatalf("notification %q (%v)", buf[:k], err)
	}
	if n.State() != balancer.StateDrained {
		t.Fatalf("state %s; want drained", n.State())
	}
	if got := testutil.ToFloat64(m.drains.WithLabelValues("completed")); got != 1 {
		t.Fatalf("drains_total{completed} = %v", got)
	}
	want := `
# HELP fastrouter_pool_nodes Nodes per pool and state (active, draining, drained, failed, backup).
# TYPE fastrouter_pool_nodes gauge
fastrouter_pool_nodes{pool="k",state="active"} 1
fastrouter_pool_nodes{pool="k",state="backup"} 0
fastrouter_pool_nodes{pool="k",state="drained"} 1
fastrouter_pool_nodes{pool="k",state="draining"} 0
fastrouter_pool_nodes{pool="k",state="failed"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want), "fastrouter_pool_nodes"); err != nil {
		t.Fatal(err)
	}
}

// fakeConn records Close, standing in for a backend connection.
type fakeConn struct{ closed bool }

func (c *fakeConn) Close() error { c.closed = true; return nil }

func TestDrainDeadlineForcesConnections(t *testing.T) {
	tb := newTable(t)
	tb.Announce(&balancer.Announce{Key: []byte("k"), Address: []byte("10.0.0.1:1")})
	n := tb.Pool("k").Pick(time.Now().UnixNano(), nil)
	c := &fakeConn{}
	n.Track(c)
	if _, err := tb.Drain("k", "10.0.0.1:1", time.Millisecond, true); err != nil {
		t.Fatal(err)
	}
	time.Sleep(5 * time.Millisecond)
	evs := tb.Tick()
	if len(evs) != 1 || !evs[0].Forced || !c.closed || evs[0].Info.Forced != 1 {
		t.Fatalf("events %+v, conn closed %v", evs, c.closed)
	}
	n.Untrack(c)
	n.Done()
}

func TestStateFileRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	tb := newTable(t)
	tb.Announce(&balancer.Announce{Key: []byte("a.test"), Address: []byte("10.0.0.1:1"), Weight: 3, Modifier1: 5})
	tb.Announce(&balancer.Announce{Key: []byte("a.test"), Address: []byte("10.0.0.2:1")})
	tb.AddStatic("a.test", "10.0.0.3:1", 1)
	tb.Drain("a.test", "10.0.0.2:1", time.Minute, false)
	m, _ := New(Config{StateFile: path}, tb)
	if err := m.Save(); err != nil {
		t.Fatal(err)
	}

	tb2 := newTable(t)
	m2, _ := New(Config{StateFile: path}, tb2)
	n, err := m2.Load()
	if err != nil || n != 2 {
		t.Fatalf("Load = %d, %v; want 2 subscribed nodes (static ones come from config)", n, err)
	}
	p := tb2.Pool("a.test")
	if a := p.Node("10.0.0.1:1"); a == nil || a.Weight() != 3 || a.Modifier1 != 5 || a.State() != balancer.StateActive {
		t.Fatalf("restored node 1: %+v", a)
	}
	if b := p.Node("10.0.0.2:1"); b == nil || b.State() != balancer.StateDraining {
		t.Fatal("restored drain lost")
	}
	if p.Node("10.0.0.3:1") != nil {
		t.Fatal("static node restored from the state file")
	}

	for name, data := range map[string]string{"garbage": "{", "version": `{"version":9}`} {
		os.WriteFile(path, []byte(data), 0o644)
		if _, err := m2.Load(); err == nil {
			t.Errorf("%s state file accepted", name)
		}
	}
	m3, _ := New(Config{StateFile: filepath.Join(t.TempDir(), "absent.json")}, newTable(t))
	if n, err := m3.Load(); n != 0 || err != nil {
		t.Fatalf("missing file: %d %v", n, err)
	}
}

func TestUDPNotifyOnlyToTheNodesOwnIP(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	port := pc.LocalAddr().(*net.UDPAddr).Port
	tb := newTable(t)
	tb.Announce(&balancer.Announce{Key: []byte("k"), Address: []byte("127.0.0.1:3031")})
	tb.Announce(&balancer.Announce{Key: []byte("k"), Address: []byte("10.1.2.3:3031")})
	ev := func(addr string) balancer.DrainEvent {
		return balancer.DrainEvent{Key: "k", Node: tb.Pool("k").Node(addr)}
	}
	target := "udp://127.0.0.1:" + strconv.Itoa(port)
	if err := Notify(target, ev("127.0.0.1:3031")); err != nil {
		t.Fatalf("notify to the node's own IP: %v", err)
	}
	_ = pc.SetReadDeadline(time.Now().Add(2 * time.Second))
	buf := make([]byte, 512)
	if n, _, err := pc.ReadFrom(buf); err != nil || !strings.Contains(string(buf[:n]), `"event":"drained"`) {
		t.Fatalf("notify datagram: %q %v", buf[:n], err)
	}
	for _, bad := range []string{target, "udp://169.254.169.254:80", "udp://nonsense"} {
		if err := Notify(bad, ev("10.1.2.3:3031")); err == nil {
			t.Errorf("notify %s for node 10.1.2.3 accepted", bad)
		}
	}
}

// TestPoolNodesBounded: past maxPoolSeries pools, the rest are summed under
// pool="(overflow)", so a huge table cannot blow up the scrape.
func TestPoolNodesBounded(t *testing.T) {
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range maxPoolSeries + 3 {
		if err := table.AddStatic(fmt.Sprintf("p%05d", i), "10.0.0.1:1", 1); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(&poolCollector{table: table})
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 {
		t.Fatalf("%d families", len(mfs))
	}
	series := mfs[0].GetMetric()
	if want := (maxPoolSeries + 1) * len(poolStates); len(series) != want {
		t.Fatalf("%d series; want %d", len(series), want)
	}
	for _, m := range series {
		var pool, state string
		for _, l := range m.GetLabel() {
			switch l.GetName() {
			case "pool":
				pool = l.GetValue()
			case "state":
				state = l.GetValue()
			}
		}
		if pool == overflowKey && state == "active" && m.GetGauge().GetValue() != 3 {
			t.Errorf("overflow active = %v; want the 3 pools past the bound", m.GetGauge().GetValue())
		}
		if pool == fmt.Sprintf("p%05d", maxPoolSeries) {
			t.Errorf("pool %s is past the bound but has its own series", pool)
		}
	}
}

// denyAddr refuses the nodes at one address, as --node-allow would.
type denyAddr string

func (d denyAddr) AdmitNode(key, address []byte) error {
	if string(address) == string(d) {
		return errors.New("not inside --node-allow")
	}
	return nil
}

// memory is a SignedTimes that keeps what it is told.
type memory map[[2]string][2]int64 // unix, sig

func (m memory) SignedTimes(fn func(key, address string, unix int64, sig uint64)) {
	for k, v := range m {
		fn(k[0], k[1], v[0], uint64(v[1]))
	}
}

func (m memory) RememberSigned(key, address []byte, unix int64, sig uint64) {
	m[[2]string{string(key), string(address)}] = [2]int64{unix, int64(sig)}
}

// A saved table comes back through today's rules: a node that a new
// --node-allow (or a removed key file) refuses is not restored. The replay
// memory comes back with it.
func TestRestoreMeetsAdmissionAndKeepsSignedTimes(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.json")
	tb := newTable(t)
	tb.Announce(&balancer.Announce{Key: []byte("a.test"), Address: []byte("10.0.0.1:1")})
	tb.Announce(&balancer.Announce{Key: []byte("a.test"), Address: []byte("169.254.169.254:80")})
	saved := memory{{"a.test", ":3031"}: {1700000000, 0}, {"b.test", "10.0.0.9:1"}: {1700000005, 0x1234}}
	m, _ := New(Config{StateFile: path, Signed: saved}, tb)
	if err := m.Save(); err != nil {
		t.Fatal(err)
	}

	tb2 := newTable(t)
	restored := memory{}
	m2, _ := New(Config{StateFile: path, Admission: denyAddr("169.254.169.254:80"), Signed: restored}, tb2)
	n, err := m2.Load()
	if err != nil || n != 1 {
		t.Fatalf("Load = %d, %v; want the one admitted node", n, err)
	}
	if p := tb2.Pool("a.test"); p == nil || p.Node("10.0.0.1:1") == nil || p.Node("169.254.169.254:80") != nil {
		t.Fatalf("restored pool: %+v; want only 10.0.0.1:1", p)
	}
	if !reflect.DeepEqual(restored, saved) {
		t.Fatalf("replay memory restored as %v; want %v", restored, saved)
	}
	// A snapshot (the binary upgrade's hand-off) is the same format.
	snap, err := m.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	up := memory{}
	m3, _ := New(Config{Admission: denyAddr("169.254.169.254:80"), Signed: up}, newTable(t))
	if n, err := m3.Restore(snap); err != nil || n != 1 || !reflect.DeepEqual(up, saved) {
		t.Fatalf("Restore(snapshot) = %d, %v, memory %v", n, err, up)
	}
	// A file written before the signed times existed still loads.
	old := `{"version":1,"saved":"2026-01-01T00:00:00Z","pools":[{"key":"a.test","algo":"wrr","nodes":[{"address":"10.0.0.1:1","weight":1,"state":"active"}]}]}`
	m4, _ := New(Config{Signed: memory{}}, newTable(t))
	if n, err := m4.Restore([]byte(old)); err != nil || n != 1 {
		t.Fatalf("old state file: %d, %v", n, err)
	}
}
