package health

import (
	"bytes"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/uwsgi"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// newFakeNode is a node that reads whatever a probe sends first (a uwsgi
// packet, an HTTP request, nothing for a TCP probe) and answers it with
// answer; "hang" never answers.
func newFakeNode(t *testing.T, answer string) *uwsgitest.Node {
	t.Helper()
	return uwsgitest.NewNode(t, answerWith(answer), uwsgitest.WithProto(uwsgitest.Raw), uwsgitest.Deadline(5*time.Second))
}

func answerWith(answer string) uwsgitest.Handler {
	if answer == "hang" {
		return uwsgitest.Hold() // the probe's timeout ends it
	}
	return uwsgitest.Reply(answer)
}

// lastProbe is the bytes of the last probe f received.
func lastProbe(f *uwsgitest.Node) []byte {
	if r := f.Last(); r != nil {
		return r.Raw
	}
	return nil
}

const ok200 = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

func setup(t *testing.T, checks map[string]Check, nodes ...string) (*balancer.Table, *Checker, *prometheus.Registry) {
	t.Helper()
	tb, err := balancer.New(balancer.Config{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range nodes {
		key, addr, _ := strings.Cut(a, "=")
		if err := tb.AddStatic(key, addr, 1); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	c, err := New(Config{Pools: tb, Checks: checks, Registerer: reg, Tick: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	c.Start()
	t.Cleanup(c.Close)
	return tb, c, reg
}

var waitFor = uwsgitest.WaitFor

func TestFallAndRise(t *testing.T) {
	good, bad := newFakeNode(t, ok200), newFakeNode(t, "HTTP/1.1 500 Internal Server Error\r\n\r\n")
	check := Check{Interval: 100 * time.Millisecond, Timeout: 100 * time.Millisecond, Rise: 2, Fall: 3, Path: "/health?deep=1"}
	tb, _, reg := setup(t, map[string]Check{"App.Test": check}, "app.test="+good.Addr(), "app.test="+bad.Addr(), "other.test="+bad.Addr())
	p := tb.Pool("app.test")
	badNode, goodNode := p.Node(bad.Addr()), p.Node(good.Addr())

	waitFor(t, "the 500 node to go down", func() bool { return !badNode.Healthy() })
	if bad.Accepted() < 3 {
		t.Errorf("down after %d probes, want fall=3", bad.Accepted())
	}
	if badNode.State() != balancer.StateFailed || !goodNode.Healthy() {
		t.Fatalf("states: bad %s, good healthy=%v", badNode.State(), goodNode.Healthy())
	}
	// Nothing routes to it now.
	for range 10 {
		n := p.Pick(time.Now().UnixNano(), nil)
		if n != goodNode {
			t.Fatalf("picked %v while the other node is down", n)
		}
		n.Done()
	}
	// A pool without a check is never probed nor judged.
	if n := tb.Pool("other.test").Nodes()[0]; !n.Healthy() {
		t.Fatal("unchecked pool judged")
	}

	// The probe is a well-formed uwsgi GET for the pool's host.
	req := lastProbe(bad)
	vars := map[string]string{}
	for off := uwsgi.HeaderLen; off < len(req); {
		k, v, next, err := uwsgi.NextVar(req[uwsgi.HeaderLen:], off-uwsgi.HeaderLen)
		if err != nil {
			t.Fatalf("probe vars: %v (%q)", err, req)
		}
		vars[string(k)] = string(v)
		off = next + uwsgi.HeaderLen
	}
	for k, want := range map[string]string{"REQUEST_METHOD": "GET", "PATH_INFO": "/health", "QUERY_STRING": "deep=1",
		"HTTP_HOST": "app.test", "REQUEST_URI": "/health?deep=1", "HTTP_USER_AGENT": "fastrouter-health"} {
		if vars[k] != want {
			t.Errorf("probe var %s = %q, want %q", k, vars[k], want)
		}
	}

	bad.SetHandler(answerWith(ok200))
	before := bad.Accepted()
	waitFor(t, "the node to rise", func() bool { return badNode.Healthy() })
	if got := bad.Accepted() - before; got < 2 {
		t.Errorf("rose after %d passing probes, want rise=2", got)
	}
	if badNode.State() != balancer.StateActive {
		t.Fatalf("risen node state %s", badNode.State())
	}
	if v := testutil.ToFloat64(mustCounter(t, reg, "app.test", "fail")); v < 3 {
		t.Errorf("fail count %v", v)
	}
}

func mustCounter(t *testing.T, reg *prometheus.Registry, pool, result string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range m.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if mf.GetName() == "fastrouter_health_checks_total" && labels["pool"] == pool && labels["result"] == result {
				c := prometheus.NewCounter(prometheus.CounterOpts{Name: "x"})
				c.Add(m.GetCounter().GetValue())
				return c
			}
		}
	}
	t.Fatalf("no fastrouter_health_checks_total{pool=%q,result=%q}", pool, result)
	return nil
}

func TestProbeFailures(t *testing.T) {
	for name, answer := range map[string]string{
		"garbage":  "SSH-2.0-OpenSSH\r\n",
		"empty":    "",
		"hang":     "hang",
		"404":      "HTTP/1.1 404 Not Found\r\n\r\n",
		"redirect": "HTTP/1.0 302 Found\r\n\r\n",
		"503":      "HTTP/1.1 503 Busy\r\n\r\n",
		"short":    "HTTP/1.1 2",
	} {
		t.Run(name, func(t *testing.T) {
			f := newFakeNode(t, answer)
			tb, _, _ := setup(t, map[string]Check{"p": {Interval: 100 * time.Millisecond, Timeout: 50 * time.Millisecond, Fall: 1, Rise: 1}}, "p="+f.Addr())
			n := tb.Pool("p").Nodes()[0]
			waitFor(t, "two probes", func() bool { return f.Accepted() >= 2 })
			time.Sleep(60 * time.Millisecond) // let the second verdict land
			wantUp := name == "redirect"
			if name == "404" {
				wantUp = false // 4xx: the app does not serve the check path
			}
			if n.Healthy() != wantUp {
				t.Fatalf("answer %q: healthy=%v, want %v", answer, n.Healthy(), wantUp)
			}
		})
	}
}

func TestHTTPAndTCPProbes(t *testing.T) {
	f := newFakeNode(t, "HTTP/1.1 500 x\r\n\r\n")
	g := newFakeNode(t, ok200)
	_, gp, _ := net.SplitHostPort(g.Addr())
	port := uint16(0)
	for _, c := range gp {
		port = port*10 + uint16(c-'0')
	}
	tb, _, _ := setup(t, map[string]Check{
		"http.test": {Type: TypeHTTP, Port: port, Path: "/up", Interval: 100 * time.Millisecond, Fall: 1, Rise: 1},
		"tcp.test":  {Type: TypeTCP, Interval: 100 * time.Millisecond, Fall: 1, Rise: 1},
	}, "http.test="+f.Addr(), "tcp.test="+f.Addr())
	waitFor(t, "an HTTP probe on the health port", func() bool { return g.Accepted() >= 2 })
	if r := string(lastProbe(g)); !strings.HasPrefix(r, "GET /up HTTP/1.1\r\nHost: http.test\r\n") {
		t.Fatalf("http probe sent %q", r)
	}
	time.Sleep(150 * time.Millisecond)
	if !tb.Pool("http.test").Nodes()[0].Healthy() {
		t.Fatal("http probe on the health port did not keep the node up")
	}
	if !tb.Pool("tcp.test").Nodes()[0].Healthy() {
		t.Fatal("tcp probe of a listening node marked it down")
	}
	// Close the node: the tcp probe fails.
	f.Close()
	waitFor(t, "tcp probe to fail", func() bool { return !tb.Pool("tcp.test").Nodes()[0].Healthy() })
}

func TestSetChecksRemovalMarksUp(t *testing.T) {
	bad := newFakeNode(t, "HTTP/1.1 500 x\r\n\r\n")
	tb, c, _ := setup(t, map[string]Check{"p": {Interval: 100 * time.Millisecond, Fall: 1}}, "p="+bad.Addr())
	n := tb.Pool("p").Nodes()[0]
	waitFor(t, "down", func() bool { return !n.Healthy() })
	if err := c.SetChecks(nil); err != nil {
		t.Fatal(err)
	}
	if !n.Healthy() {
		t.Fatal("removing the check left the node down")
	}
	hits := bad.Accepted()
	time.Sleep(300 * time.Millisecond)
	if bad.Accepted() > hits+1 {
		t.Fatal("still probing after the check was removed")
	}
}

func TestNormalize(t *testing.T) {
	c := Check{}
	if err := c.Normalize(); err != nil || c.Type != TypeUWSGI || c.Path != "/" || c.Interval != 5*time.Second || c.Timeout != 2*time.Second || c.Rise != 2 || c.Fall != 3 {
		t.Fatalf("defaults: %+v %v", c, err)
	}
	for _, bad := range []Check{
		{Type: "icmp"}, {Path: "health"}, {Path: "/a b"}, {Path: "/\x00"}, {Host: "a\r\nb"},
		{Interval: time.Millisecond}, {Interval: time.Second, Timeout: 2 * time.Second}, {Rise: -1}, {Fall: 101},
	} {
		if err := bad.Normalize(); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
	if _, err := New(Config{Pools: nopPools{}, Checks: map[string]Check{"a": {}, "A": {}}}); err == nil {
		t.Error("duplicate keys accepted")
	}
}

type nopPools struct{}

func (nopPools) Pools() []*balancer.Pool { return nil }

func TestDefaultHost(t *testing.T) {
	for in, want := range map[string]string{"a.test": "a.test", "a.test/api": "a.test", "*.a.test": "localhost", ".a.test": "localhost", "/x": "localhost"} {
		if got := defaultHost(in); got != want {
			t.Errorf("defaultHost(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseStatusLine(t *testing.T) {
	for in, want := range map[string]int{"HTTP/1.1 200 OK\r\n": 200, "HTTP/1.0 503\r\n": 503, "HTTP/1.1 204": 204, "HTTP/1.1 302 Found": 302} {
		if code, ok, err := ParseStatusLine([]byte(in)); !ok || err != nil || code != want {
			t.Errorf("%q: %d %v %v", in, code, ok, err)
		}
	}
	for _, in := range []string{"", "HTTP/1.1 2", "HTTP/1."} {
		if _, ok, err := ParseStatusLine([]byte(in)); ok || err != nil {
			t.Errorf("%q: want undecided", in)
		}
	}
	for _, in := range []string{"X", "HTTP/2 200", "HTTP/1.1 2x0 ", "HTTP/1.1 099 ", "HTTP/1.1 2000", "http/1.1 200 "} {
		if _, _, err := ParseStatusLine([]byte(in)); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func FuzzParseStatusLine(f *testing.F) {
	for _, s := range []string{"HTTP/1.1 200 OK\r\n", "HTTP/1.0 5", "", "HTTP/1.1 999 x", "\x00\xff"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		code, ok, err := ParseStatusLine(b)
		if ok && (err != nil || code < 100 || code > 999) {
			t.Fatalf("%q: code %d ok %v err %v", b, code, ok, err)
		}
		if ok && !bytes.HasPrefix(b, []byte("HTTP/1.")) {
			t.Fatalf("%q accepted without the protocol", b)
		}
		// Deciding never depends on bytes past the status code.
		if ok && len(b) > 13 {
			if c2, ok2, _ := ParseStatusLine(b[:13]); !ok2 || c2 != code {
				t.Fatalf("%q: prefix decided differently", b)
			}
		}
	})
}

// A uwsgi check (the default type) of an http:// node probes it in HTTP on
// its own port: a uwsgi packet would be garbage to it.
func TestUwsgiCheckOfHTTPNodeSpeaksHTTP(t *testing.T) {
	f := newFakeNode(t, ok200)
	tb, _, _ := setup(t, map[string]Check{
		"h.test": {Path: "/health", Interval: 100 * time.Millisecond, Fall: 1, Rise: 1},
	}, "h.test=http://"+f.Addr())
	waitFor(t, "a probe", func() bool { return f.Accepted() >= 2 })
	if r := string(lastProbe(f)); !strings.HasPrefix(r, "GET /health HTTP/1.1\r\nHost: h.test\r\n") {
		t.Fatalf("probe of an http node sent %q", r)
	}
	if !tb.Pool("h.test").Nodes()[0].Healthy() {
		t.Fatal("a node answering 200 over HTTP was marked down")
	}
	f.SetHandler(answerWith("HTTP/1.1 503 x\r\n\r\n"))
	waitFor(t, "the node to go down", func() bool { return !tb.Pool("h.test").Nodes()[0].Healthy() })
}
