package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/fastrouter/fastrouter/balancer"
)

// options are the resolved settings of one run, from flags and --config.
type options struct {
	config              string
	http                []string
	https               []string
	httpToHTTPS         []string
	uwsgi               []string
	tlsCert, tlsKey     string
	tlsDir              string
	tlsClientCA         string
	pidFile             string
	hashKey             string
	subscriptionServers []string
	admin               string
	to                  []string
	algo                string
	tolerance           time.Duration
	connectTimeout      time.Duration
	timeout             time.Duration
	headerTimeout       time.Duration
	shutdownTimeout     time.Duration
	maxHeaderBytes      int
	maxBodyBytes        int64
	requestBuffering    int64
	fallbackKey         string
	trustedProxies      []string
	proxyProtocol       bool
	h1EventLoop         bool
	http3               bool
	http3EarlyData      bool
	logLevel            string
	version             bool
	drainTimeout        time.Duration
	slowStart           time.Duration
	stateFile           string
	adminTokenFile      string
	accessLog           string
	stats               string
	pprof               bool
	metricsPerNode      bool
	maxInflight         string
	queueSize           int
	queueTimeout        time.Duration
	// pools is the pools: section of --config (no flag): per-pool
	// algorithm, overload policy and health check, by pool key.
	pools             map[string]poolConfig
	cluster           clusterOptions // cluster_flags.go
	acme              acmeOptions    // acme.go
	signCheck         string
	signTolerance     time.Duration
	subscriptionAllow []string
	nodeAllow         []string
	maxConns          int
	adminInsecure     bool
	shutdownDelay     time.Duration
}

// listFlag is a repeatable string flag. The first Set after a default
// replaces the default.
type listFlag struct {
	vals    *[]string
	changed bool
}

func (l *listFlag) String() string {
	if l.vals == nil {
		return ""
	}
	return strings.Join(*l.vals, ",")
}

func (l *listFlag) Set(v string) error {
	if !l.changed {
		*l.vals = nil
		l.changed = true
	}
	*l.vals = append(*l.vals, v)
	return nil
}

