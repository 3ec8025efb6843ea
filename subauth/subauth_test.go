package subauth

import (
	"bytes"
	"crypto"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

func TestKeyFile(t *testing.T) {
	for key, want := range map[string]string{
		"test.uwsgi.it:8000": "test.uwsgi.it_8000.pem", // uWSGI core/ssl.c uwsgi_sanitize_cert_filename
		"example.com":        "example.com.pem",
		"*.w.test":           "_.w.test.pem",
		"../../etc/passwd":   ".._.._etc_passwd.pem",
		"a b\x00c/é":         "a_b_c___.pem", // bytes, not runes, as uWSGI
		"Az09._-":            "Az09._-.pem",
	} {
		if got := KeyFile([]byte(key)); got != want {
			t.Errorf("KeyFile(%q) = %q; want %q", key, got, want)
		}
	}
}

func TestParseSignCheck(t *testing.T) {
	for _, tc := range []struct {
		in   string
		h    crypto.Hash
		dir  string
		fail bool
	}{
		{in: "SHA1:/k", h: crypto.SHA1, dir: "/k"},
		{in: "sha256:/etc/keys", h: crypto.SHA256, dir: "/etc/keys"},
		{in: "SHA384:rel", h: crypto.SHA384, dir: "rel"},
		{in: "SHA2-512:/k:x", h: crypto.SHA512, dir: "/k:x"},
		{in: "MD5:/k", fail: true},
		{in: "SHA256", fail: true},
		{in: "SHA256:", fail: true},
	} {
		h, dir, err := ParseSignCheck(tc.in)
		if (err != nil) != tc.fail || h != tc.h || dir != tc.dir {
			t.Errorf("ParseSignCheck(%q) = %v, %q, %v", tc.in, h, dir, err)
		}
	}
}

// Signatures are what OpenSSL makes: RSA PKCS#1 v1.5 is deterministic, so
// the Signer must reproduce, byte for byte, what `openssl dgst -DIGEST
// -sign` (the EVP_Sign* calls uWSGI's uwsgi_rsa_sign makes) produced for
// the same key and message; and the keys parse in every form openssl
// writes.
func TestSignaturesMatchOpenSSL(t *testing.T) {
	msg := readTestdata(t, "msg.bin")
	for _, tc := range []struct {
		name string
		h    crypto.Hash
	}{{"sha1", crypto.SHA1}, {"sha256", crypto.SHA256}, {"sha384", crypto.SHA384}, {"sha512", crypto.SHA512}} {
		want := readTestdata(t, "msg."+tc.name+".sig")
		for _, keyFile := range []string{"rsa2048.key", "rsa2048.pkcs1.key"} {
			got, err := signer(t, tc.h, keyFile).Sign(msg)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s with %s: signature differs from openssl's", tc.name, keyFile)
			}
		}
		for _, pubFile := range []string{"rsa2048.pub", "rsa2048.pkcs1.pub"} {
			rk, _, err := ParsePublicKey(readTestdata(t, pubFile))
			if err != nil {
				t.Fatal(err)
			}
			pk := &pubKey{rsa: rk}
			if !pk.verify(tc.h, msg, want) {
				t.Errorf("%s: openssl's signature does not verify with %s", tc.name, pubFile)
			}
			if pk.verify(tc.h, append([]byte("x"), msg...), want) {
				t.Errorf("%s: verified a different message", tc.name)
			}
		}
	}
	_, ek, err := ParsePublicKey(readTestdata(t, "ed25519.pub"))
	if err != nil {
		t.Fatal(err)
	}
	if !(&pubKey{ed: ek}).verify(0, msg, readTestdata(t, "msg.ed25519.sig")) {
		t.Error("openssl's Ed25519 signature does not verify")
	}
	got, _ := signer(t, crypto.SHA256, "ed25519.key").Sign(msg)
	if !bytes.Equal(got, readTestdata(t, "msg.ed25519.sig")) { // Ed25519 is deterministic too
		t.Error("Ed25519 signature differs from openssl's")
	}
}

