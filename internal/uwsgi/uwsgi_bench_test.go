package uwsgi

import "testing"

// Typical request vars as the router sends them: 19 strings, one number and
// a few []byte values (the router holds header values as []byte).
var (
	reqURI   = []byte("/items?id=1")
	reqAgent = []byte("Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0")
	reqCook  = []byte("session=0123456789abcdef0123456789abcdef; theme=dark")
)

// encodeRequest encodes a realistic request header and vars block into buf
// (which should have room for about 700 bytes) and returns it.
func encodeRequest(buf []byte) []byte {
	buf = append(buf[:0], 0, 0, 0, 0)
	buf = AppendVarString(buf, "REQUEST_METHOD", "GET")
	buf = AppendVar(buf, []byte("REQUEST_URI"), reqURI)
	buf = AppendVarString(buf, "PATH_INFO", "/items")
	buf = AppendVarString(buf, "QUERY_STRING", "id=1")
	buf = AppendVarString(buf, "SERVER_PROTOCOL", "HTTP/1.1")
	buf = AppendVarString(buf, "SCRIPT_NAME", "")
	buf = AppendVarString(buf, "SERVER_NAME", "example.com")
	buf = AppendVarString(buf, "SERVER_PORT", "8080")
	buf = AppendVarString(buf, "REMOTE_ADDR", "192.0.2.1")
	buf = AppendVarUint(buf, "REMOTE_PORT", 51234)
	buf = AppendVarString(buf, "REQUEST_SCHEME", "https")
	buf = AppendVarString(buf, "HTTPS", "on")
	buf = AppendVarString(buf, "HTTP_HOST", "example.com")
	buf = AppendVar(buf, []byte("HTTP_USER_AGENT"), reqAgent)
	buf = AppendVarString(buf, "HTTP_ACCEPT", "*/*")
	buf = AppendVarString(buf, "HTTP_ACCEPT_ENCODING", "gzip, br")
	buf = AppendVar(buf, []byte("HTTP_COOKIE"), reqCook)
	buf = AppendVarString(buf, "HTTP_X_FORWARDED_FOR", "192.0.2.1")
	buf = AppendVarString(buf, "HTTP_X_FORWARDED_PROTO", "https")
	buf = AppendVarString(buf, "HTTP_X_REQUEST_ID", "0123456789abcdef")
	buf = AppendVarUint(buf, "CONTENT_LENGTH", 0)
	PutHeader(buf, Header{Modifier1: ModWSGI, Size: uint16(len(buf) - HeaderLen)})
	return buf
}

// fullSubscription is a signed datagram using every field, with values
// longer than Go's 32-byte conversion buffers.
func fullSubscription() []byte {
	return AppendSubscription(nil, &Subscription{
		Key: []byte("some-service.staging.internal.example.com"), Address: []byte("/var/run/uwsgi/some-service-staging.sock"),
		Modifier1: 0, Cores: 16, Load: 3, Weight: 4,
		SNIKey: []byte("/etc/ssl/private/some-service.key"), SNICrt: []byte("/etc/ssl/certs/some-service.crt"),
		Notify: []byte("/run/uwsgi/notify-some-service.sock"), Drain: true, DrainTimeout: 30, Backup: 1,
		Algo: []byte("lrc"), HasUnix: true, Unix: 1700000000, Sign: make([]byte, 256),
	})
}

func BenchmarkEncodeVars(b *testing.B) {
	buf := make([]byte, 0, 4096)
	b.SetBytes(int64(len(encodeRequest(buf))))
	b.ReportAllocs()
	for b.Loop() {
		buf = encodeRequest(buf)
	}
}

func BenchmarkValidVars(b *testing.B) {
	block := encodeRequest(nil)[HeaderLen:]
	b.SetBytes(int64(len(block)))
	b.ReportAllocs()
	for b.Loop() {
		if err := ValidVars(block); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseSubscription(b *testing.B) {
	for _, bc := range []struct {
		name string
		pkt  []byte
	}{
		{"captured", capturedSubscribe()},
		{"full-signed", fullSubscription()},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var s Subscription
			b.SetBytes(int64(len(bc.pkt)))
			b.ReportAllocs()
			for b.Loop() {
				if err := ParseSubscription(bc.pkt, &s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkAppendSubscription(b *testing.B) {
	var s Subscription
	if err := ParseSubscription(capturedSubscribe(), &s); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendSubscription(buf[:0], &s)
	}
}
