// Command harness is fastrouter's side-by-side benchmark: it builds the
// router and a Go uwsgi backend (one request per connection, as uWSGI
// workers serve), starts nginx (uwsgi_pass) and uWSGI's http router in front
// of the same backend when they are installed, drives them with wrk and
// h2load, alternating routers within each round so drift hits all alike,
// and writes the medians as a markdown table and a PNG chart to
// bench/results/.
//
//	cd bench && go run ./harness [-rounds 3] [-duration 10s] [-scenarios h1-512,h2,...]
//
// Every process it starts listens on 127.0.0.1 and is killed at the end;
// every load run is bounded in time or count.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

var httpClient = http.Client{Timeout: 10 * time.Second}

type harness struct {
	root, tmp, out string
	rounds         int
	dur            time.Duration
	conns          int
	bin            struct{ router, backend string }
	procs          []*proc
	rows           []row
	cert, key      string
	ports          int      // next port to hand out
	backendPID     int      // the current scenario's uwsgi node, for the CPU breakdown
	variants       []string // -variants: extra fastrouter runs, each with one environment setting
	baseline       string   // -baseline-router: a second fastrouter binary each variant also runs on
	pinnedRows     []pinnedRow
	fleet          fleetConfig
	fleetRuns      []fleetRun
	fleetOnly      []string // -fleet-peers: run only the peers whose names start with one of these
}

// row is one router's medians in one scenario.
type row struct {
	scenario, router  string
	rps, p50, p99     float64
	cpuPer10k, rssMiB float64
	extra             string
	// Where the machine's CPU went per request, in µs (medians): the
	// router's user and kernel time, the backend's and the load tool's.
	// Everything shares the same cores, so a router's rps depends on the
	// sum, not on its own share alone.
	usUser, usSys, usBackend, usLoad float64
}

// target is one router under test in a scenario.
type target struct {
	name string
	url  string // what the load tool hits
	pid  int    // process tree whose CPU and RSS are measured
	// admin is fastrouter's admin address ("" for the peers), whose
	// metrics say why requests failed.
	admin string
}

