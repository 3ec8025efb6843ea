package uwsgi

import (
	"bytes"
	"testing"
)

// FuzzVars: decoding never panics, and re-encoding the records of a valid
// block reproduces it byte for byte.
func FuzzVars(f *testing.F) {
	f.Add(capturedSubscribe(f)[4:])
	f.Add(AppendVarString(nil, "k", ""))
	f.Add([]byte{0, 0})
	f.Add([]byte{1, 0, 'a', 5, 0, 'b'})
	f.Fuzz(func(t *testing.T, b []byte) {
		var out []byte
		for off := 0; off < len(b); {
			k, v, next, err := NextVar(b, off)
			if err != nil {
				if ValidVars(b) == nil && len(b) <= MaxVarsSize {
					t.Fatalf("NextVar failed at %d but ValidVars accepted the block", off)
				}
				return
			}
			if next <= off {
				t.Fatalf("no progress at %d", off)
			}
			out = AppendVar(out, k, v)
			off = next
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoded %x; want %x", out, b)
		}
	})
}

// FuzzParseSubscription: parsing never panics, and parse∘encode∘parse
// gives the same fields as parse.
func FuzzParseSubscription(f *testing.F) {
	f.Add(capturedSubscribe(f))
	f.Add(sub("key", "a", "address", ":3031", "drain", "1", "backup", "2", "algo", "lrc", "notify", "/n"))
	f.Add(sub("key", "a", "address", "/s", "unix", "1", "sign", "xx"))
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var s1 Subscription
		if ParseSubscription(pkt, &s1) != nil {
			return
		}
		enc := AppendSubscription(nil, &s1)
		var s2 Subscription
		if err := ParseSubscription(enc, &s2); err != nil {
			t.Fatalf("re-encoded packet rejected: %v\n%x", err, enc)
		}
		// SignedLen depends on the layout, which encoding normalises.
		s1.SignedLen, s2.SignedLen = 0, 0
		if !subEqual(&s1, &s2) {
			t.Fatalf("round trip changed fields:\n%+v\n%+v", s1, s2)
		}
	})
}

func subEqual(a, b *Subscription) bool {
	eq := bytes.Equal
	return a.Unsubscribe == b.Unsubscribe && eq(a.Key, b.Key) && eq(a.Address, b.Address) &&
		a.Modifier1 == b.Modifier1 && a.Modifier2 == b.Modifier2 && a.Cores == b.Cores &&
		a.Load == b.Load && a.Weight == b.Weight && eq(a.SNIKey, b.SNIKey) && eq(a.SNICrt, b.SNICrt) &&
		eq(a.SNICA, b.SNICA) && eq(a.Notify, b.Notify) && a.HasUnix == b.HasUnix && a.Unix == b.Unix &&
		eq(a.Sign, b.Sign) && a.Drain == b.Drain && a.DrainTimeout == b.DrainTimeout &&
		a.Backup == b.Backup && eq(a.Algo, b.Algo)
}
