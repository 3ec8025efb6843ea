package main

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/subauth"
)

// validateSecurity checks the subscription-security and connection-limit
// flags (usage errors, exit 2).
func (o *options) validateSecurity() error {
	if o.signCheck != "" {
		_, dir, err := subauth.ParseSignCheck(o.signCheck)
		if err != nil {
			return fmt.Errorf("--subscriptions-sign-check: %w", err)
		}
		// A missing key directory is a usage error, not a start-up failure.
		if fi, err := os.Stat(dir); err != nil {
			return fmt.Errorf("--subscriptions-sign-check: key directory: %w", err)
		} else if !fi.IsDir() {
			return fmt.Errorf("--subscriptions-sign-check: %s is not a directory", dir)
		}
	}
	if o.signTolerance < time.Second {
		return fmt.Errorf("--subscriptions-sign-tolerance must be at least 1s, got %s", o.signTolerance)
	}
	for _, l := range []struct {
		name string
		vals []string
	}{{"--subscription-allow", o.subscriptionAllow}, {"--node-allow", o.nodeAllow}} {
		for _, c := range l.vals {
			if _, err := netip.ParsePrefix(c); err != nil {
				return fmt.Errorf("%s %q: %w", l.name, c, err)
			}
		}
	}
	if o.maxConns < 0 {
		return fmt.Errorf("--max-conns must not be negative, got %d", o.maxConns)
	}
	return nil
}

// guardConfig is the subscription gate's configuration. Call after validate.
func (o *options) guardConfig(log *slog.Logger, reg prometheus.Registerer) subauth.Config {
	cfg := subauth.Config{
		Tolerance:  o.signTolerance,
		Sources:    prefixes(o.subscriptionAllow),
		Nodes:      prefixes(o.nodeAllow),
		Logger:     log,
		Registerer: reg,
	}
	if o.signCheck != "" {
		cfg.Hash, cfg.KeyDir, _ = subauth.ParseSignCheck(o.signCheck)
	}
	return cfg
}

func prefixes(cidrs []string) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		out = append(out, netip.MustParsePrefix(c))
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