func TestSignedDatagramAdmitted(t *testing.T) {
	for _, tc := range []struct {
		name     string
		h        crypto.Hash
		key, pub string
	}{
		{"rsa-sha1", crypto.SHA1, "rsa2048.key", "rsa2048.pub"},
		{"rsa-sha256", crypto.SHA256, "rsa2048.key", "rsa2048.pub"},
		{"rsa-sha384", crypto.SHA384, "rsa2048.pkcs1.key", "rsa2048.pkcs1.pub"},
		{"rsa-sha512", crypto.SHA512, "rsa2048.key", "rsa2048.pub"},
		{"ed25519", crypto.SHA256, "ed25519.key", "ed25519.pub"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGuard(t, Config{Hash: tc.h, KeyDir: keyDir(t, tc.pub, "app.test:8080")})
			s := signer(t, tc.h, tc.key)
			d := signed(t, sub("app.test:8080", "127.0.0.1:3031"), s, g.clk.Now())
			if err := g.admit(t, d); err != nil {
				t.Fatalf("signed datagram denied: %v", err)
			}
			// The layout is uWSGI's: unix then sign, last.
			var ps uwsgi.Subscription
			_ = uwsgi.ParseSubscription(d, &ps)
			if !ps.HasUnix || ps.Unix != uint64(g.clk.Now().Unix()) || ps.Sign == nil {
				t.Fatalf("unix %v %d sign %d bytes", ps.HasUnix, ps.Unix, len(ps.Sign))
			}
			k, _, next, _ := uwsgi.NextVar(d[4:], ps.SignedLen)
			if string(k) != "sign" || next != len(d)-4 {
				t.Fatal("sign is not the last record")
			}
		})
	}
}

func TestSignatureDenials(t *testing.T) {
	dir := keyDir(t, "rsa2048.pub", "app.test")
	// A key of another kind (Ed25519) signing for a name whose file holds
	// the RSA key.
	other, err := NewSigner(crypto.SHA256, readTestdata(t, "ed25519.key"))
	if err != nil {
		t.Fatal(err)
	}
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: dir})
	s := signer(t, crypto.SHA256, "rsa2048.key")
	now := g.clk.Now()
	good := func() []byte { return signed(t, sub("app.test", "127.0.0.1:3031"), s, now) }

	unsigned := uwsgi.AppendSubscription(nil, &uwsgi.Subscription{Key: []byte("app.test"), Address: []byte("127.0.0.1:3031")})
	unixOnly := uwsgi.AppendSubscription(nil, &uwsgi.Subscription{Key: []byte("app.test"), Address: []byte("127.0.0.1:3031"),
		HasUnix: true, Unix: uint64(now.Unix())})
	tampered := good()
	tampered[bytes.Index(tampered, []byte("3031"))+3] = '2' // address 127.0.0.1:3032, signature unchanged
	wrongDigest := signed(t, sub("app.test", "127.0.0.1:3031"), signer(t, crypto.SHA1, "rsa2048.key"), now)
	otherKey := signed(t, sub("app.test", "127.0.0.1:3031"), other, now)
	noKeyFile := signed(t, sub("nokey.test", "127.0.0.1:3031"), s, now)
	truncatedSig := good()
	truncatedSig = truncatedSig[:len(truncatedSig)-1]
	for _, tc := range []struct {
		name string
		d    []byte
		want error
	}{
		{"unsigned", unsigned, ErrUnsigned},
		{"unix without sign", unixOnly, ErrUnsigned},
		{"tampered address", tampered, ErrSignature},
		{"signed with SHA1, checked with SHA256", wrongDigest, ErrSignature},
		{"signed by another key", otherKey, ErrSignature},
		{"no key file", noKeyFile, ErrNoKey},
	} {
		if err := g.admit(t, tc.d); err != tc.want {
			t.Errorf("%s: %v; want %v", tc.name, err, tc.want)
		}
	}
	var ps uwsgi.Subscription
	if err := uwsgi.ParseSubscription(truncatedSig, &ps); err == nil {
		// The sign record now overruns the datagram: parsing fails, so the
		// server counts it invalid before the guard sees it.
		t.Errorf("truncated signature parsed")
	}
	if err := g.admit(t, good()); err != nil {
		t.Fatalf("good datagram after the denials: %v", err)
	}
	for reason, want := range map[*Denial]float64{ErrUnsigned: 2, ErrSignature: 3, ErrNoKey: 1, ErrReplay: 0} {
		if got := g.denied(reason); got != want {
			t.Errorf("denied{%v} = %v; want %v", reason, got, want)
		}
	}
}

