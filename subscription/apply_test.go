package subscription

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// These tests drive the applier directly on a server that is not started:
// the same code the applier goroutine runs, without sockets.

func TestApply(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("k", 256)
	withCmd := func(b []byte, cmd byte) []byte { b[3] = cmd; return b }
	withM1 := func(b []byte, m1 byte) []byte { b[0] = m1; return b }
	sub := func(key, addr string) uwsgi.Subscription {
		return uwsgi.Subscription{Key: []byte(key), Address: []byte(addr)}
	}
	v4 := netip.MustParseAddrPort("192.0.2.10:51000")
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.11]:51000")
	v6 := netip.MustParseAddrPort("[2001:db8::7]:51000")
	unix := netip.AddrPort{}

	type step struct {
		datagram []byte
		src      netip.AddrPort
		want     result
	}
	for _, tc := range []struct {
		name  string
		steps []step
		key   string
		nodes []string // want in pool key afterwards; nil = no pool
	}{
		{"captured subscribe", []step{{captured(t), v4, resSubscribe}},
			"example.com", []string{"127.0.0.1:3031"}},
		{"refresh keeps one node", []step{{captured(t), v4, resSubscribe}, {captured(t), v4, resRefresh}, {captured(t), v6, resRefresh}},
			"example.com", []string{"127.0.0.1:3031"}},
		{"captured unsubscribe", []step{{captured(t), v4, resSubscribe}, {capturedUnsub(t), v4, resUnsubscribe}},
			"example.com", nil},
		{"cmd 5 unsubscribes", []step{{captured(t), v4, resSubscribe}, {withCmd(captured(t), 5), v4, resUnsubscribe}},
			"example.com", nil},
		{"unsubscribe of unknown node", []step{{capturedUnsub(t), v4, resUnsubscribe}},
			"example.com", nil},
		{"modifier1 0 accepted", []step{{withM1(captured(t), 0), v4, resSubscribe}},
			"example.com", []string{"127.0.0.1:3031"}},
		{"second node appended", []step{{captured(t), v4, resSubscribe}, {encode(sub("example.com", "127.0.0.1:3032")), v4, resSubscribe}},
			"example.com", []string{"127.0.0.1:3031", "127.0.0.1:3032"}},
		{":port from IPv4", []step{{encode(sub("p.test", ":3204")), v4, resSubscribe}},
			"p.test", []string{"192.0.2.10:3204"}},
		{":port from v4-mapped", []step{{encode(sub("p.test", ":3204")), mapped, resSubscribe}},
			"p.test", []string{"192.0.2.11:3204"}},
		{":port from IPv6", []step{{encode(sub("p.test", ":3204")), v6, resSubscribe}},
			"p.test", []string{"[2001:db8::7]:3204"}},
		{":port unsubscribe matches resolved", []step{
			{encode(sub("p.test", ":3204")), v4, resSubscribe},
			{encode(uwsgi.Subscription{Key: []byte("p.test"), Address: []byte(":3204"), Unsubscribe: true}), v4, resUnsubscribe}},
			"p.test", nil},
		{":port from another host is another node", []step{
			{encode(sub("p.test", ":3204")), v4, resSubscribe},
			{encode(uwsgi.Subscription{Key: []byte("p.test"), Address: []byte(":3204"), Unsubscribe: true}), v6, resUnsubscribe}},
			"p.test", []string{"192.0.2.10:3204"}},
		{":port from unix", []step{{encode(sub("p.test", ":3204")), unix, resInvalid}}, "p.test", nil},
		{":port not numeric", []step{{encode(sub("p.test", ":http")), v4, resInvalid}}, "p.test", nil},
		{":port zero", []step{{encode(sub("p.test", ":0")), v4, resInvalid}}, "p.test", nil},
		{"unix path node", []step{{encode(sub("u.test", "/run/u.sock")), unix, resSubscribe}}, "u.test", []string{"/run/u.sock"}},
		{"abstract node", []step{{encode(sub("u.test", "@u")), v4, resSubscribe}}, "u.test", []string{"@u"}},
		{"ipv6 node", []step{{encode(sub("6.test", "[::1]:3031")), v4, resSubscribe}}, "6.test", []string{"[::1]:3031"}},
		{"hostname refused", []step{{encode(sub("h.test", "localhost:3031")), v4, resInvalid}}, "h.test", nil},
		{"http node", []step{{encode(sub("h.test", "http://127.0.0.1:8000")), v4, resSubscribe}}, "h.test", []string{"http://127.0.0.1:8000"}},
		{"http node with a path refused", []step{{encode(sub("h.test", "http://127.0.0.1:8000/app")), v4, resInvalid}}, "h.test", nil},
		{"proto=h makes an http node", []step{{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte("127.0.0.1:8000"), Proto: []byte("http")}), v4, resSubscribe}},
			"h.test", []string{"http://127.0.0.1:8000"}},
		{"proto=h with :port", []step{{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte(":8000"), Proto: []byte("h")}), v4, resSubscribe}},
			"h.test", []string{"http://192.0.2.10:8000"}},
		{"proto=h on an http:// address keeps it", []step{{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte("http://127.0.0.1:8000"), Proto: []byte("h")}), v4, resSubscribe}},
			"h.test", []string{"http://127.0.0.1:8000"}},
		{"proto=h unsubscribe matches", []step{
			{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte("127.0.0.1:8000"), Proto: []byte("h")}), v4, resSubscribe},
			{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte("127.0.0.1:8000"), Proto: []byte("h"), Unsubscribe: true}), v4, resUnsubscribe}},
			"h.test", nil},
		{"proto=u is uwsgi", []step{{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte("127.0.0.1:8000"), Proto: []byte("uwsgi")}), v4, resSubscribe}},
			"h.test", []string{"127.0.0.1:8000"}},
		{"proto=h on a unix path refused", []step{{encode(uwsgi.Subscription{Key: []byte("h.test"), Address: []byte("/run/h.sock"), Proto: []byte("h")}), unix, resInvalid}}, "h.test", nil},
		{"key of 255 bytes", []step{{encode(sub(long[:255], "127.0.0.1:1")), v4, resSubscribe}}, long[:255], []string{"127.0.0.1:1"}},
		{"key over 255 bytes", []step{{encode(sub(long, "127.0.0.1:1")), v4, resInvalid}}, long, nil},
		{"no key", []step{{encode(sub("", "127.0.0.1:1")), v4, resInvalid}}, "", nil},
		{"no address", []step{{encode(sub("n.test", "")), v4, resInvalid}}, "n.test", nil},
		{"unknown algo", []step{{encode(uwsgi.Subscription{Key: []byte("a.test"), Address: []byte("127.0.0.1:1"), Algo: []byte("nope")}), v4, resInvalid}}, "a.test", nil},
		{"drain passes through", []step{{encode(uwsgi.Subscription{Key: []byte("d.test"), Address: []byte("127.0.0.1:1"), Drain: true}), v4, resSubscribe}},
			"d.test", []string{"127.0.0.1:1"}},
		{"empty datagram", []step{{nil, v4, resInvalid}}, "", nil},
		{"header only", []step{{[]byte{224, 0, 0, 0}, v4, resInvalid}}, "", nil},
		{"truncated", []step{{captured(t)[:50], v4, resInvalid}}, "example.com", nil},
		{"non-digit weight", []step{{bytes.Replace(captured(t), []byte("weight\x01\x000"), []byte("weight\x01\x00x"), 1), v4, resInvalid}}, "example.com", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tbl, _ := newTable(t)
			s := newServer(t, Config{}, tbl)
			for i, st := range tc.steps {
				if got := s.applying.apply(s, st.datagram, st.src, nil); got != st.want {
					t.Fatalf("step %d: apply = %s; want %s", i, got, st.want)
				}
			}
			if got := nodes(tbl, tc.key); !slices.Equal(got, tc.nodes) {
				t.Fatalf("pool %.20q: nodes = %q; want %q", tc.key, got, tc.nodes)
			}
		})
	}
}

