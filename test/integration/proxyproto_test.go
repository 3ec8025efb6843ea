package integration

import (
	"crypto/tls"
	bin "encoding/binary"
	"net"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// proxyV2Header is a PROXY v2 PROXY/TCP4 header from src:sport to
// 10.0.0.1:443 with one (ignored) TLV.
func proxyV2Header(src [4]byte, sport uint16) []byte {
	b := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11")
	b = bin.BigEndian.AppendUint16(b, 12+4)
	b = append(b, src[:]...)
	b = append(b, 10, 0, 0, 1)
	b = bin.BigEndian.AppendUint16(b, sport)
	b = bin.BigEndian.AppendUint16(b, 443)
	return append(b, 0x04, 0, 1, 'x') // PP2_TYPE_NOOP
}

// proxiedEnv sends prefix then GET /env on a fresh connection (over TLS when
// tlsConf is set) and returns the status and the env the node saw.
func proxiedEnv(t *testing.T, addr string, prefix []byte, tlsConf *tls.Config) (int, map[string]string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	if _, err := c.Write(prefix); err != nil {
		t.Fatal(err)
	}
	if tlsConf != nil {
		tc := tls.Client(c, tlsConf)
		if err := tc.Handshake(); err != nil {
			t.Fatalf("TLS after PROXY header: %v", err)
		}
		c = tc
	}
	resp, b := uwsgitest.NewClient(t, c).Do("GET /env HTTP/1.1\r\nHost: pp\r\nConnection: close\r\n\r\n")
	if resp.StatusCode != 200 {
		return resp.StatusCode, nil
	}
	return resp.StatusCode, decodeEnv(t, b)
}

// TestProxyProtocol: with --proxy-protocol a trusted peer (loopback) may
// start a connection with a PROXY v1 or v2 header on --http and --https,
// which sets REMOTE_ADDR/REMOTE_PORT at a real uWSGI node; without one the
// connection is served as usual.
func TestProxyProtocol(t *testing.T) {
	requireUWSGI(t)
	p := newTestPKI(t)
	r := startTLSRouter(t, p, "--proxy-protocol")
	startNode(t, r.router, "pp", nodeOpts{id: "a"})
	waitForNodes(t, r.router, "pp", 1)
	tlsConf := &tls.Config{RootCAs: p.pool, ServerName: "default.test", NextProtos: []string{"http/1.1"}}

	cases := []struct {
		name       string
		addr       string
		tls        *tls.Config
		prefix     []byte
		addr4, prt string
	}{
		{"http v1", r.http, nil, []byte("PROXY TCP4 192.0.2.7 10.0.0.1 40001 80\r\n"), "192.0.2.7", "40001"},
		{"http v1 tcp6", r.http, nil, []byte("PROXY TCP6 2001:db8::9 2001:db8::1 40002 80\r\n"), "2001:db8::9", "40002"},
		{"http v2", r.http, nil, proxyV2Header([4]byte{198, 51, 100, 4}, 40003), "198.51.100.4", "40003"},
		{"http v1 unknown", r.http, nil, []byte("PROXY UNKNOWN\r\n"), "127.0.0.1", ""},
		{"http none", r.http, nil, nil, "127.0.0.1", ""},
		{"https v1", r.https, tlsConf, []byte("PROXY TCP4 192.0.2.8 10.0.0.1 40004 443\r\n"), "192.0.2.8", "40004"},
		{"https v2", r.https, tlsConf, proxyV2Header([4]byte{198, 51, 100, 5}, 40005), "198.51.100.5", "40005"},
		{"https none", r.https, tlsConf, nil, "127.0.0.1", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, env := proxiedEnv(t, tc.addr, tc.prefix, tc.tls)
			if code != 200 {
				t.Fatalf("status %d; want 200", code)
			}
			if env["REMOTE_ADDR"] != tc.addr4 {
				t.Errorf("REMOTE_ADDR = %q; want %q", env["REMOTE_ADDR"], tc.addr4)
			}
			if tc.prt != "" && env["REMOTE_PORT"] != tc.prt {
				t.Errorf("REMOTE_PORT = %q; want %q", env["REMOTE_PORT"], tc.prt)
			}
		})
	}

	// A malformed header from a trusted peer is a bad request, not a guess.
	code, _ := proxiedEnv(t, r.http, []byte("PROXY TCP4 192.0.2.7 nope 1 2\r\n"), nil)
	if code != 400 {
		t.Errorf("malformed PROXY header: status %d; want 400", code)
	}
}

// TestProxyProtocolUntrusted: a PROXY header from a peer outside
// --trusted-proxy is never believed: 400 on clear text, a closed connection
// on TLS. The same peer without a header is served.
func TestProxyProtocolUntrusted(t *testing.T) {
	requireUWSGI(t)
	p := newTestPKI(t)
	r := startTLSRouter(t, p, "--proxy-protocol", "--trusted-proxy", "10.0.0.0/8")
	startNode(t, r.router, "pp", nodeOpts{id: "a"})
	waitForNodes(t, r.router, "pp", 1)

	for _, prefix := range [][]byte{
		[]byte("PROXY TCP4 192.0.2.7 10.0.0.1 40001 80\r\n"),
		proxyV2Header([4]byte{192, 0, 2, 7}, 40001),
	} {
		if code, _ := proxiedEnv(t, r.http, prefix, nil); code != 400 {
			t.Errorf("untrusted PROXY %.12q: status %d; want 400", prefix, code)
		}
	}
	code, env := proxiedEnv(t, r.http, nil, nil)
	if code != 200 || env["REMOTE_ADDR"] != "127.0.0.1" {
		t.Errorf("no header: %d REMOTE_ADDR=%q; want 200 127.0.0.1", code, env["REMOTE_ADDR"])
	}

	c, err := net.Dial("tcp", r.https)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	_, _ = c.Write([]byte("PROXY TCP4 192.0.2.7 10.0.0.1 40001 443\r\n"))
	tc := tls.Client(c, &tls.Config{RootCAs: p.pool, ServerName: "default.test"})
	if err := tc.Handshake(); err == nil {
		t.Error("TLS handshake succeeded after an untrusted PROXY header; want the connection closed")
	}
}
