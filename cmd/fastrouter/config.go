package main

import (
	"errors"
	"flag"
	"fmt"
	"net/netip"
	"slices"
	"sort"
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
	fallbackKey         string
	trustedProxies      []string
	proxyProtocol       bool
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

// newFlagSet defines every flag on o with its default.
func newFlagSet(o *options) *flag.FlagSet {
	fs := flag.NewFlagSet("fastrouter", flag.ContinueOnError)
	*o = options{
		subscriptionServers: []string{"127.0.0.1:2626"},
		trustedProxies:      []string{"127.0.0.0/8", "::1/128"},
	}
	fs.StringVar(&o.config, "config", "", "YAML `file` with the same settings (keys = flag names); flags override it")
	fs.Var(&listFlag{vals: &o.http}, "http", "HTTP/1.1 listener `addr` (repeatable; default 127.0.0.1:8080 when no listener is given)")
	fs.Var(&listFlag{vals: &o.https}, "https", "TLS listener `addr` with ALPN h2 and http/1.1 (repeatable; needs --tls-cert/--tls-key, --tls-dir or automatic HTTPS, --acme-*)")
	fs.Var(&listFlag{vals: &o.httpToHTTPS}, "http-to-https", "listener `addr` that answers 301 to the same URL over https (repeatable)")
	fs.Var(&listFlag{vals: &o.uwsgi}, "uwsgi", "uwsgi-protocol front listener `addr`: ip:port, or a unix socket path or @name, made 0666 (uWSGI fastrouter mode, for nginx uwsgi_pass; repeatable)")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "default certificate `file` (PEM chain) for --https")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&o.tlsDir, "tls-dir", "", "SNI certificates `dir`: NAME.crt + NAME.key, _wildcard.DOMAIN.* for *.DOMAIN; re-read when files change")
	fs.StringVar(&o.tlsClientCA, "tls-client-ca", "", "PEM `file` of CAs for optional client certificates; a verified subject reaches the node as HTTPS_DN")
	fs.Var(&listFlag{vals: &o.subscriptionServers}, "subscription-server", "UDP subscription listener `addr`, or a unix datagram socket path (repeatable)")
	fs.StringVar(&o.admin, "admin", "127.0.0.1:9191", "admin API, /metrics and /healthz listener `addr`")
	fs.Var(&listFlag{vals: &o.to}, "to", "static node `KEY=NODEADDR` that never expires (repeatable)")
	fs.StringVar(&o.algo, "algo", "wrr", "default balancing `algorithm` for new pools: wrr, lrc, wlrc, iphash, p2c or hash")
	fs.StringVar(&o.maxInflight, "max-inflight", "0", "cap on requests in flight to each node: a `count`, auto (the cores the node announced) or 0 (off); more wait in the pool's queue")
	fs.IntVar(&o.queueSize, "queue-size", balancer.DefaultQueueSize, "requests per pool that may wait for a node under --max-inflight; more get 503 + Retry-After")
	fs.DurationVar(&o.queueTimeout, "queue-timeout", balancer.DefaultQueueTimeout, "longest wait for a node under --max-inflight before 503 + Retry-After")
	fs.StringVar(&o.hashKey, "hash-key", "", "where pools with algorithm hash find their key: header:NAME or cookie:NAME (unset: they balance as wrr)")
	fs.DurationVar(&o.tolerance, "subscription-tolerance", 30*time.Second, "remove a node that has not re-announced for this `duration`")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", 3*time.Second, "backend connect timeout")
	fs.DurationVar(&o.timeout, "timeout", 60*time.Second, "backend and client inactivity timeout (also the keep-alive idle timeout)")
	fs.DurationVar(&o.headerTimeout, "header-timeout", 10*time.Second, "a client must send its request headers within this `duration`")
	fs.DurationVar(&o.shutdownTimeout, "shutdown-timeout", 30*time.Second, "graceful shutdown deadline on SIGTERM/SIGINT; then what is still open is cut")
	fs.IntVar(&o.maxHeaderBytes, "max-header-bytes", 65536, "largest request head in `bytes`; larger is answered 431")
	fs.Int64Var(&o.maxBodyBytes, "max-body-bytes", 1<<30, "largest request body in `bytes` (413 beyond); chunked bodies over 8 MiB are buffered in a temporary file")
	fs.StringVar(&o.fallbackKey, "fallback-key", "", "pool `key` used when no pool matches the host")
	fs.Var(&listFlag{vals: &o.trustedProxies}, "trusted-proxy", "`CIDR` of peers whose X-Forwarded-For/-Proto are believed (repeatable)")
	fs.BoolVar(&o.proxyProtocol, "proxy-protocol", false, "connections from --trusted-proxy peers to --http/--https may start with a PROXY v1/v2 header that sets the client address")
	fs.DurationVar(&o.drainTimeout, "drain-timeout", 30*time.Second, "default deadline of a node drain (admin API, unsubscribe, drain=1)")
	fs.DurationVar(&o.slowStart, "slow-start", 0, "ramp a (re)joined node's weight from 1/16 to full over this `duration` (0 = off)")
	fs.StringVar(&o.stateFile, "state-file", "", "persist the pool table (and the signed-datagram replay memory) to this `file` and load it at start, so a restart routes at once")
	fs.StringVar(&o.signCheck, "subscriptions-sign-check", "", "require uWSGI-compatible signed subscriptions: `DIGEST:DIR` (SHA1, SHA256, SHA384 or SHA512; public keys DIR/<key>.pem, RSA or Ed25519)")
	fs.DurationVar(&o.signTolerance, "subscriptions-sign-tolerance", 60*time.Second, "max distance between a signed datagram's unix time and now")
	fs.Var(&listFlag{vals: &o.subscriptionAllow}, "subscription-allow", "`CIDR` allowed to send subscription datagrams (repeatable; default all)")
	fs.Var(&listFlag{vals: &o.nodeAllow}, "node-allow", "`CIDR` a node address may point into, however the node enters: datagram, admin API, --to, state file, cluster (repeatable; default anywhere; when set, unix socket nodes are refused)")
	fs.IntVar(&o.maxConns, "max-conns", 0, "most open client connections per `listener`; beyond it a new connection gets 503 and is closed (0 = no limit)")
	fs.StringVar(&o.adminTokenFile, "admin-token-file", "", "`file` holding the bearer token required by mutating admin calls")
	fs.StringVar(&o.pidFile, "pid-file", "", "write the process id to this `file` (rewritten by the new process after a SIGUSR2 binary upgrade)")
	fs.StringVar(&o.logLevel, "log-level", "info", "log `level`: debug, info, warn or error")
	fs.StringVar(&o.accessLog, "access-log", "", "append one JSON line per request to this `file` (- = stdout); reopened on SIGHUP")
	fs.StringVar(&o.stats, "stats", "", "uWSGI-compatible router stats server `addr` (host:port, or a unix socket path): one JSON document per connection")
	fs.BoolVar(&o.pprof, "pprof", false, "serve net/http/pprof under /debug/pprof/ on the admin listener")
	fs.BoolVar(&o.metricsPerNode, "metrics-per-node", false, "export per-node series (fastrouter_node_*{pool,node}) on /metrics")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	o.cluster.define(fs)
	o.acme.define(fs)
	return fs
}