// newFlagSet defines every flag on o with its default, section by section
// in the order --help shows them (flags.go). A new flag goes in the
// section it belongs to, with its value's placeholder `QUOTED` in its
// usage (ADDR, FILE, D, N...), and, when its default needs words, a usage
// that says "default" itself.
func newFlagSet(o *options) *flagSet {
	fs := newFlagSetNamed("fastrouter")
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	*o = options{
		subscriptionServers: []string{"127.0.0.1:2626"},
		trustedProxies:      []string{"127.0.0.0/8", "::1/128"},
	}
	fs.section("Listeners")
	fs.Var(&listFlag{vals: &o.http}, "http", "HTTP/1.1 (and h2c) listener `ADDR`, host:port (repeatable; default 127.0.0.1:8080 when no listener is given)")
	fs.Var(&listFlag{vals: &o.https}, "https", "TLS listener `ADDR` with ALPN h2 and http/1.1 (repeatable; needs --tls-cert/--tls-key, --tls-dir or automatic HTTPS, --acme-*)")
	fs.BoolVar(&o.http3, "http3", false, "also serve HTTP/3 (QUIC) on the UDP port of each --https listener, with its certificates; TCP responses advertise it with Alt-Svc")
	fs.BoolVar(&o.http3EarlyData, "http3-0rtt", false, "accept HTTP/3 0-RTT early data from resuming clients, for GET and HEAD only (others get 425 Too Early): replayable, so only for idempotent apps")
	fs.Var(&listFlag{vals: &o.httpToHTTPS}, "http-to-https", "listener `ADDR` that answers 301 to the same URL over https (repeatable)")
	fs.Var(&listFlag{vals: &o.uwsgi}, "uwsgi", "uwsgi-protocol front listener `ADDR`: host:port, or a unix socket path or @name, made 0666 (uWSGI fastrouter mode, for nginx uwsgi_pass; repeatable)")
	fs.Var(&listFlag{vals: &o.subscriptionServers}, "subscription-server", "UDP subscription listener `ADDR` (ip:port), or a unix datagram socket path (repeatable)")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9191", "admin API, /metrics and /healthz listener `ADDR`; off loopback it needs --admin-token-file or --admin-insecure")
	fs.IntVar(&o.maxConns, "max-conns", 0, "at most `N` open client connections per listener; a new one beyond gets 503 and is closed (default 0: no limit)")
	fs.BoolVar(&o.proxyProtocol, "proxy-protocol", false, "connections from --trusted-proxy peers to --http/--https may start with a PROXY v1/v2 header that sets the client address")
	fs.BoolVar(&o.h1EventLoop, "h1-event-loop", true, "serve --http listeners' simple HTTP/1.1 requests (no body, no upgrade) to uwsgi nodes on one epoll event loop per core, everything else on the usual path (default true, on Linux without --max-conns or --proxy-protocol; --h1-event-loop=false serves every request on the usual path)")

	fs.section("Routing")
	fs.Var(&listFlag{vals: &o.to}, "to", "static node `KEY=NODEADDR` that never expires (repeatable)")
	fs.StringVar(&o.fallbackKey, "fallback-key", "", "pool `KEY` used when no pool matches the host")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 3*time.Second, "give up a backend connect after `D`; the request is retried on another node")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "backend and client inactivity timeout `D` (also the keep-alive idle timeout)")
	fs.DurationVar(&o.headerTimeout, "header-timeout", 10*time.Second, "a client must send its request headers within `D`")
	fs.IntVar(&o.maxHeaderBytes, "max-header-bytes", 65536, "largest request head, `N` bytes; larger is answered 431")
	fs.Int64Var(&o.maxBodyBytes, "max-body-bytes", 1<<30, "largest request body, `N` bytes (413 beyond); chunked bodies over 8 MiB are buffered in a temporary file")
	fs.Int64Var(&o.requestBuffering, "request-buffering", 1<<30, "read request bodies of up to `N` bytes whole before a node is picked (over 1 MiB in a temporary file), so a slow upload holds no node; larger ones stream at the client's pace (0: all stream)")

	fs.section("Nodes and balancing")
	fs.StringVar(&o.algo, "algo", "wrr", "balancing algorithm `NAME` of new pools: wrr, lrc, wlrc, iphash, p2c, hash or sed")
	fs.StringVar(&o.hashKey, "hash-key", "", "where pools with algorithm hash find their key, `SRC`: header:NAME or cookie:NAME (unset: they balance as wrr)")
	fs.StringVar(&o.maxInflight, "max-inflight", "0", "cap `N` on requests in flight to each node: a count, auto (the cores the node announced plus a quarter, at least 1) or 0 (the default: off); more wait in the pool's queue")
	fs.IntVar(&o.queueSize, "queue-size", balancer.DefaultQueueSize, "`N` requests per pool that may wait for a node under --max-inflight; more get 503 + Retry-After")
	fs.DurationVar(&o.queueTimeout, "queue-timeout", balancer.DefaultQueueTimeout, "longest wait `D` for a node under --max-inflight before 503 + Retry-After")
	fs.DurationVar(&o.tolerance, "subscription-tolerance", 30*time.Second, "remove a node that has not re-announced for `D`")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "deadline `D` of a node drain that names none (admin API, unsubscribe, drain=1)")
	fs.DurationVar(&o.slowStart, "slow-start", 0, "ramp a (re)joined node's weight from 1/16 to full over `D` (default 0s: off)")

	fs.section("TLS")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "certificate `FILE` (PEM chain) --https serves when no --tls-dir name matches")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key `FILE` (PEM) of --tls-cert")
	fs.StringVar(&o.tlsDir, "tls-dir", "", "SNI certificates `DIR`: NAME.crt + NAME.key, _wildcard.DOMAIN.* for *.DOMAIN; re-read when files change")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM `FILE` of CAs for optional client certificates; a verified subject reaches the node as HTTPS_DN")
	o.acme.define(fs.FlagSet)

	fs.section("Security")
	fs.Var(&listFlag{vals: &o.trustedProxies}, "trusted-proxy", "`CIDR` of peers whose X-Forwarded-For/-Proto (and PROXY header) are believed (repeatable)")
	fs.StringVar(&o.signCheck, "subscriptions-sign-check", "", "require uWSGI-compatible signed subscriptions: `DIGEST:DIR` (SHA1, SHA256, SHA384 or SHA512; public keys DIR/<key>.pem, RSA or Ed25519)")
	fs.DurationVar(&o.signTolerance, "subscriptions-sign-tolerance", 60*time.Second, "max distance `D` between a signed datagram's unix time and now")
	fs.Var(&listFlag{vals: &o.subscriptionAllow}, "subscription-allow", "`CIDR` allowed to send subscription datagrams (repeatable; default all)")
	fs.Var(&listFlag{vals: &o.nodeAllow}, "node-allow", "`CIDR` a node address may point into, however the node enters: datagram, admin API, --to, state file, cluster (repeatable; default anywhere; when set, unix socket nodes are refused)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "`FILE` holding the bearer token required by mutating admin calls")
	fs.BoolVar(&o.adminInsecure, "admin-insecure", false, "let an --admin listener off loopback run without --admin-token-file: whoever reaches it can change the pools")

	fs.section("Cluster")
	o.cluster.define(fs.FlagSet)

	fs.section("Observability")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `LEVEL`: debug, info, warn or error")
	fs.StringVar(&o.accessLog, "access-log", "", "append one JSON line per request to `FILE` (- = stdout); reopened on SIGHUP")
	fs.StringVar(&o.stats, "stats", "", "uWSGI-compatible router stats server `ADDR` (host:port, or a unix socket path): one JSON document per connection")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the admin listener")
	fs.BoolVar(&o.metricsPerNode, "metrics-per-node", false, "export per-node series (fastrouter_node_*{pool,node}) on /metrics")

	fs.section("Lifecycle")
	fs.StringVar(&o.config, "config", "", "YAML `FILE` with the same settings (keys = flag names); flags override it")
	fs.StringVar(&o.stateFile, "state-file", "", "persist the pool table (and the signed-datagram replay memory) to `FILE` and load it at start, so a restart routes at once")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the process id to `FILE` (rewritten by the new process after a SIGUSR2 binary upgrade)")
	fs.DurationVar(&o.shutdownDelay, "shutdown-delay", 0, "on SIGTERM/SIGINT keep serving for `D` while /healthz answers 503, so that load balancers move away before the router stops accepting (default 0s: none)")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "graceful shutdown deadline `D`, counted after --shutdown-delay; then what is still open is cut")
	fs.BoolVar(&o.version, "version", false, "print the version, commit and Go version, and exit")
	fs.close()
	return fs
}

