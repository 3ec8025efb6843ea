//go:build !race

package balancer

import (
	"fmt"
	"testing"
)

func TestHotPathAllocatesNothing(t *testing.T) {
	tb, clk := newTable(t, Config{})
	for i := 0; i < 16; i++ {
		announce(t, tb, "example.com", fmt.Sprintf("10.0.0.%d:1", i+1), uint64(i%3+1))
	}
	announce(t, tb, "*.wild.com", "10.0.1.1:1", 1)
	for _, host := range []string{"example.com", "EXAMPLE.com", "example.com:8080", "a.wild.com"} {
		h := []byte(host)
		if n := testing.AllocsPerRun(200, func() { tb.Lookup(h) }); n != 0 {
			t.Errorf("Lookup(%s): %v allocs/op", host, n)
		}
	}
	p := tb.Pool("example.com")
	now := clk.Now().UnixNano()
	if n := testing.AllocsPerRun(200, func() { p.Pick(now, nil).Done() }); n != 0 {
		t.Errorf("Pick+Done: %v allocs/op", n)
	}
	a := &Announce{Key: []byte("example.com"), Address: []byte("10.0.0.3:1"), Weight: 2}
	if n := testing.AllocsPerRun(200, func() { tb.Announce(a) }); n != 0 {
		t.Errorf("Announce refresh: %v allocs/op", n)
	}
}