func main() {
	rounds := flag.Int("rounds", 3, "rounds per scenario (routers alternate within a round)")
	dur := flag.Duration("duration", 10*time.Second, "length of each wrk run")
	conns := flag.Int("connections", 64, "wrk connections")
	scen := flag.String("scenarios", "h1-512,h1-512-pinned,h1-64k,unix,https,h2,h3,idle,idle-tls,pools,datagrams,datagrams-1core,fleet", "comma-separated scenarios to run")
	pools := flag.Int("pools", 100000, "pools in the large-table scenario")
	idle := flag.Int("idle", 5000, "connections in the idle scenario")
	out := flag.String("out", "results", "directory for results.md and rps.png")
	variants := flag.String("variants", "", "space-separated NAME=VALUE environment settings or --flags; each adds a fastrouter run with it\n"+
		"to the h1-512, h1-512-pinned, h1-64k, unix and idle scenarios (e.g. \"GOMAXPROCS=4\" or \"--h1-event-loop=false\")")
	baseline := flag.String("baseline-router", "", "a second fastrouter binary (say, built from the commit before a change): each -variants entry\n"+
		"also runs on it, in the same alternated rounds, as a row suffixed \" [baseline]\"")
	fleetNodes := flag.Int("fleet-nodes", 4, "fleet scenario: uWSGI nodes (the last one is the slow one)")
	fleetWorkers := flag.Int("fleet-workers", 4, "fleet scenario: worker processes per node")
	fleetLoad := flag.Float64("fleet-load", 0.8, "fleet scenario: arrival rate as a fraction of the fleet's measured capacity")
	fleetRate := flag.Float64("fleet-rate", 0, "fleet scenario: fixed arrival rate in req/s instead of -fleet-load")
	fleetDur := flag.Duration("fleet-duration", 30*time.Second, "fleet scenario: measured window of each open-loop run (after a 3 s warm-up)")
	fleetSlowFrac := flag.Float64("fleet-slow-fraction", 0.0005, "fleet scenario: share of requests that ask for -fleet-slow-ms")
	fleetPeers := flag.String("fleet-peers", "", "fleet scenario: comma-separated name prefixes of the peers to run (default all: \"fastrouter lrc\", \"fastrouter p2c\", \"fastrouter sed\", nginx, uwsgi-http, haproxy)")
	flag.Parse()

	root, err := filepath.Abs("..")
	if err != nil {
		log.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "fastrouter")); err != nil {
		log.Fatal("run from the bench directory: cd bench && go run ./harness")
	}
	for _, tool := range []string{"wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			log.Fatalf("%s is required (apt-get install wrk)", tool)
		}
	}
	raiseNoFile()
	h := &harness{root: root, out: *out, rounds: *rounds, dur: *dur, conns: *conns, ports: 23000,
		variants: strings.Fields(*variants), baseline: *baseline}
	h.fleet = fleetConfig{nodes: max(2, *fleetNodes), workers: max(1, *fleetWorkers), slowFactor: 3, load: *fleetLoad, rate: *fleetRate,
		warmup: 3 * time.Second, dur: *fleetDur,
		mix: requestMix{minMS: 2, maxMS: 8, slowFrac: *fleetSlowFrac, slowMS: 300, seed: 2026}}
	if *fleetPeers != "" {
		h.fleetOnly = strings.Split(*fleetPeers, ",")
	}
	h.tmp, err = os.MkdirTemp("", "fastrouter-bench-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(h.tmp)
	_ = os.Chmod(h.tmp, 0o755) // nginx workers (another user) reach the unix socket in it
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	defer h.stopFrom(0)
	if err := h.build(); err != nil {
		log.Fatal(err)
	}
	if err := h.selfSigned(); err != nil {
		log.Fatal(err)
	}
	scenarios := map[string]func(context.Context) error{
		"h1-512":          func(ctx context.Context) error { return h.throughput(ctx, "h1-512", 512, false) },
		"h1-64k":          func(ctx context.Context) error { return h.throughput(ctx, "h1-64k", 64<<10, false) },
		"unix":            func(ctx context.Context) error { return h.throughput(ctx, "unix", 512, true) },
		"https":           h.https,
		"h2":              h.h2,
		"h3":              h.h3,
		"idle":            func(ctx context.Context) error { return h.idle(ctx, *idle) },
		"idle-tls":        func(ctx context.Context) error { return h.idleTLS(ctx, *idle) },
		"pools":           func(ctx context.Context) error { return h.pools(ctx, *pools) },
		"datagrams":       h.datagrams,
		"datagrams-1core": h.datagramsOneCore,
		"h1-512-pinned":   h.pinned,
		"fleet":           h.fleetScenario,
	}
	for _, name := range strings.Split(*scen, ",") {
		run := scenarios[name]
		if run == nil {
			log.Fatalf("unknown scenario %q", name)
		}
		log.Printf("scenario %s", name)
		mark := len(h.procs)
		err := run(ctx)
		h.stopFrom(mark)
		if err != nil {
			log.Printf("scenario %s failed: %v", name, err)
		}
		if ctx.Err() != nil {
			break
		}
	}
	if err := h.report(); err != nil {
		log.Fatal(err)
	}
}

func (h *harness) port() string {
	h.ports++
	return fmt.Sprintf("127.0.0.1:%d", h.ports)
}

func (h *harness) build() error {
	h.bin.router = filepath.Join(h.tmp, "fastrouter")
	h.bin.backend = filepath.Join(h.tmp, "uwsgi-backend")
	for _, b := range []struct{ dir, pkg, out string }{
		{h.root, "./cmd/fastrouter", h.bin.router},
		{filepath.Join(h.root, "bench"), "./uwsgi-backend", h.bin.backend},
	} {
		cmd := exec.Command("go", "build", "-o", b.out, b.pkg)
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("build %s: %w: %s", b.pkg, err, out)
		}
	}
	return nil
}

// selfSigned writes a P-256 certificate for bench.test.
func (h *harness) selfSigned() error {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench.test"}, DNSNames: []string{"bench.test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(48 * time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		return err
	}
	kd, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return err
	}
	h.cert, h.key = filepath.Join(h.tmp, "cert.pem"), filepath.Join(h.tmp, "key.pem")
	if err := os.WriteFile(h.cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(h.key, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kd}), 0o600)
}

