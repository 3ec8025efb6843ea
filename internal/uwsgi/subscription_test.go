package uwsgi

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// capturedHex is the datagram uWSGI 2.0.21 sent for
// --subscribe-to 127.0.0.1:4040:example.com with its socket on
// 127.0.0.1:3031 (built by uWSGI's core/subscription.c uwsgi_subscription_ub).
const capturedHex = `e0 6500 00 | 0300 6b6579 0b00 6578616d706c652e636f6d | 0700 61646472657373 0e00 3132372e302e302e313a33303331
| 0900 6d6f64696669657231 0100 30 | 0900 6d6f64696669657232 0100 30 | 0500 636f726573 0100 31
| 0400 6c6f6164 0100 30 | 0600 776569676874 0100 30`

func capturedSubscribe() []byte { return unhex(capturedHex) }

// capturedUnsubscribe is the same packet with command byte 1.
func capturedUnsubscribe() []byte {
	b := capturedSubscribe()
	b[3] = 1
	return b
}

// datagram builds a subscription datagram with a correct header size.
func datagram(m1, m2 uint8, kv ...string) []byte {
	v := vars(kv...)
	return append(AppendHeader(nil, Header{Modifier1: m1, Size: uint16(len(v)), Modifier2: m2}), v...)
}

// sub is a subscribe datagram (m1 224, m2 0).
func sub(kv ...string) []byte { return datagram(ModSubscription, 0, kv...) }

// base is the minimal valid announce.
var base = []string{"key", "a", "address", "/s"}

func with(kv ...string) []byte { return sub(append(append([]string{}, base...), kv...)...) }

// subEqual compares every field, including whether an optional byte field
// was present (non-nil) or absent (nil): presence is what AppendSubscription
// encodes.
func subEqual(a, b *Subscription) bool {
	eq := func(x, y []byte) bool { return bytes.Equal(x, y) && (x == nil) == (y == nil) }
	return a.Unsubscribe == b.Unsubscribe && eq(a.Key, b.Key) && eq(a.Address, b.Address) &&
		a.Modifier1 == b.Modifier1 && a.Modifier2 == b.Modifier2 && a.Cores == b.Cores &&
		a.Load == b.Load && a.Weight == b.Weight && eq(a.SNIKey, b.SNIKey) && eq(a.SNICrt, b.SNICrt) &&
		eq(a.SNICA, b.SNICA) && eq(a.Notify, b.Notify) && a.HasUnix == b.HasUnix && a.Unix == b.Unix &&
		eq(a.Sign, b.Sign) && a.SignedLen == b.SignedLen && a.Drain == b.Drain &&
		a.DrainTimeout == b.DrainTimeout && a.Backup == b.Backup && eq(a.Algo, b.Algo) && eq(a.Proto, b.Proto)
}

func fmtSub(s *Subscription) string {
	return fmt.Sprintf("{unsub:%v key:%q addr:%q m1:%d m2:%d cores:%d load:%d weight:%d sni:%q,%q,%q notify:%q unix:%v/%d sign:%q/%d drain:%v/%d backup:%d algo:%q proto:%q}",
		s.Unsubscribe, s.Key, s.Address, s.Modifier1, s.Modifier2, s.Cores, s.Load, s.Weight,
		s.SNIKey, s.SNICrt, s.SNICA, s.Notify, s.HasUnix, s.Unix, s.Sign, s.SignedLen,
		s.Drain, s.DrainTimeout, s.Backup, s.Algo, s.Proto)
}

func bs(s string) []byte { return []byte(s) }

func TestCapturedSubscription(t *testing.T) {
	pkt := capturedSubscribe()
	if len(pkt) != HeaderLen+0x65 {
		t.Fatalf("captured packet is %d bytes; want %d", len(pkt), HeaderLen+0x65)
	}
	want := Subscription{
		Key: bs("example.com"), Address: bs("127.0.0.1:3031"),
		Modifier1: 0, Modifier2: 0, Cores: 1, Load: 0, Weight: 0,
	}
	var s Subscription
	if err := ParseSubscription(pkt, &s); err != nil || !subEqual(&s, &want) {
		t.Fatalf("ParseSubscription(captured) = %s, %v; want %s", fmtSub(&s), err, fmtSub(&want))
	}
	if got := AppendSubscription(nil, &s); !bytes.Equal(got, pkt) {
		t.Fatalf("AppendSubscription =\n% x\nwant the captured bytes\n% x", got, pkt)
	}
	if got := AppendSubscriptionVars(nil, &s); !bytes.Equal(got, pkt[HeaderLen:]) {
		t.Fatalf("AppendSubscriptionVars =\n% x\nwant\n% x", got, pkt[HeaderLen:])
	}

	// The unsubscribe packet differs only in byte 3.
	unsub := capturedUnsubscribe()
	var u Subscription
	want.Unsubscribe = true
	if err := ParseSubscription(unsub, &u); err != nil || !subEqual(&u, &want) {
		t.Fatalf("ParseSubscription(unsubscribe) = %s, %v; want %s", fmtSub(&u), err, fmtSub(&want))
	}
	s.Unsubscribe = true
	got := AppendSubscription(nil, &s)
	if len(got) != len(pkt) {
		t.Fatalf("unsubscribe is %d bytes; want %d", len(got), len(pkt))
	}
	for i := range got {
		if i == 3 {
			if got[i] != 1 {
				t.Errorf("unsubscribe byte 3 = %d; want 1", got[i])
			}
		} else if got[i] != pkt[i] {
			t.Errorf("unsubscribe differs from subscribe at byte %d (%#x vs %#x)", i, got[i], pkt[i])
		}
	}
}

