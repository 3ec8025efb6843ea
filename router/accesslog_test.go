package router

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

// lineBuffer collects access-log lines; safe for concurrent use.
type lineBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (l *lineBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, string(p))
	return len(p), nil
}

// accessLine is one decoded access-log line; pointers tell null from zero.
type accessLine struct {
	Time            time.Time `json:"time"`
	ID              string    `json:"id"`
	Client          string    `json:"client"`
	Method          string    `json:"method"`
	Host            string    `json:"host"`
	URI             string    `json:"uri"`
	Proto           string    `json:"proto"`
	Scheme          string    `json:"scheme"`
	UserAgent       *string   `json:"user_agent"`
	Referer         *string   `json:"referer"`
	Status          int       `json:"status"`
	Pool            *string   `json:"pool"`
	Node            *string   `json:"node"`
	UpstreamConnect *float64  `json:"upstream_connect"`
	UpstreamHeader  *float64  `json:"upstream_header"`
	Bytes           int64     `json:"bytes"`
	Duration        float64   `json:"duration"`
}

// waitLines waits until n lines were logged (a streamed body's line is
// written when fasthttp has sent it, just after the client read it) and
// decodes them strictly.
func (l *lineBuffer) waitLines(t *testing.T, n int) []accessLine {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		l.mu.Lock()
		got := append([]string(nil), l.lines...)
		l.mu.Unlock()
		if len(got) >= n {
			out := make([]accessLine, 0, len(got))
			for _, s := range got {
				if !strings.HasSuffix(s, "}\n") || strings.Count(s, "\n") != 1 {
					t.Fatalf("not one JSON line: %q", s)
				}
				dec := json.NewDecoder(strings.NewReader(s))
				dec.DisallowUnknownFields()
				var a accessLine
				if err := dec.Decode(&a); err != nil {
					t.Fatalf("line %q: %v", s, err)
				}
				out = append(out, a)
			}
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d access-log lines after 10s; want %d: %q", len(got), n, got)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var generatedID = regexp.MustCompile(`^[0-9a-f]{32}$`)

func TestRequestIDPassedToTheNode(t *testing.T) {
	n := startFakeNode(t, okReply("ok"))
	r := startRouter(t, Config{})
	r.table.AddStatic("id.test", n.addr(), 1)

	raw(t, r.addr, "GET / HTTP/1.1\r\nHost: id.test\r\n\r\n")
	first := n.last()["HTTP_X_REQUEST_ID"]
	raw(t, r.addr, "GET / HTTP/1.1\r\nHost: id.test\r\n\r\n")
	second := n.last()["HTTP_X_REQUEST_ID"]
	if !generatedID.MatchString(first) || !generatedID.MatchString(second) || first == second {
		t.Fatalf("generated ids %q, %q; want two different 32-hex-digit ids", first, second)
	}
	if first[:16] != second[:16] {
		t.Errorf("ids %q, %q of one process differ in their prefix", first, second)
	}

	for _, tc := range []struct {
		name, headers string
		want          string // "" = a generated id
	}{
		{"valid client id kept", "X-Request-Id: abc-123_DEF.4:5/6+7=8@9\r\n", "abc-123_DEF.4:5/6+7=8@9"},
		{"lower-case name", "x-request-id: 0f0e\r\n", "0f0e"},
		{"duplicates: the first wins alone", "X-Request-Id: one\r\nX-Request-Id: two\r\n", "one"},
		{"invalid replaced", "X-Request-Id: has space\r\n", ""},
		{"invalid replaced, duplicates dropped", "X-Request-Id: <x>\r\nX-Request-Id: ok\r\n", ""},
		{"too long replaced", "X-Request-Id: " + strings.Repeat("a", 129) + "\r\n", ""},
		{"empty replaced", "X-Request-Id:\r\n", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw(t, r.addr, "GET / HTTP/1.1\r\nHost: id.test\r\n"+tc.headers+"\r\n")
			got := n.last()["HTTP_X_REQUEST_ID"]
			if tc.want != "" && got != tc.want {
				t.Fatalf("HTTP_X_REQUEST_ID = %q; want %q", got, tc.want)
			}
			if tc.want == "" && !generatedID.MatchString(got) {
				t.Fatalf("HTTP_X_REQUEST_ID = %q; want a generated id", got)
			}
		})
	}
}

func TestAccessLogHTTP1(t *testing.T) {
	n := startFakeNode(t, func(vars map[string]string, _ []byte) string {
		if vars["PATH_INFO"] == "/big" {
			return "HTTP/1.1 200 OK\r\n\r\n" + strings.Repeat("b", 100_000)
		}
		return "HTTP/1.1 201 Created\r\nContent-Length: 5\r\n\r\nhello"
	})
	logs := &lineBuffer{}
	r := startRouter(t, Config{AccessLog: logs})
	r.table.AddStatic("log.test", n.addr(), 1)

	resp, _ := raw(t, r.addr, "GET /a?b=\"c\" HTTP/1.1\r\nHost: log.test\r\nX-Request-Id: req-1\r\n"+
		"user-agent: probe/1.0 \"x\"\r\nReferer: https://ref.test/p\r\nReferer: https://second.test/\r\n\r\n")
	if resp.StatusCode != 201 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if _, body := raw(t, r.addr, "GET /big HTTP/1.1\r\nHost: log.test\r\n\r\n"); len(body) != 100_000 {
		t.Fatalf("big body %d bytes", len(body))
	}
	raw(t, r.addr, "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n")
	raw(t, r.addr, "GET / HTTP/1.1\r\nHost: log.test\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
	raw(t, r.addr, "BAD\r\n\r\n")

	lines := logs.waitLines(t, 5)
	byURI := map[string]accessLine{}
	for _, l := range lines {
		byURI[l.Host+l.URI] = l
		if l.Time.IsZero() || l.Duration < 0 || !strings.HasPrefix(l.Client, "127.0.0.1:") || l.Scheme != "http" {
			t.Errorf("line %+v: want a time, a duration, the client address and scheme http", l)
		}
	}
	ok := byURI[`log.test/a?b="c"`]
	if ok.Status != 201 || ok.ID != "req-1" || ok.Method != "GET" || ok.Proto != "HTTP/1.1" || ok.Bytes != 5 ||
		ok.Pool == nil || *ok.Pool != "log.test" || ok.Node == nil || *ok.Node != n.addr() ||
		ok.UpstreamConnect == nil || ok.UpstreamHeader == nil || *ok.UpstreamHeader < *ok.UpstreamConnect ||
		ok.Duration < *ok.UpstreamHeader {
		t.Errorf("forwarded request: %+v", ok)
	}
	if ok.UserAgent == nil || *ok.UserAgent != `probe/1.0 "x"` || ok.Referer == nil || *ok.Referer != "https://ref.test/p" {
		t.Errorf("user_agent %v, referer %v; want the request's (the first Referer)", ok.UserAgent, ok.Referer)
	}
	if big := byURI["log.test/big"]; big.Status != 200 || big.Bytes != 100_000 || !generatedID.MatchString(big.ID) ||
		big.UserAgent != nil || big.Referer != nil {
		t.Errorf("streamed body: %+v; want 200, 100000 bytes, a generated id, no user agent or referer", big)
	}
	if nf := byURI["nowhere.test/"]; nf.Status != 404 || nf.Pool != nil || nf.Node != nil || nf.UpstreamConnect != nil ||
		nf.Bytes != int64(len(errorBodies[404])) {
		t.Errorf("no pool: %+v; want 404 with pool, node and upstream timings null", nf)
	}
	if amb := byURI["log.test/"]; amb.Status != 400 || amb.Node != nil || !generatedID.MatchString(amb.ID) {
		t.Errorf("ambiguous body: %+v; want 400 before any node, with an id", amb)
	}
	var unparsed bool
	for _, l := range lines {
		unparsed = unparsed || (l.Status == 400 && l.Host == "")
	}
	if !unparsed {
		t.Errorf("no line for the unparsable request: %+v", lines)
	}
}

// The line of a request every node refused (502) names the node tried
// last, with upstream_connect null: it never connected. It used to say
// "node":null, hiding which node failed.
func TestAccessLogNamesFailedNode(t *testing.T) {
	logs := &lineBuffer{}
	r := startRouter(t, Config{AccessLog: logs})
	a := uwsgitest.Refused(t)
	r.table.AddStatic("dead.test", a, 1)
	if resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n"); resp.StatusCode != 502 {
		t.Fatalf("status %d; want 502", resp.StatusCode)
	}
	l := logs.waitLines(t, 1)[0]
	if l.Status != 502 || l.Node == nil || *l.Node != a || l.UpstreamConnect != nil || l.UpstreamHeader != nil {
		t.Fatalf("502 line %+v (node %v); want node %s with upstream timings null", l, l.Node, a)
	}
}

func TestAccessLogH2(t *testing.T) {
	n := startFakeNode(t, okReply("h2 body"))
	logs := &lineBuffer{}
	r := startRouter(t, Config{AccessLog: logs})
	r.table.AddStatic("h2.test", n.addr(), 1)

	// h2c with prior knowledge.
	tr := h2cTransport()
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	req, _ := http.NewRequest("GET", "http://"+r.addr+"/h2?x=1", nil)
	req.Host = "h2.test"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(body) != "h2 body" {
		t.Fatalf("h2: %d %q", resp.StatusCode, body)
	}
	l := logs.waitLines(t, 1)[0]
	if l.Proto != "HTTP/2.0" || l.Status != 200 || l.Bytes != 7 || l.URI != "/h2?x=1" || l.Host != "h2.test" ||
		l.Node == nil || !generatedID.MatchString(l.ID) || n.last()["HTTP_X_REQUEST_ID"] != l.ID ||
		l.UserAgent == nil || *l.UserAgent != "Go-http-client/2.0" {
		t.Errorf("h2 line %+v; node saw id %q", l, n.last()["HTTP_X_REQUEST_ID"])
	}
}

func TestAppendJSONString(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain", `"plain"`},
		{`q"b\s`, `"q\"b\\s"`},
		{"\n\r\t\x00\x1f\x7f", `"\n\r\t\u0000\u001f\u007f"`},
		{"ünïcödé ✓", `"ünïcödé ✓"`},
		{"bad\xffutf8\xc3", `"bad\ufffdutf8\ufffd"`},
		{"</script>", `"</script>"`},
	} {
		if got := string(appendJSONString(nil, []byte(tc.in))); got != tc.want {
			t.Errorf("appendJSONString(%q) = %s; want %s", tc.in, got, tc.want)
		}
		if got := string(appendJSONString(nil, tc.in)); got != tc.want {
			t.Errorf("appendJSONString(string %q) = %s; want %s", tc.in, got, tc.want)
		}
	}
}

