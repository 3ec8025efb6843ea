package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// The fleet scenario: tail latency in front of a realistic fleet. Four
// real uWSGI nodes (bench/fleet/app.py, a few workers each) whose requests
// mostly take a few ms, a rare one a few hundred ms, one node 3× slower than
// the others; open-loop load at a fixed rate near 80% of the fleet's
// measured capacity. Each peer balances as it does best: fastrouter lrc,
// p2c and sed with --max-inflight auto, nginx least_conn, uWSGI's http router over
// subscriptions (lrc), HAProxy leastconn with maxconn per server. Then the
// same with one node killed (kill -9 of its process group) mid-run.

// fleetConfig is the scenario's shape (-fleet-* flags).
type fleetConfig struct {
	nodes, workers int
	slowFactor     float64       // the last node's app runs this many times slower
	load           float64       // arrival rate as a fraction of the measured capacity
	rate           float64       // fixed arrival rate instead (req/s; 0 = load × capacity)
	warmup, dur    time.Duration // per run
	mix            requestMix
}

// fleetNode is one uWSGI node: a uwsgi socket (routers that speak uwsgi) and
// an --http-socket (HAProxy, which speaks HTTP only) served by the same
// workers.
type fleetNode struct {
	id         int
	sock, http string
	factor     float64
	proc       *proc
}

// fleetPeer is one router in the fleet scenario.
type fleetPeer struct {
	name  string
	proto string // what it speaks to the nodes, for the report
	// start starts the router in front of nodes (not yet running); sub is
	// the subscription server address the nodes will announce themselves
	// to when subscribe is set.
	start     func(nodes []*fleetNode, sub string) (target, error)
	subscribe bool
}

// fleetRun is one open-loop run against one peer.
type fleetRun struct {
	peer, proto string
	round       int
	kill        bool
	stats       latencyStats
	codes       map[int]int    // non-2xx statuses
	lat         []float64      // successful requests' latencies, sorted, ms
	inflight    int            // requests open on the killed node when it died (kill runs)
	cpuUS       float64        // router CPU per request, µs (its process tree, user + kernel)
	reruns      int            // runs redone because the machine stalled the generator
	reasons     map[string]int // fastrouter's own count of its failures, by reason (fastrouter_backend_errors_total, fastrouter_overload_rejections_total)
	rate        float64
	capacity    float64
}

const fleetHost = "fleet.test"

// fleetScenario measures the fleet's capacity once, then alternates the
// peers within each round, steady runs first, then kill runs. Every run
// starts a fresh fleet and router, so no run inherits another's state.
func (h *harness) fleetScenario(ctx context.Context) error {
	uwsgi, err := exec.LookPath("uwsgi")
	if err != nil {
		return errors.New("uwsgi (with the python3 plugin) is required")
	}
	app := filepath.Join(h.root, "bench", "fleet", "app.py")
	if _, err := os.Stat(app); err != nil {
		return err
	}
	peers := h.fleetPeers()
	if len(h.fleetOnly) > 0 {
		kept := peers[:0]
		for _, p := range peers {
			for _, want := range h.fleetOnly {
				if strings.HasPrefix(p.name, want) {
					kept = append(kept, p)
					break
				}
			}
		}
		peers = kept
	}
	capacity, err := h.fleetCapacity(ctx, uwsgi, app)
	if err != nil {
		return fmt.Errorf("measuring the fleet's capacity: %w", err)
	}
	rate := h.fleet.rate
	if rate == 0 {
		rate = float64(int(h.fleet.load*capacity/10)) * 10
	}
	log.Printf("  fleet capacity %.0f req/s (closed loop, %d nodes × %d workers, straight to the nodes); open-loop rate %.0f req/s",
		capacity, h.fleet.nodes, h.fleet.workers, rate)
	for _, kill := range []bool{false, true} {
		for r := 1; r <= h.rounds; r++ {
			for _, p := range peers {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				run, err := h.fleetStable(ctx, uwsgi, app, p, rate, kill)
				if err != nil {
					return fmt.Errorf("%s: %w", p.name, err)
				}
				run.round, run.capacity = r, capacity
				h.fleetRuns = append(h.fleetRuns, run)
				st := run.stats
				extra := ""
				if kill {
					extra = fmt.Sprintf("  %d in flight on the killed node", run.inflight)
				}
				log.Printf("  %s round %d %-18s p50 %6.2f  p99 %7.2f  p99.9 %7.2f ms  %d ok, %d failed %s  router CPU %.0f µs/req (generator lag p99 %.2f ms)%s",
					map[bool]string{false: "steady", true: "kill"}[kill], r, p.name, st.p50, st.p99, st.p999, st.ok, st.failed(), st.failText(),
					run.cpuUS, st.lagP99, extra)
			}
		}
	}
	return nil
}

