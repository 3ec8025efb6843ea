package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
)

// idleClientEnv makes the test binary the client process of
// BenchmarkIdleTLSConnMemory: "ADDR COUNT".
const idleClientEnv = "FASTROUTER_IDLEMEM_CLIENT"

// idleMemConns is how many idle connections each round of
// BenchmarkIdleTLSConnMemory holds.
const idleMemConns = 1000

// BenchmarkIdleTLSConnMemory measures what an idle, parked HTTPS
// keep-alive connection costs the router: heap and goroutine stack bytes
// per connection (heap-B/conn, stack-B/conn), after a GC, once every
// connection has made one request and parked. The clients run in a child
// process (this test binary, as TestIdleTLSClientProcess), so that their
// own memory is not counted. One op is a round of idleMemConns
// connections: opened, parked, measured, closed. docs/operations.md has
// what the bytes are.
func BenchmarkIdleTLSConnMemory(b *testing.B) {
	if !canPark {
		b.Skip("connections park on Linux only (park.go)")
	}
	ca := testcert.NewCA(b, "router test CA")
	addr, l, rt := tlsRouterTo(b, ca, Config{Timeout: time.Minute}, benchNode(b))
	// Two GCs: what fasthttp and crypto/tls pooled (sync.Pool) outlives
	// one in the pools' victim caches.
	gc := func() { runtime.GC(); runtime.GC() }
	round := func() (heap, stack int64) {
		var before, after runtime.MemStats
		gc()
		runtime.ReadMemStats(&before)
		release := idleClients(b, addr, idleMemConns)
		waitFor(b, "every connection to park", func() bool { return l.parkedCount() == idleMemConns })
		gc()
		runtime.ReadMemStats(&after)
		release()
		waitFor(b, "every connection to close", func() bool { return l.parkedCount() == 0 && rt.h1Open.Load() == 0 })
		return int64(after.HeapAlloc) - int64(before.HeapAlloc), int64(after.StackInuse) - int64(before.StackInuse)
	}
	round() // the first round grows pools and caches for good
	b.ReportAllocs()
	var heap, stack int64
	rounds := 0
	for b.Loop() {
		h, s := round()
		heap, stack, rounds = heap+h, stack+s, rounds+1
	}
	per := float64(rounds * idleMemConns)
	b.ReportMetric(float64(heap)/per, "heap-B/conn")
	b.ReportMetric(float64(stack)/per, "stack-B/conn")
}

// idleClients starts the client process with n connections to addr, each
// of which has made one request, and returns how to close them all.
func idleClients(tb testing.TB, addr string, n int) (release func()) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestIdleTLSClientProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), idleClientEnv+"="+addr+" "+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		tb.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		tb.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	release = func() {
		_ = stdin.Close() // the client closes its connections and exits
		if err := cmd.Wait(); err != nil {
			tb.Errorf("client process: %v", err)
		}
		cancel()
	}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() { // until the client says "ready" (it, and ctx, time out)
		if line := sc.Text(); line == "ready" {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return release
		} else if strings.HasPrefix(line, "error") {
			release()
			tb.Fatalf("client process: %s", line)
		}
	}
	release()
	tb.Fatal("client process ended before its connections were ready")
	return nil
}

// TestIdleTLSClientProcess is the client process of
// BenchmarkIdleTLSConnMemory (os/exec's helper-process pattern): it opens
// the connections, sends one request on each, says "ready", and keeps them
// until its stdin closes.
func TestIdleTLSClientProcess(t *testing.T) {
	spec := os.Getenv(idleClientEnv)
	if spec == "" {
		t.Skip("the client process of BenchmarkIdleTLSConnMemory")
	}
	addr, count, _ := strings.Cut(spec, " ")
	n, err := strconv.Atoi(count)
	if err != nil {
		fmt.Println("error: bad", idleClientEnv, spec)
		return
	}
	conns := make([]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	const workers = 8
	for w := range workers {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				conns[i], errs[i] = idleRequest(addr)
			}
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			fmt.Printf("error: connection %d: %v\n", i, err)
			return
		}
	}
	fmt.Println("ready")
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range conns {
		_ = c.Close()
	}
}

// idleRequest opens a TLS connection to addr and makes one keep-alive
// request on it.
func idleRequest(addr string) (net.Conn, error) {
	// The router's test certificate: nothing to verify here.
	cfg := &tls.Config{InsecureSkipVerify: true, ServerName: "p.test", NextProtos: []string{"http/1.1"}}
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 10 * time.Second}, "tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, getP); err != nil {
		c.Close()
		return nil, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err == nil && resp.StatusCode != http.StatusOK {
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
	}
	if err != nil {
		c.Close()
		return nil, err
	}
	_ = c.SetDeadline(time.Time{})
	return c, nil
}