func TestFreshnessAndReplay(t *testing.T) {
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: keyDir(t, "rsa2048.pub", "app.test"), Tolerance: 60 * time.Second})
	s := signer(t, crypto.SHA256, "rsa2048.key")
	now := g.clk.Now()
	at := func(d time.Duration, unsub bool) []byte {
		x := sub("app.test", "127.0.0.1:3031")
		x.Unsubscribe = unsub
		return signed(t, x, s, now.Add(d))
	}
	steps := []struct {
		name string
		d    []byte
		want error
	}{
		{"older than tolerance", at(-61*time.Second, false), ErrStale},
		{"further ahead than tolerance", at(61*time.Second, false), ErrStale},
		{"at the edge of the past", at(-60*time.Second, false), nil},
		{"newer", at(-30*time.Second, false), nil},
		{"the same again (replay)", at(-30*time.Second, false), ErrReplay},
		{"older but fresh", at(-40*time.Second, false), ErrReplay},
		{"now", at(0, false), nil},
		{"unsubscribe (unix = now+1)", at(0, true), nil},
		{"replayed subscribe after unsubscribe", at(0, false), ErrReplay},
		{"replayed unsubscribe", at(0, true), ErrReplay},
		{"next announce", at(2*time.Second, false), nil},
	}
	for _, st := range steps {
		if err := g.admit(t, st.d); err != st.want {
			t.Errorf("%s: %v; want %v", st.name, err, st.want)
		}
	}
	// Another address of the same key, and the same address under another
	// key, have their own history.
	other := sub("app.test", "127.0.0.1:3032")
	if err := g.admit(t, signed(t, other, s, now)); err != nil {
		t.Errorf("other address: %v", err)
	}
	// Memory outlives the tolerance window only as long as it matters: once
	// the last accepted time is older than the tolerance, the freshness
	// check alone refuses a replay, and the entry may go.
	replay := at(2*time.Second, false)
	g.clk.Advance(3 * time.Minute)
	if err := g.admit(t, replay); err != ErrStale {
		t.Errorf("replay after the window: %v; want stale", err)
	}
}

func TestReplayMemoryBounded(t *testing.T) {
	dir := keyDir(t, "rsa2048.pub", "app.test")
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: dir, MaxRemembered: 3, Tolerance: 10 * time.Second})
	s := signer(t, crypto.SHA256, "rsa2048.key")
	for i := range 3 {
		if err := g.admit(t, signed(t, sub("app.test", fmt.Sprintf("127.0.0.1:%d", 3000+i)), s, g.clk.Now())); err != nil {
			t.Fatal(err)
		}
	}
	d := signed(t, sub("app.test", "127.0.0.1:4000"), s, g.clk.Now())
	if err := g.admit(t, d); err != ErrFull {
		t.Fatalf("fourth pair with three fresh ones remembered: %v; want ErrFull", err)
	}
	// Known pairs still refresh while full.
	if err := g.admit(t, signed(t, sub("app.test", "127.0.0.1:3000"), s, g.clk.Now().Add(time.Second))); err != nil {
		t.Fatalf("refresh of a remembered pair while full: %v", err)
	}
	g.clk.Advance(11 * time.Second) // 3001 and 3002 are now older than the tolerance
	if err := g.admit(t, signed(t, sub("app.test", "127.0.0.1:4000"), s, g.clk.Now())); err != nil {
		t.Fatalf("after the old entries aged out: %v", err)
	}
	if n := g.seen.len(); n > 3 {
		t.Fatalf("memory holds %d entries; max 3", n)
	}
}

