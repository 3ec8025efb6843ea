package integration

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgitest"
)

func TestRoutesByHost(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "one.test", nodeOpts{id: "one"})
	startNode(t, r, "two.test:8080", nodeOpts{id: "two"})
	waitForNodes(t, r, "one.test", 1)
	waitForNodes(t, r, "two.test:8080", 1)
	c := client()
	for host, want := range map[string]string{
		"one.test": "node=one", "ONE.Test": "node=one", "one.test:9999": "node=one",
		"two.test:8080": "node=two",
	} {
		if code, body := get(t, c, r.http, host, "/"); code != 200 || body != want {
			t.Errorf("Host %s: %d %q; want 200 %q", host, code, body, want)
		}
	}
	if code, _ := get(t, c, r.http, "three.test", "/"); code != 404 {
		t.Errorf("unknown host: %d; want 404", code)
	}
}

func TestSpreadsOverTwoNodes(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "spread.test", nodeOpts{id: "a"})
	startNode(t, r, "spread.test", nodeOpts{id: "b"})
	waitForNodes(t, r, "spread.test", 2)
	c := client()
	counts := map[string]int{}
	for i := 0; i < 100; i++ {
		code, body := get(t, c, r.http, "spread.test", "/")
		if code != 200 {
			t.Fatalf("request %d: %d %q", i, code, body)
		}
		counts[body]++
	}
	if counts["node=a"] < 35 || counts["node=b"] < 35 {
		t.Fatalf("uneven spread over equal weights: %v", counts)
	}
}

func TestVarsSeenByWSGIApp(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "vars.test", nodeOpts{id: "v"})
	waitForNodes(t, r, "vars.test", 1)

	c := uwsgitest.Dial(t, r.http)
	localPort := c.Conn().LocalAddr().(*net.TCPAddr).Port
	_, body := c.Do("POST /env/%7Euser/./x/../y?a=1&b=%20 HTTP/1.1\r\nHost: vars.test\r\n" +
		"X-Multi: 1\r\nX-Multi: 2\r\nX_Multi: spoof\r\nX-Forwarded-For: 203.0.113.9\r\n" +
		"Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nbody")
	var env map[string]string
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"REQUEST_METHOD": "POST", "REQUEST_URI": "/env/%7Euser/./x/../y?a=1&b=%20",
		"PATH_INFO": "/env/~user/y", "QUERY_STRING": "a=1&b=%20", "SERVER_PROTOCOL": "HTTP/1.1",
		"SCRIPT_NAME": "", "SERVER_NAME": "vars.test", "SERVER_PORT": strings.Split(r.http, ":")[1],
		"REMOTE_ADDR": "127.0.0.1", "REMOTE_PORT": fmt.Sprint(localPort), "REQUEST_SCHEME": "http",
		"CONTENT_TYPE": "text/plain", "CONTENT_LENGTH": "4", "HTTP_HOST": "vars.test",
		"HTTP_X_MULTI": "1, 2", "HTTP_X_FORWARDED_FOR": "203.0.113.9, 127.0.0.1",
		"HTTP_X_FORWARDED_PROTO": "http",
	}
	for k, w := range want {
		if got, ok := env[k]; !ok || got != w {
			t.Errorf("%s = %q (present %v); want %q", k, got, ok, w)
		}
	}
	if _, ok := env["HTTPS"]; ok {
		t.Error("HTTPS set on a plain-HTTP request")
	}

	// Without a query string QUERY_STRING is present and empty; without a
	// body there is no CONTENT_LENGTH (or an empty/zero one).
	code, body := get(t, client(), r.http, "vars.test", "/env")
	env = nil
	if err := json.Unmarshal([]byte(body), &env); code != 200 || err != nil {
		t.Fatalf("GET /env: %d %q (%v)", code, body, err)
	}
	if q, ok := env["QUERY_STRING"]; !ok || q != "" {
		t.Errorf("GET /env: QUERY_STRING = %q (present %v); want present and empty", q, ok)
	}
	if cl := env["CONTENT_LENGTH"]; cl != "" && cl != "0" {
		t.Errorf("GET /env without a body: CONTENT_LENGTH = %q", cl)
	}
	if env["REQUEST_METHOD"] != "GET" || env["PATH_INFO"] != "/env" || env["REQUEST_URI"] != "/env" {
		t.Errorf("GET /env: REQUEST_METHOD %q PATH_INFO %q REQUEST_URI %q", env["REQUEST_METHOD"], env["PATH_INFO"], env["REQUEST_URI"])
	}
	for k := range env {
		if strings.Contains(strings.ToUpper(k), "SPOOF") {
			t.Errorf("unexpected var %s", k)
		}
	}
}

