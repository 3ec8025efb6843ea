package router

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/ascii"
	"github.com/fastrouter/fastrouter/internal/uwsgitest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/valyala/fasthttp"
)

// What do metrics cost a request? Two benchmarks answer at two scales:
//
//   - BenchmarkRequestMetrics: the metric operations one request performs
//     (children lookup, in-flight gauge up and down, status counter,
//     duration histogram), with the real children and with no-ops.
//   - BenchmarkProxy: whole requests through the HTTP/1.1 front to an
//     in-process uwsgi node over a unix socket, keep-alive client, with the
//     router's metrics, with no-op metrics, and with metrics plus the access
//     log.
//
// Run: go test -run '^$' -bench 'RequestMetrics|Proxy|AccessLogLine' -count 6 ./router/

// The no-op metric children: only the methods the request path calls.
type (
	nopGauge    struct{ prometheus.Gauge }
	nopCounter  struct{ prometheus.Counter }
	nopObserver struct{}
)

func (nopGauge) Inc()                 {}
func (nopGauge) Dec()                 {}
func (nopCounter) Inc()               {}
func (nopObserver) Observe(_ float64) {}

// nopPoolMetrics returns pool metrics whose children do nothing, with the
// given status codes pre-resolved (so count never creates a real child).
func nopPoolMetrics(m *metrics, key string, codes ...int) *poolMetrics {
	pm := &poolMetrics{m: m, key: key, duration: nopObserver{}, inflight: nopGauge{}}
	ccs := make([]codeCounter, 0, len(codes))
	for _, c := range codes {
		ccs = append(ccs, codeCounter{c, nopCounter{}})
	}
	pm.codes.Store(&ccs)
	return pm
}

// disableMetrics swaps the router's per-pool metrics for no-ops: the
// "without metrics" variant of the benchmarks.
func disableMetrics(rt *Router, keys ...string) {
	m := rt.metrics
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, k := range keys {
		m.pools[k] = nopPoolMetrics(m, k, 200, 404, 502, 503, 504)
	}
	m.none = nopPoolMetrics(m, "", 200, 400, 404, 431)
}

func BenchmarkRequestMetrics(b *testing.B) {
	for _, on := range []bool{true, false} {
		name := "metrics=on"
		if !on {
			name = "metrics=off"
		}
		b.Run(name, func(b *testing.B) {
			table, err := balancer.New(balancer.Config{})
			if err != nil {
				b.Fatal(err)
			}
			table.AddStatic("shop.example.com", "10.0.0.1:3031", 1)
			pool := table.Pool("shop.example.com")
			rt, err := New(Config{Pools: table, Registerer: prometheus.NewRegistry()})
			if err != nil {
				b.Fatal(err)
			}
			if !on {
				disableMetrics(rt, pool.Key)
			}
			x := getExchange()
			defer putExchange(x)
			b.ReportAllocs()
			for b.Loop() {
				// What forward and finish do for metrics, in order.
				pm := rt.poolMetrics(x, pool)
				pm.inflight.Inc()
				start := rt.now()
				pm.count(200)
				pm.inflight.Dec()
				pm.duration.Observe(rt.now().Sub(start).Seconds())
			}
		})
	}
}

// benchResponse is what the benchmarks' nodes answer.
const benchResponse = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nhello, world\n"

// benchNode is an in-process uwsgi node on a unix socket that answers
// benchResponse, lean enough (uwsgitest.Lean) not to weigh in the figures.
func benchNode(b *testing.B) string {
	b.Helper()
	return uwsgitest.NewNode(b, uwsgitest.Reply(benchResponse), uwsgitest.OnUnix(), uwsgitest.Lean()).Addr()
}

func BenchmarkProxy(b *testing.B) {
	node := benchNode(b)
	for _, v := range []struct {
		name      string
		metrics   bool
		accessLog bool
		loop      bool // the HTTP/1.1 event loop (h1loop_linux.go), else Config.DisableH1EventLoop
	}{
		{"metrics=on", true, false, false},
		{"metrics=off", false, false, false},
		{"metrics=on,accesslog=on", true, true, false},
		{"metrics=on,eventloop=on", true, false, true},
		{"metrics=on,accesslog=on,eventloop=on", true, true, true},
	} {
		b.Run(v.name, func(b *testing.B) {
			table, err := balancer.New(balancer.Config{})
			if err != nil {
				b.Fatal(err)
			}
			table.AddStatic("bench.test", node, 1)
			cfg := Config{Pools: table, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry(), DisableH1EventLoop: !v.loop}
			if v.accessLog {
				cfg.AccessLog = io.Discard
			}
			rt, err := New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			if !v.metrics {
				disableMetrics(rt, "bench.test")
			}
			benchGET(b, rt)
		})
	}
}

// benchGET serves rt on a loopback port and times keep-alive GETs of
// bench.test through it, one per iteration, each read to its end.
func benchGET(b *testing.B, rt *Router) {
	c, err := net.Dial("tcp", serveUntilCleanup(b, rt, rt.Serve, "tcp", "bench"))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte("GET /items?id=42 HTTP/1.1\r\nHost: bench.test\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if err := readResponse(br); err != nil {
			b.Fatal(err)
		}
	}
}