// parseArgs parses the command line and the --config file. Errors are
// usage errors (exit 2).
func parseArgs(args []string) (*options, *flag.FlagSet, error) {
	o := new(options)
	fs := newFlagSet(o)
	fs.SetOutput(discard{})
	fs.Usage = func() {}
	if err := fs.Parse(args); err != nil {
		return nil, fs, err
	}
	if fs.NArg() > 0 {
		return nil, fs, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.config != "" {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if err := loadConfig(fs, o, o.config, set); err != nil {
			return nil, fs, err
		}
	}
	return o, fs, o.validate()
}

// loadConfig applies a YAML file: each key is a flag name; lists set
// repeatable flags. Keys already given on the command line are skipped.
func loadConfig(fs *flag.FlagSet, o *options, path string, set map[string]bool) error {
	data, err := readLimited(path, 1<<20)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return fmt.Errorf("config %s: %w", path, oneLine(err))
	}
	keys := make([]string, 0, len(doc))
	for k := range doc {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if k == "pools" {
			pools, err := decodePools(data)
			if err != nil {
				return fmt.Errorf("config %s: pools: %w", path, err)
			}
			o.pools = pools
			continue
		}
		f := fs.Lookup(k)
		if f == nil || k == "config" || k == "version" {
			return fmt.Errorf("config %s: unknown setting %q", path, k)
		}
		if set[k] {
			continue
		}
		vals, err := yamlValues(doc[k])
		if err != nil {
			return fmt.Errorf("config %s: %s: %w", path, k, err)
		}
		if _, isList := f.Value.(*listFlag); !isList && len(vals) != 1 {
			return fmt.Errorf("config %s: %s takes one value", path, k)
		}
		for _, v := range vals {
			if err := fs.Set(k, v); err != nil {
				return fmt.Errorf("config %s: %s: %w", path, k, err)
			}
		}
	}
	return nil
}

func yamlValues(v any) ([]string, error) {
	switch x := v.(type) {
	case []any:
		out := make([]string, 0, len(x))
		for _, e := range x {
			s, err := yamlScalar(e)
			if err != nil {
				return nil, err
			}
			out = append(out, s)
		}
		return out, nil
	default:
		s, err := yamlScalar(v)
		if err != nil {
			return nil, err
		}
		return []string{s}, nil
	}
}

func yamlScalar(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case int, int64, uint64, float64, bool:
		return fmt.Sprint(x), nil
	case nil:
		return "", errors.New("empty value")
	}
	return "", fmt.Errorf("unsupported value %v", v)
}

func oneLine(err error) error {
	return errors.New(strings.ReplaceAll(err.Error(), "\n", "; "))
}