func TestLargeBodiesStreamWithBoundedMemory(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "big.test", nodeOpts{id: "big"})
	waitForNodes(t, r, "big.test", 1)
	c := client()

	up := make([]byte, 3<<20)
	rand.Read(up)
	sum := sha256.Sum256(up)
	want := fmt.Sprintf("%d %s", len(up), hex.EncodeToString(sum[:]))
	// With Content-Length, then chunked (the body's length hidden from
	// net/http), which the router de-chunks (README, "Bodies stream").
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(up)
		if chunked {
			body = io.MultiReader(body)
		}
		req, _ := http.NewRequest("POST", "http://"+r.http+"/upload", body)
		req.Host = "big.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("upload (chunked %v): %v", chunked, err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(got) != want {
			t.Fatalf("upload (chunked %v): %d %q; want 200 %q", chunked, resp.StatusCode, got, want)
		}
	}

	const size = 64 << 20
	wantSum := patternSum(size)
	for _, q := range []string{"", "&cl=1"} {
		req, _ := http.NewRequest("GET", fmt.Sprintf("http://%s/download?size=%d%s", r.http, size, q), nil)
		req.Host = "big.test"
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		h := sha256.New()
		n, err := io.Copy(h, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || !bytes.Equal(h.Sum(nil), wantSum) {
			t.Fatalf("download%s: %d bytes, err %v, sha match %v", q, n, err, bytes.Equal(h.Sum(nil), wantSum))
		}
		if q == "" && (resp.ContentLength != -1 || len(resp.TransferEncoding) == 0) {
			t.Errorf("EOF-terminated download: ContentLength %d, Transfer-Encoding %v; want chunked", resp.ContentLength, resp.TransferEncoding)
		}
		if q != "" && resp.ContentLength != size {
			t.Errorf("download with Content-Length: ContentLength %d; want %d", resp.ContentLength, size)
		}
	}
	if rss := r.peakRSS(t); rss > 120<<20 {
		t.Fatalf("router peak RSS %d MiB; want < 120 MiB", rss>>20)
	} else {
		t.Logf("router peak RSS after 3 MiB upload + 2×64 MiB download: %.1f MiB", float64(rss)/(1<<20))
	}
}

// patternSum is the sha256 of the app's /download pattern of n bytes.
func patternSum(n int) []byte {
	chunk := make([]byte, 65536)
	for i := range chunk {
		chunk[i] = byte(i % 256)
	}
	h := sha256.New()
	for n > 0 {
		m := min(n, len(chunk))
		h.Write(chunk[:m])
		n -= m
	}
	return h.Sum(nil)
}

