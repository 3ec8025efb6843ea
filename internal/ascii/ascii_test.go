package ascii

import (
	"bytes"
	"strings"
	"testing"
)

func TestEqualFold(t *testing.T) {
	for _, tc := range []struct {
		b, lower string
		want     bool
	}{
		{"Content-Length", "content-length", true},
		{"CONTENT-LENGTH", "content-length", true},
		{"content-lengtH", "content-length", true},
		{"content-lengt", "content-length", false},
		{"Content_Length", "content-length", false},
		{"", "", true},
		{"\xc3\x89", "\xc3\xa9", false}, // no Unicode folding
	} {
		if got := EqualFold([]byte(tc.b), tc.lower); got != tc.want {
			t.Errorf("EqualFold(%q, %q) = %v; want %v", tc.b, tc.lower, got, tc.want)
		}
		if got := EqualFoldBytes([]byte(tc.b), []byte(tc.lower)); got != tc.want {
			t.Errorf("EqualFoldBytes(%q, %q) = %v; want %v", tc.b, tc.lower, got, tc.want)
		}
		if got := EqualFoldString(tc.b, tc.lower); got != tc.want {
			t.Errorf("EqualFoldString(%q, %q) = %v; want %v", tc.b, tc.lower, got, tc.want)
		}
	}
}

func TestTrimOWSAndTokens(t *testing.T) {
	if got := TrimOWS([]byte(" \t a b\t ")); string(got) != "a b" {
		t.Errorf("TrimOWS = %q; want %q", got, "a b")
	}
	for s, want := range map[string]bool{"GET": true, "x-a_b.c~": true, "a b": false, "a:b": false, "é": false, "": true} {
		if got := IsToken([]byte(s)); got != want {
			t.Errorf("IsToken(%q) = %v; want %v", s, got, want)
		}
	}
	for _, tc := range []struct {
		list, tok string
		want      bool
	}{
		{"keep-alive, Close", "close", true},
		{"close", "close", true},
		{" ,, close ,", "close", true},
		{"closed, x", "close", false},
		{"", "close", false},
	} {
		if got := HasToken([]byte(tc.list), tc.tok); got != tc.want {
			t.Errorf("HasToken(%q, %q) = %v; want %v", tc.list, tc.tok, got, tc.want)
		}
		if got := HasTokenBytes([]byte(tc.list), []byte(strings.ToUpper(tc.tok))); got != tc.want {
			t.Errorf("HasTokenBytes(%q, %q) = %v; want %v", tc.list, tc.tok, got, tc.want)
		}
	}
}

func TestParsePort(t *testing.T) {
	for s, want := range map[string]int{"0": 0, "80": 80, "65535": 65535, "65536": -1, "080": -1, "": -1, "+1": -1, "123456": -1, "8a": -1} {
		got, ok := ParsePort([]byte(s))
		if want < 0 && ok || want >= 0 && (!ok || int(got) != want) {
			t.Errorf("ParsePort(%q) = %d, %v; want %d", s, got, ok, want)
		}
	}
}

// asciiLower lower-cases ASCII letters only: the reference for folding.
func asciiLower(b []byte) []byte {
	out := bytes.Clone(b)
	for i, c := range out {
		if 'A' <= c && c <= 'Z' {
			out[i] = c + 'a' - 'A'
		}
	}
	return out
}

// FuzzFold: folding agrees with lower-casing ASCII letters, and a list
// holds a (non-empty) token exactly when one of its trimmed elements folds
// to it.
func FuzzFold(f *testing.F) {
	f.Add([]byte("Keep-Alive, close"), []byte("CLOSE"))
	f.Add([]byte("\xc3\x89t\xc3\xa9"), []byte("\xc3\xa9T\xc3\xa9"))
	f.Fuzz(func(t *testing.T, a, b []byte) {
		want := bytes.Equal(asciiLower(a), asciiLower(b))
		if got := EqualFoldBytes(a, b); got != want {
			t.Fatalf("EqualFoldBytes(%q, %q) = %v; want %v", a, b, got, want)
		}
		if got := EqualFold(a, string(asciiLower(b))); got != want {
			t.Fatalf("EqualFold(%q, lower %q) = %v; want %v", a, b, got, want)
		}
		if len(b) == 0 {
			return // a token is never empty
		}
		has := false
		for _, el := range bytes.Split(a, []byte(",")) {
			if bytes.Equal(asciiLower(bytes.Trim(el, " \t")), asciiLower(b)) {
				has = true
			}
		}
		if got := HasTokenBytes(a, b); got != has {
			t.Fatalf("HasTokenBytes(%q, %q) = %v; want %v", a, b, got, has)
		}
	})
}
