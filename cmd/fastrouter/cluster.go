package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/cluster"
	"github.com/fastrouter/fastrouter/subauth"
)

// clusterOptions are the --cluster-* settings. Without --cluster-bind the
// router is a single router and none of the others may be set.
type clusterOptions struct {
	bind       string
	join       []string
	secretFile string
	name       string // the cluster's name (memberlist label)
	nodeName   string // this router's member name
	sync       time.Duration
	secret     []byte // read from secretFile by validate
}

func (c *clusterOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&c.bind, "cluster-bind", "", "memberlist `ADDR` (ip:port, UDP and TCP) of this router in a router cluster; unset: no cluster")
	fs.Var(&listFlag{vals: &c.join}, "cluster-join", "peer `ADDR` (host:port) to join; retried until one answers (repeatable)")
	fs.StringVar(&c.secretFile, "cluster-secret-file", "", "`FILE` with the cluster key (16, 24 or 32 bytes, raw or base64): encrypts and authenticates cluster traffic")
	fs.StringVar(&c.name, "cluster-name", "", "the cluster's `NAME`: routers with another name ignore this one's packets (memberlist label; default none)")
	fs.StringVar(&c.nodeName, "cluster-node-name", "", "this router's member `NAME`, unique in the cluster (default HOSTNAME:PORT of --cluster-bind)")
	fs.DurationVar(&c.sync, "cluster-sync-interval", cluster.DefaultSyncInterval, "full-state exchange with a random peer every `D` (heals missed gossip)")
}

func (c *clusterOptions) validate(p *problems) {
	if c.bind == "" {
		if len(c.join) > 0 || c.secretFile != "" || c.name != "" || c.nodeName != "" {
			p.addf("--cluster-join, --cluster-secret-file, --cluster-name and --cluster-node-name need --cluster-bind")
		}
		return
	}
	bindOK := true
	if err := checkIPAddr(c.bind); err != nil {
		p.addf("--cluster-bind %q: %w", c.bind, err)
		bindOK = false
	}
	for _, j := range c.join {
		if err := checkTCPAddr(j); err != nil {
			p.addf("--cluster-join %q: %w", j, err)
		}
	}
	if c.sync <= 0 {
		p.addf("--cluster-sync-interval must be positive, got %s", c.sync)
	}
	if len(c.name) > 128 || strings.ContainsFunc(c.name, func(r rune) bool { return r < ' ' || r > '~' }) {
		p.addf("--cluster-name: want up to 128 printable ASCII bytes")
	}
	if len(c.nodeName) > 128 {
		p.addf("--cluster-node-name: longer than 128 bytes")
	}
	if c.nodeName == "" && bindOK {
		_, port, _ := net.SplitHostPort(c.bind)
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "fastrouter"
		}
		c.nodeName = h + ":" + port
	}
	if c.secretFile != "" {
		var err error
		if c.secret, err = cluster.LoadSecret(c.secretFile); err != nil {
			p.addf("--cluster-secret-file: %w", err)
		}
	}
}

func (c *clusterOptions) needsRestart(n *clusterOptions) []string {
	var out []string
	if c.bind != n.bind || c.name != n.name || c.nodeName != n.nodeName {
		out = append(out, "--cluster-bind", "--cluster-name", "--cluster-node-name")
	}
	if !slices.Equal(c.join, n.join) {
		out = append(out, "--cluster-join")
	}
	if c.secretFile != n.secretFile || string(c.secret) != string(n.secret) {
		out = append(out, "--cluster-secret-file")
	}
	if c.sync != n.sync {
		out = append(out, "--cluster-sync-interval")
	}
	return out
}

// newCluster returns the cluster member configured by o, or nil for a
// single router. It binds nothing yet (startCluster does).
func newCluster(o *options, table *balancer.Table, gate *subauth.Guard, log *slog.Logger, reg prometheus.Registerer, upgraded bool) (*cluster.Cluster, error) {
	if o.cluster.bind == "" {
		return nil, nil
	}
	cfg := cluster.Config{
		Table:        table,
		Name:         o.cluster.nodeName,
		Label:        o.cluster.name,
		BindAddr:     o.cluster.bind,
		Join:         o.cluster.join,
		SecretKey:    o.cluster.secret,
		SyncInterval: o.cluster.sync,
		Tolerance:    o.tolerance,
		DrainTimeout: o.drainTimeout,
		Admission:    gate, // peers' nodes meet this router's rules
		Signed:       gate, // the replay memory travels with the state
		Logger:       log,
		Registerer:   reg,
	}
	if upgraded {
		cfg.BindRetry = 30 * time.Second
	}
	cl, err := cluster.New(cfg)
	if err != nil {
		return nil, err
	}
	// Drains end when every router is done; one router notifies.
	table.SetDrainGate(cl.DrainGate)
	return cl, nil
}

// startCluster binds the cluster's sockets. A process started by a binary
// upgrade binds in the background (its parent holds the port until it has
// handed over, which is after this process is ready) and logs a failure
// rather than exiting: it already serves. wait is done when that
// background start has ended.
func startCluster(ctx context.Context, cl *cluster.Cluster, upgraded bool, log *slog.Logger) (wait func(), err error) {
	if !upgraded {
		if err := cl.Start(ctx); err != nil {
			return nil, fmt.Errorf("--cluster-bind: %w", err)
		}
		return func() {}, nil
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := cl.Start(ctx); err != nil && ctx.Err() == nil {
			log.Error("cluster: not started after the upgrade; this router runs alone", "err", err)
		}
	}()
	return func() { <-done }, nil
}

// withCluster serves GET /api/cluster beside the admin API.
func withCluster(adm http.Handler, cl *cluster.Cluster) http.Handler {
	if cl == nil {
		return adm
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/cluster", cl)
	mux.Handle("/", adm)
	return mux
}
