package subauth

import (
	"bytes"
	"crypto"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// A node that comes without a datagram (configuration, admin API, state
// file) meets the rules that need none: --node-allow, and with signatures
// a public key for its pool.
func TestAdmitNode(t *testing.T) {
	dir := keyDir(t, "rsa2048.pub", "app.test")
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: dir, Nodes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	cases := []struct {
		key, addr string
		want      error
		mention   string
	}{
		{"app.test", "10.0.0.5:3031", nil, ""},
		{"app.test", "http://10.0.0.5:80", nil, ""},
		{"app.test", "169.254.169.254:80", ErrNodeAddress, "--node-allow 10.0.0.0/8"},
		{"app.test", "/run/app.sock", ErrNodeAddress, "--node-allow"},
		{"other.test", "10.0.0.5:3031", ErrNoKey, filepath.Join(dir, "other.test.pem")},
	}
	for _, tc := range cases {
		err := g.AdmitNode([]byte(tc.key), []byte(tc.addr))
		if !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
			t.Errorf("AdmitNode(%s, %s) = %v; want %v", tc.key, tc.addr, err, tc.want)
			continue
		}
		if err != nil && !strings.Contains(err.Error(), tc.mention) {
			t.Errorf("AdmitNode(%s, %s) = %q; want it to name %q", tc.key, tc.addr, err, tc.mention)
		}
	}
	if err := g.AdmitKey([]byte("other.test")); !errors.Is(err, ErrNoKey) {
		t.Errorf("AdmitKey without a key file = %v", err)
	}
	// Nothing of this is a datagram: the datagram counters stay at zero.
	if g.denied(ErrNodeAddress) != 0 || g.denied(ErrNoKey) != 0 {
		t.Error("AdmitNode counted datagram denials")
	}
	// Without signatures, any pool; without a list, any address.
	open := newGuard(t, Config{})
	if err := open.AdmitNode([]byte("x"), []byte("/run/app.sock")); err != nil {
		t.Errorf("open guard: %v", err)
	}
}

// relayFixture is a signing guard with a key for app.test and a signer.
func relayFixture(t *testing.T, nodes ...netip.Prefix) (*testGuard, *Signer) {
	t.Helper()
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: keyDir(t, "rsa2048.pub", "app.test"), Nodes: nodes,
		Tolerance: 60 * time.Second})
	return g, signer(t, crypto.SHA256, "rsa2048.key")
}

