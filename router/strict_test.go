package router

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/strict"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// The strict checks run on the real front: statuses, bodies, the reason
// counter, and a closed connection after each refusal.
func TestStrictHeadOverTheWire(t *testing.T) {
	n := startFakeNode(t, func(v map[string]string, _ []byte) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(v["HTTP_HOST"]+" "+v["REQUEST_URI"])) + "\r\n\r\n" +
			v["HTTP_HOST"] + " " + v["REQUEST_URI"]
	})
	r := startRouter(t, Config{})
	r.table.AddStatic("b.test", n.addr(), 1)
	resp, body := raw(t, r.addr, "GET http://b.test/p?q HTTP/1.1\r\nHost: a.test\r\n\r\n")
	if resp.StatusCode != 200 || body != "b.test /p?q" {
		t.Fatalf("absolute form: %d %q; want 200 from b.test with REQUEST_URI /p?q", resp.StatusCode, body)
	}
	for _, tc := range []struct {
		req    string
		status int
		reason strict.Reject
	}{
		{"GET / HTTP/1.1\r\nHost: b.test\r\nX: 1\r\n folded\r\n\r\n", 400, strict.ObsFold},
		{"CONNECT b.test:443 HTTP/1.1\r\nHost: b.test:443\r\n\r\n", 405, strict.Connect},
		{"GET /" + strings.Repeat("x", strict.MaxRequestLine) + " HTTP/1.1\r\nHost: b.test\r\n\r\n", 414, strict.TargetLong},
		{"GET / HTTP/1.2\r\nHost: b.test\r\n\r\n", 505, strict.Version},
		{"GET /#f HTTP/1.1\r\nHost: b.test\r\n\r\n", 400, strict.RequestLine},
	} {
		resp, body := raw(t, r.addr, tc.req)
		if resp.StatusCode != tc.status || body == "" || !resp.Close {
			t.Errorf("%.40q: %d %q close=%v; want %d, a body, Connection: close", tc.req, resp.StatusCode, body, resp.Close, tc.status)
		}
		if got := testutil.ToFloat64(r.rt.headRejects[tc.reason]); got != 1 {
			t.Errorf("%.40q: rejected{%s} = %v; want 1", tc.req, strict.Names[tc.reason], got)
		}
	}
}

func TestMaxConns(t *testing.T) {
	n := startFakeNode(t, okReply("ok"))
	r := startRouter(t, Config{MaxConns: 2})
	r.table.AddStatic("m.test", n.addr(), 1)
	held := []*uwsgitest.Client{uwsgitest.Dial(t, r.addr), uwsgitest.Dial(t, r.addr)}
	// The two held connections may still be on their way through accept;
	// a third is refused once both are counted.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := uwsgitest.Dial(t, r.addr)
		c.Send("GET / HTTP/1.1\r\nHost: m.test\r\n\r\n")
		resp, _, err := c.Next("GET")
		c.Close()
		if err != nil {
			t.Fatalf("over the limit: %v; want a 503", err)
		}
		if resp.StatusCode == 503 {
			if resp.Header.Get("Retry-After") == "" || !resp.Close {
				t.Fatalf("refusal without Retry-After or Connection: close: %v", resp.Header)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("third connection answered %d; want 503", resp.StatusCode)
		}
	}
	if got := testutil.ToFloat64(r.rt.connsRefused.WithLabelValues("test")); got < 1 {
		t.Fatalf("refused counter = %v", got)
	}
	// Closing a held connection frees its slot.
	held[0].Close()
	eventually(t, func() bool {
		c := uwsgitest.Dial(t, r.addr)
		defer c.Close()
		c.Send("GET / HTTP/1.1\r\nHost: m.test\r\n\r\n")
		resp, _, err := c.Next("GET")
		return err == nil && resp.StatusCode == 200
	})
	// The held connection still works.
	if resp, _ := held[1].Do("GET / HTTP/1.1\r\nHost: m.test\r\n\r\n"); resp.StatusCode != 200 {
		t.Fatalf("held connection: %v", resp)
	}
}

func eventually(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 5s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
