package acme

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"time"
)

// Certificate is one managed certificate as GET /api/certificates and the
// status page show it. Times are UTC; nil when unknown.
type Certificate struct {
	Name   string `json:"name"`
	Issuer string `json:"issuer,omitempty"` // the leaf's issuer (common name)
	// NotAfter is the certificate's end; NextRenewal when it is renewed
	// (RenewalInfo: chosen in the CA's renewal window, else two thirds
	// into its lifetime). Both nil without a certificate yet.
	NotAfter    *time.Time `json:"not_after,omitempty"`
	NextRenewal *time.Time `json:"next_renewal,omitempty"`
	RenewalInfo bool       `json:"renewal_info"`
	OCSPStapled bool       `json:"ocsp_stapled"`
	// OnDemand: obtained for a pool's name on a handshake, not configured
	// by --acme-domain here.
	OnDemand bool `json:"on_demand"`
	// Orderer is the router that orders and renews (the cluster's
	// leader); empty for a router alone.
	Orderer string `json:"orderer,omitempty"`
	// LastError is the last failure to obtain or renew, until a success;
	// NextAttempt when it is tried again.
	LastError   string     `json:"last_error,omitempty"`
	LastErrorAt *time.Time `json:"last_error_at,omitempty"`
	NextAttempt *time.Time `json:"next_attempt,omitempty"`
}

func utc(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

// Certificates lists the certificates in service and the names being
// obtained, sorted by name.
func (m *Manager) Certificates() []Certificate {
	byName := map[string]*Certificate{}
	get := func(name string) *Certificate {
		c := byName[name]
		if c == nil {
			c = &Certificate{Name: name, Orderer: m.orderer(), OnDemand: !slices.Contains(m.cfg.Domains, name)}
			byName[name] = c
		}
		return c
	}
	for _, d := range m.cfg.Domains {
		get(d)
	}
	for name, sc := range m.served().certs {
		c := get(name)
		c.Issuer, c.NotAfter, c.NextRenewal = sc.issuer, utc(sc.notAfter), utc(sc.due)
		c.RenewalInfo, c.OCSPStapled = sc.ari, sc.stapled
	}
	m.mu.Lock()
	for name, st := range m.states {
		if st.lastErr != "" {
			c := get(name)
			c.LastError, c.LastErrorAt, c.NextAttempt = st.lastErr, utc(st.lastErrAt), utc(st.next)
		}
	}
	m.mu.Unlock()
	m.peerErrors(get)
	out := make([]Certificate, 0, len(byName))
	for _, c := range byName {
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// peerErrors adds the leader's failures, shared as err blobs, on a router
// that is not the leader.
func (m *Manager) peerErrors(get func(string) *Certificate) {
	cl := m.cfg.Cluster
	if cl == nil || m.leader() {
		return
	}
	for _, key := range cl.BlobKeys(blobErr) {
		name, ok := normalizeName(key[len(blobErr):])
		if !ok || name != key[len(blobErr):] {
			continue
		}
		val, _, ok := cl.Blob(key)
		if !ok {
			continue
		}
		rec, err := parseErr(val)
		if err != nil {
			continue
		}
		c := get(name)
		c.LastError, c.LastErrorAt, c.NextAttempt = rec.Error, utc(rec.At), utc(rec.Next)
	}
}

// parseErr decodes an err blob from a peer (FuzzParsePeerRecords).
func parseErr(b []byte) (errRecord, error) {
	var r errRecord
	if len(b) > 4096 {
		return r, errors.New("acme: error record too large")
	}
	err := json.Unmarshal(b, &r)
	return r, err
}

// ServeHTTP serves GET /api/certificates: Certificates as JSON.
func (m *Manager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, `{"error":"method not allowed"}`, http.StatusMethodNotAllowed)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(m.Certificates())
}