func TestKeyFilesFollowTheDirectory(t *testing.T) {
	dir := t.TempDir()
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: dir})
	rsaS := signer(t, crypto.SHA256, "rsa2048.key")
	edS := signer(t, crypto.SHA256, "ed25519.key")
	path := filepath.Join(dir, "app.test.pem")
	tick := 0
	try := func(s *Signer) error {
		tick++
		return g.admit(t, signed(t, sub("app.test", "127.0.0.1:3031"), s, g.clk.Now().Add(time.Duration(tick)*time.Second)))
	}
	if err := try(rsaS); err != ErrNoKey {
		t.Fatalf("no file: %v", err)
	}
	os.WriteFile(path, readTestdata(t, "rsa2048.pub"), 0o644)
	if err := try(rsaS); err != nil {
		t.Fatalf("key added: %v", err)
	}
	// Replaced by an Ed25519 key: the RSA signer stops working once the
	// file is looked at again (at most keyRecheck later).
	os.WriteFile(path, readTestdata(t, "ed25519.pub"), 0o644)
	os.Chtimes(path, time.Now().Add(time.Hour), time.Now().Add(time.Hour))
	g.clk.Advance(keyRecheck)
	if err := try(rsaS); err != ErrSignature {
		t.Fatalf("RSA after the switch to Ed25519: %v", err)
	}
	if err := try(edS); err != nil {
		t.Fatalf("Ed25519 after the switch: %v", err)
	}
	// A broken file is no key (and logged once, not per datagram).
	os.WriteFile(path, []byte("not a key"), 0o644)
	os.Chtimes(path, time.Now().Add(2*time.Hour), time.Now().Add(2*time.Hour))
	g.clk.Advance(keyRecheck)
	if err := try(edS); err != ErrNoKey {
		t.Fatalf("broken file: %v", err)
	}
	os.Remove(path)
	g.clk.Advance(keyRecheck)
	if err := try(edS); err != ErrNoKey {
		t.Fatalf("removed file: %v", err)
	}
	if len(g.keys.m) != 0 {
		t.Fatalf("cache keeps %d entries for removed files", len(g.keys.m))
	}
}

func TestAllowSource(t *testing.T) {
	g := newGuard(t, Config{Sources: []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::1/128"),
		netip.MustParsePrefix("::ffff:192.0.2.0/120")}})
	for src, want := range map[string]bool{
		"10.1.2.3:999":               true,
		"[::ffff:10.1.2.3]:999":      true, // dual-stack socket
		"10.2.0.1:999":               false,
		"[::1]:1":                    true,
		"127.0.0.1:1":                false,
		"192.0.2.9:5":                true, // a v4-mapped prefix matches plain v4
		"[2001:db8::1]:1":            false,
		"[fe80::1%eth0]:1":           false,
		"[::ffff:169.254.169.254]:1": false,
	} {
		if got := g.AllowSource(netip.MustParseAddrPort(src)); got != want {
			t.Errorf("AllowSource(%s) = %v; want %v", src, got, want)
		}
	}
	if !g.AllowSource(netip.AddrPort{}) {
		t.Error("unix socket source refused")
	}
	if got := g.denied(ErrSource); got != 5 {
		t.Errorf("denied{source} = %v; want 5", got)
	}
	if !newGuard(t, Config{}).AllowSource(netip.MustParseAddrPort("203.0.113.1:1")) {
		t.Error("no allow-list refused a source")
	}
}

