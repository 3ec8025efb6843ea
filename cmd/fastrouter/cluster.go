package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"slices"
	"strconv"
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
	fs.StringVar(&c.bind, "cluster-bind", "", "memberlist `addr` (ip:port, UDP and TCP) of this router in a router cluster; unset: no cluster")
	fs.Var(&listFlag{vals: &c.join}, "cluster-join", "peer `addr` (host:port) to join; retried until one answers (repeatable)")
	fs.StringVar(&c.secretFile, "cluster-secret-file", "", "`file` with the cluster key (16, 24 or 32 bytes, raw or base64): encrypts and authenticates cluster traffic")
	fs.StringVar(&c.name, "cluster-name", "", "the cluster's `name`: routers with another name ignore this one's packets (memberlist label; default none)")
	fs.StringVar(&c.nodeName, "cluster-node-name", "", "this router's member `name`, unique in the cluster (default HOSTNAME:PORT of --cluster-bind)")
	fs.DurationVar(&c.sync, "cluster-sync-interval", cluster.DefaultSyncInterval, "full-state exchange with a random peer every `duration` (heals missed gossip)")
}

func (c *clusterOptions) validate() error {
	if c.bind == "" {
		if len(c.join) > 0 || c.secretFile != "" || c.name != "" || c.nodeName != "" {
			return errors.New("--cluster-join, --cluster-secret-file, --cluster-name and --cluster-node-name need --cluster-bind")
		}
		return nil
	}
	host, port, err := net.SplitHostPort(c.bind)
	if err != nil {
		return fmt.Errorf("--cluster-bind %q: want ip:port", c.bind)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("--cluster-bind %q: bad port", c.bind)
	}
	if host != "" && net.ParseIP(host) == nil {
		return fmt.Errorf("--cluster-bind %q: host must be an IP address", c.bind)
	}
	for _, j := range c.join {
		if _, _, err := net.SplitHostPort(j); err != nil {
			return fmt.Errorf("--cluster-join %q: want host:port", j)
		}
	}
	if c.sync <= 0 {
		return fmt.Errorf("--cluster-sync-interval must be positive, got %s", c.sync)
	}
	if len(c.name) > 128 || strings.ContainsFunc(c.name, func(r rune) bool { return r < ' ' || r > '~' }) {
		return errors.New("--cluster-name: want up to 128 printable ASCII bytes")
	}
	if len(c.nodeName) > 128 {
		return errors.New("--cluster-node-name: longer than 128 bytes")
	}
	if c.nodeName == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "fastrouter"
		}
		c.nodeName = h + ":" + port
	}
	if c.secretFile != "" {
		if c.secret, err = cluster.LoadSecret(c.secretFile); err != nil {
			return fmt.Errorf("--cluster-secret-file: %w", err)
		}
	}
	return nil
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
