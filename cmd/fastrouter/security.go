package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/subauth"
)

// validateSecurity checks the subscription-security and connection-limit
// flags (usage errors, exit 2).
func (o *options) validateSecurity(p *problems) {
	if o.signCheck != "" {
		if _, dir, err := subauth.ParseSignCheck(o.signCheck); err != nil {
			p.addf("--subscriptions-sign-check: %w", err)
		} else if fi, err := os.Stat(dir); err != nil {
			// A missing key directory is a usage error, not a start-up failure.
			p.addf("--subscriptions-sign-check: key directory: %w", err)
		} else if !fi.IsDir() {
			p.addf("--subscriptions-sign-check: %s is not a directory", dir)
		}
	}
	if o.signTolerance < time.Second {
		p.addf("--subscriptions-sign-tolerance must be at least 1s, got %s", o.signTolerance)
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"--subscription-allow", o.subscriptionAllow}, {"--node-allow", o.nodeAllow}} {
		for _, c := range l.vals {
			if _, err := parseCIDR(c); err != nil {
				p.addf("%s %q: %w", l.name, c, err)
			}
		}
	}
	if o.maxConns < 0 {
		p.addf("--max-conns must not be negative, got %d", o.maxConns)
	}
}

// guardConfig is the admission gate's configuration. Call after
// validateSecurity. onChange may be nil.
func (o *options) guardConfig(log *slog.Logger, reg prometheus.Registerer, onChange func()) subauth.Config {
	cfg := subauth.Config{
		Tolerance:  o.signTolerance,
		Sources:    prefixes(o.subscriptionAllow),
		Nodes:      prefixes(o.nodeAllow),
		Logger:     log,
		Registerer: reg,
		OnChange:   onChange,
	}
	if o.signCheck != "" {
		cfg.Hash, cfg.KeyDir, _ = subauth.ParseSignCheck(o.signCheck)
	}
	return cfg
}

// validateAdmission checks the configured nodes (--to) and pools (the
// pools: section) against the rules every node meets (subauth.AdmitNode):
// a configuration that names a node the router would refuse from a
// datagram is a usage error, not a node that silently enters. Call after
// validateSecurity.
func (o *options) validateAdmission(p *problems) {
	if len(o.nodeAllow) == 0 && o.signCheck == "" {
		return
	}
	g, err := subauth.New(o.guardConfig(nil, nil, nil))
	if err != nil {
		p.addf("--subscriptions-sign-check: %w", err)
		return
	}
	for _, n := range o.staticNodes() {
		if err := g.AdmitNode([]byte(n.Key), []byte(n.Address)); err != nil {
			p.addf("--to %q: %w", n.Key+"="+n.Address, err)
		}
	}
	keys := make([]string, 0, len(o.pools))
	for k := range o.pools {
		keys = append(keys, k)
	}
	sort.Strings(keys) // the same order every time
	for _, k := range keys {
		if err := g.AdmitKey([]byte(k)); err != nil {
			p.addf("pools: %w", err)
		}
	}
}

// warnIfInsecure logs that the admin API is open to whoever reaches it:
// it listens beyond loopback without a token because --admin-insecure
// said so (validateListeners refuses it otherwise).
func warnIfInsecure(log *slog.Logger, o *options) {
	if o.adminTokenFile != "" || isLoopback(o.admin) {
		return
	}
	log.Warn("SECURITY WARNING: the admin API listens beyond loopback without --admin-token-file "+
		"(--admin-insecure): anyone who can reach it can add, drain and remove nodes. Set --admin-token-file.",
		"admin", o.admin)
}

// warnIfForgetful logs that a plain restart forgets the signed-datagram
// replay memory when neither a state file nor a cluster keeps it: for one
// --subscriptions-sign-tolerance after such a restart, a datagram captured
// before it can be replayed once. (A SIGUSR2 upgrade hands it over.)
func warnIfForgetful(log *slog.Logger, o *options) {
	if o.signCheck == "" || o.stateFile != "" || o.cluster.bind != "" {
		return
	}
	log.Warn("signed subscriptions without --state-file: the replay memory does not survive a restart, "+
		"so for --subscriptions-sign-tolerance after one a captured datagram can be replayed once; "+
		"set --state-file to keep it (see SECURITY.md)", "tolerance", o.signTolerance)
}

func prefixes(cidrs []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		if p, err := parseCIDR(c); err == nil { // validated
			out = append(out, p)
		}
	}
	return out
}

// exposedSubscriptionServers returns the subscription addresses that can
// receive datagrams from beyond this host: UDP on all interfaces or on a
// non-loopback address. Unix datagram sockets are guarded by their file
// permissions and are not listed.
func exposedSubscriptionServers(addrs []string) []string {
	var out []string
	for _, a := range addrs {
		if strings.Contains(a, "/") || strings.HasPrefix(a, "@") {
			continue
		}
		host, _, err := net.SplitHostPort(a)
		if err != nil {
			continue // validated elsewhere
		}
		ip, err := netip.ParseAddr(host)
		if host == "" || err != nil || !ip.Unmap().IsLoopback() {
			out = append(out, a)
		}
	}
	return out
}

// warnIfExposed logs a loud warning when a subscription server is reachable
// from other hosts while anyone who can reach it may point any domain at any
// address: neither signatures nor a source allow-list is configured.
func warnIfExposed(log *slog.Logger, o *options) {
	if o.signCheck != "" || len(o.subscriptionAllow) > 0 {
		return
	}
	exposed := exposedSubscriptionServers(o.subscriptionServers)
	if len(exposed) == 0 {
		return
	}
	log.Warn("SECURITY WARNING: the subscription server listens beyond loopback without "+
		"--subscriptions-sign-check or --subscription-allow: any host that can send it a UDP datagram "+
		"can route any domain to any address. Set one of them (see SECURITY.md).",
		"subscription_server", exposed)
}

// readLimited reads a file named in the configuration, refusing one larger
// than max bytes: "/dev/zero" or a huge file by mistake must fail the start
// with a message, not exhaust memory.
func readLimited(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("%s: larger than %d bytes", path, max)
	}
	return b, nil
}
