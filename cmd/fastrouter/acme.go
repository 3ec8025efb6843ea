package main

// Automatic HTTPS (--acme-*): the flags and the wiring of package acme into
// the TLS store (certificates), the router (HTTP-01 on --http), the admin
// API (GET /api/certificates, the status page) and the cluster (sharing).
// serve calls setupACME once and uses the acmeWiring it returns; with ACME
// off every method of the zero acmeWiring wires nothing.

import (
	ctls "crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/acme"
	"github.com/fastrouter/fastrouter/admin"
	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/cluster"
	"github.com/fastrouter/fastrouter/router"
	routertls "github.com/fastrouter/fastrouter/tls"
)

// acmeOptions are the --acme-* settings. ACME is on when a domain is given
// or on-demand issuance is.
type acmeOptions struct {
	email      string
	ca         string
	caRoot     string
	dir        string
	domains    []string
	onDemand   bool
	allow      []string
	challenges []string
	roots      *x509.CertPool // read from caRoot by validate
}

func (a *acmeOptions) define(fs *flag.FlagSet) {
	fs.StringVar(&a.email, "acme-email", "", "ACME account contact `ADDR`: the CA writes about expiring certificates and policy changes")
	fs.StringVar(&a.ca, "acme-ca", acme.LetsEncrypt, "ACME directory `URL` (Let's Encrypt staging: "+acme.LetsEncryptStaging+")")
	fs.StringVar(&a.caRoot, "acme-ca-root", "", "PEM `FILE` of roots the ACME CA's own HTTPS certificate must chain to (a private CA); default the system's")
	fs.StringVar(&a.dir, "acme-dir", "", "`DIR` for the ACME account, certificates and keys (created 0700); required with --acme-domain or --acme-on-demand")
	fs.Var(&listFlag{vals: &a.domains}, "acme-domain", "DNS `NAME` to obtain a certificate for at start and keep renewed (repeatable)")
	fs.BoolVar(&a.onDemand, "acme-on-demand", false, "obtain a certificate during the TLS handshake for a name that is exactly a pool's key and matches --acme-allow")
	fs.Var(&listFlag{vals: &a.allow}, "acme-allow", "`SUFFIX` on-demand names must equal or end in (.SUFFIX); required with --acme-on-demand (repeatable)")
	fs.Var(&listFlag{vals: &a.challenges}, "acme-challenge", "ACME challenge `TYPE` to use: http-01 (needs --http or --http-to-https on port 80), tls-alpn-01 (needs --https on 443); default every one the listeners allow (repeatable)")
}

func (a *acmeOptions) enabled() bool { return len(a.domains) > 0 || a.onDemand }

// validate checks the --acme-* flags against the listeners (usage errors).
func (a *acmeOptions) validate(o *options) error {
	if !a.enabled() {
		if a.dir != "" || a.email != "" || a.caRoot != "" || len(a.allow) > 0 || len(a.challenges) > 0 {
			return errors.New("--acme-dir, --acme-email, --acme-ca-root, --acme-allow and --acme-challenge need --acme-domain or --acme-on-demand")
		}
		return nil
	}
	if a.dir == "" {
		return errors.New("--acme-domain and --acme-on-demand need --acme-dir")
	}
	if len(o.https) == 0 {
		return errors.New("--acme-domain and --acme-on-demand need an --https listener to serve the certificates")
	}
	if a.onDemand && len(a.allow) == 0 {
		return errors.New("--acme-on-demand needs --acme-allow: the suffixes names may be ordered for")
	}
	if !a.onDemand && len(a.allow) > 0 {
		return errors.New("--acme-allow needs --acme-on-demand")
	}
	if len(a.challenges) == 0 {
		if len(o.http) > 0 || len(o.httpToHTTPS) > 0 {
			a.challenges = append(a.challenges, acme.HTTP01)
		}
		a.challenges = append(a.challenges, acme.TLSALPN01)
	}
	for _, c := range a.challenges {
		switch c {
		case acme.HTTP01:
			if len(o.http) == 0 && len(o.httpToHTTPS) == 0 {
				return errors.New("--acme-challenge http-01 needs an --http or --http-to-https listener")
			}
		case acme.TLSALPN01:
		default:
			return fmt.Errorf("--acme-challenge %q: want http-01 or tls-alpn-01", c)
		}
	}
	if a.caRoot != "" {
		b, err := readLimited(a.caRoot, 1<<20)
		if err != nil {
			return fmt.Errorf("--acme-ca-root: %w", err)
		}
		a.roots = x509.NewCertPool()
		if !a.roots.AppendCertsFromPEM(b) {
			return fmt.Errorf("--acme-ca-root %s: no PEM certificate found", a.caRoot)
		}
	}
	// The rest (URL, e-mail, names, suffixes) is acme.Config's to check.
	return acme.Validate(a.config(nil, nil, nil, nil))
}