// One client connection carries several requests, whatever framing the
// backend's EOF-terminated response gets (Content-Length, chunked), bodies
// upstream, and backend error statuses.
func TestKeepAlive(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "ka.test", nodeOpts{id: "ka"})
	waitForNodes(t, r, "ka.test", 1)

	// net/http client limited to one connection; httptrace tells reuse.
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}}
	reqs := []struct {
		method, path, body string
		code               int
		want               string // body prefix
	}{
		{"GET", "/", "", 200, "node=ka"},
		{"GET", "/download?size=100000", "", 200, ""}, // no Content-Length from the app: chunked
		{"POST", "/upload", "hello", 200, "5 "},
		{"GET", "/download?size=1000&cl=1", "", 200, ""},
		{"GET", "/status?code=404", "", 404, "status"},
		{"GET", "/env", "", 200, "{"},
		{"GET", "/", "", 200, "node=ka"},
	}
	reused := 0
	for i, rq := range reqs {
		req, _ := http.NewRequest(rq.method, "http://"+r.http+rq.path, strings.NewReader(rq.body))
		if rq.body == "" {
			req.Body = nil
		}
		req.Host = "ka.test"
		req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) {
				if i.Reused {
					reused++
				}
			},
		}))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d %s %s: %v", i, rq.method, rq.path, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != rq.code || !strings.HasPrefix(string(b), rq.want) {
			t.Fatalf("request %d %s %s: %d %.40q (%v); want %d %q…", i, rq.method, rq.path, resp.StatusCode, b, err, rq.code, rq.want)
		}
		if resp.Close {
			t.Fatalf("request %d %s %s: router asked to close the connection", i, rq.method, rq.path)
		}
	}
	if reused != len(reqs)-1 {
		t.Fatalf("connection reused %d times over %d requests; want %d", reused, len(reqs), len(reqs)-1)
	}

	// The same on a raw connection, pipelining-free: write, read, repeat.
	raw := uwsgitest.Dial(t, r.http)
	for i := 0; i < 5; i++ {
		resp, body := raw.Do(fmt.Sprintf("GET /download?size=%d HTTP/1.1\r\nHost: ka.test\r\n\r\n", 70000+i))
		if resp.StatusCode != 200 || len(body) != 70000+i {
			t.Fatalf("raw request %d: %d, %d bytes", i, resp.StatusCode, len(body))
		}
	}

	// Idle between requests long enough to be parked outside the HTTP
	// server (router/park.go, 100 ms): the connection stays open and
	// counted, and the next request (an upload too) is served on it.
	c.CloseIdleConnections()
	open := `fastrouter_client_connections{listener="` + r.http + `",proto="http/1.1"}`
	for i := 0; i < 3; i++ {
		time.Sleep(300 * time.Millisecond)
		if v := metricValue(t, r, open); v != 1 {
			t.Fatalf("idle %d: %s = %v; want 1 (the idle connection)", i, open, v)
		}
		resp, b := raw.Do("POST /upload HTTP/1.1\r\nHost: ka.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
		if resp.StatusCode != 200 || !strings.HasPrefix(b, "5 ") || resp.Close {
			t.Fatalf("request %d after idling: %d %q close=%v", i, resp.StatusCode, b, resp.Close)
		}
	}
}