// subCase is a datagram and its parse. The cases also seed
// FuzzParseSubscription.
type subCase struct {
	name string
	pkt  []byte
	err  error
	// check, if set, inspects a successful parse.
	check func(t *testing.T, s *Subscription)
}

func wantFields(want Subscription) func(*testing.T, *Subscription) {
	return func(t *testing.T, s *Subscription) {
		t.Helper()
		if !subEqual(s, &want) {
			t.Errorf("parsed %s\nwant   %s", fmtSub(s), fmtSub(&want))
		}
	}
}

func subCases() []subCase {
	k255, k256 := strings.Repeat("k", 255), strings.Repeat("k", 256)
	minimal := Subscription{Key: bs("a"), Address: bs("/s")}
	m := func(f func(*Subscription)) Subscription { s := minimal; f(&s); return s }

	headerOnly := AppendHeader(nil, Header{Modifier1: 224})
	sizeFFFF := with()
	sizeFFFF[1], sizeFFFF[2] = 0xff, 0xff
	size0 := with()
	size0[1], size0[2] = 0, 0
	signedExtra := sub("key", "a", "zzz", "junk", "address", "/s", "unix", "1700000000", "sign", "SIG")

	return []subCase{
		{"captured subscribe", capturedSubscribe(), nil, nil},
		{"captured unsubscribe", capturedUnsubscribe(), nil, nil},
		{"minimal", with(), nil, wantFields(minimal)},
		{"m1 0 accepted", datagram(0, 0, base...), nil, wantFields(minimal)},
		{"m1 is never checked", datagram(123, 0, base...), nil, wantFields(minimal)},
		{"cmd 1 unsubscribes", datagram(224, 1, base...), nil, wantFields(m(func(s *Subscription) { s.Unsubscribe = true }))},
		{"cmd 5 unsubscribes", datagram(224, 5, base...), nil, wantFields(m(func(s *Subscription) { s.Unsubscribe = true }))},
		{"header size 0xffff ignored", sizeFFFF, nil, wantFields(minimal)},
		{"header size 0 ignored", size0, nil, wantFields(minimal)},
		{"unknown keys ignored", sub("zzz", "1", "key", "a", "KEY", "B", "vassal", "v", "address", "/s", "clear", "1"),
			nil, wantFields(minimal)},
		{"proto kept", sub("key", "a", "address", "/s", "proto", "http"),
			nil, wantFields(m(func(s *Subscription) { s.Proto = bs("http") }))},
		{"later duplicate wins", with("key", "b", "weight", "1", "weight", "2"),
			nil, wantFields(m(func(s *Subscription) { s.Key, s.Weight = bs("b"), 2 }))},
		{"all numbers", with("modifier1", "5", "modifier2", "255", "cores", "8", "load", "12", "weight", "0"),
			nil, wantFields(m(func(s *Subscription) { s.Modifier1, s.Modifier2, s.Cores, s.Load = 5, 255, 8, 12 }))},
		{"leading zeros", with("weight", "007"), nil, wantFields(m(func(s *Subscription) { s.Weight = 7 }))},
		{"19 digits", with("load", "9999999999999999999"), nil, wantFields(m(func(s *Subscription) { s.Load = 9999999999999999999 }))},
		{"20 digits", with("load", "10000000000000000000"), ErrNumber, nil},
		{"weight=abc", with("weight", "abc"), ErrNumber, nil},
		{"weight empty", with("weight", ""), ErrNumber, nil},
		{"weight negative", with("weight", "-1"), ErrNumber, nil},
		{"weight plus sign", with("weight", "+1"), ErrNumber, nil},
		{"weight space", with("weight", " 1"), ErrNumber, nil},
		{"cores decimal point", with("cores", "1.5"), ErrNumber, nil},
		{"load hex", with("load", "0x10"), ErrNumber, nil},
		{"modifier1 255", with("modifier1", "255"), nil, wantFields(m(func(s *Subscription) { s.Modifier1 = 255 }))},
		{"modifier1 256", with("modifier1", "256"), ErrNumber, nil},
		{"modifier2 999", with("modifier2", "999"), ErrNumber, nil},
		{"unix not a number", with("unix", "now"), ErrNumber, nil},
		{"drain_timeout not a number", with("drain_timeout", "30s"), ErrNumber, nil},
		{"backup not a number", with("backup", "x"), ErrNumber, nil},
		{"key 255 bytes", sub("key", k255, "address", "/s"), nil, wantFields(Subscription{Key: bs(k255), Address: bs("/s")})},
		{"key 256 bytes", sub("key", k256, "address", "/s"), ErrKeyLen, nil},
		{"no key", sub("address", "/s"), ErrNoKey, nil},
		{"empty key value", sub("key", "", "address", "/s"), ErrNoKey, nil},
		{"no address", sub("key", "a"), ErrNoAddress, nil},
		{"empty address", sub("key", "a", "address", ""), ErrNoAddress, nil},
		{"address 255 bytes", sub("key", "a", "address", "/"+k255[1:]), nil, nil},
		{"address 256 bytes", sub("key", "a", "address", "/"+k255), ErrAddressLen, nil},
		{"header only", headerOnly, ErrNoKey, nil},
		{"empty", []byte{}, ErrShortHeader, nil},
		{"three bytes", []byte{224, 0, 0}, ErrShortHeader, nil},
		{"truncated record", with()[:9], ErrTruncated, nil},
		{"trailing byte", append(with(), 0), ErrTruncated, nil},
		{"empty var key", append(with(), 0, 0, 0, 0), ErrEmptyKey, nil},
		{"sni and notify", with("sni_key", "/k.pem", "sni_crt", "/c.pem", "sni_ca", "/ca.pem", "notify", "/tmp/n.sock"),
			nil, wantFields(m(func(s *Subscription) {
				s.SNIKey, s.SNICrt, s.SNICA, s.Notify = bs("/k.pem"), bs("/c.pem"), bs("/ca.pem"), bs("/tmp/n.sock")
			}))},
		{"empty optional values are present", with("sni_key", "", "notify", "", "algo", ""),
			nil, wantFields(m(func(s *Subscription) { s.SNIKey, s.Notify, s.Algo = bs(""), bs(""), bs("") }))},
		{"extensions", with("drain", "1", "drain_timeout", "30", "backup", "2", "algo", "lrc"),
			nil, wantFields(m(func(s *Subscription) { s.Drain, s.DrainTimeout, s.Backup, s.Algo = true, 30, 2, bs("lrc") }))},
		{"drain=0", with("drain", "0"), nil, wantFields(minimal)},
		{"drain empty", with("drain", ""), nil, wantFields(minimal)},
		{"drain=yes", with("drain", "yes"), nil, wantFields(m(func(s *Subscription) { s.Drain = true }))},
		{"signed", with("unix", "1700000000", "sign", "SIG"), nil, wantFields(m(func(s *Subscription) {
			s.HasUnix, s.Unix, s.Sign, s.SignedLen = true, 1700000000, bs("SIG"), len(vars(append(base, "unix", "1700000000")...))
		}))},
		{"signed, unknown key covered", signedExtra, nil, wantFields(m(func(s *Subscription) {
			s.HasUnix, s.Unix, s.Sign = true, 1700000000, bs("SIG")
			s.SignedLen = len(vars("key", "a", "zzz", "junk", "address", "/s", "unix", "1700000000"))
		}))},
		{"empty sign", with("sign", ""), nil, wantFields(m(func(s *Subscription) { s.Sign, s.SignedLen = bs(""), len(vars(base...)) }))},
		{"unix without sign", with("unix", "5"), nil, wantFields(m(func(s *Subscription) { s.HasUnix, s.Unix = true, 5 }))},
		{"sign not last", with("sign", "x", "unix", "1"), ErrSignLast, nil},
		{"sign twice", with("sign", "x", "sign", "y"), ErrSignLast, nil},
		{"sign before key", sub("sign", "x", "key", "a", "address", "/s"), ErrSignLast, nil},
		{"sign followed by garbage", append(with("sign", "x"), 1), ErrTruncated, nil},
	}
}

