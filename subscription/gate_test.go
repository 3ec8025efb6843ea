package subscription

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/subauth"
)

// recordingGate denies sources and addresses it is told to, and records
// what Admit saw.
type recordingGate struct {
	denySrc  netip.Addr
	denyAddr string
	admitted [][]byte // addresses passed to Admit
	whole    [][]byte // datagrams passed to Admit
}

func (g *recordingGate) AllowSource(src netip.AddrPort) bool { return src.Addr() != g.denySrc }

func (g *recordingGate) Admit(sub *uwsgi.Subscription, datagram, address []byte) error {
	g.admitted = append(g.admitted, bytes.Clone(address))
	g.whole = append(g.whole, bytes.Clone(datagram))
	if string(address) == g.denyAddr {
		return errors.New("denied")
	}
	return nil
}

func TestGateSeesResolvedAddressAndDenies(t *testing.T) {
	tbl, _ := newTable(t)
	g := &recordingGate{denyAddr: "127.0.0.1:9"}
	s := newServer(t, Config{Gate: g}, tbl)
	ok := encode(uwsgi.Subscription{Key: []byte("g.test"), Address: []byte(":3031")})
	bad := encode(uwsgi.Subscription{Key: []byte("g.test"), Address: []byte(":9")})
	s.handle(ok, localSrc, nil)
	s.handle(bad, localSrc, nil)
	if got := nodes(tbl, "g.test"); len(got) != 1 || got[0] != "127.0.0.1:3031" {
		t.Fatalf("nodes = %v; want only 127.0.0.1:3031", got)
	}
	if len(g.admitted) != 2 || string(g.admitted[0]) != "127.0.0.1:3031" || string(g.admitted[1]) != "127.0.0.1:9" {
		t.Fatalf("Admit saw addresses %q; want the resolved ones", g.admitted)
	}
	if !bytes.Equal(g.whole[0], ok) {
		t.Fatal("Admit did not get the whole datagram")
	}
	if count(s, resDenied) != 1 || count(s, resSubscribe) != 1 {
		t.Fatalf("denied %d subscribe %d; want 1 and 1", count(s, resDenied), count(s, resSubscribe))
	}
	// Unparsable datagrams never reach the gate.
	s.handle([]byte{1, 2}, localSrc, nil)
	if len(g.admitted) != 2 || count(s, resInvalid) != 1 {
		t.Fatalf("garbage reached the gate or was not invalid")
	}
}

// A source outside the allow-list is dropped by the reader: never queued,
// never parsed, counted denied (here by the real subauth.Guard).
func TestGateSourceCheckedBeforeQueueing(t *testing.T) {
	tbl, _ := newTable(t)
	guard, err := subauth.New(subauth.Config{Sources: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	if err != nil {
		t.Fatal(err)
	}
	s := startServer(t, Config{Addrs: []string{"127.0.0.1:0"}, Gate: guard}, tbl)
	c := udpSender(t, s.Addrs()[0])
	for range 3 {
		send(t, c, captured(t))
	}
	waitCount(t, s, resDenied, 3)
	if tbl.Len() != 0 || count(s, resSubscribe) != 0 || count(s, resInvalid) != 0 {
		t.Fatalf("denied datagrams reached the table: %d pools", tbl.Len())
	}
}
