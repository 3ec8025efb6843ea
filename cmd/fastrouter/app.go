package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/fastrouter/fastrouter/accesslog"
	"github.com/fastrouter/fastrouter/admin"
	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/cluster"
	"github.com/fastrouter/fastrouter/health"
	"github.com/fastrouter/fastrouter/internal/upgrade"
	"github.com/fastrouter/fastrouter/lifecycle"
	"github.com/fastrouter/fastrouter/router"
	"github.com/fastrouter/fastrouter/stats"
	"github.com/fastrouter/fastrouter/subauth"
	"github.com/fastrouter/fastrouter/subscription"
	routertls "github.com/fastrouter/fastrouter/tls"
)

// app is one run of the router: its components, and the order in which
// they are made, bound, started and stopped. serve takes it through the
// phases, as Caddy takes a module through Provision, Start and Stop:
//
//	build  make every component from the options; nothing is bound (app.go)
//	bind   open every socket, so that a port conflict fails the start
//	       before anything serves (start.go)
//	start  start the components; the admin API, whose /healthz says the
//	       router is up, serves last (start.go)
//	run    until SIGTERM/SIGINT: SIGHUP reloads, SIGUSR2 upgrades the
//	       binary (reload.go)
//	stop   unwind the cleanup stack within --shutdown-timeout (stop.go)
//
// Each phase pushes a component's stop onto stops before it binds or
// starts it, so an error anywhere leaves nothing running (see stack).
//
// Owned by the goroutine that runs serve. The components run goroutines
// of their own; the serve goroutines of the listeners belong to serving.
type app struct {
	o *options // as started; a reload changes only shutdownTimeout and shutdownDelay
	// h1Loops is router.Config.H1Loops (0: GOMAXPROCS), set before build.
	h1Loops int
	log     *slog.Logger
	// flushLog, if set, writes the log's counts of rate-limited lines
	// (internal/lograte); start runs it every few seconds.
	flushLog func()
	// dry builds for `fastrouter check`: build writes nothing (no access
	// log file is opened) and the app is never bound or started.
	dry     bool
	level   *slog.LevelVar // --log-level, changed by a reload
	up      *upgrade.Upgrader
	started time.Time

	reg      *prometheus.Registry
	table    *balancer.Table
	statics  *balancer.StaticSet
	checker  *health.Checker
	gate     *subauth.Guard
	cl       *cluster.Cluster // nil without --cluster-bind
	life     *lifecycle.Manager
	alog     *accesslog.Writer // nil without --access-log
	rt       *router.Router
	subs     *subscription.Server
	adm      *admin.Handler
	adminSrv *http.Server
	certs    *routertls.Store // nil without --https
	acme     acmeWiring       // automatic HTTPS (acme.go); the zero value is off
	stats    *stats.Server    // nil without --stats

	fronts  []front // bound by bind, in flag order
	adminLn net.Listener
	statsLn net.Listener // nil without --stats

	stops       stack
	serving     sync.WaitGroup // the goroutines serving the listeners, and the metrics pruner
	errc        chan error     // a server that stopped on its own; buffered for every server
	clusterDone func()         // returns once a background cluster start has ended
	running     bool           // start completed: a plain stop writes the state file
	pidWritten  bool           // the pid file names this process (pidfile.go)
	handedOff   bool           // a binary upgrade succeeded: the new process owns the sockets, the pid and state files
}

// front is one client listener: kind is http, https, redirect or uwsgi,
// addr the address as configured.
type front struct {
	kind, addr string
	ln         net.Listener
	// pc is an https listener's UDP socket at the same address, for
	// HTTP/3 (--http3); nil otherwise.
	pc net.PacketConn
}

// newApp returns the app for o; serve builds and runs it. up holds the
// sockets across binary upgrades.
func newApp(o *options, log *slog.Logger, level *slog.LevelVar, up *upgrade.Upgrader) *app {
	return &app{o: o, log: log, level: level, up: up, started: time.Now()}
}

