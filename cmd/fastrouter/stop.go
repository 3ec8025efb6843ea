package main

import (
	"context"
	"time"
)

// stop stops everything the phases built, bound or started, within
// --shutdown-timeout (counted from here, so after --shutdown-delay) (the router cuts what is still open at that deadline,
// and the cluster leave is bounded past it: leaveTimeout), so the process
// exits within the deadline and a second. After a binary upgrade the
// servers whose sockets the new process serves stop first (handOff).
func (a *app) stop() {
	if a.adm != nil {
		a.adm.ShuttingDown() // whatever stops the router: /healthz says so to the end
	}
	ctx, cancel := context.WithTimeout(context.Background(), a.o.shutdownTimeout)
	defer cancel()
	if a.handedOff {
		a.handOff(ctx)
	}
	a.stops.unwind(ctx)
	if a.running {
		a.log.Info("stopped")
	}
}

// handOff stops reading the sockets the new process serves subscriptions
// and the admin API from now, before this process drains its requests:
// else it would keep taking datagrams and admin calls meanwhile. The
// subscription server leaves its socket files to the new process.
func (a *app) handOff(ctx context.Context) {
	a.subs.Handoff()
	a.stopSubscriptions(ctx)
	_ = a.adminSrv.Shutdown(ctx)
	if a.stats != nil {
		_ = a.stats.Close()
	}
}

func (a *app) stopFronts(ctx context.Context) {
	if err := a.rt.Shutdown(ctx); err != nil {
		a.log.Warn("shutdown: requests still in flight at the deadline", "err", err)
	}
}

func (a *app) stopSubscriptions(context.Context) {
	if err := a.subs.Close(); err != nil {
		a.log.Warn("shutdown: subscription server", "err", err)
	}
}

// stopCluster leaves the cluster, so that peers drop this router at once
// rather than after failure detection, and waits for a background start
// (after an upgrade) to end. After a hand-off the upgrade already shut the
// member down without a leave: the new process answers under its name.
func (a *app) stopCluster(ctx context.Context) {
	if err := a.cl.Leave(leaveTimeout(ctx)); err != nil {
		a.log.Warn("shutdown: cluster leave", "err", err)
	}
	if a.clusterDone != nil {
		a.clusterDone()
	}
}

// stopLifecycle stops the drain loop and, after a plain run, saves the
// state file a last time. After a hand-off the new process owns the file
// (this one's view is stale); a start that failed leaves it as it was.
func (a *app) stopLifecycle(context.Context) {
	if a.handedOff || !a.running {
		a.life.Stop()
		return
	}
	if err := a.life.Close(); err != nil {
		a.log.Warn("shutdown: state file", "err", err)
	}
}

func (a *app) stopAdmin(ctx context.Context) { _ = a.adminSrv.Shutdown(ctx) }

func (a *app) stopStats(context.Context) {
	if err := a.stats.Close(); err != nil {
		a.log.Warn("shutdown: stats server", "err", err)
	}
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
