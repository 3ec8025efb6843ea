//go:build !race

package uwsgi

import "testing"

func TestEncodeAndParseAllocateNothing(t *testing.T) {
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = encodeTypical(buf[:0]) }); n != 0 {
		t.Errorf("encoding vars: %v allocs/op; want 0", n)
	}
	pkt := capturedSubscribe(t)
	var s Subscription
	if n := testing.AllocsPerRun(100, func() { _ = ParseSubscription(pkt, &s) }); n != 0 {
		t.Errorf("ParseSubscription: %v allocs/op; want 0", n)
	}
}
