package acme

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net/url"
	"path"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	acmeproto "github.com/mholt/acmez/v3/acme"
)

// issuer is the certmagic.Issuer of a Manager: it orders through acmez
// with this package's challenge solvers (challenge.go), which answer on
// the router's own listeners and share tokens through the cluster, instead
// of certmagic's ACMEIssuer, whose solvers bind ports 80 and 443
// themselves when nothing listens there.
//
// Only the leader's orderLoop calls Issue (one order at a time); mu guards
// the account anyway.
type issuer struct {
	m      *Manager
	key    string // IssuerKey: the CA's host and path, as certmagic's ACMEIssuer names it
	client *acmez.Client

	mu      sync.Mutex
	account *acmeproto.Account // nil until loaded or registered
}

var (
	_ certmagic.Issuer            = (*issuer)(nil)
	_ certmagic.PreChecker        = (*issuer)(nil)
	_ certmagic.RenewalInfoGetter = (*issuer)(nil)
)

func newIssuer(m *Manager) *issuer {
	cfg := &m.cfg
	c := &acmez.Client{
		Client: &acmeproto.Client{
			Directory:   cfg.CA,
			HTTPClient:  cfg.HTTPClient,
			UserAgent:   "fastrouter",
			Logger:      slog.New(demote{m.cfg.Logger.With("component", "acmez").Handler()}),
			PollTimeout: cfg.OrderTimeout,
		},
		ChallengeSolvers: map[string]acmez.Solver{},
	}
	for _, t := range cfg.Challenges {
		c.ChallengeSolvers[t] = solver{m.chal}
	}
	return &issuer{m: m, key: issuerKey(cfg.CA), client: c}
}

// issuerKey names a CA the way certmagic's ACMEIssuer does (host, then the
// path with slashes as hyphens), so an --acme-dir has the same layout.
func issuerKey(ca string) string {
	u, err := url.Parse(ca)
	if err != nil {
		return ca
	}
	key := u.Host
	if p := strings.Trim(strings.ReplaceAll(u.Path, "/", "-"), "-"); p != "" {
		key += "-" + p
	}
	return key
}

func (i *issuer) IssuerKey() string { return i.key }

// PreCheck refuses names the configured challenges cannot prove: wildcards
// (DNS-01 only) and IP addresses.
func (i *issuer) PreCheck(_ context.Context, names []string, _ bool) error {
	for _, n := range names {
		if _, ok := normalizeName(n); !ok {
			return fmt.Errorf("acme: %q cannot be validated over HTTP-01 or TLS-ALPN-01", n)
		}
	}
	return nil
}

// Issue orders a certificate for csr. Only the leader calls it.
func (i *issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	acct, err := i.accountFor(ctx)
	if err != nil {
		return nil, err
	}
	params, err := acmez.OrderParametersFromCSR(*acct, csr)
	if err != nil {
		return nil, err
	}
	dir, err := i.client.GetDirectory(ctx)
	if err != nil {
		return nil, err
	}
	if dir.RenewalInfo != "" {
		params.Replaces = i.replacing(ctx, csr.DNSNames) // RFC 9773 §5
	}
	chains, err := i.client.ObtainCertificate(ctx, params)
	var prob acmeproto.Problem
	if errors.As(err, &prob) && prob.Type == acmeproto.ProblemTypeAccountDoesNotExist {
		// The CA forgot the account (a test CA restarted, an account
		// deactivated elsewhere): register anew once.
		i.m.log.Warn("acme: the CA does not know our account; registering a new one", "ca", i.m.cfg.CA)
		i.forget(ctx)
		if acct, err = i.accountFor(ctx); err != nil {
			return nil, err
		}
		params.Account = *acct
		chains, err = i.client.ObtainCertificate(ctx, params)
	}
	if err != nil {
		return nil, err
	}
	if len(chains) == 0 {
		return nil, errors.New("acme: the CA offered no certificate chain")
	}
	chain := chains[0]
	chain.CA = i.m.cfg.CA
	if dir.RenewalInfo != "" {
		if ri, err := i.renewalInfo(ctx, chain.ChainPEM); err == nil {
			chain.RenewalInfo = &ri
		}
	}
	return &certmagic.IssuedCertificate{Certificate: chain.ChainPEM, Metadata: chain}, nil
}

// GetRenewalInfo asks the CA when to renew cert (ACME Renewal Information,
// RFC 9773), choosing a time in its window.
func (i *issuer) GetRenewalInfo(ctx context.Context, cert certmagic.Certificate) (acmeproto.RenewalInfo, error) {
	ri, err := i.client.GetRenewalInfo(ctx, cert.Leaf)
	if err == nil {
		selectTime(&ri)
	}
	return ri, err
}