func TestApplyPassesFields(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := newServer(t, Config{}, tbl)
	in := uwsgi.Subscription{Key: []byte("f.test"), Address: []byte("127.0.0.1:1"),
		Modifier1: 5, Modifier2: 9, Weight: 7, Cores: 4, Load: 3, Notify: []byte("/tmp/n.sock"), Algo: []byte("lrc")}
	if r := s.applying.apply(s, encode(in), localSrc, nil); r != resSubscribe {
		t.Fatalf("apply = %s", r)
	}
	p := tbl.Pool("f.test")
	if p.Algo() != balancer.AlgoLRC {
		t.Errorf("algo = %s; want lrc", p.Algo())
	}
	i := p.Node("127.0.0.1:1").Info()
	if i.Modifier1 != 5 || i.Modifier2 != 9 || i.Weight != 7 || i.Cores != 4 || i.Load != 3 {
		t.Errorf("node = %+v", i)
	}
	if n := p.Node("127.0.0.1:1").Notify(); n != "/tmp/n.sock" {
		t.Errorf("notify = %q", n)
	}

	// A refresh updates weight, cores and load, never the modifiers (as uWSGI).
	in.Modifier1, in.Weight, in.Cores, in.Load = 0, 0, 8, 1
	if r := s.applying.apply(s, encode(in), localSrc, nil); r != resRefresh {
		t.Fatalf("apply = %s", r)
	}
	i = p.Node("127.0.0.1:1").Info()
	if i.Modifier1 != 5 || i.Weight != 1 || i.Cores != 8 || i.Load != 1 {
		t.Errorf("after refresh: node = %+v; want modifier1 5, weight 1 (0 sent), cores 8, load 1", i)
	}
}