// maxGeneratorLag is the generator's own p99 delay above which a run is
// redone: the machine (shared with other work) stalled the load generator
// itself, and what the run measured is the stall, not the router.
const maxGeneratorLag = 10 // ms

// fleetStable is fleetOnce, redone up to twice when the generator lagged.
func (h *harness) fleetStable(ctx context.Context, uwsgi, app string, p fleetPeer, rate float64, kill bool) (fleetRun, error) {
	for try := 0; ; try++ {
		run, err := h.fleetOnce(ctx, uwsgi, app, p, rate, kill)
		if err != nil || run.stats.lagP99 <= maxGeneratorLag || try == 2 {
			run.reruns = try
			return run, err
		}
		log.Printf("  %s: the generator itself lagged (p99 %.1f ms > %d ms): the machine stalled; running it again", p.name, run.stats.lagP99, maxGeneratorLag)
	}
}

// fleetPeers lists the routers that are installed.
func (h *harness) fleetPeers() []fleetPeer {
	peers := []fleetPeer{
		{name: "fastrouter lrc", proto: "uwsgi", subscribe: true, start: func(_ []*fleetNode, sub string) (target, error) {
			return h.fleetFastrouter(sub, "lrc")
		}},
		{name: "fastrouter p2c", proto: "uwsgi", subscribe: true, start: func(_ []*fleetNode, sub string) (target, error) {
			return h.fleetFastrouter(sub, "p2c")
		}},
		{name: "fastrouter sed", proto: "uwsgi", subscribe: true, start: func(_ []*fleetNode, sub string) (target, error) {
			return h.fleetFastrouter(sub, "sed")
		}},
	}
	if _, err := exec.LookPath("nginx"); err == nil {
		peers = append(peers, fleetPeer{name: "nginx least_conn", proto: "uwsgi", start: h.fleetNginx})
	}
	if _, err := exec.LookPath("uwsgi"); err == nil {
		peers = append(peers, fleetPeer{name: "uwsgi-http lrc", proto: "uwsgi", subscribe: true, start: h.fleetUwsgiHTTP})
	}
	if _, err := exec.LookPath("haproxy"); err == nil {
		peers = append(peers, fleetPeer{name: "haproxy leastconn", proto: "HTTP/1.1", start: h.fleetHAProxy})
	} else {
		log.Printf("  haproxy is not installed: left out")
	}
	return peers
}

