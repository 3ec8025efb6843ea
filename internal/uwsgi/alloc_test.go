//go:build !race

package uwsgi

import "testing"

// Allocation gates: the encoder and the subscription parser run per request
// and per datagram and must not allocate (house style §5, Tests). The race
// detector allocates, hence the build tag.

func TestEncodeAllocatesNothing(t *testing.T) {
	buf := make([]byte, 0, 4096)
	buf = encodeRequest(buf)
	if err := ValidVars(buf[HeaderLen:]); err != nil {
		t.Fatalf("encodeRequest built a bad block: %v", err)
	}
	if recs, _ := decodeAll(buf[HeaderLen:]); len(recs) < 20 {
		t.Fatalf("encodeRequest wrote %d vars; want about 20", len(recs))
	}
	if n := testing.AllocsPerRun(1000, func() { buf = encodeRequest(buf) }); n != 0 {
		t.Errorf("encoding %d bytes of vars: %v allocs/op; want 0", len(buf), n)
	}
	block := buf[HeaderLen:]
	if n := testing.AllocsPerRun(1000, func() { _ = ValidVars(block) }); n != 0 {
		t.Errorf("ValidVars: %v allocs/op; want 0", n)
	}
}

func TestParseSubscriptionAllocatesNothing(t *testing.T) {
	for _, tc := range []struct {
		name string
		pkt  []byte
	}{
		{"captured", capturedSubscribe()},
		{"full signed, long values", fullSubscription()},
		{"bad number", with("weight", "abc")},
		{"truncated", capturedSubscribe()[:50]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var s Subscription
			if n := testing.AllocsPerRun(1000, func() { _ = ParseSubscription(tc.pkt, &s) }); n != 0 {
				t.Errorf("ParseSubscription: %v allocs/op; want 0", n)
			}
		})
	}
}

func TestAppendSubscriptionAllocatesNothing(t *testing.T) {
	var s Subscription
	if err := ParseSubscription(fullSubscription(), &s); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(1000, func() { buf = AppendSubscription(buf[:0], &s) }); n != 0 {
		t.Errorf("AppendSubscription into a preallocated buffer: %v allocs/op; want 0", n)
	}
}
