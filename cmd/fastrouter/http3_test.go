package main

import (
	"strings"
	"testing"
)

// --http3 serves the UDP ports of the --https listeners and --http3-0rtt
// refines it: each alone is a usage error naming what it needs.
func TestHTTP3Flags(t *testing.T) {
	https := []string{"--https", "127.0.0.1:0", "--tls-cert", "c.pem", "--tls-key", "k.pem"}
	for name, tt := range map[string]struct {
		args    []string
		wantErr string
	}{
		"http3":           {append(https[:len(https):len(https)], "--http3"), ""},
		"http3 and 0-rtt": {append(https[:len(https):len(https)], "--http3", "--http3-0rtt"), ""},
		"http3 no https":  {[]string{"--http", "127.0.0.1:0", "--http3"}, "--http3 needs an --https listener"},
		"0-rtt alone":     {append(https[:len(https):len(https)], "--http3-0rtt"), "--http3-0rtt needs --http3"},
		"0-rtt, nothing":  {[]string{"--http", "127.0.0.1:0", "--http3-0rtt"}, "--http3-0rtt needs --http3"},
	} {
		o, _, err := parseArgs(tt.args)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: error %v; want one mentioning %q", name, err, tt.wantErr)
		case tt.wantErr == "" && !o.http3:
			t.Errorf("%s: --http3 not set", name)
		}
	}
	// Neither changes in a running process.
	a, _, _ := parseArgs(https)
	b, _, _ := parseArgs(append(https[:len(https):len(https)], "--http3", "--http3-0rtt"))
	if got := strings.Join(a.needsRestart(b), " "); got != "--http3 --http3-0rtt" {
		t.Errorf("needsRestart = %q; want --http3 --http3-0rtt", got)
	}
}
