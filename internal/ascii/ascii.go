// Package ascii holds the byte helpers the router's parsers and encoders
// share for HTTP's ASCII text (RFC 9110 §5.6): case folding, optional
// whitespace, tokens and comma-separated lists, and decimal ports. They
// work on bytes as received, never allocate, and treat every byte above
// 0x7f as a letter of its own (no Unicode folding: a header name is ASCII).
//
// It has no dependencies beyond the standard library.
package ascii

import (
	"bytes"
	"strconv"
)

// EqualFold reports whether b equals lower, which must be lower-case,
// ignoring ASCII case in b.
func EqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// EqualFoldBytes reports whether a and b are equal ignoring ASCII case (a
// header name against another).
func EqualFoldBytes(a, b []byte) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

// EqualFoldString is EqualFoldBytes for strings.
func EqualFoldString(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if lower(a[i]) != lower(b[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		c += 'a' - 'A'
	}
	return c
}

// TrimOWS removes the optional whitespace (SP, HTAB) around b.
func TrimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// IsToken reports whether b is all tchar (RFC 9110 §5.6.2). The empty
// string is one; callers that need a name check its length.
func IsToken(b []byte) bool {
	for _, c := range b {
		if tchar[c] == 0 {
			return false
		}
	}
	return true
}

// tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
// "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA
var tchar = func() (t [256]byte) {
	for c := '0'; c <= '9'; c++ {
		t[c] = 1
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = 1
		t[c-'a'+'A'] = 1
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = 1
	}
	return t
}()

// HasToken reports whether the comma-separated list holds lower, which
// must be lower-case, ignoring ASCII case and the whitespace around each
// element (RFC 9110 §5.6.1).
func HasToken(list []byte, lower string) bool {
	for len(list) > 0 {
		var el []byte
		el, list = next(list)
		if EqualFold(TrimOWS(el), lower) {
			return true
		}
	}
	return false
}

// HasTokenBytes is HasToken for a token in any case (a header name that a
// Connection header may list).
func HasTokenBytes(list, tok []byte) bool {
	for len(list) > 0 {
		var el []byte
		el, list = next(list)
		if EqualFoldBytes(TrimOWS(el), tok) {
			return true
		}
	}
	return false
}

// next splits list at its first comma.
func next(list []byte) (el, rest []byte) {
	if i := bytes.IndexByte(list, ','); i >= 0 {
		return list[:i], list[i+1:]
	}
	return list, nil
}

// ParsePort parses a decimal port, 0 to 65535, without sign or leading
// zeros.
func ParsePort(b []byte) (uint16, bool) {
	if len(b) == 0 || len(b) > 5 || (len(b) > 1 && b[0] == '0') {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseUint(string(b), 10, 16)
	return uint16(v), err == nil
}