// readResponse reads one response with a Content-Length body and fails on
// anything but 200.
func readResponse(br *bufio.Reader) error {
	cl := -1
	first := true
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if first {
			if !bytes.HasPrefix(line, []byte("HTTP/1.1 200 ")) {
				return errStatus(line)
			}
			first = false
			continue
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && ascii.EqualFold(k, "content-length") {
			cl, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	_, err := br.Discard(cl)
	return err
}

type errStatus []byte

func (e errStatus) Error() string { return "unexpected response " + strconv.Quote(string(e)) }

// BenchmarkAccessLogLine compares the fixed JSON encoder of access-log lines
// with log/slog's JSON handler writing the same fields.
func BenchmarkAccessLogLine(b *testing.B) {
	node := &balancer.Node{Address: "10.0.0.5:3031"}
	b.Run("encoder=fixed", func(b *testing.B) {
		rt, err := New(Config{Pools: emptyPools{}, AccessLog: io.Discard})
		if err != nil {
			b.Fatal(err)
		}
		x := getExchange()
		defer putExchange(x)
		x.req = *sampleRequest()
		rt.observe(x)
		x.obs.pool, x.obs.node = "shop.example.com", node
		x.obs.connect, x.obs.header = 180*time.Microsecond, 12*time.Millisecond
		b.ReportAllocs()
		for b.Loop() {
			rt.logAccess(x, 200, nil, 5120)
		}
	})
	b.Run("encoder=slog", func(b *testing.B) {
		l := slog.New(slog.NewJSONHandler(io.Discard, nil))
		r := sampleRequest()
		id := "7f9c2ba4e88f827d616045507605853e"
		began := time.Now()
		b.ReportAllocs()
		for b.Loop() {
			l.LogAttrs(context.Background(), slog.LevelInfo, "",
				slog.Time("began", began), slog.String("id", id), slog.String("client", r.Remote.String()),
				slog.String("method", string(r.Method)), slog.String("host", string(r.Host)),
				slog.String("uri", string(r.URI)), slog.String("proto", string(r.Proto)),
				slog.String("scheme", r.Scheme), slog.Int("status", 200),
				slog.String("pool", "shop.example.com"), slog.String("node", node.Address),
				slog.Float64("upstream_connect", 0.000180), slog.Float64("upstream_header", 0.012),
				slog.Int64("bytes", 5120), slog.Float64("duration", time.Since(began).Seconds()))
		}
	})
}

// BenchmarkRequestID: finding, checking or generating a request's
// X-Request-Id.
func BenchmarkRequestID(b *testing.B) {
	rt, err := New(Config{Pools: emptyPools{}})
	if err != nil {
		b.Fatal(err)
	}
	base := sampleRequest()
	for _, v := range []struct {
		name string
		id   []byte
	}{{"generated", nil}, {"client", []byte("7f9c2ba4e88f827d616045507605853e")}} {
		b.Run(v.name, func(b *testing.B) {
			x := getExchange()
			defer putExchange(x)
			hs := make([]hdr, 0, 16)
			b.ReportAllocs()
			for b.Loop() {
				x.req = *base
				x.req.Headers = append(hs[:0], base.Headers[:len(base.Headers)-1]...)
				if v.id != nil {
					x.req.Headers = append(x.req.Headers, hdr{xRequestID, v.id})
				}
				x.obs = obsInfo{}
				rt.assignRequestID(x)
			}
		})
	}
}

// BenchmarkReframe: a node's raw HTTP response (uwsgi framing: the head, a
// body ended by Content-Length or by EOF) read with the pooled backend
// reader and written to an HTTP/1.1 client by fasthttp, as forward and the
// h1 front do: Content-Length kept, EOF framing turned into chunked. Must
// report 0 allocs/op.
func BenchmarkReframe(b *testing.B) {
	body := bytes.Repeat([]byte("x"), 512)
	for _, v := range []struct {
		name string
		raw  []byte
	}{
		{"content-length", append([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 512\r\n\r\n"), body...)},
		{"eof-to-chunked", append([]byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"), body...)},
	} {
		b.Run(v.name, func(b *testing.B) {
			src := bytes.NewReader(nil)
			out := bufio.NewWriterSize(io.Discard, 4096)
			var resp fasthttp.Response
			body := &reframeBody{}
			b.ReportAllocs()
			for b.Loop() {
				src.Reset(v.raw)
				br := readerPool.Get().(*bufio.Reader)
				br.Reset(src)
				if err := resp.Header.Read(br); err != nil {
					b.Fatal(err)
				}
				resp.Header.ResetConnectionClose()
				cl := resp.Header.ContentLength()
				body.r, body.n = br, int64(cl)
				if cl < 0 {
					cl = -1
				}
				resp.SetBodyStream(body, cl)
				if err := resp.Write(out); err != nil {
					b.Fatal(err)
				}
				if err := out.Flush(); err != nil {
					b.Fatal(err)
				}
				resp.Reset()
				br.Reset(nil)
				readerPool.Put(br)
			}
		})
	}
}

// reframeBody is backendBody's framing without its connection: n bytes
// (n < 0: to EOF) from r.
type reframeBody struct {
	r *bufio.Reader
	n int64
}

func (b *reframeBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	if b.n > 0 && int64(len(p)) > b.n {
		p = p[:b.n]
	}
	n, err := b.r.Read(p)
	if b.n > 0 {
		b.n -= int64(n)
	}
	return n, err
}

// benchRouter is a Router whose pool bench.test has the one node node,
// with nothing logged and metrics on a registry of its own.
func benchRouter(b *testing.B, node string) *Router {
	b.Helper()
	table, err := balancer.New(balancer.Config{})
	if err != nil {
		b.Fatal(err)
	}
	table.AddStatic("bench.test", node, 1)
	rt, err := New(Config{Pools: table, Logger: slog.New(slog.DiscardHandler), Registerer: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	return rt
}
