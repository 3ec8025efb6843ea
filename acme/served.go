package acme

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/caddyserver/certmagic"
	acmeproto "github.com/mholt/acmez/v3/acme"
	"golang.org/x/crypto/ocsp"
)

// Every router serves the certificates it finds in its directory, which in
// a cluster holds what the leader stored (storage.go): one code path for
// the leader and the others, whatever ordered the certificate.

// servedCert is one certificate in service. Immutable.
type servedCert struct {
	name     string
	cert     *tls.Certificate // Leaf set; OCSPStaple when one is stored and good
	issuer   string           // the leaf's issuer, for the admin API
	due      time.Time        // when it is to be renewed
	ari      bool             // due comes from the CA's renewal information
	stapled  bool
	notAfter time.Time
}

// servedSet is an immutable snapshot of the certificates in service.
// changed is closed when a newer snapshot replaces it, which on-demand
// handshakes wait on.
type servedSet struct {
	certs   map[string]*servedCert // lower-case name
	changed chan struct{}
}

func (m *Manager) served() *servedSet { return m.snap.Load() }

// publish replaces the snapshot: update gets a copy of the current map to
// change. Writers are serialised by servedMu.
func (m *Manager) publish(update func(map[string]*servedCert)) {
	m.servedMu.Lock()
	defer m.servedMu.Unlock()
	old := m.snap.Load()
	next := &servedSet{certs: maps.Clone(old.certs), changed: make(chan struct{})}
	update(next.certs)
	m.snap.Store(next)
	close(old.changed)
	m.m.certs.Set(float64(len(next.certs)))
}

// reload re-reads the named certificates from the directory and publishes
// them (a name whose files are gone or unusable leaves service).
func (m *Manager) reload(ctx context.Context, names ...string) {
	loaded := make(map[string]*servedCert, len(names))
	for _, n := range names {
		sc, err := m.loadCert(ctx, n)
		if err != nil && !errors.Is(err, errNotStored) {
			m.log.Warn("acme: stored certificate not usable", "name", n, "err", err)
		}
		loaded[n] = sc
	}
	m.publish(func(certs map[string]*servedCert) {
		for n, sc := range loaded {
			if sc == nil {
				delete(certs, n)
			} else {
				certs[n] = sc
			}
		}
	})
}

var errNotStored = errors.New("acme: no certificate stored")

// storedNames lists the names that have a certificate of this CA in the
// directory.
func (m *Manager) storedNames(ctx context.Context) []string {
	prefix := certmagic.StorageKeys.CertsPrefix(m.iss.key)
	keys, err := m.store.List(ctx, prefix, false)
	if err != nil {
		return nil
	}
	var out []string
	for _, k := range keys {
		name := k[len(prefix)+1:]
		if n, ok := normalizeName(name); ok && n == name && m.store.Exists(ctx, certmagic.StorageKeys.SiteCert(m.iss.key, name)) {
			out = append(out, name)
		}
	}
	return out
}

// loadCert builds the servedCert of name from its files: chain, key,
// metadata (renewal information) and OCSP staple.
func (m *Manager) loadCert(ctx context.Context, name string) (*servedCert, error) {
	crt, err := m.store.Load(ctx, certmagic.StorageKeys.SiteCert(m.iss.key, name))
	if err != nil {
		return nil, errNotStored
	}
	key, err := m.store.Load(ctx, certmagic.StorageKeys.SitePrivateKey(m.iss.key, name))
	if err != nil {
		return nil, errNotStored
	}
	pair, err := tls.X509KeyPair(crt, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		return nil, err
	}
	if leaf.VerifyHostname(name) != nil {
		return nil, fmt.Errorf("acme: stored certificate does not cover %s", name)
	}
	pair.Leaf = leaf
	sc := &servedCert{name: name, cert: &pair, issuer: leaf.Issuer.CommonName, notAfter: leaf.NotAfter}
	sc.due, sc.ari = renewalDue(leaf, m.loadARI(ctx, name))
	if staple := m.loadStaple(ctx, name, &pair); staple != nil {
		pair.OCSPStaple = staple
		sc.stapled = true
	}
	return sc, nil
}