// backend starts the Go uwsgi node on a TCP port or a unix socket.
func (h *harness) backend(size int, unix bool) (string, error) {
	addr := h.port()
	if unix {
		addr = filepath.Join(h.tmp, fmt.Sprintf("backend-%d.sock", h.ports))
	}
	p, err := h.start("backend", h.bin.backend, "-listen", addr, "-size", fmt.Sprint(size))
	if err != nil {
		return "", err
	}
	h.backendPID = p.cmd.Process.Pid
	return addr, waitListen(addr, 10*time.Second)
}

// router starts fastrouter with a static pool bench.test → node.
func (h *harness) router(node string, extra ...string) (target, string, error) {
	http, admin := h.port(), h.port()
	args := append([]string{"--http", http, "--admin", admin, "--subscription-server", h.port(),
		"--to", "bench.test=" + node, "--log-level", "warn"}, extra...)
	p, err := h.start("fastrouter", h.bin.router, args...)
	if err != nil {
		return target{}, "", err
	}
	if err := waitListen(admin, 10*time.Second); err != nil {
		return target{}, "", err
	}
	return target{name: "fastrouter", url: "http://" + http + "/", pid: p.cmd.Process.Pid}, admin, nil
}

// withVariants is fr followed by a fastrouter for each -variants setting.
func (h *harness) withVariants(node string, fr target) ([]target, error) {
	targets := []target{fr}
	for _, env := range h.variants {
		for _, b := range h.variantBins() {
			t, err := h.variant(node, env, b)
			if err != nil {
				return nil, err
			}
			targets = append(targets, t)
		}
	}
	return targets, nil
}

// variantBin is a fastrouter binary variants run on and its rows' suffix.
type variantBin struct{ path, suffix string }

// variantBins is the binary built from the tree and, with
// -baseline-router, the baseline one.
func (h *harness) variantBins() []variantBin {
	bins := []variantBin{{path: h.bin.router}}
	if h.baseline != "" {
		bins = append(bins, variantBin{path: h.baseline, suffix: " [baseline]"})
	}
	return bins
}

// variant starts fastrouter like router, with one more environment setting
// (NAME=VALUE) or flag (--name or --name=value); its row is named
// "fastrouter NAME=VALUE" or "fastrouter --name".
func (h *harness) variant(node, env string, bin variantBin) (target, error) {
	env, flags, err := variantArgs(env)
	if err != nil {
		return target{}, err
	}
	http, admin := h.port(), h.port()
	args := append([]string{env, bin.path, "--http", http, "--admin", admin,
		"--subscription-server", h.port(), "--to", "bench.test=" + node, "--log-level", "warn"}, flags...)
	name := strings.Join(append([]string{env}, flags...), " ") + bin.suffix
	p, err := h.start("fastrouter-"+strings.NewReplacer("/", "_", " ", "_").Replace(name), "/usr/bin/env", args...)
	if err != nil {
		return target{}, err
	}
	if err := waitListen(admin, 10*time.Second); err != nil {
		return target{}, err
	}
	return target{name: "fastrouter " + variantName(env, flags) + bin.suffix, url: "http://" + http + "/", pid: p.cmd.Process.Pid}, nil
}

// variantArgs splits a -variants entry into the environment setting env
// runs the router with (a no-op one for a flag) and the router's extra
// flags.
func variantArgs(v string) (env string, flags []string, err error) {
	if strings.HasPrefix(v, "--") {
		return "FASTROUTER_VARIANT=1", []string{v}, nil
	}
	if !strings.Contains(v, "=") {
		return "", nil, fmt.Errorf("-variants: %q is neither NAME=VALUE nor --flag", v)
	}
	return v, nil, nil
}

// variantName is a variant's row name.
func variantName(env string, flags []string) string {
	if len(flags) > 0 {
		return strings.Join(flags, " ")
	}
	return env
}

// nginx starts nginx with uwsgi_pass to node, plain or TLS (+h2), with a
// worker per core.
func (h *harness) nginx(node string, tls bool) (target, bool, error) {
	return h.nginxOn(node, tls, "auto", "")
}