// fleetOnce starts a fresh fleet and peer, waits until the peer reaches
// every node, runs the open loop, and stops both.
func (h *harness) fleetOnce(ctx context.Context, uwsgi, app string, p fleetPeer, rate float64, kill bool) (fleetRun, error) {
	mark := len(h.procs)
	defer h.stopFrom(mark)
	nodes := h.fleetAddrs()
	sub := h.port()
	t, err := p.start(nodes, sub)
	if err != nil {
		return fleetRun{}, err
	}
	var subs []string
	if p.subscribe {
		subs = []string{sub}
	}
	if err := h.startFleet(uwsgi, app, nodes, subs); err != nil {
		return fleetRun{}, err
	}
	addr := strings.TrimSuffix(strings.TrimPrefix(t.url, "http://"), "/")
	if err := waitFleetReady(ctx, addr, len(nodes), 30*time.Second); err != nil {
		return fleetRun{}, fmt.Errorf("%s never reached every node: %w", p.name, err)
	}
	cfg := openLoopConfig{addr: addr, host: fleetHost, rate: rate, warmup: h.fleet.warmup, dur: h.fleet.dur,
		mix: h.fleet.mix, timeout: 10 * time.Second, maxConns: 1024}
	run := fleetRun{peer: p.name, proto: p.proto, kill: kill, rate: rate}
	if kill {
		// The slow node dies: losing a fast one would leave 70% of the
		// fleet's capacity for 80% of its load, an overload no balancer
		// absorbs, and the run would measure queue limits, not failover.
		victim := nodes[len(nodes)-1]
		cfg.eventAt = h.fleet.dur / 2
		ports := map[uint16]bool{}
		for _, a := range []string{victim.sock, victim.http} {
			if _, p, err := net.SplitHostPort(a); err == nil {
				n, _ := strconv.Atoi(p)
				ports[uint16(n)] = true
			}
		}
		cfg.event = func() {
			n, err := killCounting(victim.proc.cmd.Process.Pid, ports, func(pgid int) error { return syscall.Kill(-pgid, syscall.SIGKILL) })
			if err != nil {
				log.Printf("  killing node %d: %v", victim.id, err)
				n = -1
			}
			run.inflight = n
		}
	}
	u0, s0 := cpuSplit(t.pid)
	res, err := openLoop(ctx, cfg)
	if err != nil {
		return fleetRun{}, err
	}
	u1, s1 := cpuSplit(t.pid)
	for k, e := range res.firstErr {
		if e != "" && k != okSample {
			log.Printf("  %s: first %s failure: %s", p.name, failNames[k], e)
		}
	}
	var why map[string]int
	if t.admin != "" {
		if why = failureMetrics("http://" + t.admin + "/metrics"); len(why) > 0 {
			log.Printf("  %s counted: %s", p.name, reasonText(why))
		}
	}
	run.stats, run.lat = summarize(res.samples)
	run.reasons = why
	if len(res.samples) > 0 {
		sent := float64(len(res.samples)) + rate*h.fleet.warmup.Seconds()
		run.cpuUS = (u1 + s1 - u0 - s0) * 1e6 / sent
	}
	run.codes = map[int]int{}
	for _, s := range res.samples {
		if s.fail == failStatus {
			run.codes[s.status]++
		}
	}
	return run, nil
}

// fleetAddrs allocates the nodes' addresses; the last node is the slow one.
func (h *harness) fleetAddrs() []*fleetNode {
	nodes := make([]*fleetNode, h.fleet.nodes)
	for i := range nodes {
		nodes[i] = &fleetNode{id: i, sock: h.port(), http: h.port(), factor: 1}
	}
	nodes[len(nodes)-1].factor = h.fleet.slowFactor
	return nodes
}

// startFleet starts every node (master + workers, in its own process
// group), announcing itself to each subscription server in subs, and
// waits until both its sockets accept.
func (h *harness) startFleet(uwsgi, app string, nodes []*fleetNode, subs []string) error {
	for _, n := range nodes {
		args := []string{"--plugin", "python3", "--master", "--processes", strconv.Itoa(h.fleet.workers),
			"--socket", n.sock, "--http-socket", n.http, "--wsgi-file", app, "--disable-logging", "--die-on-term",
			"--subscribe-freq", "2"}
		for _, s := range subs {
			args = append(args, "--subscribe2", "server="+s+",key="+fleetHost+",addr="+n.sock)
		}
		env := []string{"NODE_ID=" + strconv.Itoa(n.id), "FLEET_FACTOR=" + strconv.FormatFloat(n.factor, 'f', -1, 64)}
		p, err := h.startOn(fmt.Sprintf("fleet-node-%d", n.id), "", env, uwsgi, args...)
		if err != nil {
			return err
		}
		n.proc = p
	}
	for _, n := range nodes {
		for _, a := range []string{n.sock, n.http} {
			if err := waitListen(a, 30*time.Second); err != nil {
				return err
			}
		}
	}
	return nil
}