// A relayed node is checked like a datagram, from the datagram the peer
// accepted: the entry must be what that datagram announces.
func TestAdmitRelayed(t *testing.T) {
	g, s := relayFixture(t, netip.MustParsePrefix("127.0.0.0/8"))
	now := g.clk.Now()
	good := signed(t, sub("app.test", "127.0.0.1:3031"), s, now)
	port := signed(t, sub("app.test", ":3032"), s, now)
	h := sub("app.test", "127.0.0.1:8000")
	h.Proto = []byte("http")
	httpProof := signed(t, h, s, now)
	un := sub("app.test", "127.0.0.1:3033")
	un.Unsubscribe = true
	unsubProof := signed(t, un, s, now)
	otherSigner := signer(t, crypto.SHA256, "ed25519.key")
	forged := signed(t, sub("app.test", "127.0.0.1:3034"), otherSigner, now)
	unsigned := uwsgi.AppendSubscription(nil, &uwsgi.Subscription{Key: []byte("app.test"), Address: []byte("127.0.0.1:3035")})
	stale := signed(t, sub("app.test", "127.0.0.1:3036"), s, now.Add(-2*time.Minute))
	nokey := signed(t, sub("nokey.test", "127.0.0.1:3037"), s, now)

	cases := []struct {
		name      string
		key, addr string
		proof     []byte
		want      error
	}{
		{"signed subscribe", "app.test", "127.0.0.1:3031", good, nil},
		{":port resolved by the peer", "app.test", "127.0.0.2:3032", port, nil},
		{"proto=h", "app.test", "http://127.0.0.1:8000", httpProof, nil},
		{"outside --node-allow", "app.test", "10.0.0.1:3031", good, ErrNodeAddress},
		{"no proof", "app.test", "127.0.0.1:3031", nil, ErrUnsigned},
		{"garbage proof", "app.test", "127.0.0.1:3031", []byte{1, 2, 3}, ErrProof},
		{"unsigned proof", "app.test", "127.0.0.1:3035", unsigned, ErrUnsigned},
		{"proof for another address", "app.test", "127.0.0.1:9999", good, ErrProof},
		{"proof for another key", "evil.test", "127.0.0.1:3031", good, ErrProof},
		{":port with another port", "app.test", "127.0.0.2:3031", port, ErrProof},
		{":port with a host name", "app.test", "host:3032", port, ErrNodeAddress},
		{"proto=h without the scheme", "app.test", "127.0.0.1:8000", httpProof, ErrProof},
		{"an unsubscribe as proof", "app.test", "127.0.0.1:3033", unsubProof, ErrProof},
		{"signed with another key", "app.test", "127.0.0.1:3034", forged, ErrSignature},
		{"stale", "app.test", "127.0.0.1:3036", stale, ErrStale},
		{"pool without a key", "nokey.test", "127.0.0.1:3037", nokey, ErrNoKey},
	}
	for _, tc := range cases {
		if err := g.AdmitRelayed([]byte(tc.key), []byte(tc.addr), tc.proof); err != tc.want {
			t.Errorf("%s: AdmitRelayed = %v; want %v", tc.name, err, tc.want)
		}
	}
	// The same proof again, and an older one, are what the router already
	// knows: the key holder's newest word is a subscribe.
	if err := g.AdmitRelayed([]byte("app.test"), []byte("127.0.0.1:3031"), good); err != nil {
		t.Errorf("the same proof again: %v", err)
	}
	older := signed(t, sub("app.test", "127.0.0.1:3031"), s, now.Add(-5*time.Second))
	if err := g.AdmitRelayed([]byte("app.test"), []byte("127.0.0.1:3031"), older); err != nil {
		t.Errorf("an older proof of a node with a newer verified subscribe: %v", err)
	}
	// ... but not a forgery dressed as an older proof once the node left.
	leave := sub("app.test", "127.0.0.1:3031")
	leave.Unsubscribe = true
	if err := g.admit(t, signed(t, leave, s, now.Add(time.Second))); err != nil {
		t.Fatalf("unsubscribe: %v", err)
	}
	if err := g.AdmitRelayed([]byte("app.test"), []byte("127.0.0.1:3031"), good); err != ErrReplay {
		t.Errorf("a subscribe older than the node's unsubscribe: %v; want ErrReplay", err)
	}
	// Nothing of this counted as datagrams.
	for _, r := range reasons {
		if got := g.denied(r); got != 0 {
			t.Errorf("denied{%s} = %v after relays only", r.Reason(), got)
		}
	}
}

// A relayed proof that was verified enters the replay memory: the datagram
// it came from, replayed here later, is refused (as a duplicate when it is
// byte for byte what the peer relayed), and so is anything older.
func TestRelayedProofIsRemembered(t *testing.T) {
	g, s := relayFixture(t)
	now := g.clk.Now()
	d := signed(t, sub("app.test", "127.0.0.1:3031"), s, now)
	if err := g.AdmitRelayed([]byte("app.test"), []byte("127.0.0.1:3031"), d); err != nil {
		t.Fatal(err)
	}
	if err := g.admit(t, d); err != ErrDuplicate {
		t.Errorf("the relayed datagram arriving directly: %v; want ErrDuplicate", err)
	}
	if err := g.admit(t, signed(t, sub("app.test", "127.0.0.1:3031"), s, now.Add(-time.Second))); err != ErrReplay {
		t.Errorf("an older datagram: %v; want ErrReplay", err)
	}
	if err := g.admit(t, signed(t, sub("app.test", "127.0.0.1:3031"), s, now.Add(time.Second))); err != nil {
		t.Errorf("the next announce: %v", err)
	}
	// A datagram accepted directly, arriving again, is a replay as before.
	next := signed(t, sub("app.test", "127.0.0.1:3031"), s, now.Add(2*time.Second))
	if err := g.admit(t, next); err != nil {
		t.Fatal(err)
	}
	if err := g.admit(t, next); err != ErrReplay {
		t.Errorf("a direct datagram twice: %v; want ErrReplay", err)
	}
	if g.denied(ErrDuplicate) != 1 {
		t.Errorf("denied{duplicate} = %v; want 1", g.denied(ErrDuplicate))
	}
}