// build makes every component from the options and restores the table
// (from an upgrade's hand-off or the state file). It binds nothing; the
// components that run a goroutine from birth (the access log writer, the
// status page's rates) push their stop.
func (a *app) build() error {
	a.reg = prometheus.NewRegistry()
	a.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := a.buildTable(); err != nil {
		return err
	}
	if err := a.buildNodes(); err != nil {
		return err
	}
	if err := a.buildACME(); err != nil {
		return err
	}
	if err := a.buildRouter(); err != nil {
		return err
	}
	return a.buildServers()
}

// buildACME makes automatic HTTPS (off: the zero acmeWiring). A dry build
// skips it: the manager creates --acme-dir, which check only looks at
// (checkFiles).
func (a *app) buildACME() error {
	if a.dry {
		a.acme.dry = a.o.acme.enabled()
		return nil
	}
	var err error
	if a.acme, err = setupACME(a.o, a.cl, a.table, a.log, a.reg); err != nil {
		return err
	}
	if a.acme.m != nil {
		a.stops.push("automatic HTTPS", func(context.Context) { a.acme.close() })
	}
	return nil
}

// changed tells the lifecycle manager that the table or the replay memory
// moved, so the state file keeps up. Nil-safe: the table and the admission
// gate exist before the manager, which starts listening once serving.
func (a *app) changed() {
	if a.life != nil {
		a.life.Changed()
	}
}

// expired logs a node the table removed because it went silent
// (balancer.Config.OnExpire).
func (a *app) expired(key, address string, lastSeen time.Time) {
	a.log.Info("node expired", "pool", key, "node", address, "last_seen", lastSeen.UTC().Format(time.RFC3339),
		"silent_for", time.Since(lastSeen).Round(time.Second), "tolerance", a.o.tolerance)
}

// buildTable makes the routing table with its pool policies, and the
// health checker that judges its nodes.
func (a *app) buildTable() error {
	o := a.o
	table, err := balancer.New(balancer.Config{
		DefaultAlgo:  balancer.Algo(o.algo),
		FallbackKey:  o.fallbackKey,
		DrainTimeout: o.drainTimeout,
		SlowStart:    o.slowStart,
		Policy:       o.defaultPolicy(),
		OnChange:     func(string) { a.changed() },
		OnExpire:     a.expired,
	})
	if err != nil {
		return err
	}
	a.table = table
	policies, checks, err := o.poolPolicies()
	if err != nil {
		return err
	}
	if err := table.SetPolicies(o.defaultPolicy(), policies); err != nil {
		return err
	}
	a.checker, err = health.New(health.Config{Pools: table, Checks: checks, Logger: a.log, Registerer: a.reg})
	return err
}

// buildNodes makes what decides which nodes are in the table: the
// admission gate, the cluster, the lifecycle manager (drains, state file),
// and the static nodes of --to. It fills the table.
func (a *app) buildNodes() error {
	o := a.o
	var err error
	// One admission gate for every way a node enters: datagrams, the
	// admin API, the state file, an upgrade's hand-off, cluster peers.
	if a.gate, err = subauth.New(o.guardConfig(a.log, a.reg, a.changed)); err != nil {
		return err
	}
	if a.cl, err = newCluster(o, a.table, a.gate, a.log, a.reg, a.up.IsChild()); err != nil {
		return err
	}
	var notify func(balancer.DrainEvent) bool
	if a.cl != nil {
		notify = a.cl.ShouldNotify
	}
	a.life, err = lifecycle.New(lifecycle.Config{StateFile: o.stateFile, Logger: a.log, Registerer: a.reg,
		ShouldNotify: notify, Admission: a.gate, Signed: a.gate}, a.table)
	if err != nil {
		return err
	}
	a.life.Resume(a.up.State())
	a.statics = balancer.NewStaticSet(a.table)
	added, _, err := a.statics.Apply(o.staticNodes())
	for _, n := range added {
		a.log.Info("node joined", "pool", n.Key, "node", n.Address, "source", "config", "static", true)
	}
	if err != nil {
		return err
	}
	if o.metricsPerNode {
		return a.reg.Register(stats.NewNodeCollector(a.table))
	}
	return nil
}