// FuzzAppendJSONString: whatever the bytes, the output is one valid JSON
// string that decodes to what encoding/json makes of the same bytes.
func FuzzAppendJSONString(f *testing.F) {
	for _, s := range []string{"", "a", `"\`, "\x00\x7f\n", "\xff\xfe", "é\xe2\x82", "\xed\xa0\x80", "𝄞"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		out := appendJSONString([]byte("x"), in)[1:]
		if bytes.ContainsAny(out, "\n\r") {
			t.Fatalf("raw newline in %q", out)
		}
		var got string
		if err := json.Unmarshal(out, &got); err != nil {
			t.Fatalf("appendJSONString(%q) = %s: %v", in, out, err)
		}
		ref, _ := json.Marshal(string(in))
		var want string
		if err := json.Unmarshal(ref, &want); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("appendJSONString(%q) decodes to %q; encoding/json gives %q", in, got, want)
		}
	})
}

// FuzzRequestID: whatever X-Request-Id headers a client sends, exactly one
// valid id reaches the node, and it is the one logged.
func FuzzRequestID(f *testing.F) {
	f.Add([]byte("abc"), []byte(""), false)
	f.Add([]byte("a b"), []byte("ok"), true)
	f.Add([]byte(strings.Repeat("z", 200)), []byte("x,y"), true)
	rt, err := New(Config{Pools: emptyPools{}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v1, v2 []byte, two bool) {
		x := getExchange()
		defer putExchange(x)
		r := sampleRequest()
		r.Headers = r.Headers[:len(r.Headers)-1] // drop its X-Request-Id
		r.Headers = append(r.Headers, hdr{[]byte("X-Request-ID"), v1})
		if two {
			r.Headers = append(r.Headers, hdr{[]byte("x-request-id"), v2})
		}
		x.req = *r
		rt.assignRequestID(x)
		if !validRequestID(x.obs.id) {
			t.Fatalf("id %q is not valid", x.obs.id)
		}
		if validRequestID(v1) && string(x.obs.id) != string(v1) {
			t.Fatalf("valid client id %q replaced by %q", v1, x.obs.id)
		}
		pkt, err := uwsgi.AppendVars(nil, &x.req, 0, 0)
		if err != nil {
			return // the value pushed the vars past 64 KiB: the request gets 431
		}
		vars := decodeVars(t, pkt)
		if vars["HTTP_X_REQUEST_ID"] != string(x.obs.id) {
			t.Fatalf("node gets %q; logged id %q", vars["HTTP_X_REQUEST_ID"], x.obs.id)
		}
	})
}

// emptyPools satisfies Pools for tests that never route (a call would
// panic on the nil interface), whatever methods Pools grows.
type emptyPools struct{ Pools }

func decodeVars(t *testing.T, pkt []byte) map[string]string {
	t.Helper()
	vars := map[string]string{}
	block := pkt[uwsgi.HeaderLen:]
	for off := 0; off < len(block); {
		k, v, next, err := uwsgi.NextVar(block, off)
		if err != nil {
			t.Fatal(err)
		}
		vars[string(k)] = string(v)
		off = next
	}
	return vars
}