func (i *issuer) renewalInfo(ctx context.Context, chainPEM []byte) (acmeproto.RenewalInfo, error) {
	b, _ := pem.Decode(chainPEM)
	if b == nil {
		return acmeproto.RenewalInfo{}, errors.New("acme: no certificate in the chain")
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return acmeproto.RenewalInfo{}, err
	}
	ri, err := i.client.GetRenewalInfo(ctx, leaf)
	if err == nil {
		selectTime(&ri)
	}
	return ri, err
}

// selectTime picks a uniformly random time in the suggested window when
// none is chosen yet (RFC 9773 §4.2), so routers of many clusters do not
// renew at the same instant.
func selectTime(ri *acmeproto.RenewalInfo) {
	if !ri.SelectedTime.IsZero() || !ri.HasWindow() {
		return
	}
	start, end := ri.SuggestedWindow.Start, ri.SuggestedWindow.End
	span := end.Sub(start)
	if span <= 0 {
		ri.SelectedTime = start
		return
	}
	n, err := rand.Int(rand.Reader, big.NewInt(int64(span)))
	if err != nil {
		ri.SelectedTime = start
		return
	}
	ri.SelectedTime = start.Add(time.Duration(n.Int64()))
}

// replacing returns the certificate in storage that an order for names
// replaces, if this CA issued it.
func (i *issuer) replacing(ctx context.Context, names []string) *x509.Certificate {
	if len(names) == 0 {
		return nil
	}
	pemb, err := i.m.store.Load(ctx, certmagic.StorageKeys.SiteCert(i.key, names[0]))
	if err != nil {
		return nil
	}
	b, _ := pem.Decode(pemb)
	if b == nil {
		return nil
	}
	leaf, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil
	}
	return leaf
}

// accountFile is how the account is stored (one file, so a peer never sees
// a key without its registration).
type accountFile struct {
	Location string   `json:"location"`
	Status   string   `json:"status"`
	Contact  []string `json:"contact,omitempty"`
	KeyPEM   string   `json:"key_pem"`
}

func (i *issuer) accountKey() string {
	user := "default"
	if e := i.m.cfg.Email; e != "" {
		user = certmagic.StorageKeys.Safe(e)
	}
	return path.Join("acme", certmagic.StorageKeys.Safe(i.key), "users", user, "account.json")
}

// accountFor returns the ACME account: cached, else stored (by this router
// or, shared, by the leader before it), else registered now.
func (i *issuer) accountFor(ctx context.Context) (*acmeproto.Account, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.account != nil {
		return i.account, nil
	}
	if b, err := i.m.store.Load(ctx, i.accountKey()); err == nil {
		if a, err := parseAccount(b); err == nil {
			i.account = a
			return a, nil
		}
		i.m.log.Warn("acme: stored account unreadable; registering a new one", "key", i.accountKey())
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	a := acmeproto.Account{TermsOfServiceAgreed: true, PrivateKey: key}
	if e := i.m.cfg.Email; e != "" {
		a.Contact = []string{"mailto:" + e}
	}
	if a, err = i.client.NewAccount(ctx, a); err != nil {
		return nil, fmt.Errorf("acme: registering an account: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	f := accountFile{Location: a.Location, Status: a.Status, Contact: a.Contact,
		KeyPEM: string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}))}
	b, _ := json.Marshal(f)
	if err := i.m.store.Store(ctx, i.accountKey(), b); err != nil {
		return nil, fmt.Errorf("acme: saving the account: %w", err)
	}
	i.m.log.Info("acme: account registered", "ca", i.m.cfg.CA, "account", a.Location, "contact", a.Contact)
	i.account = &a
	return &a, nil
}

// forget drops the cached and stored account.
func (i *issuer) forget(ctx context.Context) {
	i.mu.Lock()
	defer i.mu.Unlock()
	i.account = nil
	_ = i.m.store.Delete(ctx, i.accountKey())
}

// parseAccount reads an accountFile. The file may come from a peer.
func parseAccount(b []byte) (*acmeproto.Account, error) {
	var f accountFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, err
	}
	blk, _ := pem.Decode([]byte(f.KeyPEM))
	if blk == nil || f.Location == "" {
		return nil, errors.New("acme: account file without key or location")
	}
	key, err := x509.ParseECPrivateKey(blk.Bytes)
	if err != nil {
		return nil, err
	}
	return &acmeproto.Account{Location: f.Location, Status: f.Status, Contact: f.Contact,
		TermsOfServiceAgreed: true, PrivateKey: key}, nil
}
