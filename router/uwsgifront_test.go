package router

import (
	"testing"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

func varsBlock(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = uwsgi.AppendVarString(b, kv[i], kv[i+1])
	}
	return b
}

func TestParseUwsgiFront(t *testing.T) {
	tests := []struct {
		name   string
		vars   []byte
		key    string
		body   int64
		remote string
		err    error
	}{
		{"fastrouter key wins", varsBlock("HTTP_HOST", "h.test", "UWSGI_FASTROUTER_KEY", "k", "SERVER_NAME", "s"), "k", 0, "", nil},
		{"host over server name", varsBlock("SERVER_NAME", "s", "HTTP_HOST", "h.test:8080"), "h.test:8080", 0, "", nil},
		{"server name", varsBlock("SERVER_NAME", "s.test", "CONTENT_LENGTH", "12", "REMOTE_ADDR", "192.0.2.1", "REMOTE_PORT", "5555"), "s.test", 12, "192.0.2.1:5555", nil},
		{"empty content length", varsBlock("HTTP_HOST", "h", "CONTENT_LENGTH", ""), "h", 0, "", nil},
		{"two content lengths", varsBlock("HTTP_HOST", "h", "CONTENT_LENGTH", "1", "CONTENT_LENGTH", "1"), "", 0, "", errBadRequest},
		{"signed content length", varsBlock("HTTP_HOST", "h", "CONTENT_LENGTH", "+1"), "", 0, "", errBadRequest},
		{"huge content length", varsBlock("HTTP_HOST", "h", "CONTENT_LENGTH", "9999999999999999999"), "", 0, "", errBadRequest},
		{"bad host", varsBlock("HTTP_HOST", "h\x00x"), "", 0, "", errBadHost},
		{"long key", varsBlock("UWSGI_FASTROUTER_KEY", string(make([]byte, 256))), "", 0, "", errBadHost},
		{"truncated", varsBlock("HTTP_HOST", "h")[:5], "", 0, "", errBadRequest},
		{"empty key record", []byte{0, 0, 0, 0}, "", 0, "", errBadRequest},
		{"nothing", nil, "", 0, "", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var r uwsgiFrontReq
			err := parseUwsgiFront(tc.vars, &r)
			if err != tc.err {
				t.Fatalf("err = %v; want %v", err, tc.err)
			}
			if err != nil {
				return
			}
			if string(r.key) != tc.key || r.bodyLen != tc.body {
				t.Errorf("key, body = %q, %d; want %q, %d", r.key, r.bodyLen, tc.key, tc.body)
			}
			got := ""
			if r.remote.IsValid() {
				got = r.remote.String()
			}
			if got != tc.remote {
				t.Errorf("remote = %q; want %q", got, tc.remote)
			}
		})
	}
}

func TestStatusCode(t *testing.T) {
	for in, want := range map[string]int{"HTTP/1.1 200 OK": 200, "HTTP/1.0 404": 404, "Status: 302 Found": 302, "HTTP/1.1 2x0": 0, "garbage here": 0, "HTTP/1.1 099": 0} {
		if got, _ := statusCode([]byte(in)); got != want && want != 0 {
			t.Errorf("statusCode(%q) = %d; want %d", in, got, want)
		} else if _, ok := statusCode([]byte(in)); ok != (want != 0) {
			t.Errorf("statusCode(%q) ok = %v", in, ok)
		}
	}
}

// FuzzParseUwsgiFront: hostile vars never panic; a key is at most 255
// bytes, a body length never negative, and the result depends only on the
// block (parsing twice agrees).
func FuzzParseUwsgiFront(f *testing.F) {
	f.Add(varsBlock("HTTP_HOST", "h.test", "UWSGI_FASTROUTER_KEY", "k", "CONTENT_LENGTH", "10"))
	f.Add(varsBlock("SERVER_NAME", "s", "REMOTE_ADDR", "::1", "REMOTE_PORT", "1", "PATH_INFO", "/a"))
	f.Add(varsBlock("CONTENT_LENGTH", "1", "CONTENT_LENGTH", "2"))
	f.Add([]byte{1, 0, 'A', 5, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		var r1, r2 uwsgiFrontReq
		err := parseUwsgiFront(b, &r1)
		err2 := parseUwsgiFront(b, &r2)
		if err != err2 {
			t.Fatalf("nondeterministic: %v vs %v", err, err2)
		}
		if err != nil {
			return
		}
		if len(r1.key) > 255 || r1.bodyLen < 0 {
			t.Fatalf("key %d bytes, body %d", len(r1.key), r1.bodyLen)
		}
		if string(r1.key) != string(r2.key) || r1.bodyLen != r2.bodyLen || r1.remote != r2.remote {
			t.Fatal("nondeterministic result")
		}
	})
}

// The uwsgi front counts a node's traffic both ways, as the HTTP fronts do:
// the packet and body it sent (RxBytes), and the response it relayed
// (TxBytes: the whole response, which this front does not parse).
func TestUwsgiFrontCountsNodeTraffic(t *testing.T) {
	const reply = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the node"
	n := startFakeNode(t, func(map[string]string, []byte) string { return reply })
	r := startRouter(t, Config{})
	r.table.AddStatic("k.test", n.addr(), 1)
	c := uwsgitest.Dial(t, startUwsgiFront(t, r))
	c.Send(string(uwsgitest.Packet("REQUEST_METHOD", "POST", "PATH_INFO", "/", "HTTP_HOST", "k.test", "CONTENT_LENGTH", "5")) + "hello")
	if got := c.Rest(); got != reply {
		t.Fatalf("relayed %q; want %q", got, reply)
	}
	node := r.table.Pool("k.test").Nodes()[0]
	waitFor(t, "the exchange to be released", func() bool { return node.Info().Inflight == 0 })
	info := node.Info()
	if info.RxBytes == 0 || info.TxBytes != uint64(len(reply)) {
		t.Errorf("node traffic: rx %d, tx %d; want rx > 0 and tx %d", info.RxBytes, info.TxBytes, len(reply))
	}
}
