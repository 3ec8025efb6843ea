package uwsgitest

import (
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// SampleRequest is a typical browser GET as the router's fronts parse it
// (six headers, a cookie, a request id), fresh on each call: the request
// the encoder's benchmarks and allocation gates use.
func SampleRequest() *uwsgi.Request {
	return &uwsgi.Request{
		Method: []byte("GET"), URI: []byte("/app/items?id=42"), Proto: []byte("HTTP/1.1"),
		Host: []byte("shop.example.com"), Scheme: "http",
		Remote: netip.MustParseAddrPort("192.0.2.7:51234"), ServerPort: []byte("8080"),
		Headers: []uwsgi.Field{
			{[]byte("Host"), []byte("shop.example.com")},
			{[]byte("User-Agent"), []byte("wrk/4.2")},
			{[]byte("Accept"), []byte("*/*")},
			{[]byte("Accept-Encoding"), []byte("gzip, deflate")},
			{[]byte("Cookie"), []byte("session=abcdef0123456789")},
			{[]byte("X-Request-Id"), []byte("7f9c2ba4e88f827d616045507605853e")},
		},
	}
}
