// Command fastrouter is a load-balancing front router: it terminates HTTP,
// maps each request's Host to a pool of uwsgi nodes that join by subscription
// datagrams (as uWSGI's --subscribe-to sends them), and forwards over uwsgi.
//
// This file only wires packages together: flags, config, listeners, signals.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fastrouter/fastrouter/accesslog"
	"github.com/fastrouter/fastrouter/admin"
	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/health"
	"github.com/fastrouter/fastrouter/internal/upgrade"
	"github.com/fastrouter/fastrouter/lifecycle"
	"github.com/fastrouter/fastrouter/router"
	"github.com/fastrouter/fastrouter/stats"
	"github.com/fastrouter/fastrouter/subauth"
	"github.com/fastrouter/fastrouter/subscription"
	routertls "github.com/fastrouter/fastrouter/tls"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// run is main with its environment passed in; it returns the exit code:
// 0 after a clean shutdown, 1 for a runtime failure (e.g. a listener that
// cannot bind), 2 for bad flags or config.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "subscribe" {
		return runSubscribe(args[1:], stdout, stderr)
	}
	o, fs, err := parseArgs(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stdout, "Usage: fastrouter [flags]\n       fastrouter subscribe [flags]   (announce a node; see fastrouter subscribe --help)\n\n"+
			"fastrouter %s: HTTP front router for uwsgi nodes that join by subscription.\n\nFlags:\n", versionString())
		printFlags(stdout, fs)
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "fastrouter: %v\n", err)
		return 2
	}
	if o.version {
		fmt.Fprintf(stdout, "fastrouter %s\n", versionString())
		return 0
	}
	level := new(slog.LevelVar)
	l, _ := parseLevel(o.logLevel)
	level.Set(l)
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	usr2 := make(chan os.Signal, 1)
	signal.Notify(usr2, syscall.SIGUSR2)
	defer signal.Stop(usr2)
	reload := func() (*options, error) {
		o, _, err := parseArgs(args)
		return o, err
	}
	up, err := upgrade.New(upgrade.Config{Logger: log})
	if err != nil {
		fmt.Fprintf(stderr, "fastrouter: %v\n", err)
		return 1
	}
	defer up.Close()
	sig := signals{hup: hup, usr2: usr2}
	if err := serve(ctx, o, log, level, sig, reload, up); err != nil {
		log.Error("fatal", "err", err)
		fmt.Fprintf(stderr, "fastrouter: %v\n", err)
		return 1
	}
	return 0
}

// signals are the operator's requests besides stop (ctx): hup reloads the
// configuration, usr2 upgrades the binary.
type signals struct {
	hup, usr2 <-chan os.Signal
}