func TestParseSubscription(t *testing.T) {
	for _, tc := range subCases() {
		t.Run(tc.name, func(t *testing.T) {
			var s Subscription
			err := ParseSubscription(tc.pkt, &s)
			if err != tc.err {
				t.Fatalf("ParseSubscription(% .60x) error = %v; want %v", tc.pkt, err, tc.err)
			}
			if err == nil && tc.check != nil {
				tc.check(t, &s)
			}
		})
	}
}

func TestParseSubscriptionResets(t *testing.T) {
	var s Subscription
	full := with("cores", "4", "notify", "/n", "drain", "1", "unix", "1", "sign", "x")
	if err := ParseSubscription(full, &s); err != nil {
		t.Fatal(err)
	}
	if err := ParseSubscription(with(), &s); err != nil {
		t.Fatal(err)
	}
	if want := (Subscription{Key: bs("a"), Address: bs("/s")}); !subEqual(&s, &want) {
		t.Errorf("second parse kept fields of the first: %s", fmtSub(&s))
	}
	if err := ParseSubscription([]byte{1}, &s); err != ErrShortHeader || s.Key != nil {
		t.Errorf("failed parse left %s, %v; want a zero Subscription", fmtSub(&s), err)
	}
}

// TestSignedLen checks that SignedLen is the offset of the sign record in
// the vars, so vars[:SignedLen] is exactly what a signature covers.
func TestSignedLen(t *testing.T) {
	s := Subscription{
		Key: bs("example.com"), Address: bs("127.0.0.1:3031"), Cores: 1,
		Notify: bs("/tmp/n"), HasUnix: true, Unix: 1700000001, Sign: bs("\x00\x01signature\xff"),
	}
	pkt := AppendSubscription(nil, &s)
	var got Subscription
	if err := ParseSubscription(pkt, &got); err != nil {
		t.Fatal(err)
	}
	covered := AppendSubscriptionVars(nil, &s)
	if got.SignedLen != len(covered) {
		t.Fatalf("SignedLen = %d; want %d", got.SignedLen, len(covered))
	}
	if !bytes.Equal(pkt[HeaderLen:HeaderLen+got.SignedLen], covered) {
		t.Fatalf("signed bytes = % x; want % x", pkt[HeaderLen:HeaderLen+got.SignedLen], covered)
	}
	if rest := pkt[HeaderLen+got.SignedLen:]; !bytes.Equal(rest, vars("sign", string(s.Sign))) {
		t.Fatalf("after the signed bytes: % x; want the sign record", rest)
	}
	s.SignedLen = got.SignedLen
	if !subEqual(&got, &s) {
		t.Fatalf("round trip: %s; want %s", fmtSub(&got), fmtSub(&s))
	}
}