// nginxOn is nginx with workers worker processes ("auto" or a count), on the
// CPUs in cpus (a taskset list; "" = anywhere).
func (h *harness) nginxOn(node string, tls bool, workers, cpus string) (target, bool, error) {
	addr := h.port()
	listen, scheme := addr, "http"
	if tls {
		listen = addr + " ssl http2;\n    ssl_certificate " + h.cert + "; ssl_certificate_key " + h.key + ";\n    ssl_protocols TLSv1.2 TLSv1.3"
		scheme = "https"
	}
	pass := node
	if strings.HasPrefix(node, "/") {
		pass = "unix:" + node
	}
	server := fmt.Sprintf("  server {\n    listen %s;\n    location / { include /etc/nginx/uwsgi_params; uwsgi_pass %s; }\n  }\n", listen, pass)
	t, ok, err := h.startNginx("nginx", workers, cpus, "", server, addr)
	t.url = scheme + "://" + addr + "/"
	return t, ok, err
}

// startNginx writes an nginx.conf with the given worker count, extra http
// block text (upstreams) and server block, starts nginx in the foreground
// (pinned to cpus when set) and waits for addr. ok is false when nginx is
// not installed.
func (h *harness) startNginx(name, workers, cpus, httpExtra, server, addr string) (target, bool, error) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		return target{}, false, nil
	}
	dir, err := os.MkdirTemp(h.tmp, "nginx-")
	if err != nil {
		return target{}, false, err
	}
	conf := fmt.Sprintf(`worker_processes %[2]s;
worker_rlimit_nofile 65536;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log warn;
events { worker_connections 16384; }
http {
  access_log off;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
  client_body_temp_path %[1]s; proxy_temp_path %[1]s; fastcgi_temp_path %[1]s; uwsgi_temp_path %[1]s; scgi_temp_path %[1]s;
%[3]s%[4]s}
`, dir, workers, httpExtra, server)
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		return target{}, false, err
	}
	p, err := h.startOn(name, cpus, nil, bin, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	if err != nil {
		return target{}, false, err
	}
	if err := waitListen(addr, 10*time.Second); err != nil {
		return target{}, false, err
	}
	return target{name: "nginx", url: "http://" + addr + "/", pid: p.cmd.Process.Pid}, true, nil
}

// uwsgiHTTP starts uWSGI's http router in front of node.
func (h *harness) uwsgiHTTP(node string) (target, bool, error) {
	return h.uwsgiHTTPOn(node, "")
}

// uwsgiHTTPOn is uwsgiHTTP with the master and its one http router process
// on the CPUs in cpus ("" = anywhere).
func (h *harness) uwsgiHTTPOn(node, cpus string) (target, bool, error) {
	bin, err := exec.LookPath("uwsgi")
	if err != nil {
		return target{}, false, nil
	}
	addr := h.port()
	p, err := h.startOn("uwsgi-http", cpus, nil, bin, "--plugin", "http", "--master", "--die-on-term", "--http", addr, "--http-to", node,
		"--http-processes", "1", "--http-keepalive", "--http-auto-chunked", "--disable-logging")
	if err != nil {
		return target{}, false, err
	}
	if err := waitListen(addr, 10*time.Second); err != nil {
		return target{}, false, err
	}
	return target{name: "uwsgi-http", url: "http://" + addr + "/", pid: p.cmd.Process.Pid}, true, nil
}

