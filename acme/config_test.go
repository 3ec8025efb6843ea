package acme

import (
	"strings"
	"testing"
)

func TestNormalizeName(t *testing.T) {
	for _, tt := range []struct {
		in, want string
		ok       bool
	}{
		{"App.Example.COM", "app.example.com", true},
		{"app.example.com.", "app.example.com", true},
		{"xn--bcher-kva.example", "xn--bcher-kva.example", true},
		{"a-b.c1.test", "a-b.c1.test", true},
		{"localhost", "", false},           // one label: no public CA issues for it
		{"*.example.com", "", false},       // wildcards need DNS-01
		{"10.0.0.1", "", false},            // an IP address
		{"app.example.com:443", "", false}, // a port
		{"-a.example.com", "", false},
		{"a-.example.com", "", false},
		{"a..example.com", "", false},
		{"a_b.example.com", "", false},
		{"", "", false},
		{strings.Repeat("a", 64) + ".test", "", false},
		{strings.Repeat("a.", 127) + "test", "", false}, // 258 bytes
	} {
		got, ok := normalizeName(tt.in)
		if got != tt.want || ok != tt.ok {
			t.Errorf("normalizeName(%q) = %q, %v; want %q, %v", tt.in, got, ok, tt.want, tt.ok)
		}
	}
}

func TestAllowed(t *testing.T) {
	cfg := Config{Allow: []string{"example.com", "shop.test"}}
	for name, want := range map[string]bool{
		"example.com": true, "a.example.com": true, "a.b.example.com": true, "eu.shop.test": true,
		"badexample.com": false, "example.com.evil.test": false, "test": false, "other.test": false,
	} {
		if got := cfg.allowed(name); got != want {
			t.Errorf("allowed(%q) = %v; want %v", name, got, want)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Config{Dir: "/x", Challenges: []string{HTTP01}}
	if err := Validate(ok); err != nil {
		t.Fatalf("a valid config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"no dir":              func(c *Config) { c.Dir = "" },
		"http CA":             func(c *Config) { c.CA = "http://ca.test/dir" },
		"CA without host":     func(c *Config) { c.CA = "https:///dir" },
		"email":               func(c *Config) { c.Email = "not an address" },
		"wildcard domain":     func(c *Config) { c.Domains = []string{"*.example.com"} },
		"on demand, no allow": func(c *Config) { c.OnDemand = true },
		"bad suffix":          func(c *Config) { c.OnDemand, c.Allow = true, []string{"*.x"} },
		"no challenge":        func(c *Config) { c.Challenges = nil },
		"unknown challenge":   func(c *Config) { c.Challenges = []string{"dns-01"} },
	} {
		c := ok
		c.Challenges = append([]string(nil), ok.Challenges...)
		mod(&c)
		if err := Validate(c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A suffix may be given with its leading dot.
	c := ok
	c.OnDemand, c.Allow = true, []string{".Example.com"}
	if err := Validate(c); err != nil {
		t.Errorf(".Example.com: %v", err)
	}
}
