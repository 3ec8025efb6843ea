package router

import (
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// A node that closes or resets the connection after reading the request
// and before any byte of an answer (a node killed mid-run): an idempotent
// request without a body goes on to another node, which answers it, and
// the first node is counted under reason="closed" but not failed
// (forward.go, closedBeforeAnswer).

// earlyPair is a pool of a misbehaving node and a live one.
type earlyPair struct {
	r          *testRouter
	bad, live  *uwsgitest.Node
	host, addr string // addr: bad's address as the pool names it
}

func startEarlyPair(t *testing.T, cfg Config, bad uwsgitest.Handler, proto uwsgitest.Proto) *earlyPair {
	t.Helper()
	p := &earlyPair{host: "early.test"}
	p.bad = uwsgitest.NewNode(t, bad, uwsgitest.WithProto(proto))
	p.live = uwsgitest.NewNode(t, uwsgitest.Respond(func(*uwsgitest.Request) string {
		return "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlive"
	}), uwsgitest.WithProto(proto))
	p.r = startRouter(t, cfg)
	scheme := ""
	if proto == uwsgitest.HTTP {
		scheme = "http://"
	}
	p.addr = scheme + p.bad.Addr()
	p.r.table.AddStatic(p.host, p.addr, 1)
	p.r.table.AddStatic(p.host, scheme+p.live.Addr(), 1)
	return p
}

// untilBad sends req until the bad node has read one (bounded), checking
// every answer with check; it returns the status of the request the bad
// node read and how many requests the live node had read before it.
func (p *earlyPair) untilBad(t *testing.T, req string, check func(i int, resp *http.Response, body string)) (status int) {
	t.Helper()
	for i := 0; i < 20; i++ {
		before := len(p.live.Requests())
		resp, body := rawFinal(t, p.r.addr, req)
		check(i, resp, body)
		if len(p.bad.Requests()) > 0 {
			if resp.StatusCode != 200 && len(p.live.Requests()) != before {
				t.Errorf("request %d: %d, and the live node read it too", i, resp.StatusCode)
			}
			return resp.StatusCode
		}
	}
	t.Fatal("the bad node never read a request")
	return 0
}

func (p *earlyPair) closedCount() float64 { return p.errCount("closed") }

// errCount is backend_errors_total{pool=p.host, reason}.
func (p *earlyPair) errCount(reason string) float64 {
	return testutil.ToFloat64(p.r.rt.metrics.backendErrs.WithLabelValues(p.host, reason))
}

func (p *earlyPair) badFailing(t *testing.T) bool {
	t.Helper()
	for _, n := range p.r.table.Pool(p.host).Nodes() {
		if n.Address == p.addr {
			return n.Failing()
		}
	}
	t.Fatalf("node %s not in the pool", p.addr)
	return false
}

func TestClosedBeforeAnswerRetried(t *testing.T) {
	for _, tc := range []struct {
		name  string
		h     uwsgitest.Handler
		proto uwsgitest.Proto
	}{
		{"uwsgi close", uwsgitest.Silent(), uwsgitest.Uwsgi},
		{"uwsgi reset", uwsgitest.Reset(), uwsgitest.Uwsgi},
		{"http close", uwsgitest.Silent(), uwsgitest.HTTP},
		{"http reset", uwsgitest.Reset(), uwsgitest.HTTP},
	} {
		for _, method := range []string{"GET", "HEAD", "OPTIONS", "PUT", "DELETE"} {
			t.Run(tc.name+" "+method, func(t *testing.T) {
				p := startEarlyPair(t, Config{}, tc.h, tc.proto)
				req := method + " / HTTP/1.1\r\nHost: early.test\r\n\r\n"
				if method == "HEAD" {
					req = method + " / HTTP/1.1\r\nHost: early.test\r\nConnection: close\r\n\r\n"
				}
				p.untilBad(t, req, func(i int, resp *http.Response, body string) {
					want := "live"
					if method == "HEAD" {
						want = ""
					}
					if resp.StatusCode != 200 || body != want {
						t.Errorf("request %d: %d %q; want 200 %q", i, resp.StatusCode, body, want)
					}
				})
				if p.badFailing(t) {
					t.Error("the node that closed without answering was failed; want it only counted")
				}
				if got := p.closedCount(); got != 1 {
					t.Errorf(`backend_errors_total{reason="closed"} = %v; want 1`, got)
				}
			})
		}
	}
}

// With no other node to try, the request that the only node closed on
// without answering is a 502, and the node is not failed: the next request
// is tried on it again (a one-node pool keeps serving after a crashed
// worker).
func TestClosedBeforeAnswerNoOtherNode(t *testing.T) {
	for _, proto := range []uwsgitest.Proto{uwsgitest.Uwsgi, uwsgitest.HTTP} {
		bad := uwsgitest.NewNode(t, uwsgitest.Silent(), uwsgitest.WithProto(proto))
		r := startRouter(t, Config{})
		addr := bad.Addr()
		if proto == uwsgitest.HTTP {
			addr = "http://" + addr
		}
		r.table.AddStatic("one.test", addr, 1)
		resp, body := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: one.test\r\n\r\n")
		if resp.StatusCode != 502 || body == "" {
			t.Errorf("%s: %d %q; want 502 with a body", addr, resp.StatusCode, body)
		}
		if n := r.table.Pool("one.test").Nodes()[0]; n.Failing() {
			t.Errorf("%s: failed; want it only counted", addr)
		}
		if resp, _ := raw(t, r.addr, "GET / HTTP/1.1\r\nHost: one.test\r\n\r\n"); resp.StatusCode != 502 {
			t.Errorf("%s: second request %d; want 502 again from the node, not 503", addr, resp.StatusCode)
		}
		if got := testutil.ToFloat64(r.rt.metrics.backendErrs.WithLabelValues("one.test", "closed")); got != 2 {
			t.Errorf(`%s: backend_errors_total{reason="closed"} = %v; want 2`, addr, got)
		}
	}
}

// A request that is not idempotent, or whose body streamed from the client
// (not buffered: Config.RequestBuffering 0 here), is never sent twice: the
// node may have acted on it, or what it read of the body is gone.
func TestClosedBeforeAnswerNotRetried(t *testing.T) {
	streamed := strings.Repeat("s", 2*bodyPrefetch)
	for _, tc := range []struct{ name, req string }{
		{"POST", "POST / HTTP/1.1\r\nHost: early.test\r\nContent-Length: 5\r\n\r\nhello"},
		{"POST empty", "POST / HTTP/1.1\r\nHost: early.test\r\nContent-Length: 0\r\n\r\n"},
		{"PATCH", "PATCH / HTTP/1.1\r\nHost: early.test\r\nContent-Length: 5\r\n\r\nhello"},
		{"GET with a streamed body", "GET / HTTP/1.1\r\nHost: early.test\r\nContent-Length: " + strconv.Itoa(len(streamed)) + "\r\n\r\n" + streamed},
	} {
		for _, proto := range []uwsgitest.Proto{uwsgitest.Uwsgi, uwsgitest.HTTP} {
			t.Run(tc.name, func(t *testing.T) {
				p := startEarlyPair(t, Config{}, uwsgitest.Reset(), proto)
				status := p.untilBad(t, tc.req, func(i int, resp *http.Response, body string) {
					if resp.StatusCode != 200 && resp.StatusCode != 502 {
						t.Errorf("request %d: %d; want 200 or 502", i, resp.StatusCode)
					}
				})
				if status != 502 {
					t.Errorf("the request the node reset: %d; want 502", status)
				}
			})
		}
	}
}

// Once a byte of the answer has come, or when the node stalls, the request
// is not sent again: the node was working on it.
func TestAnswerStartedOrStalledNotRetried(t *testing.T) {
	for _, tc := range []struct {
		name string
		h    uwsgitest.Handler
		cfg  Config
		want int
	}{
		{"one byte then close", uwsgitest.CloseAfter(uwsgitest.Reply("H")), Config{}, 502},
		{"one byte then reset", uwsgitest.ResetAfter("H"), Config{}, 502},
		{"interim then close", uwsgitest.CloseAfter(uwsgitest.Reply("HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n")), Config{}, 502},
		{"stalled", uwsgitest.Hold(), Config{Timeout: 300 * time.Millisecond}, 504},
	} {
		for _, proto := range []uwsgitest.Proto{uwsgitest.Uwsgi, uwsgitest.HTTP} {
			t.Run(tc.name, func(t *testing.T) {
				p := startEarlyPair(t, tc.cfg, tc.h, proto)
				status := p.untilBad(t, "GET / HTTP/1.1\r\nHost: early.test\r\n\r\n", func(i int, resp *http.Response, body string) {
					if resp.StatusCode != 200 && resp.StatusCode != tc.want && !strings.HasPrefix(body, "live") {
						t.Errorf("request %d: %d; want 200 or %d", i, resp.StatusCode, tc.want)
					}
				})
				if status != tc.want {
					t.Errorf("the request the node began or stalled: %d; want %d", status, tc.want)
				}
				if got := p.closedCount(); got != 0 {
					t.Errorf(`backend_errors_total{reason="closed"} = %v; want 0`, got)
				}
			})
		}
	}
}

// rawFinal is raw's response after any interim ones.
func rawFinal(t *testing.T, addr, req string) (*http.Response, string) {
	t.Helper()
	c := uwsgitest.Dial(t, addr)
	defer c.Close()
	resp, body := c.Do(req)
	method, _, _ := strings.Cut(req, " ")
	for resp.StatusCode < 200 {
		var err error
		if resp, body, err = c.Next(method); err != nil {
			t.Fatalf("final response: %v", err)
		}
	}
	return resp, body
}
