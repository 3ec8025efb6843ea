package acme

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Challenge types a Manager can answer.
const (
	HTTP01    = "http-01"     // RFC 8555 §8.3: on the --http listeners (port 80)
	TLSALPN01 = "tls-alpn-01" // RFC 8737: on the --https listeners (port 443)
)

// Well-known CA directories.
const (
	LetsEncrypt        = "https://acme-v02.api.letsencrypt.org/directory"
	LetsEncryptStaging = "https://acme-staging-v02.api.letsencrypt.org/directory"
)

// Defaults of zero Config fields.
const (
	DefaultOnDemandWait = 10 * time.Second
	DefaultOrderTimeout = 2 * time.Minute
	// An unreachable CA (connection refused, DNS, timeouts, TLS) is
	// retried from DefaultRetryBase, doubling to DefaultRetryMax: nothing
	// reached the CA, so no rate limit is spent.
	DefaultRetryBase = 5 * time.Second
	DefaultRetryMax  = 10 * time.Minute
	// A CA's refusal (an ACME problem document: a failed validation, a
	// rate limit) is retried from DefaultProblemRetryBase, doubling to
	// DefaultProblemRetryMax: Let's Encrypt allows 5 failed validations
	// per name and hour.
	DefaultProblemRetryBase = time.Minute
	DefaultProblemRetryMax  = 6 * time.Hour
)

