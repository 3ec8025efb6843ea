package router

import (
	"net"
	"net/netip"
	"testing"

	"github.com/fastrouter/fastrouter/balancer"
)

func TestIsSelf(t *testing.T) {
	rt, err := New(Config{Pools: &balancer.Table{}})
	if err != nil {
		t.Fatal(err)
	}
	node := func(addr string) *balancer.Node {
		ep, err := balancer.ParseEndpoint(addr)
		if err != nil {
			t.Fatal(err)
		}
		return &balancer.Node{Address: addr, Endpoint: ep}
	}
	if rt.isSelf(node("127.0.0.1:8080")) {
		t.Fatal("isSelf before SetOwnAddrs")
	}
	rt.SetOwnAddrs([]net.Addr{
		&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8080},
		&net.TCPAddr{IP: net.IPv6loopback, Port: 8443},
		&net.TCPAddr{IP: net.IPv4zero, Port: 3031}, // every address
		&net.UnixAddr{Name: "/run/fastrouter/uwsgi.sock", Net: "unix"},
	})
	// A host address of the wildcard listener (interfaces vary: inject one).
	s := *rt.self.Load()
	s.local = append(s.local, netip.MustParseAddr("10.1.2.3"))
	rt.self.Store(&s)
	for _, tc := range []struct {
		addr string
		want bool
	}{
		{"127.0.0.1:8080", true},
		{"http://127.0.0.1:8080", true},
		{"0.0.0.0:8080", true}, // dialling 0.0.0.0 reaches loopback
		{"[::ffff:127.0.0.1]:8080", true},
		{"127.0.0.2:8080", false}, // another address: the listener is not there
		{"127.0.0.1:8081", false},
		{"[::1]:8443", true},
		{"http://[::]:8443", true},
		{"127.0.0.1:8443", false},
		{"127.0.0.1:3031", true}, // wildcard listener: loopback
		{"127.9.9.9:3031", true},
		{"10.1.2.3:3031", true}, // wildcard listener: a host address
		{"10.1.2.4:3031", false},
		{"/run/fastrouter/uwsgi.sock", true},
		{"/run/app/uwsgi.sock", false},
	} {
		if got := rt.isSelf(node(tc.addr)); got != tc.want {
			t.Errorf("isSelf(%s) = %v; want %v", tc.addr, got, tc.want)
		}
	}
}

// A pool whose only node is the router's own front answers 502 at once,
// counted as reason="loop", and the node is never dialled; a pool with
// another node serves from it.
func TestSelfNodeNeverDialled(t *testing.T) {
	good := startFakeNode(t, okReply("good"))
	r := startRouter(t, Config{})
	own := netip.MustParseAddrPort(r.addr)
	r.rt.SetOwnAddrs([]net.Addr{net.TCPAddrFromAddrPort(own)})
	r.table.AddStatic("loop.test", "http://"+r.addr, 1)
	r.table.AddStatic("mixed.test", r.addr, 1)
	r.table.AddStatic("mixed.test", good.addr(), 1)

	resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: loop.test\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Fatalf("loop.test: %d %q; want 502", resp.StatusCode, body)
	}
	for i := range 4 {
		if resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: mixed.test\r\n\r\n"); resp.StatusCode != 200 || body != "good" {
			t.Fatalf("mixed.test request %d: %d %q; want the other node's 200", i, resp.StatusCode, body)
		}
	}
	pm := r.rt.metrics.forPool(r.table.Pool("loop.test"))
	if c := pm.errs[reasonLoop].Load(); c == nil {
		t.Fatal("no backend_errors_total{reason=\"loop\"} child for loop.test")
	}
}
