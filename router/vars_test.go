package router

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

func TestPathInfo(t *testing.T) {
	cases := []struct{ uri, want string }{
		{"/", "/"},
		{"/plain", "/plain"},
		{"//a///b/./c/../d%2Fe?x=1", "//a///b/d/e"},
		{"/a/..", "/"},
		{"/a/.", "/a/"},
		{"/%41%2e%2e/x", "/A../x"},
		{"/a+b%zz", "/a+b%zz"},
		{"/%2e%2e/%2e%2e/etc/passwd", "/etc/passwd"},
		{"/x%", "/x%"},
		{"/x#frag", "/x"},
		{"http://h.test/p/q?z", "/p/q"},
		{"http://h.test", ""},
		{"*", "*"},
	}
	for _, tc := range cases {
		path, _ := splitURI([]byte(tc.uri))
		b := appendPathInfo(nil, path)
		k, v, _, err := uwsgi.NextVar(b, 0)
		if err != nil || string(k) != "PATH_INFO" {
			t.Fatalf("%q: bad record %q %v", tc.uri, k, err)
		}
		if string(v) != tc.want {
			t.Errorf("PATH_INFO(%q) = %q; want %q", tc.uri, v, tc.want)
		}
	}
}

func TestValidHost(t *testing.T) {
	for h, want := range map[string]bool{
		"example.com": true, "example.com:8080": true, "[::1]:80": true, "[::1]": true, "10.0.0.1": true,
		"": false, "a/b": false, "a b": false, "a@b": false, "example.com:x": false, "example.com:99999": false,
	} {
		if got := validHost([]byte(h)); got != want {
			t.Errorf("validHost(%q) = %v; want %v", h, got, want)
		}
	}
}

func sampleRequest() *request {
	return &request{
		method: []byte("GET"), uri: []byte("/app/items?id=42"), proto: []byte("HTTP/1.1"),
		host: []byte("shop.example.com"), scheme: "http",
		remote: netip.MustParseAddrPort("192.0.2.7:51234"), serverPort: []byte("8080"),
		headers: []hdr{
			{[]byte("Host"), []byte("shop.example.com")},
			{[]byte("User-Agent"), []byte("wrk/4.2")},
			{[]byte("Accept"), []byte("*/*")},
			{[]byte("Accept-Encoding"), []byte("gzip, deflate")},
			{[]byte("Cookie"), []byte("session=abcdef0123456789")},
			{[]byte("X-Request-Id"), []byte("7f9c2ba4e88f827d616045507605853e")},
		},
	}
}

func TestAppendVarsIsAValidPacket(t *testing.T) {
	b, err := appendVars(nil, sampleRequest(), 5, 7)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := uwsgi.ParseHeader(b)
	if h.Modifier1 != 5 || h.Modifier2 != 7 || int(h.Size) != len(b)-4 {
		t.Fatalf("header %+v for %d bytes", h, len(b))
	}
	if err := uwsgi.ValidVars(b[4:]); err != nil {
		t.Fatal(err)
	}
}

func TestAppendVarsTooLarge(t *testing.T) {
	r := sampleRequest()
	big := make([]byte, 40000)
	r.headers = append(r.headers, hdr{[]byte("X-A"), big}, hdr{[]byte("X-B"), big})
	if _, err := appendVars(nil, r, 0, 0); err != errVarsTooLarge {
		t.Fatalf("err = %v; want errVarsTooLarge", err)
	}
}

func BenchmarkAppendVars(b *testing.B) {
	r := sampleRequest()
	buf := make([]byte, 0, 4096)
	b.ReportAllocs()
	for b.Loop() {
		buf, _ = appendVars(buf[:0], r, 0, 0)
	}
}

// routedTable is a table of 10k pools with 16 nodes in the one under test.
func routedTable(tb testing.TB) *balancer.Table {
	tb.Helper()
	t, err := balancer.New(balancer.Config{})
	if err != nil {
		tb.Fatal(err)
	}
	for i := 0; i < 10_000; i++ {
		t.AddStatic(fmt.Sprintf("host%d.example.com", i), "10.0.0.1:3031", 1)
	}
	for i := 0; i < 16; i++ {
		t.AddStatic("shop.example.com", fmt.Sprintf("10.0.1.%d:3031", i+1), uint64(i%3+1))
	}
	return t
}

// routeAndEncode is the request path's own work before the dial: route
// lookup, node pick and vars encoding.
func routeAndEncode(t *balancer.Table, r *request, buf []byte, now int64) []byte {
	p := t.Lookup(r.host)
	n := p.Pick(now, nil)
	buf, _ = appendVars(buf[:0], r, n.Modifier1, n.Modifier2)
	n.Done()
	return buf
}

func BenchmarkRouteAndEncode(b *testing.B) {
	t := routedTable(b)
	r := sampleRequest()
	buf := make([]byte, 0, 4096)
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		buf = routeAndEncode(t, r, buf, now)
	}
}