// Config configures a Manager. Zero values take the documented defaults.
type Config struct {
	// Dir holds the ACME account, the certificates and their keys, in
	// certmagic's file layout (--acme-dir). Created 0700. Required.
	Dir string
	// Email is the ACME account's contact (--acme-email): the CA writes
	// about expiring certificates and policy changes. Optional.
	Email string
	// CA is the ACME directory URL (--acme-ca). Default LetsEncrypt.
	CA string
	// CARoots, if set, is what the CA's own HTTPS certificate must chain
	// to (--acme-ca-root: a private CA). Nil: the system roots.
	CARoots *x509.CertPool
	// Domains are obtained at start and kept renewed (--acme-domain).
	Domains []string
	// OnDemand obtains a certificate for a TLS handshake's name when that
	// name is a key of an existing pool and matches Allow (--acme-on-demand).
	OnDemand bool
	// Allow are the suffixes an on-demand name must match: the name equals
	// one, or ends with "." and one (--acme-allow). Required with OnDemand.
	Allow []string
	// Challenges are the challenge types to use: those the router's
	// listeners can answer (HTTP01 needs an --http or --http-to-https
	// listener reached on port 80, TLSALPN01 an --https one on 443).
	// Required, non-empty.
	Challenges []string
	// Pools says whether a name is a key of an existing pool. Required
	// with OnDemand.
	Pools Pools
	// Cluster, if set, shares certificates, keys, the account, challenge
	// tokens and order requests with the other routers, and only its
	// leader orders. It must be encrypted. Nil: this router orders alone.
	// The caller also installs the Manager as the cluster's BlobWatcher.
	Cluster Cluster
	// JoinWait: in a cluster, a router that starts alone waits this long
	// for peers before it orders as its own leader, so that routers
	// starting together do not each order the same names. Default 10s.
	JoinWait time.Duration
	// OnDemandWait bounds how long a handshake for a name being ordered
	// on demand waits for the certificate before the default certificate
	// serves it. Default DefaultOnDemandWait.
	OnDemandWait time.Duration
	// OrderTimeout bounds one order or renewal. Default DefaultOrderTimeout.
	OrderTimeout time.Duration
	// Retry timings; see the Default* constants.
	RetryBase, RetryMax               time.Duration
	ProblemRetryBase, ProblemRetryMax time.Duration
	// OCSPInterval is how often the leader refreshes OCSP staples of
	// certificates that name a responder. Default 6h.
	OCSPInterval time.Duration
	// HTTPClient talks to the CA and OCSP responders. Default: one with
	// CARoots, the proxy from the environment and 30s timeouts.
	HTTPClient *http.Client
	// Logger, default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; default a private registry.
	Registerer prometheus.Registerer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

// Pools is what on-demand issuance asks about the routing table.
type Pools interface {
	// HasPool reports whether key is exactly the key of an existing pool.
	HasPool(key string) bool
}

// PoolsFunc adapts a function to Pools.
type PoolsFunc func(key string) bool

// HasPool calls f.
func (f PoolsFunc) HasPool(key string) bool { return f(key) }

// Cluster is what a Manager needs from the router cluster:
// *cluster.Cluster implements it (blobs.go there).
type Cluster interface {
	// Name is this router's member name; Leader the live member that
	// orders (the lowest name); Members the live members' names.
	Name() string
	Leader() string
	Members() []string
	PutBlob(ctx context.Context, key string, val []byte, wait bool) error
	DeleteBlob(key string) error
	SeedBlob(key string, val []byte, at time.Time) (bool, error)
	Blob(key string) (val []byte, at time.Time, ok bool)
	BlobKeys(prefix string) []string
}

// Validate checks what New would check of cfg without touching the disk:
// the CA URL, e-mail, names, suffixes and challenge types (usage errors).
// Pools may be nil.
func Validate(cfg Config) error {
	cfg.Domains = append([]string(nil), cfg.Domains...)
	cfg.Allow = append([]string(nil), cfg.Allow...)
	if cfg.Pools == nil {
		cfg.Pools = PoolsFunc(func(string) bool { return false })
	}
	return cfg.validate()
}

// validate checks cfg and fills defaults.
func (cfg *Config) validate() error {
	if cfg.Dir == "" {
		return errors.New("acme: a directory for the account and certificates is required")
	}
	if cfg.CA == "" {
		cfg.CA = LetsEncrypt
	}
	u, err := url.Parse(cfg.CA)
	if err != nil || u.Host == "" || u.Scheme != "https" {
		return fmt.Errorf("acme: CA directory %q: want an https:// URL", cfg.CA)
	}
	if strings.ContainsAny(cfg.Email, " \t\r\n<>") || (cfg.Email != "" && !strings.Contains(cfg.Email, "@")) {
		return fmt.Errorf("acme: email %q: want an address", cfg.Email)
	}
	for i, d := range cfg.Domains {
		n, ok := normalizeName(d)
		if !ok {
			return fmt.Errorf("acme: domain %q: want a DNS name (no wildcard, IP address or port)", d)
		}
		cfg.Domains[i] = n
	}
	for i, a := range cfg.Allow {
		// A suffix may be a single label (a private CA's "internal").
		n, ok := normalizeName(strings.TrimPrefix(a, ".") + ".x")
		n = strings.TrimSuffix(n, ".x")
		if !ok {
			return fmt.Errorf("acme: allowed suffix %q: want a DNS name such as example.com", a)
		}
		cfg.Allow[i] = n
	}
	if cfg.OnDemand && len(cfg.Allow) == 0 {
		return errors.New("acme: on-demand issuance needs at least one allowed suffix")
	}
	if cfg.OnDemand && cfg.Pools == nil {
		return errors.New("acme: on-demand issuance needs Config.Pools")
	}
	if len(cfg.Challenges) == 0 {
		return errors.New("acme: no challenge type: an --http or --https listener is needed")
	}
	for _, c := range cfg.Challenges {
		if c != HTTP01 && c != TLSALPN01 {
			return fmt.Errorf("acme: challenge type %q: want %s or %s", c, HTTP01, TLSALPN01)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.OnDemandWait, DefaultOnDemandWait)
	def(&cfg.JoinWait, 10*time.Second)
	def(&cfg.OrderTimeout, DefaultOrderTimeout)
	def(&cfg.RetryBase, DefaultRetryBase)
	def(&cfg.RetryMax, DefaultRetryMax)
	def(&cfg.ProblemRetryBase, DefaultProblemRetryBase)
	def(&cfg.ProblemRetryMax, DefaultProblemRetryMax)
	def(&cfg.OCSPInterval, 6*time.Hour)
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return nil
}

// maxName is the longest DNS name (RFC 1035, without the trailing dot).
const maxName = 253

// normalizeName lower-cases a DNS host name and checks it: labels of
// letters, digits and hyphens, at least two labels, not all digits (no IP
// address), no wildcard.
func normalizeName(s string) (string, bool) {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if len(s) == 0 || len(s) > maxName || !strings.Contains(s, ".") {
		return "", false
	}
	digits := true
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return "", false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			switch {
			case 'a' <= c && c <= 'z', c == '-':
				digits = false
			case '0' <= c && c <= '9':
			default:
				return "", false
			}
		}
	}
	if digits {
		return "", false
	}
	return s, true
}

// allowed reports whether name matches one of the Allow suffixes.
func (cfg *Config) allowed(name string) bool {
	for _, a := range cfg.Allow {
		if name == a || (len(name) > len(a) && strings.HasSuffix(name, a) && name[len(name)-len(a)-1] == '.') {
			return true
		}
	}
	return false
}