func TestErrorStatuses(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	deadPort := freePort(t)
	r := startRouter(t, "--max-header-bytes", "4096", "--to", fmt.Sprintf("dead.test=127.0.0.1:%d", deadPort))
	startNode(t, r, "live.test", nodeOpts{id: "live"})
	waitForNodes(t, r, "live.test", 1)
	cases := []struct {
		name, req string
		want      int
	}{
		{"unknown host", "GET / HTTP/1.1\r\nHost: nowhere.test\r\n\r\n", 404},
		{"two Host headers", "GET / HTTP/1.1\r\nHost: live.test\r\nHost: live.test\r\n\r\n", 400},
		{"Content-Length with Transfer-Encoding", "POST / HTTP/1.1\r\nHost: live.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
		{"bad host", "GET / HTTP/1.1\r\nHost: live.test/../x\r\n\r\n", 400},
		{"headers too large", "GET / HTTP/1.1\r\nHost: live.test\r\nX-Big: " + strings.Repeat("b", 6000) + "\r\n\r\n", 431},
		{"every node refused", "GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n", 502},
		{"only node in failed backoff", "GET / HTTP/1.1\r\nHost: dead.test\r\n\r\n", 503},
	}
	for _, tc := range cases {
		resp, body := uwsgitest.Do(t, r.http, tc.req)
		if resp.StatusCode != tc.want || body == "" {
			t.Errorf("%s: %d %q; want %d with a body", tc.name, resp.StatusCode, body, tc.want)
		}
		if tc.want == 503 && resp.Header.Get("Retry-After") == "" {
			t.Errorf("%s: no Retry-After", tc.name)
		}
	}
}

func TestKilledNodeCostsNoRequest(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	a := startNode(t, r, "kill.test", nodeOpts{id: "a"})
	startNode(t, r, "kill.test", nodeOpts{id: "b"})
	waitForNodes(t, r, "kill.test", 2)
	c := client()
	for i := 0; i < 10; i++ {
		if code, _ := get(t, c, r.http, "kill.test", "/"); code != 200 {
			t.Fatalf("before kill, request %d: %d", i, code)
		}
	}

	// Traffic while the node dies. A request that reached node a before
	// its socket closed may fail (bytes were sent, it cannot be retried),
	// but it must get an answer, never an empty reply or a hang.
	type result struct {
		start time.Time
		code  int
		err   error
	}
	// Each worker keeps its own results: a fixed-size channel filled up
	// once the router served more than its capacity in the half second,
	// and the workers then blocked on it with nothing to stop them.
	stop := make(chan struct{})
	const workers = 4
	var perWorker [workers][]result
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := client()
			for {
				select {
				case <-stop:
					return
				default:
				}
				start := time.Now()
				req, _ := http.NewRequest("GET", "http://"+r.http+"/", nil)
				req.Host = "kill.test"
				resp, err := c.Do(req)
				res := result{start: start, err: err}
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					res.code = resp.StatusCode
				}
				perWorker[w] = append(perWorker[w], res)
			}
		}()
	}
	time.Sleep(200 * time.Millisecond) // let the traffic run before the kill
	a.kill(t)                          // no unsubscribe: the router finds out by connecting
	dead := time.Now()
	time.Sleep(300 * time.Millisecond) // traffic after the kill
	close(stop)
	wg.Wait()
	var before, after int
	for _, res := range slices.Concat(perWorker[:]...) {
		if res.err != nil {
			t.Errorf("request during kill: %v (empty reply?)", res.err)
			continue
		}
		if res.start.After(dead) {
			after++
			if res.code != 200 {
				t.Errorf("request started %s after the node was dead: %d; want 200", res.start.Sub(dead), res.code)
			}
		} else {
			before++
		}
	}
	t.Logf("%d concurrent requests around the kill, %d after it", before, after)

	for i := 0; i < 50; i++ {
		if code, body := get(t, c, r.http, "kill.test", "/"); code != 200 || body != "node=b" {
			t.Fatalf("after kill, request %d: %d %q; want 200 node=b", i, code, body)
		}
	}
}

func TestGracefulNodeStopUnsubscribes(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n := startNode(t, r, "stop.test", nodeOpts{id: "s"})
	waitForNodes(t, r, "stop.test", 1)
	c := client()
	if code, _ := get(t, c, r.http, "stop.test", "/"); code != 200 {
		t.Fatalf("before stop: %d", code)
	}
	stopped := time.Now()
	n.cmd.Process.Signal(syscall.SIGINT) // uWSGI sends its unsubscribe on shutdown
	// A request sent in the few ms before the unsubscribe lands reaches a
	// worker uWSGI is killing and hangs until it dies; probe with a short
	// timeout so such a request counts as "not yet" rather than eating the
	// whole second.
	probe := &http.Client{Timeout: 200 * time.Millisecond, Transport: &http.Transport{DisableKeepAlives: true}}
	eventually(t, time.Second, "requests to stop being routed to the stopped node", func() bool {
		req, _ := http.NewRequest("GET", "http://"+r.http+"/", nil)
		req.Host = "stop.test"
		resp, err := probe.Do(req)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 503 || resp.StatusCode == 404
	})
	t.Logf("unsubscribe took effect after %s", time.Since(stopped).Round(time.Millisecond))
}