// serve runs the router until ctx ends, then shuts down gracefully. A
// value on sig.hup reloads the configuration through reload; one on sig.usr2
// hands the sockets to a fresh exec of the binary (up) and then drains.
func serve(ctx context.Context, o *options, log *slog.Logger, level *slog.LevelVar,
	sig signals, reload func() (*options, error), up *upgrade.Upgrader) error {
	started := time.Now()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	var life *lifecycle.Manager // set below; OnChange only fires once serving
	table, err := balancer.New(balancer.Config{
		DefaultAlgo:  balancer.Algo(o.algo),
		FallbackKey:  o.fallbackKey,
		DrainTimeout: o.drainTimeout,
		SlowStart:    o.slowStart,
		Policy:       o.defaultPolicy(),
		OnChange: func(string) {
			if life != nil {
				life.Changed()
			}
		},
	})
	if err != nil {
		return err
	}
	policies, checks, err := o.poolPolicies()
	if err != nil {
		return err
	}
	if err := table.SetPolicies(o.defaultPolicy(), policies); err != nil {
		return err
	}
	checker, err := health.New(health.Config{Pools: table, Checks: checks, Logger: log, Registerer: reg})
	if err != nil {
		return err
	}
	// One admission gate for every way a node enters: datagrams, the
	// admin API, the state file, an upgrade's hand-off, cluster peers.
	gate, err := subauth.New(o.guardConfig(log, reg, func() {
		if life != nil {
			life.Changed() // the replay memory moved: the state file keeps up
		}
	}))
	if err != nil {
		return err
	}
	cl, err := newCluster(o, table, gate, log, reg, up.IsChild()) // nil without --cluster-bind
	if err != nil {
		return err
	}
	acmew, err := setupACME(o, cl, table, log, reg) // acme.go; zero when off
	if err != nil {
		return err
	}
	defer acmew.close()
	var subTable subscription.Table = table
	var admTable admin.Table = table
	var notify func(balancer.DrainEvent) bool
	if cl != nil {
		// Changes made here go through the cluster, which shares them.
		subTable, admTable, notify = cl.Origin(), cl.Origin(), cl.ShouldNotify
	}
	life, err = lifecycle.New(lifecycle.Config{StateFile: o.stateFile, Logger: log, Registerer: reg, ShouldNotify: notify,
		Admission: gate, Signed: gate}, table)
	if err != nil {
		return err
	}
	if st := up.State(); st != nil {
		// A binary upgrade: the previous process's table, current to the
		// moment it handed over (fresher than any state file).
		data, err := io.ReadAll(st)
		if err == nil {
			var n int
			n, err = life.Restore(data)
			log.Info("restored nodes from the previous process", "nodes", n)
		}
		if err != nil {
			log.Warn("upgrade state not restored; nodes re-announce", "err", err)
		}
	} else if n, err := life.Load(); err != nil {
		log.Warn("state file not loaded; starting empty", "err", err)
	} else if n > 0 {
		log.Info("restored nodes from the state file", "nodes", n, "file", o.stateFile)
	}
	statics := newStaticSet(table, log)
	if err := statics.apply(o.staticNodes()); err != nil {
		return err
	}
	if o.metricsPerNode {
		if err := reg.Register(stats.NewNodeCollector(table)); err != nil {
			return err
		}
	}
	// The access log's file is written by its own goroutine; requests only
	// copy their line into its buffer. Closed after the router drained.
	var alog *accesslog.Writer
	var accessOut io.Writer // nil unless alog: a typed nil would be "set"
	if o.accessLog != "" {
		if alog, err = accesslog.New(accesslog.Config{Path: o.accessLog, Logger: log, Registerer: reg}); err != nil {
			return err
		}
		defer func() {
			if err := alog.Close(); err != nil {
				log.Warn("shutdown: access log", "err", err)
			}
		}()
		accessOut = alog
	}
	rt, err := router.New(router.Config{
		Pools:          table,
		ConnectTimeout: o.connectTimeout,
		Timeout:        o.timeout,
		HeaderTimeout:  o.headerTimeout,
		MaxHeaderBytes: o.maxHeaderBytes,
		MaxBodyBytes:   o.maxBodyBytes,
		HashKey:        o.hashKey,
		MaxConns:       o.maxConns,
		TrustedProxies: o.trusted(),
		ProxyProtocol:  o.proxyProtocol,
		Challenges:     acmew.challenges(),
		Logger:         log,
		Registerer:     reg,
		AccessLog:      accessOut,
	})
	if err != nil {
		return err
	}
	subs, err := subscription.New(subscription.Config{
		Addrs:        o.subscriptionServers,
		Tolerance:    o.tolerance,
		ListenPacket: up.ListenPacket,
		Gate:         gate,
		Logger:       log,
		Registerer:   reg,
	}, subTable)
	if err != nil {
		return err
	}
	token, err := o.adminToken()
	if err != nil {
		return err
	}
	rateReg := prometheus.NewRegistry() // the status page's rates only (admin.Config.RateGatherer)
	rateReg.MustRegister(rt.RateCollectors()...)
	adm, err := admin.New(admin.Config{
		Table: admTable, Admission: gate, Gatherer: reg, RateGatherer: rateReg, Logger: log, Token: token,
		DrainTimeout: o.drainTimeout, Version: "fastrouter " + versionString(), Started: started, Pprof: o.pprof,
		Certificates: acmew.certificates(),
	})
	if err != nil {
		return err
	}
	defer adm.Close()

	var certs *routertls.Store
	if len(o.https) > 0 {
		certs, err = routertls.New(routertls.Config{
			CertFile: o.tlsCert, KeyFile: o.tlsKey, Dir: o.tlsDir, ClientCAFile: o.tlsClientCA,
			Managed: acmew.managed(), Logger: log, Registerer: reg,
		})
		if err != nil {
			return err
		}
	}

	// Bind everything before serving anything, so a port conflict fails the
	// start cleanly instead of leaving a half-up router.
	type front struct {
		kind, addr string // kind: http, https or redirect
		ln         net.Listener
	}
	var fronts []front
	closeAll := func() {
		for _, f := range fronts {
			f.ln.Close()
		}
	}
	for _, l := range []struct {
		kind  string
		addrs []string
	}{{"http", o.http}, {"https", o.https}, {"redirect", o.httpToHTTPS}, {"uwsgi", o.uwsgi}} {
		for _, a := range l.addrs {
			var ln net.Listener
			var err error
			if l.kind == "uwsgi" && stats.Network(a) == "unix" {
				ln, err = listenUwsgiUnix(up, a)
			} else {
				ln, err = up.Listen("tcp", a)
			}
			if err != nil {
				closeAll()
				name := "--" + l.kind
				if l.kind == "redirect" {
					name = "--http-to-https"
				}
				return fmt.Errorf("%s listener %s: %w", name, a, err)
			}
			fronts = append(fronts, front{l.kind, a, ln})
		}
	}
	httpsPort := 443
	for _, f := range fronts {
		if f.kind == "https" {
			httpsPort = f.ln.Addr().(*net.TCPAddr).Port
			break
		}
	}
	adminLn, err := up.Listen("tcp", o.admin)
	if err != nil {
		closeAll()
		return fmt.Errorf("admin listener %s: %w", o.admin, err)
	}
	var statsLn net.Listener
	if o.stats != "" {
		if statsLn, err = listenStats(up, o.stats); err != nil {
			closeAll()
			adminLn.Close()
			return fmt.Errorf("--stats listener %s: %w", o.stats, err)
		}
	}
	if err := subs.Start(); err != nil {
		closeAll()
		adminLn.Close()
		if statsLn != nil {
			statsLn.Close()
		}
		return err
	}
	life.Start()
	checker.Start()
	defer checker.Close()
	clusterStarted := func() {}
	if cl != nil {
		if clusterStarted, err = startCluster(ctx, cl, up.IsChild(), log); err != nil {
			closeAll()
			adminLn.Close()
			subs.Close()
			life.Stop()
			return err
		}
	}
	if certs != nil {
		certs.Start()
		defer certs.Close()
	}
	acmew.start()

	var wg sync.WaitGroup
	errc := make(chan error, len(fronts)+2)
	for _, f := range fronts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var err error
			switch f.kind {
			case "http":
				err = rt.Serve(f.ln, f.addr)
			case "https":
				err = rt.ServeTLS(f.ln, f.addr, certs.TLSConfig([]string{"h2", "http/1.1"}))
			case "redirect":
				err = rt.ServeRedirect(f.ln, f.addr, httpsPort)
			case "uwsgi":
				err = rt.ServeUwsgi(f.ln, f.addr)
			}
			if err != nil {
				errc <- fmt.Errorf("%s listener %s: %w", f.kind, f.addr, err)
			}
		}()
	}
	adminSrv := &http.Server{Handler: withCluster(acmew.handler(adm), cl), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := adminSrv.Serve(adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("admin listener %s: %w", o.admin, err)
		}
	}()
	var statsSrv *stats.Server
	if statsLn != nil {
		// uWSGI lists a router's gateway sockets, subscription ones included.
		socks := append(append(append([]string(nil), o.http...), o.https...), subs.Addrs()...)
		statsSrv, err = stats.New(stats.Config{Table: table, Name: "http", Sockets: socks, Version: "fastrouter " + versionString(), Logger: log})
		if err != nil {
			statsLn.Close()
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := statsSrv.Serve(statsLn); err != nil {
				errc <- fmt.Errorf("--stats listener %s: %w", o.stats, err)
			}
		}()
	}
	// Pools come and go with subscriptions: forget the series of those gone.
	stopPrune := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(metricsPruneInterval)
		defer t.Stop()
		for {
			select {
			case <-stopPrune:
				return
			case <-t.C:
				rt.PruneMetrics(func(key string) bool { return table.Pool(key) != nil })
			}
		}
	}()
	warnIfExposed(log, o)
	warnIfForgetful(log, o)
	log.Info("fastrouter started", "version", versionString(), "http", o.http, "https", o.https,
		"subscription_server", subs.Addrs(), "admin", o.admin, "static_nodes", len(o.to),
		"stats", o.stats, "access_log", o.accessLog)

	// The pid file names this process before it tells a previous one it is
	// ready (pidfile.go), so the hand-off never leaves it naming a process
	// that is exiting, or missing.
	var runErr error
	handedOff := false
	if o.pidFile != "" {
		if err := writePIDFile(o.pidFile); err != nil {
			log.Warn("pid file", "err", err)
		} else {
			defer func() { releasePIDFile(o.pidFile, handedOff) }()
		}
	}
	if err := up.Ready(); err != nil {
		log.Warn("upgrade: could not tell the previous process we are ready", "err", err)
	}