// handle counts exactly one result per datagram, whatever it contains.
func TestRandomGarbageIsCounted(t *testing.T) {
	t.Parallel()
	tbl, _ := newTable(t)
	s := newServer(t, Config{}, tbl)
	rng := rand.New(rand.NewPCG(1, 2))
	valid := captured(t)
	const n = 20000
	for i := range n {
		var p []byte
		switch i % 4 {
		case 0: // noise
			p = make([]byte, rng.IntN(600))
			for j := range p {
				p[j] = byte(rng.Uint32())
			}
		case 1: // truncated real packet
			p = valid[:rng.IntN(len(valid))]
		case 2: // real packet with a few bytes flipped
			p = bytes.Clone(valid)
			for range 1 + rng.IntN(3) {
				p[rng.IntN(len(p))] = byte(rng.Uint32())
			}
		default: // plausible header, random records
			p = []byte{224, 0, 0, byte(rng.IntN(3))}
			for range rng.IntN(8) {
				k := []string{"key", "address", "weight", "modifier1", "cores", "sign", "unix", "algo", "x"}[rng.IntN(9)]
				v := make([]byte, rng.IntN(12))
				for j := range v {
					v[j] = "0123456789:.abc/@[]"[rng.IntN(19)]
				}
				p = uwsgi.AppendVarString(p, k, string(v))
			}
		}
		s.handle(p, localSrc, nil)
	}
	total := 0
	for r := range numResults {
		total += count(s, r)
	}
	if total != n {
		t.Fatalf("results counted = %d; want %d", total, n)
	}
	if count(s, resInvalid) < n/2 {
		t.Fatalf("invalid = %d of %d; garbage should mostly be refused", count(s, resInvalid), n)
	}
	// The table is still consistent: every pool listed has nodes.
	for _, p := range tbl.Pools() {
		if !p.HasNodes() {
			t.Fatalf("pool %q without nodes", p.Key)
		}
	}
}

// panickyTable panics in Announce, standing in for a bug below us.
type panickyTable struct{ blockingTable }

func (*panickyTable) Announce(*balancer.Announce) (balancer.Result, error) { panic("boom") }

func TestHandleRecoversPanics(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{}, &panickyTable{})
	s.handle(captured(t), localSrc, nil)
	s.handle(captured(t), localSrc, nil)
	if got := count(s, resInvalid); got != 2 {
		t.Fatalf("invalid = %d; want 2", got)
	}
}

// errTable refuses everything.
type errTable struct{ blockingTable }

func (*errTable) Announce(*balancer.Announce) (balancer.Result, error) {
	return 0, errors.New("no")
}

func TestTableErrorIsInvalid(t *testing.T) {
	t.Parallel()
	s := newServer(t, Config{}, &errTable{})
	s.handle(captured(t), localSrc, nil)
	if got := count(s, resInvalid); got != 1 {
		t.Fatalf("invalid = %d; want 1", got)
	}
}

// recorder is a slog.Handler that keeps records at or above min.
type recorder struct {
	min     slog.Level
	mu      sync.Mutex
	records []slog.Record
}

func (h *recorder) Enabled(_ context.Context, l slog.Level) bool { return l >= h.min }
func (h *recorder) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.records = append(h.records, r.Clone())
	return nil
}
func (h *recorder) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recorder) WithGroup(string) slog.Handler      { return h }

