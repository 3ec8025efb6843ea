package subscription

import (
	"net/netip"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// FuzzApply feeds arbitrary datagrams through parse + apply against a real
// table, without the recover that handle adds. Properties: it never panics;
// whatever does not parse is invalid; a subscribe creates exactly the node
// it names (":port" resolved) and re-sending it is a refresh that adds
// nothing; an unsubscribe leaves no such node.
func FuzzApply(f *testing.F) {
	f.Add(captured(f), false)
	f.Add(capturedUnsub(f), false)
	f.Add(encode(uwsgi.Subscription{Key: []byte("p.test"), Address: []byte(":3204")}), false)
	f.Add(encode(uwsgi.Subscription{Key: []byte("p.test"), Address: []byte(":3204")}), true)
	f.Add(encode(uwsgi.Subscription{Key: []byte("*.w.test"), Address: []byte("[::1]:1"), Weight: 9, Algo: []byte("lrc"), Drain: true}), false)
	f.Add(encode(uwsgi.Subscription{Key: []byte(".d.test"), Address: []byte("@abs"), Notify: []byte("/n"), HasUnix: true, Unix: 1, Sign: []byte("sig")}), true)
	src := netip.MustParseAddrPort("[::ffff:192.0.2.7]:40000")
	// One server per fuzz process (inputs run one at a time in it), a fresh
	// table per input.
	ref := &tableRef{}
	s := newServer(f, Config{}, ref)

	f.Fuzz(func(t *testing.T, datagram []byte, fromUnix bool) {
		from := src
		if fromUnix {
			from = netip.AddrPort{}
		}
		tbl, _ := newTable(t)
		ref.Table = tbl
		r := s.applying.apply(s, datagram, from, nil)

		var sub uwsgi.Subscription
		if err := uwsgi.ParseSubscription(datagram, &sub); err != nil {
			if r != resInvalid {
				t.Fatalf("unparsable datagram (%v) gave %s", err, r)
			}
			return
		}
		var ap applier
		addr, ok := ap.resolve(sub.Address, from)
		if !ok && r != resInvalid {
			t.Fatalf(":port from a unix socket gave %s", r)
		}
		key := string(sub.Key)
		switch r {
		case resSubscribe:
			p := tbl.Pool(key)
			if p == nil || p.Node(string(addr)) == nil || len(p.Nodes()) != 1 {
				t.Fatalf("subscribe %q %q: pool %v", key, addr, p)
			}
			if r2 := s.applying.apply(s, datagram, from, nil); r2 != resRefresh {
				t.Fatalf("same datagram again = %s; want refresh", r2)
			}
			if len(p.Nodes()) != 1 {
				t.Fatalf("refresh added a node: %d", len(p.Nodes()))
			}
		case resUnsubscribe:
			if !sub.Unsubscribe {
				t.Fatal("unsubscribe result for a subscribe command")
			}
			if tbl.Pool(key) != nil {
				t.Fatalf("pool %q exists after unsubscribe on an empty table", key)
			}
		case resRefresh:
			t.Fatal("refresh on an empty table")
		case resInvalid:
			if tbl.Len() != 0 {
				t.Fatalf("invalid datagram changed the table: %d pools", tbl.Len())
			}
		}
	})
}

// tableRef lets one Server apply to a different table per fuzz input.
type tableRef struct{ *balancer.Table }