// loadARI returns the renewal information stored with name's certificate,
// if the CA gave any.
func (m *Manager) loadARI(ctx context.Context, name string) *acmeproto.RenewalInfo {
	b, err := m.store.Load(ctx, certmagic.StorageKeys.SiteMeta(m.iss.key, name))
	if err != nil {
		return nil
	}
	return parseMeta(b)
}

// parseMeta reads the renewal information out of certmagic's metadata file
// (which may come from a peer: FuzzParsePeerRecords).
func parseMeta(b []byte) *acmeproto.RenewalInfo {
	if len(b) > 64<<10 {
		return nil
	}
	var res struct {
		IssuerData json.RawMessage `json:"issuer_data"`
	}
	if json.Unmarshal(b, &res) != nil || len(res.IssuerData) == 0 {
		return nil
	}
	var data acmeproto.Certificate
	if json.Unmarshal(res.IssuerData, &data) != nil {
		return nil
	}
	return data.RenewalInfo
}

// renewalDue is when a certificate is to be renewed: the time chosen in
// the CA's renewal window (RFC 9773), else two thirds into its lifetime,
// as Let's Encrypt recommends (30 days before the end of a 90-day one).
func renewalDue(leaf *x509.Certificate, ari *acmeproto.RenewalInfo) (time.Time, bool) {
	if ari != nil && !ari.SelectedTime.IsZero() {
		return ari.SelectedTime, true
	}
	if ari != nil && ari.HasWindow() {
		return ari.SuggestedWindow.Start, true
	}
	life := leaf.NotAfter.Sub(leaf.NotBefore)
	return leaf.NotBefore.Add(life * 2 / 3), false
}

// loadStaple returns the stored OCSP response for cert when it is for this
// certificate, says good and is current; nil otherwise.
func (m *Manager) loadStaple(ctx context.Context, name string, cert *tls.Certificate) []byte {
	if len(cert.Leaf.OCSPServer) == 0 || len(cert.Certificate) < 2 {
		return nil
	}
	b, err := m.store.Load(ctx, stapleKey(name, cert.Leaf))
	if err != nil {
		return nil
	}
	issuer, err := x509.ParseCertificate(cert.Certificate[1])
	if err != nil {
		return nil
	}
	resp, err := ocsp.ParseResponseForCert(b, cert.Leaf, issuer)
	now := m.now()
	if err != nil || resp.Status != ocsp.Good || (!resp.NextUpdate.IsZero() && now.After(resp.NextUpdate)) {
		return nil
	}
	return b
}

// GetCertificate is the tls.Managed hook: the challenge certificate for a
// CA validating TLS-ALPN-01; the certificate in service for the hello's
// name; with on-demand issuance, for a pool's name matching --acme-allow,
// one ordered now (waiting at most OnDemandWait); else nil, nil (the
// default certificate serves). Safe for concurrent use.
func (m *Manager) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == "acme-tls/1" {
		return m.alpnCertificate(hello.ServerName)
	}
	var buf [maxName + 8]byte
	name, ok := lowerHost(buf[:0], []byte(hello.ServerName))
	if !ok {
		return nil, nil
	}
	if sc := m.served().certs[string(name)]; sc != nil {
		return sc.cert, nil
	}
	if !m.cfg.OnDemand {
		return nil, nil
	}
	return m.onDemand(string(name))
}

// waitServed waits until name is in service, or the order failed here, or
// d has passed; it returns the certificate or nil.
func (m *Manager) waitServed(name string, d time.Duration) *tls.Certificate {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		snap := m.served()
		if sc := snap.certs[name]; sc != nil {
			return sc.cert
		}
		if !m.limits.pending(name, m.now()) {
			return nil // failed, or refused
		}
		select {
		case <-snap.changed:
		case <-t.C:
			return nil
		case <-m.stop:
			return nil
		}
	}
}