// measure runs load against each target per round, alternating, and adds
// the medians as rows.
func (h *harness) measure(ctx context.Context, scenario string, targets []target, load func(target) (result, error)) error {
	per := map[string][]result{}
	cpu := map[string][]float64{}
	rss := map[string][]float64{}
	split := map[string]*[4][]float64{} // µs per request: router user, router sys, backend, load tool
	for r := 1; r <= h.rounds; r++ {
		for _, t := range targets {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			u0, s0 := cpuSplit(t.pid)
			b0 := cpuSeconds(h.backendPID)
			res, err := load(t)
			if err != nil {
				return err
			}
			u1, s1 := cpuSplit(t.pid)
			b1 := cpuSeconds(h.backendPID)
			c0, c1 := u0+s0, u1+s1
			per[t.name] = append(per[t.name], res)
			if res.requests > 0 {
				cpu[t.name] = append(cpu[t.name], (c1-c0)/res.requests*10000)
				if split[t.name] == nil {
					split[t.name] = new([4][]float64)
				}
				sp, us := split[t.name], 1e6/res.requests
				sp[0] = append(sp[0], (u1-u0)*us)
				sp[1] = append(sp[1], (s1-s0)*us)
				sp[2] = append(sp[2], (b1-b0)*us)
				sp[3] = append(sp[3], res.loadCPU*us)
			}
			rss[t.name] = append(rss[t.name], float64(rssBytes(t.pid))/(1<<20))
			log.Printf("  round %d %-10s %9.0f req/s  p50 %6.2f ms  p99 %6.2f ms  cpu %.2f s/10k  %s", r, t.name, res.rps, res.p50, res.p99,
				(c1-c0)/max(res.requests, 1)*10000, res.errors)
		}
	}
	for _, t := range targets {
		rs := per[t.name]
		pick := func(f func(result) float64) float64 {
			v := make([]float64, len(rs))
			for i, r := range rs {
				v[i] = f(r)
			}
			return median(v)
		}
		var errs []string
		for _, r := range rs {
			if r.errors != "" {
				errs = append(errs, r.errors)
			}
		}
		h.rows = append(h.rows, row{scenario: scenario, router: t.name,
			rps: pick(func(r result) float64 { return r.rps }), p50: pick(func(r result) float64 { return r.p50 }),
			p99: pick(func(r result) float64 { return r.p99 }), cpuPer10k: median(cpu[t.name]), rssMiB: median(rss[t.name]),
			extra: strings.Join(errs, "; ")})
		if sp := split[t.name]; sp != nil {
			r := &h.rows[len(h.rows)-1]
			r.usUser, r.usSys, r.usBackend, r.usLoad = median(sp[0]), median(sp[1]), median(sp[2]), median(sp[3])
		}
	}
	return nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// throughput: HTTP/1.1 keep-alive at -connections, all three routers.
func (h *harness) throughput(ctx context.Context, name string, size int, unix bool) error {
	node, err := h.backend(size, unix)
	if err != nil {
		return err
	}
	fr, _, err := h.router(node)
	if err != nil {
		return err
	}
	targets, err := h.withVariants(node, fr)
	if err != nil {
		return err
	}
	if t, ok, err := h.nginx(node, false); err != nil {
		return err
	} else if ok {
		targets = append(targets, t)
	}
	if t, ok, err := h.uwsgiHTTP(node); err != nil {
		return err
	} else if ok {
		targets = append(targets, t)
	}
	return h.measure(ctx, name, targets, func(t target) (result, error) {
		return runWrk(ctx, t.url, "bench.test", h.conns, h.dur)
	})
}

// tlsTargets starts a backend, fastrouter with --https and nginx with TLS
// and h2 in front of it.
func (h *harness) tlsTargets() ([]target, error) {
	node, err := h.backend(512, false)
	if err != nil {
		return nil, err
	}
	tlsAddr := h.port()
	fr, _, err := h.router(node, "--https", tlsAddr, "--tls-cert", h.cert, "--tls-key", h.key)
	if err != nil {
		return nil, err
	}
	fr.url = "https://" + tlsAddr + "/"
	targets := []target{fr}
	if t, ok, err := h.nginx(node, true); err != nil {
		return nil, err
	} else if ok {
		targets = append(targets, t)
	}
	return targets, nil
}

// https: HTTP/1.1 over TLS 1.3 with wrk, fastrouter vs nginx.
func (h *harness) https(ctx context.Context) error {
	targets, err := h.tlsTargets()
	if err != nil {
		return err
	}
	return h.measure(ctx, "https", targets, func(t target) (result, error) {
		return runWrk(ctx, t.url, "bench.test", h.conns, h.dur)
	})
}

// h2: HTTP/2 over TLS with h2load (10 connections × 10 streams).
func (h *harness) h2(ctx context.Context) error {
	if _, err := exec.LookPath("h2load"); err != nil {
		return fmt.Errorf("h2load is not installed (apt-get install nghttp2-client)")
	}
	targets, err := h.tlsTargets()
	if err != nil {
		return err
	}
	n := int(h.dur.Seconds()) * 3000
	return h.measure(ctx, "h2", targets, func(t target) (result, error) {
		return runH2load(ctx, h.tmp, t.url, "bench.test", n, 10, 10)
	})
}

// h3: HTTP/3 (--http3) with the Go load generator (runH3Load), 10
// connections × 10 streams as h2's h2load; fastrouter only (nginx-light
// has no HTTP/3).
func (h *harness) h3(ctx context.Context) error {
	node, err := h.backend(512, false)
	if err != nil {
		return err
	}
	tlsAddr := h.port()
	fr, _, err := h.router(node, "--https", tlsAddr, "--http3", "--tls-cert", h.cert, "--tls-key", h.key)
	if err != nil {
		return err
	}
	fr.url = "https://" + tlsAddr + "/"
	n := int(h.dur.Seconds()) * 3000
	return h.measure(ctx, "h3", []target{fr}, func(t target) (result, error) {
		return runH3Load(ctx, t.url, "bench.test", n, 10, 10)
	})
}

// idle: memory per idle keep-alive connection (RSS growth ÷ connections).
func (h *harness) idle(ctx context.Context, n int) error {
	node, err := h.backend(512, false)
	if err != nil {
		return err
	}
	fr, _, err := h.router(node)
	if err != nil {
		return err
	}
	targets, err := h.withVariants(node, fr)
	if err != nil {
		return err
	}
	if t, ok, err := h.nginx(node, false); err != nil {
		return err
	} else if ok {
		targets = append(targets, t)
	}
	return h.idleRows(ctx, "idle", targets, n, false)
}

// idleTLS: the same over HTTPS (TLS 1.3, HTTP/1.1 by ALPN).
func (h *harness) idleTLS(ctx context.Context, n int) error {
	targets, err := h.tlsTargets()
	if err != nil {
		return err
	}
	return h.idleRows(ctx, "idle-tls", targets, n, true)
}

// idleRows opens n idle keep-alive connections to each target, one request
// each, and records the RSS growth per connection.
func (h *harness) idleRows(ctx context.Context, scenario string, targets []target, n int, useTLS bool) error {
	for _, t := range targets {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimPrefix(t.url, "https://"), "http://"), "/")
		dial := func() (net.Conn, error) { return net.DialTimeout("tcp", addr, 5*time.Second) }
		if useTLS {
			// The harness's own self-signed certificate: nothing to verify.
			cfg := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}}
			dial = func() (net.Conn, error) {
				return tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, cfg)
			}
		}
		// Warm up (first requests grow pools and buffers), then measure.
		if rel, _, err := holdIdle(dial, "bench.test", 100); err == nil {
			rel()
		}
		time.Sleep(500 * time.Millisecond)
		before := rssBytes(t.pid)
		release, opened, err := holdIdle(dial, "bench.test", n)
		if err != nil {
			return fmt.Errorf("%s: %d of %d connections: %w", t.name, opened, n, err)
		}
		time.Sleep(time.Second)
		after := rssBytes(t.pid)
		release()
		per := float64(after-before) / float64(opened) / 1024
		log.Printf("  %-10s %d idle connections: RSS %.1f → %.1f MiB, %.1f KiB each", t.name, opened, float64(before)/(1<<20), float64(after)/(1<<20), per)
		h.rows = append(h.rows, row{scenario: scenario, router: t.name, rssMiB: float64(after) / (1 << 20),
			extra: fmt.Sprintf("%.1f KiB per idle keep-alive connection (%d connections)", per, opened)})
	}
	return nil
}