// parseArgs parses the command line and the --config file and validates
// the result. The error lists every problem found, one per line (see
// lines); all are usage errors (exit 2), and the options are not to be
// run then. flag.ErrHelp: --help was asked (and the options are nil).
func parseArgs(args []string) (*options, *flagSet, error) {
	o := new(options)
	fs := newFlagSet(o)
	var p problems
	rest, help := parseFlags(fs, args, &p)
	if help {
		return nil, fs, flag.ErrHelp
	}
	if len(rest) > 0 {
		p.addf("unexpected argument %q (see fastrouter --help)", rest[0])
	}
	if o.config != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		loadConfig(fs, o, o.config, set, &p)
	}
	o.validateInto(&p)
	return o, fs, p.err() // o for check, which lists the problems of its files too
}

// loadConfig applies a YAML file: each key is a flag name; lists set
// repeatable flags. Keys already given on the command line are skipped.
// Values are read as written (the scalar's text, so "timeout: 5" is the
// flag value "5" and gets the flag's own message). Every bad key is a
// problem of its own.
func loadConfig(fs *flagSet, o *options, path string, set map[string]bool, p *problems) {
	data, err := readLimited(path, 1<<20)
	if err != nil {
		p.addf("--config: %w", err)
		return
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		p.addf("config %s: %w", path, oneLine(err))
		return
	}
	if len(doc.Content) == 0 {
		return // empty file
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		p.addf("config %s: line %d: want a map of settings (flag names without --), e.g. \"timeout: 30s\"", path, root.Line)
		return
	}
	seen := map[string]int{}
	for i := 0; i+1 < len(root.Content); i += 2 {
		kn, vn := root.Content[i], resolveAlias(root.Content[i+1])
		k := kn.Value
		if line, dup := seen[k]; dup {
			p.addf("config %s: line %d: %s is set twice (first on line %d)", path, kn.Line, k, line)
			continue
		}
		seen[k] = kn.Line
		if k == "pools" {
			pools, errs := decodePools(vn)
			for _, err := range errs {
				p.addf("config %s: pools: %w", path, err)
			}
			o.pools = pools
			continue
		}
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == "version" {
			p.addf("config %s: line %d: unknown setting %q (settings are flag names without --; see fastrouter --help)", path, kn.Line, k)
			continue
		}
		if set[k] {
			continue
		}
		vals, err := yamlValues(vn)
		if err != nil {
			p.addf("config %s: line %d: %s: %w", path, vn.Line, k, err)
			continue
		}
		if _, isList := f.Value.(*listFlag); !isList && len(vals) != 1 {
			p.addf("config %s: line %d: %s takes one value, not a list", path, vn.Line, k)
			continue
		}
		for _, v := range vals {
			if err := setFlag(fs, f, v); err != nil {
				p.addf("config %s: line %d: %w", path, vn.Line, valueError(k, f, v, err))
				break
			}
		}
	}
}

