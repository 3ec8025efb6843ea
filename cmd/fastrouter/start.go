package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/fastrouter/fastrouter/internal/sockutil"
	"github.com/fastrouter/fastrouter/stats"
)

// bind opens every socket before anything serves, so that a port conflict
// fails the start cleanly instead of leaving a half-up router: the client
// listeners in flag order, the admin listener, --stats, then the
// subscription sockets. Keep that order: a process started by a binary
// upgrade claims the sockets it inherits by network and address in the
// order the previous one opened them (internal/upgrade), which keeps the
// roles of two listeners on the same ":0".
func (a *app) bind() error {
	o := a.o
	// Last resort for the listeners no server took over (an error before
	// start): each server's own stop closes them first.
	a.stops.push("listeners", func(context.Context) { a.closeListeners() })
	for _, l := range []struct {
		kind, flag string
		addrs      []string
	}{{"http", "--http", o.http}, {"https", "--https", o.https}, {"redirect", "--http-to-https", o.httpToHTTPS}, {"uwsgi", "--uwsgi", o.uwsgi}} {
		for _, addr := range l.addrs {
			var ln net.Listener
			var err error
			if l.kind == "uwsgi" {
				ln, err = sockutil.ListenShared(a.up.Listen, addr) // ip:port, a path or @name
			} else {
				ln, err = a.up.Listen("tcp", addr)
			}
			if err != nil {
				return fmt.Errorf("%s listener %s: %w", l.flag, addr, err)
			}
			a.fronts = append(a.fronts, front{kind: l.kind, addr: addr, ln: ln})
			if l.kind == "https" && o.http3 {
				// The UDP port of the TCP one as bound (":0" included),
				// handed over by an upgrade like the listener.
				if a.fronts[len(a.fronts)-1].pc, err = a.up.ListenPacket("udp", ln.Addr().String()); err != nil {
					return fmt.Errorf("--http3 on %s listener %s (udp): %w", l.flag, addr, err)
				}
			}
		}
	}
	var err error
	if a.adminLn, err = a.up.Listen("tcp", o.admin); err != nil {
		return fmt.Errorf("admin listener %s: %w", o.admin, err)
	}
	if o.stats != "" {
		if a.statsLn, err = sockutil.Listen(a.up.Listen, o.stats); err != nil {
			return fmt.Errorf("--stats listener %s: %w", o.stats, err)
		}
	}
	a.rt.SetOwnAddrs(a.ownAddrs()) // never forward to our own sockets (router/loop.go)
	// The subscription server binds in Start and reads at once: datagrams
	// change the table while the rest starts. start pushes its stop again
	// where shutdown needs it; this one covers an error before then.
	a.stops.push("subscription server (bind)", a.stopSubscriptions)
	if err := a.subs.Start(); err != nil {
		return err
	}
	if o.stats != "" {
		// uWSGI lists a router's gateway sockets, subscription ones included.
		socks := append(append(append([]string(nil), o.http...), o.https...), a.subs.Addrs()...)
		a.stats, err = stats.New(stats.Config{Table: a.table, Name: "http", Sockets: socks,
			Version: "fastrouter " + versionString(), Logger: a.log})
	}
	return err
}

// ownAddrs are the addresses of the listeners bind opened: the fronts,
// admin and stats.
func (a *app) ownAddrs() []net.Addr {
	own := []net.Addr{a.adminLn.Addr()}
	for _, f := range a.fronts {
		own = append(own, f.ln.Addr())
	}
	if a.statsLn != nil {
		own = append(own, a.statsLn.Addr())
	}
	return own
}

// closeListeners closes every listener bind opened. Closing one twice is
// harmless, and a unix socket's file goes with its first close (none after
// a hand-off: internal/upgrade keeps the file for the new process).
func (a *app) closeListeners() {
	for _, f := range a.fronts {
		f.ln.Close()
		if f.pc != nil {
			f.pc.Close()
		}
	}
	if a.adminLn != nil {
		a.adminLn.Close()
	}
	if a.statsLn != nil {
		a.statsLn.Close()
	}
}