// pools: lookup cost with 10 vs many pools, fastrouter only.
func (h *harness) pools(ctx context.Context, many int) error {
	node, err := h.backend(512, false)
	if err != nil {
		return err
	}
	var targets []target
	for _, count := range []int{10, many} {
		sub := h.port()
		fr, admin, err := h.router(node, "--subscription-server", sub, "--subscription-tolerance", "1h")
		if err != nil {
			return err
		}
		fr.name = fmt.Sprintf("fastrouter-%dpools", count)
		if err := h.fill(ctx, sub, admin, node, count); err != nil {
			return err
		}
		targets = append(targets, fr)
	}
	return h.measure(ctx, "pools", targets, func(t target) (result, error) {
		return runWrk(ctx, t.url, "pool-7.bench.test", h.conns, h.dur)
	})
}

// fill subscribes count pools pool-N.bench.test and waits until the router
// counted them all.
func (h *harness) fill(ctx context.Context, sub, admin, node string, count int) error {
	c, err := net.Dial("udp", sub)
	if err != nil {
		return err
	}
	defer c.Close()
	start := time.Now()
	for i := 0; i < count; i++ {
		if _, err := c.Write(subscription(fmt.Sprintf("pool-%d.bench.test", i), node)); err != nil {
			return err
		}
		// Do not overrun the router's queue (4096: it drops and counts, we
		// want all), but poll rarely: a /metrics scrape of a large table is
		// itself costly.
		if i%2000 == 1999 {
			for applied(admin) < float64(i-3000) {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
	}
	for applied(admin) < float64(count) {
		if ctx.Err() != nil || time.Since(start) > 10*time.Minute {
			return fmt.Errorf("only %.0f of %d subscriptions applied", applied(admin), count)
		}
		time.Sleep(50 * time.Millisecond)
	}
	log.Printf("  %d pools subscribed in %s", count, time.Since(start).Round(time.Millisecond))
	return nil
}

// datagrams: refresh datagrams applied per second while serving wrk load.
func (h *harness) datagrams(ctx context.Context) error {
	node, err := h.backend(512, false)
	if err != nil {
		return err
	}
	sub := h.port()
	fr, admin, err := h.router(node, "--subscription-server", sub)
	if err != nil {
		return err
	}
	var dgrams [][]byte
	for i := range 1000 {
		dgrams = append(dgrams, subscription(fmt.Sprintf("dg-%d.bench.test", i%100), fmt.Sprintf("127.0.0.1:%d", 40000+i)))
	}
	var done, sent float64
	err = h.measure(ctx, "datagrams", []target{fr}, func(t target) (result, error) {
		bctx, cancel := context.WithTimeout(ctx, h.dur)
		defer cancel()
		before := applied(admin)
		ch := make(chan int, 1)
		go func() { n, _ := blast(bctx, sub, dgrams, 0); ch <- n }()
		res, err := runWrk(ctx, t.url, "bench.test", h.conns, h.dur)
		s := <-ch
		time.Sleep(200 * time.Millisecond)
		done += (applied(admin) - before) / h.dur.Seconds()
		sent += float64(s) / h.dur.Seconds()
		return res, err
	})
	if err == nil && len(h.rows) > 0 {
		last := &h.rows[len(h.rows)-1]
		last.extra = fmt.Sprintf("%.0f datagrams/s applied of %.0f/s sent (mean over rounds), while serving", done/float64(h.rounds), sent/float64(h.rounds))
	}
	return err
}

// datagramsOneCore: how many subscription datagrams the router applies on
// one core. The router runs alone on CPU 0 (taskset, GOMAXPROCS=1); a sender
// on CPU 1 sends refreshes for 1000 nodes with sendmmsg as fast as it can.
// No HTTP load. The router's CPU share says whether the sender or the router
// was the limit.
func (h *harness) datagramsOneCore(ctx context.Context) error {
	if runtime.NumCPU() < 2 {
		return errors.New("needs 2 CPUs (router on one, sender on the other)")
	}
	taskset, err := exec.LookPath("taskset")
	if err != nil {
		return errors.New("taskset (util-linux) is required")
	}
	node, err := h.backend(512, false)
	if err != nil {
		return err
	}
	sub, http, admin := h.port(), h.port(), h.port()
	p, err := h.start("fastrouter", "/usr/bin/env", "GOMAXPROCS=1", taskset, "-c", "0", h.bin.router,
		"--http", http, "--admin", admin, "--subscription-server", sub, "--to", "bench.test="+node, "--log-level", "warn")
	if err != nil {
		return err
	}
	if err := waitListen(admin, 10*time.Second); err != nil {
		return err
	}
	var dgrams [][]byte
	for i := range 1000 {
		dgrams = append(dgrams, subscription(fmt.Sprintf("dg-%d.bench.test", i%100), fmt.Sprintf("127.0.0.1:%d", 40000+i)))
	}
	var rates, shares, drops []float64
	for r := 1; r <= h.rounds && ctx.Err() == nil; r++ {
		u := "http://" + admin + "/metrics"
		a0, d0, c0 := applied(admin), metric(u, `fastrouter_subscription_packets_total{result="dropped"}`), cpuSeconds(p.cmd.Process.Pid)
		bctx, cancel := context.WithTimeout(ctx, h.dur)
		start := time.Now()
		sent, err := blastBatch(bctx, sub, dgrams, 1)
		cancel()
		if err != nil {
			return err
		}
		el := time.Since(start).Seconds()
		time.Sleep(300 * time.Millisecond) // let the queue drain
		a1, d1, c1 := applied(admin), metric(u, `fastrouter_subscription_packets_total{result="dropped"}`), cpuSeconds(p.cmd.Process.Pid)
		rate, share := (a1-a0)/el, (c1-c0)/el
		rates, shares, drops = append(rates, rate), append(shares, share), append(drops, (d1-d0)/max(float64(sent), 1))
		log.Printf("  round %d fastrouter %9.0f datagrams/s applied of %.0f/s sent, router CPU %.0f%% of one core, %.2f%% dropped",
			r, rate, float64(sent)/el, 100*share, 100*(d1-d0)/max(float64(sent), 1))
	}
	if len(rates) == 0 {
		return ctx.Err()
	}
	// The sender above pays the loopback receive path on its own core and
	// tops out below what the router can take, so the router idles between
	// datagrams. Its capacity is measured by draining: stop it, fill its
	// socket buffer, resume it, and divide what it applied by the CPU time
	// it spent, while it never ran out of work.
	var caps []float64
	for r := 1; r <= h.rounds && ctx.Err() == nil; r++ {
		c, per, dropped, err := drainRate(ctx, p.cmd.Process.Pid, admin, sub, dgrams)
		if err != nil {
			return err
		}
		caps = append(caps, c)
		log.Printf("  round %d fastrouter %9.0f datagrams/s applied per CPU-second draining a full socket buffer (%.0f per burst, %.0f dropped)",
			r, c, per, dropped)
	}
	h.rows = append(h.rows, row{scenario: "datagrams-1core", router: "fastrouter", rssMiB: float64(rssBytes(p.cmd.Process.Pid)) / (1 << 20),
		extra: fmt.Sprintf("%.0f datagrams/s applied per CPU-second at saturation (draining a full socket buffer); "+
			"streamed: %.0f/s applied, router CPU %.0f%% of its core (sender-limited), %.2f%% dropped when its queue was full; no HTTP load",
			median(caps), median(rates), 100*median(shares), 100*median(drops))})
	return nil
}

// drainRate stops the router (pid), fills its subscription socket (sub)
// with dgrams, resumes it and returns the datagrams it applied per second
// of CPU time until the queue ran dry, over 30 such bursts; also how many
// it applied per burst and dropped in all (its queue full).
func drainRate(ctx context.Context, pid int, admin, sub string, dgrams [][]byte) (rate, perBurst, dropped float64, err error) {
	const bursts = 30
	u := "http://" + admin + "/metrics"
	drops := func() float64 { return metric(u, `fastrouter_subscription_packets_total{result="dropped"}`) }
	var done, ns float64
	d0 := drops()
	for range bursts {
		if ctx.Err() != nil {
			return 0, 0, 0, ctx.Err()
		}
		a0, c0 := applied(admin), cpuNanos(pid)
		if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
			return 0, 0, 0, err
		}
		// More than the 4 MiB buffer holds; the kernel drops the rest.
		_, err := blastCount(sub, dgrams, 20000)
		if err2 := syscall.Kill(pid, syscall.SIGCONT); err == nil {
			err = err2
		}
		if err != nil {
			return 0, 0, 0, err
		}
		time.Sleep(250 * time.Millisecond) // a burst drains in ~25 ms
		c1 := cpuNanos(pid)
		done += applied(admin) - a0
		ns += float64(c1 - c0)
	}
	if ns == 0 {
		return 0, 0, 0, errors.New("drain: no CPU time measured")
	}
	return done / (ns / 1e9), done / bursts, drops() - d0, nil
}

// applied is the number of subscription datagrams the router applied
// (new nodes and refreshes).
func applied(admin string) float64 {
	u := "http://" + admin + "/metrics"
	return metric(u, `fastrouter_subscription_packets_total{result="subscribe"}`) + metric(u, `fastrouter_subscription_packets_total{result="refresh"}`)
}