// validate checks every setting (usage errors, exit 2), in the order the
// first problem is reported, and fills in the defaults that depend on
// other settings.
func (o *options) validate() error {
	for _, check := range []func() error{
		o.validateListeners, o.validateLimits, o.validateRouting, o.validateBalancing,
		o.validateSecurity, o.validateAdmission, o.validateRest, o.cluster.validate,
		func() error { return o.acme.validate(o) },
	} {
		if err := check(); err != nil {
			return err
		}
	}
	return nil
}

// validateListeners checks the client listeners and TLS; without any
// listener the router serves HTTP on 127.0.0.1:8080.
func (o *options) validateListeners() error {
	if len(o.http) == 0 && len(o.https) == 0 && len(o.httpToHTTPS) == 0 && len(o.uwsgi) == 0 {
		o.http = []string{"127.0.0.1:8080"}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return errors.New("--tls-cert and --tls-key go together")
	}
	if len(o.https) > 0 && o.tlsCert == "" && o.tlsDir == "" && !o.acme.enabled() {
		return errors.New("--https needs a certificate: --tls-cert/--tls-key, --tls-dir or --acme-domain/--acme-on-demand")
	}
	if len(o.https) == 0 && (o.tlsCert != "" || o.tlsDir != "" || o.tlsClientCA != "") {
		return errors.New("--tls-cert, --tls-dir and --tls-client-ca need an --https listener")
	}
	return nil
}

// validateLimits checks the default algorithm, the timeouts and the
// request size limits.
func (o *options) validateLimits() error {
	if _, err := balancer.ParseAlgo(o.algo); err != nil {
		return fmt.Errorf("--algo: unknown algorithm %q (want wrr, lrc, wlrc, iphash, p2c or hash)", o.algo)
	}
	for name, d := range map[string]time.Duration{
		"--subscription-tolerance": o.tolerance, "--connect-timeout": o.connectTimeout,
		"--timeout": o.timeout, "--header-timeout": o.headerTimeout, "--shutdown-timeout": o.shutdownTimeout,
		"--drain-timeout": o.drainTimeout,
	} {
		if d <= 0 {
			return fmt.Errorf("%s must be positive, got %s", name, d)
		}
	}
	if o.maxHeaderBytes < 1024 || o.maxHeaderBytes > 1<<20 {
		return fmt.Errorf("--max-header-bytes must be between 1024 and 1048576, got %d", o.maxHeaderBytes)
	}
	if o.maxBodyBytes <= 0 {
		return fmt.Errorf("--max-body-bytes must be positive, got %d", o.maxBodyBytes)
	}
	return nil
}

// validateRouting checks the static nodes, the fallback pool, the trusted
// proxies and the hash key.
func (o *options) validateRouting() error {
	for _, t := range o.to {
		k, a, ok := strings.Cut(t, "=")
		if !ok || k == "" || a == "" {
			return fmt.Errorf("--to %q: want KEY=NODEADDR", t)
		}
		if len(k) > 255 {
			return fmt.Errorf("--to %q: key longer than 255 bytes", t)
		}
		if _, err := balancer.ParseEndpoint(a); err != nil {
			return fmt.Errorf("--to %q: %w", t, err)
		}
	}
	if len(o.fallbackKey) > 255 {
		return errors.New("--fallback-key: longer than 255 bytes")
	}
	for _, c := range o.trustedProxies {
		if _, err := netip.ParsePrefix(c); err != nil {
			return fmt.Errorf("--trusted-proxy %q: %w", c, err)
		}
	}
	if o.hashKey != "" {
		kind, name, ok := strings.Cut(o.hashKey, ":")
		if !ok || (kind != "header" && kind != "cookie") || name == "" || strings.ContainsAny(name, " \t\r\n;,=") {
			return fmt.Errorf("--hash-key %q: want header:NAME or cookie:NAME", o.hashKey)
		}
	}
	return nil
}

// validateBalancing checks the overload policy and the pools: section.
func (o *options) validateBalancing() error {
	if _, err := balancer.ParseLimit(o.maxInflight); err != nil {
		return fmt.Errorf("--max-inflight: %w", err)
	}
	if o.queueSize < 0 || o.queueSize > 1<<20 {
		return fmt.Errorf("--queue-size must be between 0 and 1048576, got %d", o.queueSize)
	}
	if o.queueTimeout <= 0 {
		return fmt.Errorf("--queue-timeout must be positive, got %s", o.queueTimeout)
	}
	_, _, err := o.poolPolicies()
	return err
}

// validateRest checks slow start, the log level and the admin token file.
func (o *options) validateRest() error {
	if o.slowStart < 0 {
		return fmt.Errorf("--slow-start must not be negative, got %s", o.slowStart)
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return err
	}
	if o.adminTokenFile != "" {
		if _, err := o.adminToken(); err != nil {
			return err
		}
	}
	return nil
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

func (o *options) trusted() []netip.Prefix {
	out := make([]netip.Prefix, 0, len(o.trustedProxies))
	for _, c := range o.trustedProxies {
		out = append(out, netip.MustParsePrefix(c))
	}
	return out
}

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
	diff("trusted-proxy", !slices.Equal(o.trustedProxies, n.trustedProxies))
	diff("max-body-bytes", o.maxBodyBytes != n.maxBodyBytes)
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
