package cluster

import (
	"crypto"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/subauth"
)

// edKey is an Ed25519 key pair: a signer and its public key file content.
func edKey(t *testing.T) (*subauth.Signer, []byte) { return edKeyTB(t) }

func edKeyTB(t testing.TB) (*subauth.Signer, []byte) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	p8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	s, err := subauth.NewSigner(crypto.SHA256, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: p8}))
	if err != nil {
		t.Fatal(err)
	}
	spki, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return s, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: spki})
}

// signingGuard is a Guard that requires signatures, with pub as the key of
// each of keys, and allows nodes only in allow (any when empty).
func signingGuard(t *testing.T, pub []byte, keys []string, allow ...string) *subauth.Guard {
	return signingGuardTB(t, pub, keys, allow...)
}

func signingGuardTB(t testing.TB, pub []byte, keys []string, allow ...string) *subauth.Guard {
	t.Helper()
	dir := t.TempDir()
	for _, k := range keys {
		if err := os.WriteFile(filepath.Join(dir, subauth.KeyFile([]byte(k))), pub, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var nodes []netip.Prefix
	for _, a := range allow {
		nodes = append(nodes, netip.MustParsePrefix(a))
	}
	g, err := subauth.New(subauth.Config{Hash: crypto.SHA256, KeyDir: dir, Nodes: nodes})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// signedDatagram is a subscribe for (key, addr) signed by s now.
func signedDatagram(t *testing.T, s *subauth.Signer, key, addr string) []byte {
	t.Helper()
	d, err := subauth.AppendSigned(nil, &uwsgi.Subscription{Key: []byte(key), Address: []byte(addr), Weight: 1}, s, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// Router b checks --node-allow and signatures, router a checks nothing.
// Nodes a relays reach b's table only if b's own rules admit them, on the
// signed datagram a relays with each entry; refusals count by reason.
func TestPeerEntriesMeetAdmission(t *testing.T) {
	t.Parallel()
	signer, pub := edKey(t)
	forger, _ := edKey(t)
	guard := signingGuard(t, pub, []string{"signed.test"}, "10.0.0.0/8")
	a := newTestRouter(t, "a", routerOpts{})
	reg := prometheus.NewRegistry()
	b := newTestRouter(t, "b", routerOpts{join: []string{a.c.Addr()}, admission: guard, signed: guard, reg: reg})
	waitMembers(t, 2, a, b)

	withProof := func(d []byte) func(*balancer.Announce) { return func(an *balancer.Announce) { an.Proof = d } }
	announceAt(t, a, "signed.test", "192.168.1.1:1", withProof(signedDatagram(t, signer, "signed.test", "192.168.1.1:1")))
	announceAt(t, a, "signed.test", "10.0.0.1:1", nil)
	announceAt(t, a, "signed.test", "10.0.0.3:1", withProof(signedDatagram(t, forger, "signed.test", "10.0.0.3:1")))
	announceAt(t, a, "signed.test", "10.0.0.4:1", withProof(signedDatagram(t, signer, "signed.test", "10.0.0.99:1")))
	announceAt(t, a, "nokey.test", "10.0.0.5:1", withProof(signedDatagram(t, signer, "nokey.test", "10.0.0.5:1")))
	good := signedDatagram(t, signer, "signed.test", "10.0.0.2:1")
	announceAt(t, a, "signed.test", "10.0.0.2:1", withProof(good))
	waitState(t, 5*time.Second, "signed.test", "10.0.0.2:1", "active", b)

	denied := func(reason string) float64 {
		return testutil.ToFloat64(b.c.m.denied.WithLabelValues(reason))
	}
	waitFor(t, 5*time.Second, "every refusal counted at b", func() bool {
		return denied("node_address") >= 1 && denied("unsigned") >= 1 && denied("signature") >= 1 &&
			denied("proof") >= 1 && denied("no_key") >= 1
	})
	for _, addr := range []string{"192.168.1.1:1", "10.0.0.1:1", "10.0.0.3:1", "10.0.0.4:1"} {
		if st := b.state("signed.test", addr); st != "absent" {
			t.Errorf("b: node %s is %s; want refused", addr, st)
		}
		if st := a.state("signed.test", addr); st != "active" {
			t.Errorf("a (no rules): node %s is %s; want active", addr, st)
		}
	}
	if b.table.Pool("nokey.test") != nil {
		t.Error("b: pool without a public key created from a peer")
	}
	// The proof b verified is in b's replay memory: the same datagram sent
	// to b directly is not applied twice.
	var s uwsgi.Subscription
	if err := uwsgi.ParseSubscription(good, &s); err != nil {
		t.Fatal(err)
	}
	if err := guard.Admit(&s, good, s.Address); err != subauth.ErrDuplicate {
		t.Errorf("b: the relayed datagram, direct: %v; want ErrDuplicate", err)
	}
	// A node refused for want of a proof is admitted once a signed
	// announce for it arrives at a.
	announceAt(t, a, "signed.test", "10.0.0.1:1", withProof(signedDatagram(t, signer, "signed.test", "10.0.0.1:1")))
	waitState(t, 5*time.Second, "signed.test", "10.0.0.1:1", "active", b)
	if n, err := testutil.GatherAndCount(reg, "fastrouter_cluster_denied_total"); err != nil || n < 5 {
		t.Errorf("fastrouter_cluster_denied_total: %d series, %v", n, err)
	}
}

// The replay memory travels with the full state: a router that joins
// learns the newest signed time every peer accepted, and refuses a replay
// of anything older (the datagram itself included).
func TestReplayMemoryTravelsOnJoin(t *testing.T) {
	t.Parallel()
	signer, pub := edKey(t)
	ga := signingGuard(t, pub, []string{"signed.test"})
	a := newTestRouter(t, "a", routerOpts{admission: ga, signed: ga})
	d := signedDatagram(t, signer, "signed.test", ":3031")
	var s uwsgi.Subscription
	if err := uwsgi.ParseSubscription(d, &s); err != nil {
		t.Fatal(err)
	}
	if err := ga.Admit(&s, d, s.Address); err != nil {
		t.Fatal(err)
	}
	gc := signingGuard(t, pub, []string{"signed.test"})
	c := newTestRouter(t, "c", routerOpts{join: []string{a.c.Addr()}, admission: gc, signed: gc})
	waitMembers(t, 2, a, c)
	waitFor(t, 5*time.Second, "a's replay memory at c", func() bool {
		found := false
		gc.SignedTimes(func(k, addr string, unix int64, _ uint64) {
			found = found || k == "signed.test" && addr == ":3031" && unix == int64(s.Unix)
		})
		return found
	})
	if err := gc.Admit(&s, d, s.Address); err != subauth.ErrDuplicate {
		t.Errorf("c: the datagram a accepted, replayed to c: %v; want ErrDuplicate", err)
	}
	older, err := subauth.AppendSigned(nil, &uwsgi.Subscription{Key: []byte("signed.test"), Address: []byte(":3031"), Weight: 1},
		signer, time.Now().Add(-5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := uwsgi.ParseSubscription(older, &s); err != nil {
		t.Fatal(err)
	}
	if err := gc.Admit(&s, older, s.Address); err != subauth.ErrReplay {
		t.Errorf("c: an older datagram: %v; want ErrReplay", err)
	}
}

// A full state from an older router (no signed section) and one whose
// signed section is garbage: entries still merge, the section is refused.
func TestSignedSectionOptional(t *testing.T) {
	now := time.Unix(1700000000, 0)
	c := newStateOnly(t, "x", func() time.Time { return now })
	mem := &fakeMemory{}
	c.cfg.Signed = mem
	raw := appendUvarint(nil, 1)
	raw = appendStr(raw, "a.test")
	raw = appendUvarint(raw, 1)
	raw = appendEntry(raw, now.UnixNano(), &entry{addr: "10.0.0.1:1", lastSeen: now.UnixNano(), attrs: attrs{weight: 1}})
	if _, _, err := c.mergeState(c.z.sealState(now.UnixNano(), raw)); err != nil {
		t.Fatalf("state without a signed section: %v", err)
	}
	bad := appendSigned(raw[:len(raw):len(raw)], 1, appendSignedRec(nil, "", ":1", 1, 1)) // a record with an empty key
	if _, _, err := c.mergeState(c.z.sealState(now.UnixNano(), bad)); err == nil {
		t.Fatal("signed record with an empty key accepted")
	}
	rec := appendSigned(raw[:len(raw):len(raw)], 1, appendSignedRec(nil, "a.test", ":1", now.Unix(), 7))
	if _, _, err := c.mergeState(c.z.sealState(now.UnixNano(), rec)); err != nil {
		t.Fatal(err)
	}
	if got := mem.get("a.test", ":1"); got != (memRec{now.Unix(), 7}) {
		t.Errorf("remembered %+v; want %d, sig 7", got, now.Unix())
	}
}

// proofAfter orders proofs by signed time, then bytes; garbage and far-
// future times lose to every real proof.
func TestProofRegister(t *testing.T) {
	const limit = 1700000100
	p := func(unix uint64) []byte { return sampleProof("k", ":1", unix) }
	cases := []struct {
		name string
		a, b []byte
		want bool
	}{
		{"newer", p(1700000002), p(1700000001), true},
		{"older", p(1700000001), p(1700000002), false},
		{"same", p(1700000001), p(1700000001), false},
		{"nil never wins", nil, p(1), false},
		{"anything beats nil", []byte{9}, nil, true},
		{"garbage loses", []byte{9}, p(1700000001), false},
		{"real beats garbage", p(1), []byte{9}, true},
		{"far future loses", p(limit + 1), p(1700000001), false},
	}
	for _, tc := range cases {
		if got := proofAfter(tc.a, tc.b, limit); got != tc.want {
			t.Errorf("%s: proofAfter = %v; want %v", tc.name, got, tc.want)
		}
	}
}

// A router that joins a signing cluster later admits the live signed nodes
// the others accepted: the proof that comes with each entry is the very
// datagram whose time came with the state's replay memory.
func TestJoinerAdmitsLiveSignedNodes(t *testing.T) {
	t.Parallel()
	signer, pub := edKey(t)
	keys := []string{"live.test"}
	ga := signingGuard(t, pub, keys)
	a := newTestRouter(t, "a", routerOpts{admission: ga, signed: ga})
	for _, addr := range []string{"10.0.0.1:3031", "10.0.0.2:3031"} {
		d := signedDatagram(t, signer, "live.test", addr)
		var s uwsgi.Subscription
		if err := uwsgi.ParseSubscription(d, &s); err != nil {
			t.Fatal(err)
		}
		if err := ga.Admit(&s, d, s.Address); err != nil {
			t.Fatal(err)
		}
		announceAt(t, a, "live.test", addr, func(an *balancer.Announce) { an.Proof = d })
	}
	gc := signingGuard(t, pub, keys)
	reg := prometheus.NewRegistry()
	c := newTestRouter(t, "c", routerOpts{join: []string{a.c.Addr()}, admission: gc, signed: gc, reg: reg})
	waitMembers(t, 2, a, c)
	waitState(t, 5*time.Second, "live.test", "10.0.0.1:3031", "active", c)
	waitState(t, 5*time.Second, "live.test", "10.0.0.2:3031", "active", c)
	if n, _ := testutil.GatherAndCount(reg, "fastrouter_cluster_denied_total"); n != 0 {
		t.Errorf("c refused live signed nodes: %d denied series", n)
	}
}