func TestNodeAllow(t *testing.T) {
	g := newGuard(t, Config{Nodes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")}})
	for addr, want := range map[string]error{
		"10.0.0.5:3031":          nil,
		"[fd00::5]:3031":         nil,
		"[::ffff:10.0.0.5]:3031": nil,
		"http://10.9.9.9:80":     nil,
		"169.254.169.254:80":     ErrNodeAddress, // cloud metadata
		"127.0.0.1:9191":         ErrNodeAddress, // the router's own admin API
		"[::1]:9191":             ErrNodeAddress,
		"/run/app.sock":          ErrNodeAddress, // unix paths need no allow-list entry... and are refused once one is set
		"@abstract":              ErrNodeAddress,
		"node.internal:3031":     ErrNodeAddress,
		"http://169.254.169.254": ErrNodeAddress,
	} {
		s := sub("k", addr)
		if err := g.Admit(&s, nil, []byte(addr)); err != want {
			t.Errorf("%s: %v; want %v", addr, err, want)
		}
	}
	// An unsubscribe only removes: never refused for its address.
	s := sub("k", "169.254.169.254:80")
	s.Unsubscribe = true
	if err := g.Admit(&s, nil, s.Address); err != nil {
		t.Errorf("unsubscribe: %v", err)
	}
	// Without a list, anything goes.
	open := newGuard(t, Config{})
	u := sub("k", "/run/app.sock")
	if err := open.Admit(&u, nil, u.Address); err != nil {
		t.Errorf("no list: %v", err)
	}
	if got := g.denied(ErrNodeAddress); got != 7 {
		t.Errorf("denied{node_address} = %v; want 7", got)
	}
}

func TestNewValidates(t *testing.T) {
	file := filepath.Join(t.TempDir(), "f")
	os.WriteFile(file, nil, 0o644)
	for name, cfg := range map[string]Config{
		"hash without dir":  {Hash: crypto.SHA256},
		"dir without hash":  {KeyDir: t.TempDir()},
		"missing dir":       {Hash: crypto.SHA256, KeyDir: "/nonexistent/keys"},
		"dir is a file":     {Hash: crypto.SHA256, KeyDir: file},
		"tolerance < 1s":    {Tolerance: time.Millisecond},
		"negative memory":   {MaxRemembered: -1},
		"zero-value prefix": {Sources: []netip.Prefix{{}}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLoadSigner(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o600)
		return p
	}
	rsaKey := write("rsa.pem", readTestdata(t, "rsa2048.pkcs1.key"))
	if _, err := LoadSigner("SHA256:" + rsaKey); err != nil {
		t.Errorf("PKCS#1 RSA: %v", err)
	}
	for name, spec := range map[string]string{
		"no colon":   rsaKey,
		"bad digest": "MD5:" + rsaKey,
		"no file":    "SHA256:" + filepath.Join(dir, "none"),
		"public key": "SHA256:" + write("pub.pem", readTestdata(t, "rsa2048.pub")),
		"encrypted":  "SHA256:" + write("enc.pem", []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")),
	} {
		if _, err := LoadSigner(spec); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// Every denial is one of the exported errors, and counting it never panics.
func TestReasonsCoverEveryError(t *testing.T) {
	g := newGuard(t, Config{})
	for _, r := range reasons {
		if g.Guard.denied[r] == nil {
			t.Errorf("%v has no counter", r)
		}
	}
}

// uWSGI's signature leaves the header (and so the command) unsigned; a
// datagram from AppendSigned also signs a "cmd" var, so flipping the header
// byte of a captured subscribe cannot make it an unsubscribe.
func TestSignedCommand(t *testing.T) {
	g := newGuard(t, Config{Hash: crypto.SHA256, KeyDir: keyDir(t, "rsa2048.pub", "app.test")})
	s := signer(t, crypto.SHA256, "rsa2048.key")
	d := signed(t, sub("app.test", "127.0.0.1:3031"), s, g.clk.Now())
	flipped := bytes.Clone(d)
	flipped[3] = 1
	if err := g.admit(t, flipped); err != ErrCommand {
		t.Fatalf("subscribe with its command byte flipped: %v; want ErrCommand", err)
	}
	if err := g.admit(t, d); err != nil {
		t.Fatalf("the genuine datagram after the forgery: %v", err)
	}
	// A uWSGI-style signed datagram (no cmd var) still passes either way:
	// there is nothing to check it against.
	x := sub("app.test", "127.0.0.1:3032")
	x.HasUnix, x.Unix = true, uint64(g.clk.Now().Unix())
	base := uwsgi.AppendSubscriptionVars(nil, &x)
	sig, _ := s.Sign(base)
	x.Sign = sig
	if err := g.admit(t, uwsgi.AppendSubscription(nil, &x)); err != nil {
		t.Fatalf("uWSGI layout: %v", err)
	}
	if got := g.denied(ErrCommand); got != 1 {
		t.Fatalf("denied{command} = %v", got)
	}
}