// The replay memory travels: what SignedTimes reports, RememberSigned
// restores in another Guard (a restart, a binary upgrade, another router),
// which then refuses every datagram not newer, but is not made to trust a
// relayed proof by it.
func TestSignedTimesRoundTrip(t *testing.T) {
	changes := 0
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: keyDir(t, "rsa2048.pub", "app.test"), Tolerance: time.Minute,
		OnChange: func() { changes++ }})
	s := signer(t, crypto.SHA256, "rsa2048.key")
	now := g.clk.Now()
	subscribe := signed(t, sub("app.test", ":3031"), s, now.Add(-2*time.Second))
	leave := sub("app.test", ":3031")
	leave.Unsubscribe = true
	unsubscribe := signed(t, leave, s, now.Add(-time.Second))
	for _, d := range [][]byte{subscribe, unsubscribe} {
		if err := g.admit(t, d); err != nil {
			t.Fatal(err)
		}
	}
	if changes != 2 {
		t.Errorf("OnChange called %d times; want 2", changes)
	}
	type rec struct {
		key, addr string
		unix      int64
		sig       uint64
	}
	var got []rec
	g.SignedTimes(func(k, a string, u int64, sig uint64) { got = append(got, rec{k, a, u, sig}) })
	if len(got) != 1 || got[0] != (rec{"app.test", ":3031", now.Unix(), 0}) { // an unsubscribe is signed at its time + 1, and has no sig
		t.Fatalf("SignedTimes = %+v; want the unsubscribe's time for app.test :3031", got)
	}

	// The next process.
	n := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: keyDir(t, "rsa2048.pub", "app.test"), Tolerance: time.Minute})
	n.clk.ns.Store(g.clk.ns.Load())
	for _, r := range got {
		n.RememberSigned([]byte(r.key), []byte(r.addr), r.unix, r.sig)
	}
	if err := n.admit(t, subscribe); err != ErrReplay {
		t.Errorf("subscribe captured before the restart, replayed after: %v; want ErrReplay", err)
	}
	if err := n.admit(t, unsubscribe); err != ErrReplay {
		t.Errorf("unsubscribe replayed after the restart: %v; want ErrReplay", err)
	}
	// An imported time never stands for a verified subscribe.
	fresh := signed(t, sub("app.test", "10.0.0.1:3031"), s, now)
	n.RememberSigned([]byte("app.test"), []byte("10.0.0.1:3031"), now.Unix()+5, 0)
	if err := n.AdmitRelayed([]byte("app.test"), []byte("10.0.0.1:3031"), fresh); err != ErrReplay {
		t.Errorf("relayed proof no newer than an imported time: %v; want ErrReplay", err)
	}
	// Imports only raise, and ignore what cannot matter.
	n.RememberSigned([]byte("app.test"), []byte(":3031"), now.Unix()-30, 0)
	n.RememberSigned([]byte("old.test"), []byte(":1"), now.Unix()-3600, 0)
	n.RememberSigned([]byte("future.test"), []byte(":1"), now.Unix()+3600, 0)
	n.RememberSigned(bytes.Repeat([]byte("k"), 300), []byte(":1"), now.Unix(), 0)
	got = got[:0]
	n.SignedTimes(func(k, a string, u int64, sig uint64) { got = append(got, rec{k, a, u, sig}) })
	if len(got) != 2 {
		t.Errorf("after bogus imports SignedTimes = %+v; want the 2 real entries", got)
	}
	// Times age out of the report.
	n.clk.Advance(2 * time.Minute)
	got = got[:0]
	n.SignedTimes(func(k, a string, u int64, sig uint64) { got = append(got, rec{k, a, u, sig}) })
	if len(got) != 0 {
		t.Errorf("after the tolerance SignedTimes = %+v; want none", got)
	}
	// Without signatures there is nothing to remember.
	open := newGuard(t, Config{})
	open.RememberSigned([]byte("k"), []byte("a"), now.Unix(), 0)
	open.SignedTimes(func(string, string, int64, uint64) { t.Error("an open guard reported a time") })
}

