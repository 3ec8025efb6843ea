package integration

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestRoutesByHost(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "one.test", nodeOpts{id: "one"})
	startNode(t, r, "two.test:8080", nodeOpts{id: "two"})
	r.waitNodes(t, "one.test", 1)
	r.waitNodes(t, "two.test:8080", 1)
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
	r.waitNodes(t, "spread.test", 2)
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
	r.waitNodes(t, "vars.test", 1)

	c, err := net.Dial("tcp", r.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	localPort := c.LocalAddr().(*net.TCPAddr).Port
	io.WriteString(c, "POST /env/%7Euser/./x/../y?a=1&b=%20 HTTP/1.1\r\nHost: vars.test\r\n"+
		"X-Multi: 1\r\nX-Multi: 2\r\nX_Multi: spoof\r\nX-Forwarded-For: 203.0.113.9\r\n"+
		"Content-Type: text/plain\r\nContent-Length: 4\r\n\r\nbody")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]string
	if err := json.NewDecoder(resp.Body).Decode(&env); err != nil {
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

	// Without a query string QUERY_STRING is present and empty.
	code, body := get(t, client(), r.http, "vars.test", "/env")
	if code != 200 || !strings.Contains(body, `"QUERY_STRING": ""`) {
		t.Errorf("GET /env: %d, QUERY_STRING missing or not empty in %s", code, body)
	}
}

func TestLargeBodiesStreamWithBoundedMemory(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "big.test", nodeOpts{id: "big"})
	r.waitNodes(t, "big.test", 1)
	c := client()

	up := make([]byte, 3<<20)
	rand.Read(up)
	sum := sha256.Sum256(up)
	req, _ := http.NewRequest("POST", "http://"+r.http+"/upload", bytes.NewReader(up))
	req.Host = "big.test"
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := fmt.Sprintf("%d %s", len(up), hex.EncodeToString(sum[:])); string(got) != want {
		t.Fatalf("upload: %q; want %q", got, want)
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
		if q == "" && resp.ContentLength != -1 {
			t.Errorf("EOF-terminated download: ContentLength %d; want chunked", resp.ContentLength)
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

func TestKeepAlive(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "ka.test", nodeOpts{id: "ka"})
	r.waitNodes(t, "ka.test", 1)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxConnsPerHost: 1}}
	reused := 0
	for i := 0; i < 6; i++ {
		req, _ := http.NewRequest("GET", "http://"+r.http+"/", nil)
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
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("request %d: %d", i, resp.StatusCode)
		}
	}
	if reused != 5 {
		t.Fatalf("connection reused %d times over 6 requests; want 5", reused)
	}
}

func TestErrorStatuses(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	deadPort := freePort(t)
	r := startRouter(t, "--max-header-bytes", "4096", "--to", fmt.Sprintf("dead.test=127.0.0.1:%d", deadPort))
	startNode(t, r, "live.test", nodeOpts{id: "live"})
	r.waitNodes(t, "live.test", 1)
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
		resp, body := rawRequest(t, r.http, tc.req)
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
	r.waitNodes(t, "kill.test", 2)
	c := client()
	for i := 0; i < 10; i++ {
		if code, _ := get(t, c, r.http, "kill.test", "/"); code != 200 {
			t.Fatalf("before kill, request %d: %d", i, code)
		}
	}
	syscall.Kill(-a.pid(), syscall.SIGKILL) // no unsubscribe: the router finds out by connecting
	a.wait(t, 5*time.Second)
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
	r.waitNodes(t, "stop.test", 1)
	c := client()
	if code, _ := get(t, c, r.http, "stop.test", "/"); code != 200 {
		t.Fatalf("before stop: %d", code)
	}
	stopped := time.Now()
	n.cmd.Process.Signal(syscall.SIGINT) // uWSGI sends its unsubscribe on shutdown
	eventually(t, time.Second, "requests to stop being routed to the stopped node", func() bool {
		code, _ := get(t, c, r.http, "stop.test", "/")
		return code == 404 || code == 503
	})
	t.Logf("unsubscribe took effect after %s", time.Since(stopped).Round(time.Millisecond))
}

