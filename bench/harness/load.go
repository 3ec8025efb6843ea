package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"
)

// result is one measured run against one router.
type result struct {
	rps, p50, p99 float64 // requests/s, latency ms
	requests      float64
	errors        string  // non-2xx or socket errors, as the tool printed them
	loadCPU       float64 // CPU-seconds the load tool itself used (rusage)
}

var (
	reRPS     = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	reLat     = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	reTotal   = regexp.MustCompile(`(?m)^\s+([0-9]+) requests in`)
	reNon2xx  = regexp.MustCompile(`Non-2xx or 3xx responses: ([0-9]+)`)
	reSockErr = regexp.MustCompile(`Socket errors: .*`)
)

// runWrk drives url with wrk (two threads) for d at conns connections and
// parses its latency distribution.
func runWrk(ctx context.Context, url, host string, conns int, d time.Duration) (result, error) {
	return runWrkOn(ctx, "", 2, url, host, conns, d)
}

// runWrkOn is runWrk with threads wrk threads, pinned to the CPUs in cpus
// (a taskset list) when set.
func runWrkOn(ctx context.Context, cpus string, threads int, url, host string, conns int, d time.Duration) (result, error) {
	args := []string{"wrk", "-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns), "-d" + fmt.Sprintf("%ds", int(d.Seconds())),
		"--latency", "--timeout", "5s", "-H", "Host: " + host, url}
	if cpus != "" {
		args = append([]string{"taskset", "-c", cpus}, args...)
	}
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk %s: %w: %s", url, err, out)
	}
	r, err := parseWrk(string(out))
	r.loadCPU = cpuOf(cmd)
	return r, err
}

// cpuOf is the CPU time a finished command used, user and system.
func cpuOf(cmd *exec.Cmd) float64 {
	if cmd.ProcessState == nil {
		return 0
	}
	return (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
}

func parseWrk(out string) (result, error) {
	var r result
	m := reRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk output without Requests/sec: %q", out)
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	for _, m := range reLat.FindAllStringSubmatch(out, -1) {
		v, _ := strconv.ParseFloat(m[2], 64)
		switch m[3] {
		case "us":
			v /= 1000
		case "s":
			v *= 1000
		}
		if m[1] == "50" {
			r.p50 = v
		} else {
			r.p99 = v
		}
	}
	if m := reTotal.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseFloat(m[1], 64)
	}
	var errs []string
	if m := reNon2xx.FindStringSubmatch(out); m != nil {
		errs = append(errs, "non-2xx "+m[1])
	}
	if m := reSockErr.FindString(out); m != "" {
		errs = append(errs, m)
	}
	r.errors = strings.Join(errs, "; ")
	return r, nil
}

// runH2load drives an https URL with h2load (n requests, c connections, m
// streams each) and computes p50/p99 from its per-request log.
func runH2load(ctx context.Context, dir, url, authority string, n, c, m int) (result, error) {
	logf := filepath.Join(dir, "h2load.log")
	cmd := exec.CommandContext(ctx, "h2load", "-n", strconv.Itoa(n), "-c", strconv.Itoa(c), "-m", strconv.Itoa(m),
		"-H", ":authority: "+authority, "--log-file", logf, url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("h2load %s: %w: %s", url, err, out)
	}
	r := result{loadCPU: cpuOf(cmd)}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "finished in") && len(f) >= 4:
			r.rps, _ = strconv.ParseFloat(f[3], 64)
		case strings.HasPrefix(line, "requests:") && len(f) >= 12:
			// requests: N total, N started, N done, N succeeded, N failed, N errored, N timeout
			r.requests, _ = strconv.ParseFloat(f[1], 64)
			if f[9] != "0" || f[11] != "0" {
				r.errors = fmt.Sprintf("failed %s errored %s", f[9], f[11])
			}
		}
	}
	lat, err := h2loadLatencies(logf)
	if err != nil {
		return r, err
	}
	r.p50, r.p99 = pct(lat, 0.50), pct(lat, 0.99)
	return r, nil
}

// h2loadLatencies reads the log lines "start-µs status elapsed-µs" in ms.
func h2loadLatencies(path string) ([]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if fs := strings.Fields(sc.Text()); len(fs) >= 3 {
			if v, err := strconv.ParseFloat(fs[2], 64); err == nil {
				out = append(out, v/1000)
			}
		}
	}
	sort.Float64s(out)
	return out, sc.Err()
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(float64(len(sorted))*p))]
}