// TestAppendSubscriptionOrder checks the record order of a fully populated
// subscription: the uWSGI 2.0 order (core/subscription.c
// uwsgi_subscription_ub), extensions after
// the standard keys, unix and sign last.
func TestAppendSubscriptionOrder(t *testing.T) {
	s := Subscription{
		Key: bs("k"), Address: bs("/s"), Modifier1: 5, Modifier2: 6, Cores: 7, Load: 8, Weight: 9,
		SNIKey: bs("sk"), SNICrt: bs("sc"), SNICA: bs("sa"), Notify: bs("n"),
		Drain: true, DrainTimeout: 30, Backup: 2, Algo: bs("lrc"),
		HasUnix: true, Unix: 100, Sign: bs("sig"),
	}
	pkt := AppendSubscription([]byte("prefix"), &s)
	if !bytes.HasPrefix(pkt, []byte("prefix")) {
		t.Fatalf("dst prefix lost: %q", pkt)
	}
	pkt = pkt[len("prefix"):]
	h, _ := ParseHeader(pkt)
	if want := (Header{Modifier1: ModSubscription, Size: uint16(len(pkt) - HeaderLen)}); h != want {
		t.Errorf("header %+v; want %+v", h, want)
	}
	got, err := decodeAll(pkt[HeaderLen:])
	if err != nil {
		t.Fatal(err)
	}
	want := []record{
		{"key", "k"}, {"address", "/s"}, {"modifier1", "5"}, {"modifier2", "6"}, {"cores", "7"}, {"load", "8"},
		{"weight", "9"}, {"sni_key", "sk"}, {"sni_crt", "sc"}, {"sni_ca", "sa"}, {"notify", "n"},
		{"drain", "1"}, {"drain_timeout", "30"}, {"backup", "2"}, {"algo", "lrc"}, {"unix", "100"}, {"sign", "sig"},
	}
	if !equalRecords(got, want) {
		t.Errorf("records\n%q\nwant\n%q", got, want)
	}

	// Optional fields are written only when set; the seven standard ones
	// always are.
	minPkt := AppendSubscription(nil, &Subscription{Key: bs("k"), Address: bs("/s")})
	got, _ = decodeAll(minPkt[HeaderLen:])
	want = []record{{"key", "k"}, {"address", "/s"}, {"modifier1", "0"}, {"modifier2", "0"}, {"cores", "0"}, {"load", "0"}, {"weight", "0"}}
	if !equalRecords(got, want) {
		t.Errorf("minimal records %q; want %q", got, want)
	}
}
