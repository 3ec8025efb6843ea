package quicsock

import (
	"testing"
)

// want is the steering rule of the package doc in plain Go.
func want(prefix byte, d []byte) int {
	switch {
	case len(d) == 0:
		return oldIndex // the program's load past the end
	case d[0]&longHeaderBit != 0:
		return newIndex
	case len(d) < 2:
		return oldIndex
	case d[1] == prefix:
		return oldIndex
	}
	return newIndex
}

func TestPick(t *testing.T) {
	for _, tc := range []struct {
		name string
		d    []byte
		want int
	}{
		{"initial", []byte{0xc3, 0, 0, 0, 1, 8, 7, 7, 7, 7}, newIndex},
		{"handshake", []byte{0xe0, 0, 0, 0, 1}, newIndex},
		{"short, old prefix", []byte{0x41, 7, 1, 2, 3}, oldIndex},
		{"short, other prefix", []byte{0x41, 8, 1, 2, 3}, newIndex},
		{"short, no DCID byte", []byte{0x41}, oldIndex},
		{"empty", nil, oldIndex},
	} {
		got, err := Pick(7, tc.d)
		if err != nil || got != tc.want {
			t.Errorf("%s: Pick(7, % x) = %d, %v; want %d", tc.name, tc.d, got, err, tc.want)
		}
	}
}

func FuzzPick(f *testing.F) {
	f.Add(byte(7), []byte{0x41, 7, 1})
	f.Add(byte(0), []byte{0xc0})
	f.Add(byte(255), []byte{})
	f.Fuzz(func(t *testing.T, prefix byte, d []byte) {
		got, err := Pick(prefix, d)
		if err != nil {
			t.Fatal(err)
		}
		if w := want(prefix, d); got != w {
			t.Fatalf("Pick(%d, % x) = %d; want %d", prefix, d, got, w)
		}
	})
}