// Keys and addresses are opaque bytes: the id split is exact for any.
func TestSplitID(t *testing.T) {
	var r replayMemory
	for _, kv := range [][2]string{{"k", "a"}, {"a\x00b", "\x00"}, {"", ""}, {strings.Repeat("x", 255), "/p\x00q"}} {
		k, a := splitID(string(r.id([]byte(kv[0]), []byte(kv[1]))))
		if k != kv[0] || a != kv[1] {
			t.Errorf("splitID(id(%q, %q)) = %q, %q", kv[0], kv[1], k, a)
		}
	}
}

// A key removed from the directory stops relayed admissions at once, even
// for a node the router had verified.
func TestAdmitRelayedFollowsKeyRemoval(t *testing.T) {
	dir := keyDir(t, "rsa2048.pub", "app.test")
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: dir})
	s := signer(t, crypto.SHA256, "rsa2048.key")
	d := signed(t, sub("app.test", "127.0.0.1:3031"), s, g.clk.Now())
	if err := g.admit(t, d); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "app.test.pem")); err != nil {
		t.Fatal(err)
	}
	g.clk.Advance(2 * time.Second) // past the key cache's recheck
	if err := g.AdmitRelayed([]byte("app.test"), []byte("127.0.0.1:3031"), d); err != ErrNoKey {
		t.Errorf("after the key file went: %v; want ErrNoKey (no claim without a key)", err)
	}
}

// A router that learns a peer's memory with its state refuses replays, but
// still admits the very subscribe the peer accepted when the peer relays
// it (a live node seen by a router that joins later); not a subscribe of
// the same second that is not that one, nor an unsubscribe turned into a
// subscribe by its unsigned header byte.
func TestImportedTimeAdmitsThatSubscribeOnly(t *testing.T) {
	a, s := relayFixture(t)
	now := a.clk.Now()
	live := signed(t, sub("app.test", "10.0.0.1:3031"), s, now)
	if err := a.admit(t, live); err != nil {
		t.Fatal(err)
	}
	leave := sub("app.test", "10.0.0.2:3031")
	leave.Unsubscribe = true
	left := signed(t, leave, s, now.Add(-time.Second)) // unix = now
	if err := a.admit(t, left); err != nil {
		t.Fatal(err)
	}
	c, _ := relayFixture(t)
	c.clk.ns.Store(a.clk.ns.Load())
	a.SignedTimes(func(k, addr string, unix int64, sig uint64) { c.RememberSigned([]byte(k), []byte(addr), unix, sig) })

	if err := c.AdmitRelayed([]byte("app.test"), []byte("10.0.0.1:3031"), live); err != nil {
		t.Errorf("the peer's live subscribe, relayed to a router that learnt its time: %v", err)
	}
	if err := c.admit(t, live); err != ErrDuplicate {
		t.Errorf("then the same datagram directly: %v; want ErrDuplicate", err)
	}
	flipped := bytes.Clone(left)
	flipped[3] = 0 // uWSGI's header is not signed: the unsubscribe now says subscribe
	if err := c.AdmitRelayed([]byte("app.test"), []byte("10.0.0.2:3031"), flipped); err != ErrReplay {
		t.Errorf("a flipped unsubscribe relayed: %v; want ErrReplay", err)
	}
	other := sub("app.test", "10.0.0.1:3031")
	other.Weight = 9 // another subscribe signed in the same second
	if err := c.AdmitRelayed([]byte("app.test"), []byte("10.0.0.1:3031"), signed(t, other, s, now)); err != nil {
		t.Errorf("a same-second subscribe after c verified the live one: %v (c holds a claim now)", err)
	}
	d, _ := relayFixture(t)
	d.clk.ns.Store(a.clk.ns.Load())
	a.SignedTimes(func(k, addr string, unix int64, sig uint64) { d.RememberSigned([]byte(k), []byte(addr), unix, sig) })
	if err := d.AdmitRelayed([]byte("app.test"), []byte("10.0.0.1:3031"), signed(t, other, s, now)); err != ErrReplay {
		t.Errorf("a same-second subscribe that is not the one accepted: %v; want ErrReplay", err)
	}
	if err := d.admit(t, live); err != ErrDuplicate {
		t.Errorf("the subscribe whose time d learnt, arriving directly: %v; want ErrDuplicate", err)
	}
	if err := d.admit(t, flipped); err != ErrReplay {
		t.Errorf("the flipped unsubscribe, directly: %v; want ErrReplay", err)
	}
}