// holdIdle opens n keep-alive connections with dial, sends one request on
// each and reads its response, and keeps them open until release is called.
func holdIdle(dial func() (net.Conn, error), host string, n int) (release func(), opened int, err error) {
	conns := make([]net.Conn, 0, n)
	release = func() {
		for _, c := range conns {
			c.Close()
		}
	}
	req := []byte("GET / HTTP/1.1\r\nHost: " + host + "\r\n\r\n")
	var mu sync.Mutex
	var wg sync.WaitGroup
	var firstErr atomic.Value
	sem := make(chan struct{}, 64)
	for range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			c, err := dial()
			if err != nil {
				firstErr.CompareAndSwap(nil, err)
				return
			}
			_ = c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(req); err != nil {
				c.Close()
				firstErr.CompareAndSwap(nil, err)
				return
			}
			if err := readResponse(bufio.NewReader(c)); err != nil {
				c.Close()
				firstErr.CompareAndSwap(nil, err)
				return
			}
			_ = c.SetDeadline(time.Time{})
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}()
	}
	wg.Wait()
	if e, _ := firstErr.Load().(error); e != nil && len(conns) < n*9/10 {
		release()
		return func() {}, len(conns), e
	}
	return release, len(conns), nil
}

// readResponse reads one Content-Length response.
func readResponse(br *bufio.Reader) error {
	cl := -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(bytes.TrimSpace(line)) == 0 {
			break
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && strings.EqualFold(string(k), "content-length") {
			cl, _ = strconv.Atoi(string(bytes.TrimSpace(v)))
		}
	}
	if cl < 0 {
		return fmt.Errorf("response without Content-Length")
	}
	_, err := br.Discard(cl)
	return err
}

// subscription encodes a uWSGI subscribe datagram (modifier1 224).
func subscription(key, addr string) []byte {
	var vars []byte
	for _, kv := range [][2]string{{"key", key}, {"address", addr}, {"modifier1", "0"}, {"modifier2", "0"}, {"cores", "1"}, {"load", "0"}, {"weight", "1"}} {
		vars = binary.LittleEndian.AppendUint16(vars, uint16(len(kv[0])))
		vars = append(vars, kv[0]...)
		vars = binary.LittleEndian.AppendUint16(vars, uint16(len(kv[1])))
		vars = append(vars, kv[1]...)
	}
	pkt := []byte{224, 0, 0, 0}
	binary.LittleEndian.PutUint16(pkt[1:3], uint16(len(vars)))
	return append(pkt, vars...)
}

// blast sends the datagrams round-robin to addr until ctx ends, at most
// perSec per second (0 = as fast as possible), and returns how many it sent.
func blast(ctx context.Context, addr string, dgrams [][]byte, perSec int) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	sent := 0
	start := time.Now()
	for ctx.Err() == nil {
		for range 100 {
			if _, err := c.Write(dgrams[sent%len(dgrams)]); err == nil {
				sent++
			}
		}
		if perSec > 0 {
			if ahead := time.Duration(float64(sent)/float64(perSec)*float64(time.Second)) - time.Since(start); ahead > 0 {
				select {
				case <-ctx.Done():
				case <-time.After(ahead):
				}
			}
		}
	}
	return sent, nil
}

// blastBatch sends dgrams round-robin to addr with sendmmsg (64 per call)
// until ctx ends, from an OS thread pinned to CPU cpu, and returns how many
// the kernel took.
func blastBatch(ctx context.Context, addr string, dgrams [][]byte, cpu int) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	var set unix.CPUSet
	set.Set(cpu)
	if err := unix.SchedSetaffinity(0, &set); err != nil {
		return 0, fmt.Errorf("pin the sender to CPU %d: %w", cpu, err)
	}
	pc := ipv4.NewPacketConn(c.(*net.UDPConn))
	msgs := make([]ipv4.Message, 64)
	bufs := make([][1][]byte, len(msgs))
	sent := 0
	for ctx.Err() == nil {
		for i := range msgs {
			bufs[i][0] = dgrams[(sent+i)%len(dgrams)]
			msgs[i].Buffers = bufs[i][:]
		}
		n, err := pc.WriteBatch(msgs, 0)
		if err != nil {
			continue // ECONNREFUSED after an ICMP error, ENOBUFS: keep going
		}
		sent += n
	}
	return sent, nil
}

// blastCount sends n datagrams from dgrams to addr with sendmmsg, at once.
func blastCount(addr string, dgrams [][]byte, n int) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	pc := ipv4.NewPacketConn(c.(*net.UDPConn))
	msgs := make([]ipv4.Message, 64)
	bufs := make([][1][]byte, len(msgs))
	sent := 0
	for sent < n {
		k := min(len(msgs), n-sent)
		for i := range k {
			bufs[i][0] = dgrams[(sent+i)%len(dgrams)]
			msgs[i].Buffers = bufs[i][:]
		}
		m, err := pc.WriteBatch(msgs[:k], 0)
		if err != nil {
			return sent, nil // ENOBUFS or an ICMP error: the buffer is as full as it gets
		}
		sent += m
	}
	return sent, nil
}

// metric reads one sample (exact name with labels) from a Prometheus text
// endpoint; -1 when absent.
func metric(url, sample string) float64 {
	c := &httpClient
	resp, err := c.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, sample+" ") {
			v, _ := strconv.ParseFloat(strings.TrimSpace(line[len(sample):]), 64)
			return v
		}
	}
	return -1
}