// buildRouter makes the access log and the router.
func (a *app) buildRouter() error {
	o := a.o
	// The access log's file is written by its own goroutine; requests only
	// copy their line into its buffer. Closed after the router drained.
	var accessOut io.Writer // nil unless alog: a typed nil would be "set"
	if o.accessLog != "" && !a.dry {
		alog, err := accesslog.New(accesslog.Config{Path: o.accessLog, Logger: a.log, Registerer: a.reg})
		if err != nil {
			return err
		}
		a.alog, accessOut = alog, alog
		a.stops.push("access log", func(context.Context) {
			if err := alog.Close(); err != nil {
				a.log.Warn("shutdown: access log", "err", err)
			}
		})
	}
	rt, err := router.New(router.Config{
		Pools:              a.table,
		ConnectTimeout:     o.connectTimeout,
		Timeout:            o.timeout,
		HeaderTimeout:      o.headerTimeout,
		MaxHeaderBytes:     o.maxHeaderBytes,
		MaxBodyBytes:       o.maxBodyBytes,
		RequestBuffering:   o.requestBuffering,
		HashKey:            o.hashKey,
		MaxConns:           o.maxConns,
		TrustedProxies:     o.trusted(),
		ProxyProtocol:      o.proxyProtocol,
		DisableH1EventLoop: !o.h1EventLoop,
		H1Loops:            a.h1Loops,
		HTTP3:              o.http3,
		HTTP3EarlyData:     o.http3EarlyData,
		Challenges:         a.acme.challenges(),
		Logger:             a.log,
		Registerer:         a.reg,
		AccessLog:          accessOut,
	})
	a.rt = rt
	return err
}

// buildServers makes the servers beside the router: subscriptions, the
// admin API and TLS certificates. (The uWSGI stats server lists the bound
// subscription sockets: bind makes it.)
func (a *app) buildServers() error {
	o := a.o
	// Changes made through the cluster's origin are shared with peers.
	var subTable subscription.Table = a.table
	var admTable admin.Table = a.table
	if a.cl != nil {
		subTable, admTable = a.cl.Origin(), a.cl.Origin()
	}
	var err error
	a.subs, err = subscription.New(subscription.Config{Addrs: o.subscriptionServers, Tolerance: o.tolerance,
		ListenPacket: a.up.ListenPacket, Gate: a.gate, Logger: a.log, Registerer: a.reg}, subTable)
	if err != nil {
		return err
	}
	token, err := o.adminToken()
	if err != nil {
		return err
	}
	rateReg := prometheus.NewRegistry() // the status page's rates only (admin.Config.RateGatherer)
	rateReg.MustRegister(a.rt.RateCollectors()...)
	if a.adm, err = admin.New(admin.Config{
		Table: admTable, Admission: a.gate, Gatherer: a.reg, RateGatherer: rateReg, Logger: a.log, Token: token,
		DrainTimeout: o.drainTimeout, Version: "fastrouter " + versionString(), Started: a.started, Pprof: o.pprof,
		Certificates: a.acme.certificates(),
	}); err != nil {
		return err
	}
	a.stops.push("admin handler", func(context.Context) { a.adm.Close() })
	a.adminSrv = &http.Server{Handler: withCluster(a.acme.handler(a.adm), a.cl), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 60 * time.Second}
	if len(o.https) > 0 {
		if a.certs, err = routertls.New(routertls.Config{CertFile: o.tlsCert, KeyFile: o.tlsKey, Dir: o.tlsDir,
			ClientCAFile: o.tlsClientCA, Managed: a.acme.managed(), Logger: a.log, Registerer: a.reg}); err != nil {
			return fmt.Errorf("--https: %w", err)
		}
	}
	return nil
}