func TestSilentNodeExpiresByTimer(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--subscription-tolerance", "2s")
	n := startNode(t, r, "silent.test", nodeOpts{id: "q"})
	r.waitNodes(t, "silent.test", 1)
	// Freeze the whole node (master and workers): no more announces, and
	// no request asks for the key, so only a timer can expire it.
	syscall.Kill(-n.pid(), syscall.SIGSTOP)
	t.Cleanup(func() { syscall.Kill(-n.pid(), syscall.SIGCONT) })
	start := time.Now()
	eventually(t, 5*time.Second, "silent node to expire", func() bool { return r.pool(t, "silent.test") == nil })
	if d := time.Since(start); d < 1500*time.Millisecond {
		t.Fatalf("expired after %s; tolerance is 2s", d)
	}
}

func TestGarbageDatagramsSurvived(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t)
	startNode(t, r, "garbage.test", nodeOpts{id: "g"})
	r.waitNodes(t, "garbage.test", 1)
	conn, err := net.Dial("udp", r.sub)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	rng := mrand.New(mrand.NewPCG(1, 2))
	valid := []byte("\xe0\x65\x00\x00\x03\x00key\x0b\x00example.com\x07\x00address\x0e\x00127.0.0.1:3031")
	buf := make([]byte, 65000)
	for i := 0; i < 5000; i++ {
		var p []byte
		switch i % 4 {
		case 0:
			p = buf[:rng.IntN(64)]
		case 1:
			p = valid[:rng.IntN(len(valid))]
		case 2:
			p = buf[:rng.IntN(len(buf))]
		default:
			p = append([]byte{0xe0, 0xff, 0xff, byte(rng.IntN(3))}, buf[:rng.IntN(300)]...)
		}
		for j := range p[min(4, len(p)):] {
			p[4+j] = byte(rng.Uint32())
		}
		conn.Write(p)
	}
	time.Sleep(200 * time.Millisecond)
	if code, body := get(t, client(), r.http, "garbage.test", "/"); code != 200 || body != "node=g" {
		t.Fatalf("after garbage: %d %q", code, body)
	}
	resp, err := http.Get("http://" + r.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), `fastrouter_subscription_packets_total{result="invalid"}`) {
		t.Fatalf("invalid datagrams not counted:\n%s", grep(string(m), "subscription"))
	}
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
	startNode(t, r, "term.test", nodeOpts{id: "t"})
	r.waitNodes(t, "term.test", 1)
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
	time.Sleep(400 * time.Millisecond)
	r.cmd.Process.Signal(syscall.SIGTERM)
	if ec := r.wait(t, 5*time.Second); ec != 0 {
		t.Errorf("exit code %d; want 0", ec)
	}
	wg.Wait()
	if code != 200 || body != "slow node=t" {
		t.Fatalf("in-flight request: %d %q; want 200", code, body)
	}
	if _, err := net.DialTimeout("tcp", r.http, time.Second); err == nil {
		t.Error("listener still accepting after exit")
	}
}

func TestSlowClientHeaderTimeout(t *testing.T) {
	requireUWSGI(t)
	t.Parallel()
	r := startRouter(t, "--header-timeout", "1s")
	c, err := net.Dial("tcp", r.http)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHo")
	start := time.Now()
	_ = c.SetReadDeadline(time.Now().Add(4 * time.Second))
	b, _ := io.ReadAll(c)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("slow client held for %s; want cut near 1s", d)
	}
	if len(b) > 0 && !bytes.HasPrefix(b, []byte("HTTP/1.1 408")) {
		t.Fatalf("slow client got %q; want 408 or close", b)
	}
}
