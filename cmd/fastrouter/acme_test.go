package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestACMEFlags: what the --acme-* flags need, and the challenge types the
// listeners allow by default.
func TestACMEFlags(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o644)
	base := []string{"--https", "127.0.0.1:0", "--acme-dir", dir}
	for name, tt := range map[string]struct {
		args    []string
		wantErr string
	}{
		"domain":               {append(base, "--acme-domain", "a.example.com"), ""},
		"on demand":            {append(base, "--acme-on-demand", "--acme-allow", "example.com"), ""},
		"no dir":               {[]string{"--https", "127.0.0.1:0", "--acme-domain", "a.example.com"}, "need --acme-dir"},
		"no https":             {[]string{"--acme-dir", dir, "--acme-domain", "a.example.com"}, "--https"},
		"on demand, no allow":  {append(base, "--acme-on-demand"), "--acme-allow"},
		"allow alone":          {append(base, "--acme-domain", "a.example.com", "--acme-allow", "x.com"), "needs --acme-on-demand"},
		"dir alone":            {[]string{"--acme-dir", dir}, "need --acme-domain or --acme-on-demand"},
		"http-01 without http": {append(base, "--acme-domain", "a.example.com", "--acme-challenge", "http-01"), "--http"},
		"dns-01":               {append(base, "--acme-domain", "a.example.com", "--acme-challenge", "dns-01"), "dns-01"},
		"wildcard":             {append(base, "--acme-domain", "*.example.com"), "DNS name"},
		"ca root not PEM":      {append(base, "--acme-domain", "a.example.com", "--acme-ca-root", notPEM), "no PEM"},
		"ca root missing":      {append(base, "--acme-domain", "a.example.com", "--acme-ca-root", filepath.Join(dir, "none")), "--acme-ca-root"},
		"plain http CA":        {append(base, "--acme-domain", "a.example.com", "--acme-ca", "http://ca.test/dir"), "https"},
		"https needs a cert":   {[]string{"--https", "127.0.0.1:0"}, "--acme-domain"},
	} {
		_, _, err := parseArgs(tt.args)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v; want one mentioning %q", name, err, tt.wantErr)
		}
	}
	o, _, err := parseArgs(append(base, "--acme-domain", "a.example.com", "--http", "127.0.0.1:0"))
	if err != nil || !slices.Equal(o.acme.challenges, []string{"http-01", "tls-alpn-01"}) {
		t.Errorf("with --http the default challenges are %v (%v)", o.acme.challenges, err)
	}
	o, _, err = parseArgs(append(base, "--acme-domain", "a.example.com"))
	if err != nil || !slices.Equal(o.acme.challenges, []string{"tls-alpn-01"}) {
		t.Errorf("without --http the default challenges are %v (%v)", o.acme.challenges, err)
	}
	if got := o.needsRestart(mustParse(t, append(base, "--acme-domain", "b.example.com"))); !slices.Contains(got, "--acme-*") {
		t.Errorf("a changed --acme-domain is not named as needing a restart: %v", got)
	}
}

func mustParse(t *testing.T, args []string) *options {
	t.Helper()
	o, _, err := parseArgs(args)
	if err != nil {
		t.Fatal(err)
	}
	return o
}