// waitFleetReady sends requests through the router one at a time until
// every node has answered one (each peer balances idle nodes in turn).
func waitFleetReady(ctx context.Context, addr string, nodes int, d time.Duration) error {
	seen := map[int8]bool{}
	deadline := time.Now().Add(d)
	pool := newConnPool(addr, 1)
	defer pool.closeIdle()
	var last sample
	for len(seen) < nodes {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%d of %d nodes answered in %s (last: status %d, failure %s)", len(seen), nodes, d, last.status, failNames[last.fail])
		}
		last = pool.do(time.Now(), fleetHost, "/work?ms=0", 5*time.Second)
		if last.fail == okSample && last.node >= 0 {
			seen[last.node] = true
		} else {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// fleetCapacity starts a fleet and drives every node straight on its
// --http-socket, closed loop, with twice as many concurrent requests as it
// has workers (so a worker never waits for work), all nodes at once, for
// 5 s, with the scenario's request mix; the sum of their rates is the
// fleet's capacity.
func (h *harness) fleetCapacity(ctx context.Context, uwsgi, app string) (float64, error) {
	mark := len(h.procs)
	defer h.stopFrom(mark)
	nodes := h.fleetAddrs()
	if err := h.startFleet(uwsgi, app, nodes, nil); err != nil {
		return 0, err
	}
	// A listening socket is bound by the master before the app is loaded
	// and the workers forked: wait for answers, then warm up for a second.
	for _, n := range nodes {
		deadline := time.Now().Add(30 * time.Second)
		for oneShot(n.http, "/work?ms=0") != nil {
			if time.Now().After(deadline) || ctx.Err() != nil {
				return 0, fmt.Errorf("node %d does not answer", n.id)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	mix := h.fleet.mix
	mix.seed++
	paths := mix.paths(1 << 16)
	const warm, d = time.Second, 5 * time.Second
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		done  int
		fails int
	)
	begin := time.Now()
	start := begin.Add(warm)
	for _, n := range nodes {
		for w := range 2 * h.fleet.workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ok, bad := 0, 0
				for i := w; time.Since(start) < d && ctx.Err() == nil; i += 2 * h.fleet.workers {
					err := oneShot(n.http, paths[i%len(paths)])
					switch {
					case time.Now().Before(start): // warming up
					case err == nil:
						ok++
					default:
						bad++
					}
				}
				mu.Lock()
				done, fails = done+ok, fails+bad
				mu.Unlock()
			}()
		}
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if fails > done/100 {
		return 0, fmt.Errorf("%d of %d requests failed", fails, done+fails)
	}
	c := float64(done) / time.Since(start).Seconds()
	log.Printf("  capacity %.0f req/s measured; %.0f if each worker only slept (%.0f%%)", c, h.fleet.sleepBound(), 100*c/h.fleet.sleepBound())
	return c, nil
}

// sleepBound is the fleet's capacity if its workers did nothing but sleep
// the time each request asks for.
func (f fleetConfig) sleepBound() float64 {
	mean := (1-f.mix.slowFrac)*(f.mix.minMS+f.mix.maxMS)/2 + f.mix.slowFrac*f.mix.slowMS // ms
	fast := float64(f.nodes-1) * float64(f.workers) / mean
	slow := float64(f.workers) / (mean * f.slowFactor)
	return (fast + slow) * 1000
}

// oneShot sends one GET on a new connection and reads the answer.
func oneShot(addr, path string) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("GET " + path + " HTTP/1.1\r\nHost: " + fleetHost + "\r\nConnection: close\r\n\r\n")); err != nil {
		return err
	}
	status, _, _, err := readAnswer(bufio.NewReader(c))
	if err == nil && status != 200 {
		err = fmt.Errorf("status %d", status)
	}
	return err
}

// fleetFastrouter starts fastrouter with algo for new pools, in-flight caps
// from the workers each node announces, and sub as its subscription server.
func (h *harness) fleetFastrouter(sub, algo string) (target, error) {
	http, admin := h.port(), h.port()
	p, err := h.start("fastrouter-"+algo, h.bin.router, "--http", http, "--admin", admin, "--subscription-server", sub,
		"--algo", algo, "--max-inflight", "auto", "--log-level", "warn")
	if err != nil {
		return target{}, err
	}
	if err := waitListen(admin, 10*time.Second); err != nil {
		return target{}, err
	}
	return target{name: "fastrouter " + algo, url: "http://" + http + "/", pid: p.cmd.Process.Pid, admin: admin}, nil
}

// fleetNginx starts nginx (a worker per core) with least_conn over the
// nodes' uwsgi sockets; the zone shares the connection counts between
// workers, as least_conn needs to see the whole picture.
func (h *harness) fleetNginx(nodes []*fleetNode, _ string) (target, error) {
	var up strings.Builder
	up.WriteString("  upstream fleet {\n    least_conn;\n    zone fleet 64k;\n")
	for _, n := range nodes {
		fmt.Fprintf(&up, "    server %s;\n", n.sock)
	}
	up.WriteString("  }\n")
	addr := h.port()
	server := fmt.Sprintf("  server {\n    listen %s;\n    location / { include /etc/nginx/uwsgi_params; uwsgi_pass fleet; }\n  }\n", addr)
	t, ok, err := h.startNginx("nginx-fleet", "auto", "", up.String(), server, addr)
	if err == nil && !ok {
		err = errors.New("nginx is not installed")
	}
	return t, err
}

// fleetUwsgiHTTP starts uWSGI's http router with a subscription server on
// sub and least-reference-count balancing.
func (h *harness) fleetUwsgiHTTP(_ []*fleetNode, sub string) (target, error) {
	bin, err := exec.LookPath("uwsgi")
	if err != nil {
		return target{}, err
	}
	addr := h.port()
	p, err := h.start("uwsgi-http-fleet", bin, "--plugin", "http", "--master", "--die-on-term", "--http", addr,
		"--http-subscription-server", sub, "--subscription-algo", "lrc", "--http-processes", "1", "--http-keepalive",
		"--disable-logging")
	if err != nil {
		return target{}, err
	}
	if err := waitListen(addr, 10*time.Second); err != nil {
		return target{}, err
	}
	return target{name: "uwsgi-http", url: "http://" + addr + "/", pid: p.cmd.Process.Pid}, nil
}

// fleetHAProxy starts HAProxy with leastconn over the nodes' --http-socket,
// at most as many connections per node as it has workers (the rest wait in
// HAProxy's queue, as in fastrouter's with --max-inflight auto), TCP health checks,
// and a retry on another node after a failed connect; a node whose connect
// fails is marked down at once (observe layer4), or leastconn would keep
// picking the dead node, emptiest of all, until the checks caught up.
// uWSGI's --http-socket
// closes after every response without saying so: http-server-close keeps
// HAProxy from reusing a node connection the node is closing (it would then
// close the client's connection unanswered, for the client to retry).
func (h *harness) fleetHAProxy(nodes []*fleetNode, _ string) (target, error) {
	bin, err := exec.LookPath("haproxy")
	if err != nil {
		return target{}, err
	}
	addr := h.port()
	var b strings.Builder
	fmt.Fprintf(&b, `global
  maxconn 4096
defaults
  mode http
  timeout connect 3s
  timeout client 60s
  timeout server 60s
  timeout queue 10s
  timeout http-keep-alive 60s
  retries 3
  option redispatch 1
frontend fe
  bind %s
  default_backend fleet
backend fleet
  balance leastconn
  option http-server-close
  default-server maxconn %d check inter 1s fall 2 rise 2 observe layer4 error-limit 1 on-error mark-down
`, addr, h.fleet.workers)
	for _, n := range nodes {
		fmt.Fprintf(&b, "  server n%d %s\n", n.id, n.http)
	}
	cfg := filepath.Join(h.tmp, fmt.Sprintf("haproxy-%d.cfg", h.ports))
	if err := os.WriteFile(cfg, []byte(b.String()), 0o644); err != nil {
		return target{}, err
	}
	p, err := h.start("haproxy", bin, "-f", cfg, "-db")
	if err != nil {
		return target{}, err
	}
	if err := waitListen(addr, 10*time.Second); err != nil {
		return target{}, err
	}
	return target{name: "haproxy", url: "http://" + addr + "/", pid: p.cmd.Process.Pid}, nil
}

// failureMetrics reads fastrouter's non-zero error counters from its
// /metrics: backend errors and overload rejections by reason (e.g.
// "bad_response" → 2, "queue_full" → 30).
func failureMetrics(url string) map[string]int {
	resp, err := httpClient.Get(url)
	if err != nil {
		return nil
	}
	defer resp.Body.Close()
	out := map[string]int{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "fastrouter_backend_errors_total{") && !strings.HasPrefix(line, "fastrouter_overload_rejections_total{") {
			continue
		}
		_, rest, ok := strings.Cut(line, `reason="`)
		reason, _, ok2 := strings.Cut(rest, `"`)
		f := strings.Fields(line)
		if !ok || !ok2 || len(f) != 2 {
			continue
		}
		if v, err := strconv.ParseFloat(f[1], 64); err == nil && v > 0 {
			out[reason] += int(v)
		}
	}
	return out
}

// reasonText is "2 bad_response, 30 queue_full", by name.
func reasonText(m map[string]int) string {
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%d %s", m[k], k))
	}
	return strings.Join(parts, ", ")
}