// start starts every component, each after its stop is on the stack. The
// pushes are in the reverse of the order shutdown must run, so unwinding
// the stack is the shutdown:
//
//	fronts: stop accepting, drain the requests in flight (to the deadline)
//	subscription server: the table stays current while requests drain
//	cluster: leave once this router's requests are done, so drains on
//	  other routers counted them to the end
//	lifecycle: the state file's last save, with every change above
//	admin API, stats server, metrics pruner: observable to the end
//	every server goroutine returned; the pid file; certificates; health
//	  checks; (from build) the admin handler, the access log
//
// The admin API, whose /healthz tells the operator the router is up, is
// the one component that starts after others it outlives: its stop is
// pushed in its place and it serves last.
func (a *app) start(ctx context.Context) error {
	a.errc = make(chan error, 2*len(a.fronts)+2) // one per server (an https front may have two): none blocks
	a.stops.push("health checks", func(context.Context) { a.checker.Close() })
	a.checker.Start()
	if a.certs != nil {
		a.stops.push("certificates", func(context.Context) { a.certs.Close() })
		a.certs.Start()
	}
	a.acme.start()
	a.stops.push("pid file", func(context.Context) { // written by run
		if a.pidWritten {
			releasePIDFile(a.o.pidFile, a.handedOff)
		}
	})
	a.stops.push("server goroutines", func(context.Context) { a.serving.Wait() })
	a.startPruner()
	a.startLogFlusher()
	if a.stats != nil {
		a.stops.push("stats server", a.stopStats)
		a.serving.Go(func() {
			if err := a.stats.Serve(a.statsLn); err != nil {
				a.errc <- fmt.Errorf("--stats listener %s: %w", a.o.stats, err)
			}
		})
	}
	a.stops.push("admin server", a.stopAdmin)
	a.stops.push("lifecycle", a.stopLifecycle)
	a.life.Start()
	if a.cl != nil {
		a.stops.push("cluster", a.stopCluster)
		done, err := startCluster(ctx, a.cl, a.up.IsChild(), a.log)
		if err != nil {
			return err
		}
		a.clusterDone = done
	}
	a.stops.push("subscription server", a.stopSubscriptions)
	a.stops.push("fronts", a.stopFronts)
	a.serveFronts()
	a.serving.Go(func() {
		if err := a.adminSrv.Serve(a.adminLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.errc <- fmt.Errorf("admin listener %s: %w", a.o.admin, err)
		}
	})
	a.running = true
	return nil
}

// serveFronts serves every client listener on its own goroutine.
func (a *app) serveFronts() {
	httpsPort := 443 // where --http-to-https sends clients
	for _, f := range a.fronts {
		if f.kind == "https" {
			httpsPort = f.ln.Addr().(*net.TCPAddr).Port
			break
		}
	}
	for _, f := range a.fronts {
		if f.pc != nil {
			a.serving.Go(func() { a.serveHTTP3(f) })
		}
		a.serving.Go(func() {
			var err error
			switch f.kind {
			case "http":
				err = a.rt.Serve(f.ln, f.addr)
			case "https":
				err = a.rt.ServeTLS(f.ln, f.addr, a.certs.TLSConfig([]string{"h2", "http/1.1"}))
			case "redirect":
				err = a.rt.ServeRedirect(f.ln, f.addr, httpsPort)
			case "uwsgi":
				err = a.rt.ServeUwsgi(f.ln, f.addr)
			}
			if err != nil {
				a.errc <- fmt.Errorf("%s listener %s: %w", f.kind, f.addr, err)
			}
		})
	}
}

// serveHTTP3 serves HTTP/3 on an https front's UDP socket until the
// router's Shutdown, with the certificates of the TCP listener. ACME's
// TLS-ALPN challenge is TCP only (RFC 8737 §3), so QUIC handshakes never
// take its configuration.
func (a *app) serveHTTP3(f front) {
	cfg := a.certs.TLSConfig([]string{"h3"})
	cfg.GetConfigForClient = nil
	if err := a.rt.ServeHTTP3(f.pc, f.addr, cfg); err != nil {
		a.errc <- fmt.Errorf("--http3 listener %s: %w", f.addr, err)
	}
}

// logFlushInterval is how often the counts of rate-limited log lines are
// written (internal/lograte), so that a flood that stopped is reported
// within seconds rather than at the next line of its kind.
const logFlushInterval = 5 * time.Second

// startLogFlusher writes the counts of suppressed log lines every
// logFlushInterval, and a last time at stop.
func (a *app) startLogFlusher() {
	if a.flushLog == nil {
		return
	}
	stop := make(chan struct{})
	a.stops.push("log flusher", func(context.Context) { close(stop) })
	a.serving.Go(func() {
		t := time.NewTicker(logFlushInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				a.flushLog()
				return
			case <-t.C:
				a.flushLog()
			}
		}
	})
}

// metricsPruneInterval is how often the series of pools that left the table
// are deleted.
const metricsPruneInterval = 30 * time.Second

// startPruner forgets the router's series of pools gone from the table:
// pools come and go with subscriptions.
func (a *app) startPruner() {
	stop := make(chan struct{})
	a.stops.push("metrics pruner", func(context.Context) { close(stop) })
	a.serving.Go(func() {
		t := time.NewTicker(metricsPruneInterval)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				a.rt.PruneMetrics(func(key string) bool { return a.table.Pool(key) != nil })
			}
		}
	})
}