func (a *acmeOptions) needsRestart(n *acmeOptions) []string {
	if a.email != n.email || a.ca != n.ca || a.caRoot != n.caRoot || a.dir != n.dir || a.onDemand != n.onDemand ||
		!slices.Equal(a.domains, n.domains) || !slices.Equal(a.allow, n.allow) || !slices.Equal(a.challenges, n.challenges) {
		return []string{"--acme-*"}
	}
	return nil
}

// config is the acme.Config of these options.
func (a *acmeOptions) config(pools acme.Pools, cl acme.Cluster, log *slog.Logger, reg prometheus.Registerer) acme.Config {
	return acme.Config{
		Dir: a.dir, Email: a.email, CA: a.ca, CARoots: a.roots, Domains: a.domains,
		OnDemand: a.onDemand, Allow: a.allow, Challenges: a.challenges, Pools: pools, Cluster: cl,
		Logger: log, Registerer: reg,
	}
}

// acmeWiring is automatic HTTPS as serve uses it; the zero value is off.
type acmeWiring struct {
	m   *acme.Manager
	dry bool // check's build: ACME is on but no manager was made
}

// setupACME builds the Manager (nil when ACME is off). In a cluster the
// certificates travel only when the cluster is encrypted; otherwise this
// router orders alone, and says so.
func setupACME(o *options, cl *cluster.Cluster, table *balancer.Table, log *slog.Logger, reg prometheus.Registerer) (acmeWiring, error) {
	a := &o.acme
	if !a.enabled() {
		return acmeWiring{}, nil
	}
	var shared acme.Cluster
	switch {
	case cl == nil:
	case cl.BlobsShared():
		shared = cl
	default:
		log.Warn("acme: the cluster is not encrypted (--cluster-secret-file), so certificate keys are not shared: " +
			"this router orders its own certificates, and a CA validating a challenge at another router fails")
	}
	pools := acme.PoolsFunc(func(key string) bool { return table.Pool(key) != nil })
	m, err := acme.New(a.config(pools, shared, log, reg))
	if err != nil {
		return acmeWiring{}, err
	}
	if shared != nil {
		cl.SetBlobWatcher(m)
	}
	return acmeWiring{m: m}, nil
}

// managed is the TLS store's Managed source, or nil.
func (w acmeWiring) managed() routertls.Managed {
	if w.dry {
		return noCertificates{}
	}
	if w.m == nil {
		return nil
	}
	return w.m
}

// noCertificates stands for the ACME manager in a dry build (check): the
// TLS store is checked as serve builds it, with a managed source that has
// nothing yet.
type noCertificates struct{}

func (noCertificates) GetCertificate(*ctls.ClientHelloInfo) (*ctls.Certificate, error) {
	return nil, nil
}

// challenges is the router's HTTP-01 hook, or nil.
func (w acmeWiring) challenges() router.Challenges {
	if w.m == nil {
		return nil
	}
	return w.m
}

// handler serves GET /api/certificates beside h.
func (w acmeWiring) handler(h http.Handler) http.Handler {
	if w.m == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle("GET /api/certificates", w.m)
	mux.Handle("/", h)
	return mux
}

// certificates feeds the status page, or is nil.
func (w acmeWiring) certificates() func() []admin.Certificate {
	if w.m == nil {
		return nil
	}
	return func() []admin.Certificate {
		cs := w.m.Certificates()
		out := make([]admin.Certificate, 0, len(cs))
		for _, c := range cs {
			ac := admin.Certificate{Name: c.Name, Issuer: c.Issuer, OnDemand: c.OnDemand, Orderer: c.Orderer, LastError: c.LastError}
			if c.NotAfter != nil {
				ac.NotAfter = *c.NotAfter
			}
			if c.NextRenewal != nil {
				ac.NextRenewal = *c.NextRenewal
			}
			out = append(out, ac)
		}
		return out
	}
}

func (w acmeWiring) start() {
	if w.m != nil {
		w.m.Start()
	}
}

func (w acmeWiring) close() {
	if w.m != nil {
		_ = w.m.Close()
	}
}
