package balancer

import (
	"strings"
	"testing"
)

// fuzzKeys have no two keys that fold to the same name or serve the same
// wildcard suffix, so the reference matcher below has one right answer.
var fuzzKeys = []string{
	"example.com", "Example.org:8080", "a.example.com", "*.example.com", "*.b.example.com", ".x.org",
	"[::1]", "[::1]:8080", "fb", "MiXeD.Test", strings.Repeat("k", 255),
}

// FuzzLookup: Lookup never panics and agrees with a slow reference
// implementation of the matching order (README, "Host matching"), with and
// without a fallback.
func FuzzLookup(f *testing.F) {
	plain, _ := newTable(f, Config{})
	withFB, _ := newTable(f, Config{FallbackKey: "fb"})
	for _, k := range fuzzKeys {
		announce(f, plain, k, "10.0.0.1:3031", 1)
		announce(f, withFB, k, "10.0.0.1:3031", 1)
	}
	for _, tc := range lookupCases() {
		f.Add([]byte(tc.host))
	}
	f.Add([]byte("a.example.com:8080"))
	f.Add([]byte(":::::"))
	f.Add([]byte("x.B.Example.COM:1"))
	f.Fuzz(func(t *testing.T, host []byte) {
		if got, want := keyOf(plain.Lookup(host)), refLookup(string(host), ""); got != want {
			t.Fatalf("Lookup(%q) = %s; reference %s", host, got, want)
		}
		if got, want := keyOf(withFB.Lookup(host)), refLookup(string(host), "fb"); got != want {
			t.Fatalf("with fallback: Lookup(%q) = %s; reference %s", host, got, want)
		}
	})
}

// refLookup is README's "Host matching" order written plainly over fuzzKeys.
func refLookup(host, fallback string) string {
	if len(host) <= maxKeyLen {
		if k := refMatch(host); k != "" {
			return k
		}
		h := host
		if i := strings.LastIndexByte(host, ':'); i >= 0 && i+1 < len(host) && allDigits(host[i+1:]) {
			h = host[:i]
			if k := refMatch(h); k != "" {
				return k
			}
		}
		lh := asciiLower(h)
		for i := 0; i < len(lh); i++ { // longest suffix first
			if lh[i] != '.' {
				continue
			}
			for _, k := range fuzzKeys {
				lk := asciiLower(k)
				if (strings.HasPrefix(lk, "*.") && len(lk) > 2 && lk[1:] == lh[i:]) || (lk[0] == '.' && len(lk) > 1 && lk == lh[i:]) {
					return k
				}
			}
		}
	}
	if fallback != "" {
		return fallback
	}
	return "<nil>"
}

func refMatch(h string) string {
	for _, k := range fuzzKeys {
		if k == h {
			return k
		}
	}
	for _, k := range fuzzKeys {
		if asciiLower(k) == asciiLower(h) {
			return k
		}
	}
	return ""
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// asciiLower folds A-Z only; strings.ToLower would fold non-ASCII too.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// FuzzParseEndpoint: node addresses come from datagrams and the admin API.
// Properties: no panic; an accepted http:// address has an IP literal and a
// port that round-trip through Dial; an address ParseEndpoint accepts as
// http is accepted the same way after re-formatting from its AddrPort.
func FuzzParseEndpoint(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:8000", "http://[::1]:80/", "http://10.0.0.1", "HTTP://1.2.3.4:5",
		"http://[fe80::1%eth0]:1", "http://a@1.2.3.4", "http://1.2.3.4:99999", "127.0.0.1:3031", "/tmp/s", "@a", "http://"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		ep, err := ParseEndpoint(addr)
		if err != nil {
			return
		}
		switch ep.Network {
		case NetHTTP:
			if !ep.AddrPort.IsValid() || ep.AddrPort.Port() == 0 || ep.Dial != ep.AddrPort.String() {
				t.Fatalf("ParseEndpoint(%q) = %+v", addr, ep)
			}
			again, err := ParseEndpoint("http://" + ep.Dial)
			if err != nil || again != ep {
				t.Fatalf("re-parse of %q: %+v, %v; want %+v", "http://"+ep.Dial, again, err, ep)
			}
		case NetTCP:
			if !ep.AddrPort.IsValid() {
				t.Fatalf("ParseEndpoint(%q) = %+v", addr, ep)
			}
		case NetUnix:
			if ep.Dial != addr {
				t.Fatalf("unix ParseEndpoint(%q) dials %q", addr, ep.Dial)
			}
		}
	})
}
