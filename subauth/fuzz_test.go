package subauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// FuzzAdmit runs arbitrary datagrams through the parser and a Guard that
// requires SHA256 signatures, with an RSA key for "app.test" and an Ed25519
// key for "ed.test". Properties: it never panics; it admits a datagram only
// if the datagram carries a fresh unix time and a signature that verifies,
// checked independently here with the keys themselves, over exactly the
// bytes before the final sign record; and it never admits the same datagram
// twice. Seeds are valid signed datagrams, so mutations probe tampering with
// every part of them.
func FuzzAdmit(f *testing.F) {
	rsaS := signer(f, crypto.SHA256, "rsa2048.key")
	edS := signer(f, crypto.SHA256, "ed25519.key")
	rsaPub, _, err := ParsePublicKey(readTestdata(f, "rsa2048.pub"))
	if err != nil {
		f.Fatal(err)
	}
	_, edPub, err := ParsePublicKey(readTestdata(f, "ed25519.pub"))
	if err != nil {
		f.Fatal(err)
	}
	dir := keyDir(f, "rsa2048.pub", "app.test")
	if err := os.WriteFile(filepath.Join(dir, KeyFile([]byte("ed.test"))), readTestdata(f, "ed25519.pub"), 0o644); err != nil {
		f.Fatal(err)
	}
	g := newGuard(f, Config{Hash: crypto.SHA256, KeyDir: dir})
	now := g.clk.Now()

	f.Add(signed(f, sub("app.test", "127.0.0.1:3031"), rsaS, now))
	f.Add(signed(f, sub("ed.test", "[::1]:3031"), edS, now))
	un := sub("app.test", "127.0.0.1:3031")
	un.Unsubscribe = true
	f.Add(signed(f, un, rsaS, now))
	dr := sub("ed.test", "/run/x.sock")
	dr.Drain, dr.DrainTimeout, dr.Notify = true, 5, []byte("/n")
	f.Add(signed(f, dr, edS, now))
	f.Add(uwsgi.AppendSubscription(nil, &uwsgi.Subscription{Key: []byte("app.test"), Address: []byte("1.2.3.4:5")}))

	f.Fuzz(func(t *testing.T, datagram []byte) {
		var s uwsgi.Subscription
		if uwsgi.ParseSubscription(datagram, &s) != nil {
			return
		}
		g.seen.m = map[string]*seen{} // each input starts with no history
		err := g.Admit(&s, datagram, s.Address)
		if err != nil {
			if d, ok := err.(*Denial); !ok || g.Guard.denied[d] == nil {
				t.Fatalf("Admit returned %v, not a counted reason", err)
			}
			return
		}
		if !s.HasUnix || s.Sign == nil {
			t.Fatal("admitted without unix and sign")
		}
		if u := int64(s.Unix); u < now.Unix()-60 || u > now.Unix()+60 {
			t.Fatalf("admitted unix %d, now %d", s.Unix, now.Unix())
		}
		msg := datagram[uwsgi.HeaderLen : uwsgi.HeaderLen+s.SignedLen]
		switch KeyFile(s.Key) {
		case KeyFile([]byte("app.test")):
			sum := sha256.Sum256(msg)
			if rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, sum[:], s.Sign) != nil {
				t.Fatal("admitted an RSA signature that does not verify")
			}
		case KeyFile([]byte("ed.test")):
			if !ed25519.Verify(edPub, msg, s.Sign) {
				t.Fatal("admitted an Ed25519 signature that does not verify")
			}
		default:
			t.Fatalf("admitted key %q, which has no key file", s.Key)
		}
		if err := g.Admit(&s, datagram, s.Address); err != ErrReplay {
			t.Fatalf("the same datagram again: %v; want ErrReplay", err)
		}
	})
}

// FuzzAdmitRelayed runs arbitrary proofs, for an arbitrary entry address,
// through AdmitRelayed (a cluster peer's relay). Properties: it never
// panics; it admits only a signed subscribe for the entry's key whose
// signature verifies with that key's file (checked here independently),
// whose announced address names the entry's address, and whose time is
// fresh; and an admitted proof leaves a time in the replay memory that a
// datagram at or before it cannot pass.
func FuzzAdmitRelayed(f *testing.F) {
	rsaS := signer(f, crypto.SHA256, "rsa2048.key")
	rsaPub, _, err := ParsePublicKey(readTestdata(f, "rsa2048.pub"))
	if err != nil {
		f.Fatal(err)
	}
	g := newGuard(f, Config{Hash: crypto.SHA256, KeyDir: keyDir(f, "rsa2048.pub", "app.test")})
	now := g.clk.Now()
	f.Add(signed(f, sub("app.test", "127.0.0.1:3031"), rsaS, now), "127.0.0.1:3031")
	f.Add(signed(f, sub("app.test", ":3031"), rsaS, now), "10.0.0.1:3031")
	h := sub("app.test", "[::1]:80")
	h.Proto = []byte("http")
	f.Add(signed(f, h, rsaS, now), "http://[::1]:80")
	f.Add([]byte{224, 0, 0, 0}, "127.0.0.1:1")

	f.Fuzz(func(t *testing.T, proof []byte, address string) {
		g.seen.m = map[string]*seen{} // each input starts with no history
		if g.AdmitRelayed([]byte("app.test"), []byte(address), proof) != nil {
			return
		}
		var s uwsgi.Subscription
		if err := uwsgi.ParseSubscription(proof, &s); err != nil {
			t.Fatalf("admitted a proof that does not parse: %v", err)
		}
		if s.Unsubscribe || !s.HasUnix || s.Sign == nil || string(s.Key) != "app.test" {
			t.Fatalf("admitted %+v", s)
		}
		if u := int64(s.Unix); u < now.Unix()-60 || u > now.Unix()+60 {
			t.Fatalf("admitted unix %d, now %d", s.Unix, now.Unix())
		}
		sum := sha256.Sum256(proof[uwsgi.HeaderLen : uwsgi.HeaderLen+s.SignedLen])
		if rsa.VerifyPKCS1v15(rsaPub, crypto.SHA256, sum[:], s.Sign) != nil {
			t.Fatal("admitted a proof whose signature does not verify")
		}
		a := string(s.Address)
		if s.IsHTTP() && !strings.HasPrefix(strings.ToLower(a), "http://") {
			a = "http://" + a
		}
		if !strings.HasSuffix(strings.ToLower(address), strings.ToLower(strings.TrimPrefix(a, "http://"))) {
			t.Fatalf("admitted proof for %q as the node %q", s.Address, address)
		}
		if err := g.Admit(&s, proof, s.Address); err != ErrDuplicate {
			t.Fatalf("the admitted proof as a datagram: %v; want ErrDuplicate", err)
		}
	})
}