wait:
	for {
		select {
		case <-ctx.Done():
			log.Info("shutting down", "deadline", o.shutdownTimeout)
			break wait
		case runErr = <-errc:
			break wait
		case <-sig.usr2:
			snap, err := life.Snapshot()
			if err != nil {
				log.Error("upgrade refused: pool table snapshot", "err", err)
				continue
			}
			log.Info("upgrade: starting the new binary")
			pid, err := up.Upgrade(ctx, snap)
			if err != nil {
				log.Error("upgrade failed; this process keeps serving", "err", err)
				reclaimPIDFile(o.pidFile, log)
				continue
			}
			log.Info("upgrade: new process ready; draining this one", "pid", pid, "deadline", o.shutdownTimeout)
			handedOff = true
			if cl != nil {
				// Free the cluster port for the new process, which
				// answers peers under the same name (no Leave).
				cl.Shutdown()
			}
			break wait
		case <-sig.hup:
			// Reload what can change without rebinding; the rest is named
			// in a warning and applies at the next restart or SIGUSR2.
			no, err := reload()
			if err != nil {
				log.Error("reload refused; the running configuration stays", "err", err)
				continue
			}
			if err := rt.SetTimeouts(router.Timeouts{Connect: no.connectTimeout, Timeout: no.timeout, Header: no.headerTimeout}); err != nil {
				log.Error("reload: timeouts", "err", err)
			}
			if err := table.SetDefaultAlgo(balancer.Algo(no.algo)); err != nil {
				log.Error("reload: algorithm", "err", err)
			}
			if pols, checks, err := no.poolPolicies(); err != nil {
				log.Error("reload: pools", "err", err)
			} else if err := table.SetPolicies(no.defaultPolicy(), pols); err != nil {
				log.Error("reload: pools", "err", err)
			} else if err := checker.SetChecks(checks); err != nil {
				log.Error("reload: health checks", "err", err)
			}
			if err := statics.apply(no.staticNodes()); err != nil {
				log.Error("reload: static nodes", "err", err)
				// the rest of the reload still applies
			}
			o.shutdownTimeout = no.shutdownTimeout
			if alog != nil {
				// logrotate moved the file away: write to a new one.
				if err := alog.Reopen(); err != nil {
					log.Error("reload: access log not reopened; lines still go to the old file", "err", err)
				}
			}
			l, _ := parseLevel(no.logLevel)
			level.Set(l)
			if certs != nil {
				if err := certs.Reload(); err != nil {
					log.Error("reload: certificates; the previous ones stay", "err", err)
				}
			}
			if pending := o.needsRestart(no); len(pending) > 0 {
				log.Warn("reload: these settings changed but apply only after a restart or a SIGUSR2 upgrade", "settings", pending)
			}
			log.Info("configuration reloaded", "static_nodes", len(no.to), "log_level", no.logLevel,
				"algo", no.algo, "timeout", no.timeout, "connect_timeout", no.connectTimeout, "header_timeout", no.headerTimeout)
		}
	}

	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if handedOff {
		// The new process serves subscriptions and the admin API from the
		// same sockets now: stop reading them here first, or this process
		// would keep taking datagrams and admin calls while it drains.
		subs.Handoff()
		if err := subs.Close(); err != nil {
			log.Warn("shutdown: subscription server", "err", err)
		}
		_ = adminSrv.Shutdown(sctx)
		if statsSrv != nil {
			_ = statsSrv.Close()
		}
	}
	if err := rt.Shutdown(sctx); err != nil {
		log.Warn("shutdown: requests still in flight at the deadline", "err", err)
	}
	if err := subs.Close(); err != nil {
		log.Warn("shutdown: subscription server", "err", err)
	}
	if cl != nil {
		// Last, so that drains elsewhere counted this router's requests
		// until they finished; then peers drop it at once. Bounded so the
		// process still exits within --shutdown-timeout and a second.
		if err := cl.Leave(leaveTimeout(sctx)); err != nil {
			log.Warn("shutdown: cluster leave", "err", err)
		}
		clusterStarted()
	}
	if handedOff {
		life.Stop() // the new process owns the state file
	} else if err := life.Close(); err != nil {
		log.Warn("shutdown: state file", "err", err)
	}
	_ = adminSrv.Shutdown(sctx)
	if statsSrv != nil {
		if err := statsSrv.Close(); err != nil {
			log.Warn("shutdown: stats server", "err", err)
		}
	}
	close(stopPrune)
	wg.Wait()
	log.Info("stopped")
	return runErr
}