func attrs(r slog.Record) map[string]string {
	m := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { m[a.Key] = a.Value.String(); return true })
	return m
}

func TestLogging(t *testing.T) {
	t.Parallel()
	sk := &socket{addr: "127.0.0.1:2626"}
	t.Run("debug", func(t *testing.T) {
		tbl, _ := newTable(t)
		h := &recorder{min: slog.LevelDebug}
		s := newServer(t, Config{Logger: slog.New(h)}, tbl)
		s.handle([]byte("junk"), localSrc, sk)
		s.handle(encode(uwsgi.Subscription{Key: []byte("d.test"), Address: []byte("127.0.0.1:1"), Drain: true}), localSrc, sk)
		s.handle(captured(t), localSrc, sk)
		s.handle(captured(t), localSrc, sk) // plain refresh: not logged
		var debug []slog.Record
		for _, r := range h.records {
			if r.Level == slog.LevelDebug {
				debug = append(debug, r)
			}
		}
		if len(debug) != 3 {
			t.Fatalf("%d debug records; want 3 (invalid, 2 subscribes)", len(debug))
		}
		for _, r := range debug {
			if a := attrs(r); a["source"] != "127.0.0.1:40000" || a["listener"] != "127.0.0.1:2626" {
				t.Errorf("%q attrs %v; want source and listener", r.Message, a)
			}
		}
		if a := attrs(debug[0]); a["err"] == "" {
			t.Errorf("invalid datagram logged without err: %v", a)
		}
		if a := attrs(debug[1]); a["drain"] != "true" || a["key"] != "d.test" {
			t.Errorf("drain subscribe attrs %v", a)
		}
	})
	// At info level a node's join and leave are one line each, naming the
	// pool, the node, the source and the sender; invalid datagrams and
	// plain refreshes log nothing. (The process's log bounds a flood of
	// joins: internal/lograte.)
	t.Run("info", func(t *testing.T) {
		tbl, _ := newTable(t)
		h := &recorder{min: slog.LevelInfo}
		s := newServer(t, Config{Logger: slog.New(h)}, tbl)
		for i := range 100 {
			s.handle([]byte{byte(i)}, localSrc, sk)
			s.handle(captured(t), localSrc, sk)
			s.handle(captured(t), localSrc, sk)
			s.handle(capturedUnsub(t), localSrc, sk)
		}
		if len(h.records) != 200 {
			t.Fatalf("%d records above debug; want 200 (a join and a leave per cycle)", len(h.records))
		}
		for i, r := range h.records {
			want := "node joined"
			if i%2 == 1 {
				want = "node left"
			}
			a := attrs(r)
			if r.Message != want || r.Level != slog.LevelInfo || a["pool"] == "" || a["node"] == "" ||
				a["source"] != "datagram" || a["sender"] != "127.0.0.1:40000" {
				t.Fatalf("record %d: %s %q %v; want INFO %q with pool, node, source=datagram and the sender", i, r.Level, r.Message, a, want)
			}
			if want == "node left" && (a["reason"] != "unsubscribe" || a["draining"] != "false") {
				t.Fatalf("leave attrs %v; want reason=unsubscribe draining=false (nothing in flight)", a)
			}
		}
	})
	// drain=1 on a known node logs its drain start once, not on every
	// announce that repeats it.
	t.Run("drain", func(t *testing.T) {
		tbl, _ := newTable(t)
		h := &recorder{min: slog.LevelInfo}
		s := newServer(t, Config{Logger: slog.New(h)}, tbl)
		sub := uwsgi.Subscription{Key: []byte("d.test"), Address: []byte("127.0.0.1:1")}
		s.handle(encode(sub), localSrc, sk)
		s.handle(encode(uwsgi.Subscription{Key: []byte("d.test"), Address: []byte("127.0.0.1:2")}), localSrc, sk)
		sub.Drain = true
		for range 3 {
			s.handle(encode(sub), localSrc, sk)
		}
		var msgs []string
		for _, r := range h.records {
			msgs = append(msgs, r.Message)
		}
		if want := []string{"node joined", "node joined", "drain started"}; !slices.Equal(msgs, want) {
			t.Fatalf("logged %q; want %q", msgs, want)
		}
	})
}