// resolveAlias follows a YAML alias (*name) to the node it names.
func resolveAlias(n *yaml.Node) *yaml.Node {
	for i := 0; n.Kind == yaml.AliasNode && n.Alias != nil && i < 8; i++ {
		n = n.Alias
	}
	return n
}

// yamlValues is the text of a scalar, or of each scalar of a list.
func yamlValues(n *yaml.Node) ([]string, error) {
	switch n.Kind {
	case yaml.ScalarNode:
		s, err := yamlScalar(n)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	case yaml.SequenceNode:
		out := make([]string, 0, len(n.Content))
		for _, e := range n.Content {
			s, err := yamlScalar(resolveAlias(e))
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, errors.New("want one value or a list of values")
}

func yamlScalar(n *yaml.Node) (string, error) {
	switch {
	case n.Kind != yaml.ScalarNode:
		return "", errors.New("want one value or a list of values")
	case n.Tag == "!!null":
		return "", errors.New("no value")
	}
	return n.Value, nil
}

func oneLine(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}

// validate checks every setting (usage errors, exit 2) and fills in the
// defaults that depend on other settings. The error lists every problem,
// one per line.
func (o *options) validate() error {
	var p problems
	o.validateInto(&p)
	return p.err()
}

// validateInto adds every problem of the settings to p.
func (o *options) validateInto(p *problems) {
	o.validateListeners(p)
	o.validateLimits(p)
	o.validateRouting(p)
	o.validateBalancing(p)
	security := len(*p)
	o.validateSecurity(p)
	if len(*p) == security { // the admission rules need valid CIDRs and keys
		o.validateAdmission(p)
	}
	o.validateRest(p)
	o.cluster.validate(p)
	p.add(o.acme.validate(o))
}

// validateListeners checks the listener addresses and TLS; without any
// client listener the router serves HTTP on 127.0.0.1:8080. An admin
// listener beyond loopback needs a token (or --admin-insecure): it can
// change every pool.
func (o *options) validateListeners(p *problems) {
	if len(o.http) == 0 && len(o.https) == 0 && len(o.httpToHTTPS) == 0 && len(o.uwsgi) == 0 {
		o.http = []string{"127.0.0.1:8080"}
	}
	for _, l := range []struct {
		flag  string
		addrs []string
		check func(string) error
	}{
		{"--http", o.http, checkTCPAddr}, {"--https", o.https, checkTCPAddr},
		{"--http-to-https", o.httpToHTTPS, checkTCPAddr}, {"--uwsgi", o.uwsgi, checkStreamAddr},
		{"--subscription-server", o.subscriptionServers, checkDatagramAddr},
		{"--admin", []string{o.admin}, checkTCPAddr},
	} {
		for _, a := range l.addrs {
			if err := l.check(a); err != nil {
				p.addf("%s %q: %w", l.flag, a, err)
			}
		}
	}
	if o.stats != "" {
		if err := checkStreamAddr(o.stats); err != nil {
			p.addf("--stats %q: %w", o.stats, err)
		}
	}
	if o.adminTokenFile == "" && !o.adminInsecure && checkTCPAddr(o.admin) == nil && !isLoopback(o.admin) {
		p.addf("--admin %s is reachable beyond this host and can change every pool: set --admin-token-file "+
			"(or --admin-insecure to run it open anyway)", o.admin)
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		p.addf("--tls-cert and --tls-key go together")
	}
	if len(o.https) > 0 && o.tlsCert == "" && o.tlsDir == "" && !o.acme.enabled() {
		p.addf("--https needs a certificate: --tls-cert/--tls-key, --tls-dir or --acme-domain/--acme-on-demand")
	}
	if o.http3 && len(o.https) == 0 {
		p.addf("--http3 needs an --https listener, whose UDP port it serves")
	}
	if o.http3EarlyData && !o.http3 {
		p.addf("--http3-0rtt needs --http3")
	}
	if len(o.https) == 0 && (o.tlsCert != "" || o.tlsDir != "" || o.tlsClientCA != "") {
		p.addf("--tls-cert, --tls-dir and --tls-client-ca need an --https listener")
	}
}

// validateLimits checks the default algorithm, the timeouts and the
// request size limits.
func (o *options) validateLimits(p *problems) {
	if _, err := balancer.ParseAlgo(o.algo); err != nil {
		p.addf("--algo: unknown algorithm %q (want wrr, lrc, wlrc, iphash, p2c, hash or sed)", o.algo)
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{
		{"--subscription-tolerance", o.tolerance}, {"--connect-timeout", o.connectTimeout},
		{"--timeout", o.timeout}, {"--header-timeout", o.headerTimeout}, {"--shutdown-timeout", o.shutdownTimeout},
		{"--drain-timeout", o.drainTimeout},
	} {
		if d.d <= 0 {
			p.addf("%s must be positive, got %s", d.name, d.d)
		}
	}
	if o.shutdownDelay < 0 {
		p.addf("--shutdown-delay must not be negative, got %s", o.shutdownDelay)
	}
	if o.maxHeaderBytes < 1024 || o.maxHeaderBytes > 1<<20 {
		p.addf("--max-header-bytes must be between 1024 and 1048576, got %d", o.maxHeaderBytes)
	}
	if o.maxBodyBytes <= 0 {
		p.addf("--max-body-bytes must be positive, got %d", o.maxBodyBytes)
	}
	if o.requestBuffering < 0 {
		p.addf("--request-buffering must not be negative, got %d", o.requestBuffering)
	}
}

// validateRouting checks the static nodes, the fallback pool, the trusted
// proxies and the hash key.
func (o *options) validateRouting(p *problems) {
	for _, t := range o.to {
		k, a, ok := strings.Cut(t, "=")
		switch {
		case !ok || k == "" || a == "":
			p.addf("--to %q: want KEY=NODEADDR", t)
		case len(k) > 255:
			p.addf("--to %q: key longer than 255 bytes", t)
		default:
			if _, err := balancer.ParseEndpoint(a); err != nil {
				p.addf("--to %q: %w", t, err)
			}
		}
	}
	if len(o.fallbackKey) > 255 {
		p.addf("--fallback-key: longer than 255 bytes")
	}
	for _, c := range o.trustedProxies {
		if _, err := parseCIDR(c); err != nil {
			p.addf("--trusted-proxy %q: %w", c, err)
		}
	}
	if o.hashKey != "" {
		kind, name, ok := strings.Cut(o.hashKey, ":")
		if !ok || (kind != "header" && kind != "cookie") || name == "" || strings.ContainsAny(name, " \t\r\n;,=") {
			p.addf("--hash-key %q: want header:NAME or cookie:NAME", o.hashKey)
		}
	}
}

// validateBalancing checks the overload policy and the pools: section.
func (o *options) validateBalancing(p *problems) {
	if _, err := balancer.ParseLimit(o.maxInflight); err != nil {
		p.addf("--max-inflight: %w", err)
	}
	if o.queueSize < 0 || o.queueSize > 1<<20 {
		p.addf("--queue-size must be between 0 and 1048576, got %d", o.queueSize)
	}
	if o.queueTimeout <= 0 {
		p.addf("--queue-timeout must be positive, got %s", o.queueTimeout)
	}
	if _, _, err := o.poolPolicies(); err != nil {
		p.add(err)
	}
}

// validateRest checks slow start, the log level and the admin token file.
func (o *options) validateRest(p *problems) {
	if o.slowStart < 0 {
		p.addf("--slow-start must not be negative, got %s", o.slowStart)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		p.add(err)
	}
	if o.adminTokenFile != "" {
		if _, err := o.adminToken(); err != nil {
			p.add(err)
		}
	}
}

// adminToken reads --admin-token-file: one line, surrounding space trimmed.
func (o *options) adminToken() (string, error) {
	if o.adminTokenFile == "" {
		return "", nil
	}
	b, err := readLimited(o.adminTokenFile, 4<<10)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" || strings.ContainsAny(tok, "\r\n") {
		return "", fmt.Errorf("--admin-token-file %s: want one non-empty line", o.adminTokenFile)
	}
	return tok, nil
}

// staticNodes are the --to nodes. Call after validate.
func (o *options) staticNodes() []balancer.StaticNode {
	out := make([]balancer.StaticNode, 0, len(o.to))
	for _, t := range o.to {
		k, a, _ := strings.Cut(t, "=")
		out = append(out, balancer.StaticNode{Key: k, Address: a})
	}
	return out
}

func (o *options) trusted() []netip.Prefix { return prefixes(o.trustedProxies) }

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// needsRestart names the settings that differ between o (running) and n
// (reloaded) but cannot change in a running process: sockets and what is
// fixed when a component starts.
func (o *options) needsRestart(n *options) []string {
	var out []string
	diff := func(name string, changed bool) {
		if changed {
			out = append(out, "--"+name)
		}
	}
	diff("http", !slices.Equal(o.http, n.http))
	diff("https", !slices.Equal(o.https, n.https))
	diff("uwsgi", !slices.Equal(o.uwsgi, n.uwsgi))
	diff("http-to-https", !slices.Equal(o.httpToHTTPS, n.httpToHTTPS))
	diff("subscription-server", !slices.Equal(o.subscriptionServers, n.subscriptionServers))
	diff("admin", o.admin != n.admin)
	diff("tls-cert", o.tlsCert != n.tlsCert || o.tlsKey != n.tlsKey)
	diff("tls-dir", o.tlsDir != n.tlsDir)
	diff("tls-client-ca", o.tlsClientCA != n.tlsClientCA)
	diff("proxy-protocol", o.proxyProtocol != n.proxyProtocol)
	diff("h1-event-loop", o.h1EventLoop != n.h1EventLoop)
	diff("http3", o.http3 != n.http3)
	diff("http3-0rtt", o.http3EarlyData != n.http3EarlyData)
	diff("trusted-proxy", !slices.Equal(o.trustedProxies, n.trustedProxies))
	diff("max-body-bytes", o.maxBodyBytes != n.maxBodyBytes)
	diff("request-buffering", o.requestBuffering != n.requestBuffering)
	diff("max-header-bytes", o.maxHeaderBytes != n.maxHeaderBytes)
	diff("subscription-tolerance", o.tolerance != n.tolerance)
	diff("drain-timeout", o.drainTimeout != n.drainTimeout)
	diff("slow-start", o.slowStart != n.slowStart)
	diff("fallback-key", o.fallbackKey != n.fallbackKey)
	diff("state-file", o.stateFile != n.stateFile)
	diff("admin-token-file", o.adminTokenFile != n.adminTokenFile)
	diff("pid-file", o.pidFile != n.pidFile)
	diff("hash-key", o.hashKey != n.hashKey)
	diff("access-log", o.accessLog != n.accessLog)
	diff("stats", o.stats != n.stats)
	diff("pprof", o.pprof != n.pprof)
	diff("metrics-per-node", o.metricsPerNode != n.metricsPerNode)
	diff("subscriptions-sign-check", o.signCheck != n.signCheck)
	diff("subscriptions-sign-tolerance", o.signTolerance != n.signTolerance)
	diff("subscription-allow", !slices.Equal(o.subscriptionAllow, n.subscriptionAllow))
	diff("node-allow", !slices.Equal(o.nodeAllow, n.nodeAllow))
	diff("max-conns", o.maxConns != n.maxConns)
	out = append(out, o.acme.needsRestart(&n.acme)...)
	return append(out, o.cluster.needsRestart(&n.cluster)...)
}