func TestSilentNodeExpiresByTimer(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	const tolerance = 2 * time.Second
	r := startRouter(t, "--subscription-tolerance", tolerance.String())
	n := startNode(t, r, "silent.test", nodeOpts{id: "q"})
	waitForNodes(t, r, "silent.test", 1)
	// Freeze the whole node (master and workers): no more announces, and
	// no request asks for the key, so only a timer can expire it.
	syscall.Kill(-n.pid(), syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(-n.pid(), syscall.SIGCONT) })
	stopped := time.Now()
	time.Sleep(100 * time.Millisecond) // a datagram sent just before the stop lands
	var lastSeen time.Time
	if nd := r.pool(t, "silent.test").node(n.addr); nd != nil {
		lastSeen = nd.LastSeen
	}
	// Last announce ≤ ~1s before the stop, tolerance 2s, sweep tick
	// tolerance/4: gone within 4s of the stop.
	eventually(t, 4*time.Second, "silent node to expire", func() bool {
		return r.pool(t, "silent.test").node(n.addr) == nil
	})
	gone := time.Now()
	t.Logf("expired %s after SIGSTOP, %s after its last announce", gone.Sub(stopped).Round(time.Millisecond),
		gone.Sub(lastSeen).Round(time.Millisecond))
	// Not before the tolerance (last_seen is the router's clock, same host;
	// 100ms of slack for the poll and clock reading).
	if !lastSeen.IsZero() && gone.Sub(lastSeen) < tolerance-100*time.Millisecond {
		t.Fatalf("expired %s after its last announce; tolerance is %s", gone.Sub(lastSeen), tolerance)
	}
	if code, _ := get(t, client(), r.http, "silent.test", "/"); code != 404 && code != 503 {
		t.Fatalf("request for the expired node's host: %d; want 404 or 503", code)
	}
}

// datagram encodes a subscription packet as uWSGI 2.0 sends it.
func datagram(cmd byte, kv ...string) []byte {
	var vars []byte
	for _, s := range kv {
		vars = append(vars, byte(len(s)), byte(len(s)>>8))
		vars = append(vars, s...)
	}
	return append([]byte{224, byte(len(vars)), byte(len(vars) >> 8), cmd}, vars...)
}

func TestGarbageDatagramsSurvived(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "garbage.test", nodeOpts{id: "g"})
	waitForNodes(t, r, "garbage.test", 1)
	conn, err := net.Dial("udp", r.sub)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rng := mrand.New(mrand.NewPCG(1, 2))
	valid := datagram(0, "key", "junk.test", "address", "127.0.0.1:1", "modifier1", "0",
		"modifier2", "0", "cores", "2", "load", "0", "weight", "3")
	const maxUDP = 65507 // largest IPv4 UDP payload
	buf := make([]byte, maxUDP)
	for i := 0; i < 5000; i++ {
		var p []byte
		switch i % 5 {
		case 0: // short random bytes
			p = buf[:rng.IntN(64)]
			randomize(rng, p)
		case 1: // a valid packet cut anywhere
			p = valid[:rng.IntN(len(valid))]
		case 2: // random bytes up to the largest datagram
			p = buf[:rng.IntN(len(buf)+1)]
			randomize(rng, p)
		case 3: // a plausible header with random vars and sizes
			p = append([]byte{0xe0, byte(rng.Uint32()), byte(rng.Uint32()), byte(rng.IntN(3))}, buf[:rng.IntN(300)]...)
			randomize(rng, p[4:])
		default: // a valid packet with its length fields corrupted
			p = append([]byte(nil), valid...)
			p[4+rng.IntN(len(p)-4)] = 0xff
		}
		if _, err := conn.Write(p); err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("datagram %d (%d bytes): %v", i, len(p), err)
		}
	}
	if r.exited() {
		t.Fatal("router exited under garbage datagrams")
	}
	eventually(t, 5*time.Second, "invalid datagrams to be counted", func() bool {
		return metricValue(t, r, `fastrouter_subscription_packets_total{result="invalid"}`) > 0
	})
	if code, body := get(t, client(), r.http, "garbage.test", "/"); code != 200 || body != "node=g" {
		t.Fatalf("after garbage: %d %q", code, body)
	}
	if code, body := get(t, client(), r.admin, r.admin, "/healthz"); code != 200 || strings.TrimSpace(body) != "ok" {
		t.Fatalf("/healthz after garbage: %d %q", code, body)
	}
	if r.exited() || syscall.Kill(r.pid(), 0) != nil {
		t.Fatal("router not alive after garbage datagrams")
	}
	// The real node keeps announcing and stays the only node of its pool.
	if p := r.pool(t, "garbage.test"); p == nil || len(p.Nodes) != 1 {
		t.Fatalf("pool garbage.test after garbage: %+v", p)
	}
	t.Logf("invalid datagrams counted: %v", metricValue(t, r, `fastrouter_subscription_packets_total{result="invalid"}`))
}