// leaveTimeout is how long the cluster leave at shutdown may take: up to
// 2 s, but no later than half a second past the shutdown deadline (ctx's),
// and never less than 100 ms.
func leaveTimeout(ctx context.Context) time.Duration {
	d := 2 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		d = min(d, time.Until(dl)+500*time.Millisecond)
	}
	return max(d, 100*time.Millisecond)
}

// metricsPruneInterval is how often the series of pools that left the table
// are deleted.
const metricsPruneInterval = 30 * time.Second

// listenStats binds the --stats address (and a unix --uwsgi front): TCP when it has a colon, else a
// unix socket, replacing a stale socket file a crashed run left behind.
func listenStats(up *upgrade.Upgrader, addr string) (net.Listener, error) {
	network := stats.Network(addr)
	ln, err := up.Listen(network, addr)
	if err != nil && network == "unix" && errors.Is(err, syscall.EADDRINUSE) {
		if rerr := stats.RemoveStale(addr); rerr != nil {
			return nil, rerr
		}
		ln, err = up.Listen(network, addr)
	}
	return ln, err
}

// listenUwsgiUnix binds a unix-socket --uwsgi front (a path, or @name for
// the abstract namespace) as --stats does, then opens a path to every local
// user: nginx workers run as another user and uwsgi_pass needs write access
// to connect. That exposes no more than a --uwsgi port on loopback does.
func listenUwsgiUnix(up *upgrade.Upgrader, addr string) (net.Listener, error) {
	ln, err := listenStats(up, addr)
	if err != nil || strings.HasPrefix(addr, "@") {
		return ln, err
	}
	if err := os.Chmod(addr, 0o666); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// printFlags lists every flag in the --name form operators use.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		arg, usage := flag.UnquoteUsage(f)
		if _, isBool := f.Value.(interface{ IsBoolFlag() bool }); isBool {
			arg = ""
		}
		line := "  --" + f.Name
		if arg != "" {
			line += " " + arg
		}
		fmt.Fprintf(w, "%s\n      %s", line, usage)
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "[]" {
			fmt.Fprintf(w, " (default %s)", f.DefValue)
		}
		fmt.Fprintln(w)
	})
}

// staticSet keeps the table's static nodes in step with the configuration:
// apply adds the listed ones and removes those no longer listed. Owned by
// the serve goroutine.
type staticSet struct {
	table   *balancer.Table
	log     *slog.Logger
	current map[staticNode]bool
}

func newStaticSet(t *balancer.Table, log *slog.Logger) *staticSet {
	return &staticSet{table: t, log: log, current: map[staticNode]bool{}}
}

func (s *staticSet) apply(want []staticNode) error {
	next := map[staticNode]bool{}
	for _, n := range want {
		if !s.current[n] {
			if err := s.table.AddStatic(n.key, n.addr, 1); err != nil {
				return err
			}
		}
		next[n] = true
	}
	for n := range s.current {
		if !next[n] {
			s.table.RemoveNode(n.key, n.addr)
			s.log.Info("static node removed by reload", "pool", n.key, "node", n.addr)
		}
	}
	s.current = next
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}
