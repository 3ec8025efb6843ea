package uwsgi

import (
	"bytes"
	"testing"
)

// Fuzz targets. Seeds are the table cases; crashers that `go test -fuzz`
// finds land in testdata/fuzz/<Target>/ and are replayed by plain `go test`.
// Run nightly with -fuzztime=5m.
//
// Seeds larger than maxSeed (the 64 KiB table cases) are left out: the
// fuzzer minimises every new interesting input for up to a minute, and on
// inputs that size it stalls at 0 execs/s. The table tests cover them.
const maxSeed = 4096

func addVarsSeeds(f *testing.F) {
	for _, tc := range varsCases() {
		if len(tc.block) <= maxSeed {
			f.Add(tc.block)
		}
	}
	for _, tc := range subCases() {
		if len(tc.pkt) >= HeaderLen {
			f.Add(tc.pkt[HeaderLen:])
		}
	}
}

// FuzzNextVar: NextVar at any in-range offset never panics, returns only its
// sentinel errors, and on success returns a non-empty key and the value as
// capacity-limited sub-slices of the input, with next just past the record.
func FuzzNextVar(f *testing.F) {
	for _, tc := range varsCases() {
		if len(tc.block) > maxSeed {
			continue
		}
		f.Add(tc.block, uint16(0))
		if len(tc.block) > 1 {
			f.Add(tc.block, uint16(len(tc.block)/2))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte, off16 uint16) {
		off := int(off16) % (len(b) + 1)
		k, v, next, err := NextVar(b, off)
		if err != nil {
			if err != ErrTruncated && err != ErrEmptyKey {
				t.Fatalf("NextVar(%d) error %v is not a sentinel", off, err)
			}
			if k != nil || v != nil {
				t.Fatalf("NextVar(%d) returned slices with error %v", off, err)
			}
			return
		}
		kl, vl := len(k), len(v)
		if kl == 0 {
			t.Fatalf("NextVar(%d) returned an empty key without error", off)
		}
		if next != off+VarLen(kl, vl) || next > len(b) {
			t.Fatalf("NextVar(%d) next = %d; want %d (len %d)", off, next, off+VarLen(kl, vl), len(b))
		}
		if want := AppendVar(nil, k, v); !bytes.Equal(b[off:next], want) {
			t.Fatalf("record bytes % x; re-encoded % x", b[off:next], want)
		}
		if cap(k) != kl || cap(v) != vl {
			t.Fatalf("cap(key) = %d, cap(val) = %d; want %d, %d", cap(k), cap(v), kl, vl)
		}
		if kl > 0 && &k[0] != &b[off+2] || vl > 0 && &v[0] != &b[off+4+kl] {
			t.Fatal("key/value do not alias the input at the record")
		}
	})
}

// FuzzVars: walking a block never panics, the walk fails exactly when
// ValidVars does (apart from ValidVars' size limit), and re-encoding the
// records of a valid block gives the identical bytes.
func FuzzVars(f *testing.F) {
	addVarsSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		recs, walkErr := decodeAll(b)
		valid := ValidVars(b)
		switch {
		case walkErr != nil && valid != walkErr && !(len(b) > MaxVarsSize && valid == ErrTooLarge):
			t.Fatalf("walk error %v but ValidVars = %v", walkErr, valid)
		case walkErr == nil && len(b) <= MaxVarsSize && valid != nil:
			t.Fatalf("walk succeeded but ValidVars = %v", valid)
		case walkErr == nil && len(b) > MaxVarsSize && valid != ErrTooLarge:
			t.Fatalf("%d-byte block: ValidVars = %v; want ErrTooLarge", len(b), valid)
		}
		if walkErr != nil {
			return
		}
		out := []byte{}
		for _, r := range recs {
			out = AppendVarString(out, r.k, r.v)
		}
		if !bytes.Equal(out, b) {
			t.Fatalf("re-encoded\n% x\nwant\n% x", out, b)
		}
	})
}

// FuzzParseSubscription: parsing never panics and fails only with the
// package's sentinel errors. When it succeeds, encoding the result and
// parsing that again yields exactly the same Subscription, with two fields
// that depend on the layout of the original datagram rather than on its
// content re-derived:
//
//   - SignedLen: the original's sign record may come after unknown keys or
//     numbers with leading zeros, so its offset is not preserved. In the
//     re-encoded datagram it is len(AppendSubscriptionVars(s)) when Sign is
//     set, and 0 when it is not.
//   - Unsubscribe is preserved but the command byte is normalised to 1.
//
// HasUnix, Unix, the presence (nil or not) of every optional byte field and
// Drain (written as "1") are preserved exactly. The re-encoded datagram is
// also a fixed point: encoding its parse gives the same bytes.
func FuzzParseSubscription(f *testing.F) {
	for _, tc := range subCases() {
		f.Add(tc.pkt)
	}
	f.Fuzz(func(t *testing.T, pkt []byte) {
		var s1 Subscription
		if err := ParseSubscription(pkt, &s1); err != nil {
			switch err {
			case ErrShortHeader, ErrTruncated, ErrEmptyKey, ErrNoKey, ErrNoAddress, ErrKeyLen,
				ErrAddressLen, ErrNumber, ErrSignLast:
			default:
				t.Fatalf("error %v is not a sentinel", err)
			}
			return
		}
		if len(s1.Key) == 0 || len(s1.Key) > MaxKeyLen || len(s1.Address) == 0 || len(s1.Address) > MaxAddressLen {
			t.Fatalf("accepted key %q / address %q", s1.Key, s1.Address)
		}
		if s1.Unsubscribe != (pkt[3] != 0) {
			t.Fatalf("Unsubscribe = %v for command byte %d", s1.Unsubscribe, pkt[3])
		}
		if s1.Sign != nil {
			// The sign record is the last one and starts at SignedLen.
			v := pkt[HeaderLen:]
			k, sv, next, err := NextVar(v, s1.SignedLen)
			if err != nil || string(k) != "sign" || !bytes.Equal(sv, s1.Sign) || next != len(v) {
				t.Fatalf("SignedLen %d does not point at a final sign record", s1.SignedLen)
			}
		} else if s1.SignedLen != 0 {
			t.Fatalf("SignedLen = %d without a sign", s1.SignedLen)
		}

		enc := AppendSubscription(nil, &s1)
		h, _ := ParseHeader(enc)
		var cmd uint8
		if s1.Unsubscribe {
			cmd = 1
		}
		if h.Modifier1 != ModSubscription || h.Modifier2 != cmd ||
			(len(enc)-HeaderLen <= MaxVarsSize && int(h.Size) != len(enc)-HeaderLen) {
			t.Fatalf("encoded header %+v for %d vars bytes", h, len(enc)-HeaderLen)
		}
		var s2 Subscription
		if err := ParseSubscription(enc, &s2); err != nil {
			t.Fatalf("re-encoded datagram rejected: %v\n% x", err, enc)
		}
		want := s1
		want.SignedLen = 0
		if s1.Sign != nil {
			want.SignedLen = len(AppendSubscriptionVars(nil, &s1))
		}
		if !subEqual(&s2, &want) {
			t.Fatalf("round trip changed fields:\ngot  %s\nwant %s", fmtSub(&s2), fmtSub(&want))
		}
		if again := AppendSubscription(nil, &s2); !bytes.Equal(again, enc) {
			t.Fatalf("encoding is not a fixed point:\n% x\n% x", again, enc)
		}
	})
}