func randomize(rng *mrand.Rand, p []byte) {
	for i := range p {
		p[i] = byte(rng.Uint32())
	}
}

// metricValue reads one sample from the router's /metrics; -1 when absent.
func metricValue(t *testing.T, r *router, series string) float64 {
	t.Helper()
	_, body := get(t, client(), r.admin, r.admin, "/metrics")
	for _, l := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(l, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				t.Fatalf("metric %s: %q", series, l)
			}
			return f
		}
	}
	return -1
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestSIGTERMFinishesInFlight(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	n := startNode(t, r, "term.test", nodeOpts{id: "t"})
	waitForNodes(t, r, "term.test", 1)
	var wg sync.WaitGroup
	var code int
	var body string
	wg.Add(1)
	go func() {
		defer wg.Done()
		req, _ := http.NewRequest("GET", "http://"+r.http+"/slow?ms=1500", nil)
		req.Host = "term.test"
		resp, err := client().Do(req)
		if err != nil {
			body = err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		code, body = resp.StatusCode, string(b)
	}()
	eventually(t, 3*time.Second, "the slow request to be in flight", func() bool {
		nd := r.pool(t, "term.test").node(n.addr)
		return nd != nil && nd.Inflight == 1
	})
	signalled := time.Now()
	r.cmd.Process.Signal(syscall.SIGTERM)
	if ec := r.wait(t, 5*time.Second); ec != 0 {
		t.Errorf("exit code %d; want 0", ec)
	}
	t.Logf("router exited %s after SIGTERM", time.Since(signalled).Round(time.Millisecond))
	wg.Wait()
	if code != 200 || body != "slow node=t" {
		t.Fatalf("in-flight request: %d %q; want 200", code, body)
	}
	if c, err := net.DialTimeout("tcp", r.http, time.Second); err == nil {
		c.Close()
		t.Error("listener still accepting after exit")
	}
}

func TestSlowClientHeaderTimeout(t *testing.T) {
	skipIfDisabled(t)
	t.Parallel()
	r := startRouter(t, "--header-timeout", "1s")
	for _, partial := range []string{"GET /pa", "GET / HTTP/1.1\r\nHost: x.test\r\nX-Ha"} {
		t.Run(fmt.Sprintf("%q", partial), func(t *testing.T) {
			t.Parallel()
			c, err := net.Dial("tcp", r.http)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			io.WriteString(c, partial)
			start := time.Now()
			// Generous bound: a loaded CI box delays timers, but without the
			// 1s header timeout the default (10s) would hold it far longer.
			_ = c.SetReadDeadline(time.Now().Add(8 * time.Second))
			b, err := io.ReadAll(c)
			d := time.Since(start)
			if d > 6*time.Second {
				t.Fatalf("slow client held for %s (read err %v); want cut near 1s", d, err)
			}
			if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 408")) {
				t.Fatalf("slow client got %q; want 408 or close", b)
			}
			t.Logf("cut after %s with %q", d.Round(time.Millisecond), firstLine(b))
		})
	}
}

func firstLine(b []byte) []byte {
	if i := bytes.IndexByte(b, '\r'); i >= 0 {
		return b[:i]
	}
	return b
}
