package main

import (
	"context"
	"strings"
	"time"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/router"
)

// run announces the started router (warnings, the pid file, readiness to a
// previous process) and serves until ctx ends, a server fails (its error
// is returned) or a binary upgrade hands over. SIGHUP reloads.
func (a *app) run(ctx context.Context, sig signals) error {
	a.ready()
	for {
		select {
		case <-ctx.Done():
			a.adm.ShuttingDown() // /healthz answers 503 from now on
			if err := a.delayShutdown(sig); err != nil {
				return err
			}
			a.log.Info("shutting down", "deadline", a.o.shutdownTimeout)
			return nil
		case err := <-a.errc:
			return err
		case <-sig.usr2:
			if a.upgrade(ctx) {
				return nil
			}
		case <-sig.hup:
			no, err := sig.reload()
			if err != nil {
				a.log.Error("reload refused; the running configuration stays", "err", strings.Join(lines(err), "; "))
				continue
			}
			a.reload(no)
		}
	}
}

// delayShutdown keeps the router serving for --shutdown-delay once
// SIGTERM/SIGINT came, while /healthz answers 503, so that a load balancer
// polling it stops sending new traffic before the listeners close (as
// Traefik's terminatingStatusCode with a lifecycle grace period). The
// --shutdown-timeout deadline starts after it. A server that fails
// meanwhile ends it with its error; a SIGHUP meanwhile is ignored.
func (a *app) delayShutdown(sig signals) error {
	d := a.o.shutdownDelay
	if d <= 0 {
		return nil
	}
	a.log.Info("shutting down: /healthz answers 503; still serving until the delay ends", "delay", d)
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			return nil
		case err := <-a.errc:
			return err
		case <-sig.hup:
			a.log.Warn("reload ignored: shutting down")
		}
	}
}

// ready logs that the router serves and tells a previous process (binary
// upgrade) so. The pid file names this process before that (pidfile.go),
// so the hand-off never leaves it naming a process that is exiting, or
// missing.
func (a *app) ready() {
	o := a.o
	warnIfExposed(a.log, o)
	warnIfForgetful(a.log, o)
	warnIfInsecure(a.log, o)
	// The pid file is written before the started line, so whoever waits
	// for that line (a supervisor, a test) finds the file naming us.
	if o.pidFile != "" {
		if err := writePIDFile(o.pidFile); err != nil {
			a.log.Warn("pid file", "err", err)
		} else {
			a.pidWritten = true
		}
	}
	a.log.Info("fastrouter started", "version", versionString(), "http", o.http, "https", o.https,
		"subscription_server", a.subs.Addrs(), "admin", o.admin, "static_nodes", len(o.to),
		"stats", o.stats, "access_log", o.accessLog)
	if err := a.up.Ready(); err != nil {
		a.log.Warn("upgrade: could not tell the previous process we are ready", "err", err)
	}
}

// upgrade hands the sockets and a snapshot of the table to a fresh exec of
// the binary (SIGUSR2) and reports whether the new process took over; this
// one must then drain and exit. On a failure this one keeps serving.
func (a *app) upgrade(ctx context.Context) bool {
	snap, err := a.life.Snapshot()
	if err != nil {
		a.log.Error("upgrade refused: pool table snapshot", "err", err)
		return false
	}
	a.log.Info("upgrade: starting the new binary")
	pid, err := a.up.Upgrade(ctx, snap)
	if err != nil {
		a.log.Error("upgrade failed; this process keeps serving", "err", err)
		reclaimPIDFile(a.o.pidFile, a.log)
		return false
	}
	a.log.Info("upgrade: new process ready; draining this one", "pid", pid, "deadline", a.o.shutdownTimeout)
	a.handedOff = true
	if a.cl != nil {
		// Free the cluster port for the new process, which answers
		// peers under the same name (no Leave).
		a.cl.Shutdown()
	}
	return true
}

// reload applies the reloaded options no (SIGHUP) to what can change
// without rebinding: timeouts, the default algorithm, pool policies and
// health checks, static nodes, the shutdown deadline, the access log file
// (logrotate moved it away), the log level and the certificates. Each part
// that fails is logged and the rest still applies. The settings that
// differ from the start's but need a restart (sockets, and what is fixed
// when a component starts) are named in one warning; they apply at the
// next restart or SIGUSR2 upgrade.
func (a *app) reload(no *options) {
	log := a.log
	if err := a.rt.SetTimeouts(router.Timeouts{Connect: no.connectTimeout, Timeout: no.timeout, Header: no.headerTimeout}); err != nil {
		log.Error("reload: timeouts", "err", err)
	}
	if err := a.table.SetDefaultAlgo(balancer.Algo(no.algo)); err != nil {
		log.Error("reload: algorithm", "err", err)
	}
	if pols, checks, err := no.poolPolicies(); err != nil {
		log.Error("reload: pools", "err", err)
	} else if err := a.table.SetPolicies(no.defaultPolicy(), pols); err != nil {
		log.Error("reload: pools", "err", err)
	} else if err := a.checker.SetChecks(checks); err != nil {
		log.Error("reload: health checks", "err", err)
	}
	added, removed, err := a.statics.Apply(no.staticNodes())
	for _, n := range added {
		log.Info("node joined", "pool", n.Key, "node", n.Address, "source", "config", "static", true)
	}
	for _, n := range removed {
		log.Info("node left", "pool", n.Key, "node", n.Address, "source", "config", "reason", "reload")
	}
	if err != nil {
		log.Error("reload: static nodes", "err", err)
	}
	a.o.shutdownTimeout, a.o.shutdownDelay = no.shutdownTimeout, no.shutdownDelay
	if a.alog != nil {
		if err := a.alog.Reopen(); err != nil {
			log.Error("reload: access log not reopened; lines still go to the old file", "err", err)
		}
	}
	l, _ := parseLevel(no.logLevel)
	a.level.Set(l)
	if a.certs != nil {
		if err := a.certs.Reload(); err != nil {
			log.Error("reload: certificates; the previous ones stay", "err", err)
		}
	}
	if pending := a.o.needsRestart(no); len(pending) > 0 {
		log.Warn("reload: these settings changed but apply only after a restart or a SIGUSR2 upgrade", "settings", pending)
	}
	log.Info("configuration reloaded", "static_nodes", len(no.to), "log_level", no.logLevel,
		"algo", no.algo, "timeout", no.timeout, "connect_timeout", no.connectTimeout, "header_timeout", no.headerTimeout)
}
