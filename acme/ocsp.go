package acme

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/caddyserver/certmagic"
	"golang.org/x/crypto/ocsp"
)

// OCSP stapling (RFC 6960, RFC 6066 §8): the leader fetches a response for
// each certificate in service that names a responder, every OCSPInterval
// and whenever the certificate changes, and stores it beside the
// certificate; every router then staples it to its handshakes (served.go
// checks that it is for that certificate, says good and is current).
// Certificates without a responder URL (Let's Encrypt's since 2025, any
// short-lived ones) are served without a staple.

// maxOCSPResponse bounds a responder's answer.
const maxOCSPResponse = 64 << 10

// stapleKey is where name's staple for leaf is stored: one per
// certificate serial, so a renewed certificate never gets the old one.
func stapleKey(name string, leaf *x509.Certificate) string {
	return "ocsp/" + certmagic.StorageKeys.Safe(name) + "-" + leaf.SerialNumber.Text(16)
}

// refreshStaples fetches staples that are missing or older than
// OCSPInterval. Leader only; fetched is owned by orderLoop.
func (m *Manager) refreshStaples(ctx context.Context, fetched map[string]time.Time) {
	now := m.now()
	for name, sc := range m.served().certs {
		leaf := sc.cert.Leaf
		if len(leaf.OCSPServer) == 0 || len(sc.cert.Certificate) < 2 || now.After(leaf.NotAfter) {
			continue
		}
		id := stapleKey(name, leaf)
		if at, ok := fetched[id]; ok && now.Sub(at) < m.cfg.OCSPInterval {
			continue
		}
		fetched[id] = now
		if err := m.fetchStaple(ctx, name, sc); err != nil {
			m.log.Warn("acme: no OCSP staple", "name", name, "responder", leaf.OCSPServer[0], "err", err)
			continue
		}
		m.reload(ctx, name)
	}
}

var errRevoked = errors.New("acme: the CA says the certificate is revoked")

// fetchStaple asks the certificate's responder and stores a good answer.
func (m *Manager) fetchStaple(ctx context.Context, name string, sc *servedCert) error {
	leaf := sc.cert.Leaf
	issuer, err := x509.ParseCertificate(sc.cert.Certificate[1])
	if err != nil {
		return err
	}
	req, err := ocsp.CreateRequest(leaf, issuer, nil)
	if err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	hr, err := http.NewRequestWithContext(rctx, http.MethodPost, leaf.OCSPServer[0], bytes.NewReader(req))
	if err != nil {
		return err
	}
	hr.Header.Set("Content-Type", "application/ocsp-request")
	resp, err := m.cfg.HTTPClient.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("acme: OCSP responder answered %s", resp.Status)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOCSPResponse+1))
	if err != nil {
		return err
	}
	if len(body) > maxOCSPResponse {
		return errors.New("acme: OCSP response too large")
	}
	parsed, err := ocsp.ParseResponseForCert(body, leaf, issuer)
	if err != nil {
		return err
	}
	switch parsed.Status {
	case ocsp.Good:
		return m.store.Store(ctx, stapleKey(name, leaf), body)
	case ocsp.Revoked:
		m.forceRenewal(name)
		return errRevoked
	}
	return errors.New("acme: OCSP status unknown")
}
