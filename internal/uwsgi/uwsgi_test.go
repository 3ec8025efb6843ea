package uwsgi

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// capturedSubscribe is the datagram uWSGI 2.0.21 sent for
// --subscribe-to 127.0.0.1:4040:example.com with socket 127.0.0.1:3031
// (uwsgi-compat.md §2.2).
func capturedSubscribe(t testing.TB) []byte {
	t.Helper()
	h := strings.NewReplacer(" ", "", "|", "").Replace(
		"e0 6500 00 | 0300 6b6579 0b00 6578616d706c652e636f6d | 0700 61646472657373 0e00 3132372e302e302e313a33303331" +
			"| 0900 6d6f64696669657231 0100 30 | 0900 6d6f64696669657232 0100 30 | 0500 636f726573 0100 31" +
			"| 0400 6c6f6164 0100 30 | 0600 776569676874 0100 30")
	b, err := hex.DecodeString(h)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestCapturedSubscriptionRoundTrip(t *testing.T) {
	pkt := capturedSubscribe(t)
	if len(pkt) != 4+0x65 {
		t.Fatalf("captured packet is %d bytes; want %d", len(pkt), 4+0x65)
	}
	var s Subscription
	if err := ParseSubscription(pkt, &s); err != nil {
		t.Fatal(err)
	}
	if string(s.Key) != "example.com" || string(s.Address) != "127.0.0.1:3031" || s.Cores != 1 ||
		s.Weight != 0 || s.Load != 0 || s.Modifier1 != 0 || s.Unsubscribe {
		t.Fatalf("parsed %+v", s)
	}
	if got := AppendSubscription(nil, &s); !bytes.Equal(got, pkt) {
		t.Fatalf("re-encoded:\n%x\nwant\n%x", got, pkt)
	}
	unsub := append([]byte(nil), pkt...)
	unsub[3] = 1
	s.Unsubscribe = true
	if got := AppendSubscription(nil, &s); !bytes.Equal(got, unsub) {
		t.Fatalf("unsubscribe re-encoded:\n%x\nwant\n%x", got, unsub)
	}
}

func TestPlainRequestRecordLayout(t *testing.T) {
	// uwsgi-compat.md §1.8: GET /plain starts "0e00 REQUEST_METHOD 0300 GET 0b00 REQUEST_URI 0600 /plain".
	b := AppendVarString(nil, "REQUEST_METHOD", "GET")
	b = AppendVarString(b, "REQUEST_URI", "/plain")
	want, _ := hex.DecodeString("0e00" + hex.EncodeToString([]byte("REQUEST_METHOD")) + "0300" + hex.EncodeToString([]byte("GET")) +
		"0b00" + hex.EncodeToString([]byte("REQUEST_URI")) + "0600" + hex.EncodeToString([]byte("/plain")))
	if !bytes.Equal(b, want) {
		t.Fatalf("got %x; want %x", b, want)
	}
}

func TestHeader(t *testing.T) {
	b := AppendHeader(nil, Header{Modifier1: 224, Size: 0x0165, Modifier2: 1})
	if !bytes.Equal(b, []byte{224, 0x65, 0x01, 1}) {
		t.Fatalf("AppendHeader = %x", b)
	}
	h, err := ParseHeader(b)
	if err != nil || h != (Header{224, 0x0165, 1}) {
		t.Fatalf("ParseHeader = %+v, %v", h, err)
	}
	if _, err := ParseHeader(b[:3]); err != ErrShortHeader {
		t.Fatalf("short header err = %v", err)
	}
}

func TestNextVarErrors(t *testing.T) {
	block := AppendVarString(nil, "k", "")
	block = AppendVarString(block, "key", "value")
	if err := ValidVars(block); err != nil {
		t.Fatalf("valid block: %v", err)
	}
	for i := 1; i < len(block); i++ {
		if i == 5 { // a record boundary: the first record alone is valid
			continue
		}
		if err := ValidVars(block[:i]); err == nil {
			t.Errorf("truncated at %d: no error", i)
		}
	}
	if err := ValidVars([]byte{0, 0, 0, 0}); err != ErrEmptyKey {
		t.Errorf("empty key: %v", err)
	}
	dup := AppendVarString(AppendVarString(nil, "A", "1"), "A", "2")
	if err := ValidVars(dup); err != nil {
		t.Errorf("duplicate keys must be legal: %v", err)
	}
}

func TestAppendVarUint(t *testing.T) {
	for _, n := range []uint64{0, 7, 10, 65535, 18446744073709551615} {
		b := AppendVarUint(nil, "n", n)
		_, v, _, err := NextVar(b, 0)
		if err != nil {
			t.Fatal(err)
		}
		if want := formatU(n); string(v) != want {
			t.Errorf("AppendVarUint(%d) value %q; want %q", n, v, want)
		}
	}
}

func formatU(n uint64) string {
	if n == 0 {
		return "0"
	}
	var s []byte
	for n > 0 {
		s = append([]byte{byte('0' + n%10)}, s...)
		n /= 10
	}
	return string(s)
}

func sub(vars ...string) []byte {
	b := []byte{224, 0, 0, 0}
	for i := 0; i < len(vars); i += 2 {
		b = AppendVarString(b, vars[i], vars[i+1])
	}
	return b
}

func TestParseSubscriptionRules(t *testing.T) {
	long := strings.Repeat("k", 256)
	cases := []struct {
		name string
		pkt  []byte
		err  error
	}{
		{"minimal", sub("key", "a", "address", "/s"), nil},
		{"m1 zero accepted", append([]byte{0}, sub("key", "a", "address", "/s")[1:]...), nil},
		{"header size ignored", func() []byte { b := sub("key", "a", "address", "/s"); b[1], b[2] = 0xff, 0xff; return b }(), nil},
		{"unknown keys ignored", sub("key", "a", "zzz", "1", "address", "/s"), nil},
		{"weight not a number", sub("key", "a", "address", "/s", "weight", "abc"), ErrNumber},
		{"modifier1 too big", sub("key", "a", "address", "/s", "modifier1", "256"), ErrNumber},
		{"key too long", sub("key", long, "address", "/s"), ErrKeyLen},
		{"no key", sub("address", "/s"), ErrNoKey},
		{"no address", sub("key", "a"), ErrNoAddress},
		{"sign not last", sub("key", "a", "address", "/s", "sign", "x", "unix", "1"), ErrSignLast},
		{"truncated", sub("key", "a", "address", "/s")[:9], ErrTruncated},
		{"short", []byte{224}, ErrShortHeader},
	}
	for _, tc := range cases {
		var s Subscription
		if err := ParseSubscription(tc.pkt, &s); err != tc.err {
			t.Errorf("%s: err = %v; want %v", tc.name, err, tc.err)
		}
	}
	pkt := sub("key", "a", "address", "/s", "unix", "1700000000", "sign", "SIG")
	var s Subscription
	if err := ParseSubscription(pkt, &s); err != nil {
		t.Fatal(err)
	}
	wantSigned := len(sub("key", "a", "address", "/s", "unix", "1700000000")) - 4
	if !s.HasUnix || s.Unix != 1700000000 || string(s.Sign) != "SIG" || s.SignedLen != wantSigned {
		t.Fatalf("signed: %+v; want SignedLen %d", s, wantSigned)
	}
	cmd := sub("key", "a", "address", "/s")
	cmd[3] = 5
	if err := ParseSubscription(cmd, &s); err != nil || !s.Unsubscribe {
		t.Fatalf("cmd 5 must unsubscribe: %v %v", err, s.Unsubscribe)
	}
}

func BenchmarkParseSubscription(b *testing.B) {
	pkt := capturedSubscribe(b)
	var s Subscription
	b.ReportAllocs()
	for b.Loop() {
		if err := ParseSubscription(pkt, &s); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEncodeVars(b *testing.B) {
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf = encodeTypical(buf[:0])
	}
}

func encodeTypical(buf []byte) []byte {
	buf = append(buf, 0, 0, 0, 0)
	for _, kv := range [][2]string{
		{"REQUEST_METHOD", "GET"}, {"REQUEST_URI", "/items?id=1"}, {"PATH_INFO", "/items"},
		{"QUERY_STRING", "id=1"}, {"SERVER_PROTOCOL", "HTTP/1.1"}, {"SCRIPT_NAME", ""},
		{"SERVER_NAME", "example.com"}, {"SERVER_PORT", "8080"}, {"REMOTE_ADDR", "192.0.2.1"},
		{"REQUEST_SCHEME", "http"}, {"HTTP_HOST", "example.com"}, {"HTTP_USER_AGENT", "curl/8"},
		{"HTTP_ACCEPT", "*/*"}, {"HTTP_ACCEPT_ENCODING", "gzip"}, {"HTTP_COOKIE", "a=b; c=d"},
		{"HTTP_X_FORWARDED_FOR", "192.0.2.1"}, {"HTTP_X_FORWARDED_PROTO", "http"},
		{"HTTP_X_REQUEST_ID", "0123456789abcdef"}, {"HTTP_CONNECTION", "keep-alive"},
	} {
		buf = AppendVarString(buf, kv[0], kv[1])
	}
	buf = AppendVarUint(buf, "REMOTE_PORT", 51234)
	PutHeader(buf, Header{Size: uint16(len(buf) - 4)})
	return buf
}
