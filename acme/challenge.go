package acme

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez/v3"
	acmeproto "github.com/mholt/acmez/v3/acme"
)

// Challenges in progress: this router's own (the leader's orders, through
// solver) and, in a cluster, the leader's as its peers received them, so
// that whichever router the CA reaches answers. A CA validating HTTP-01
// asks http://<name>/.well-known/acme-challenge/<token> (RFC 8555 §8.3) and
// expects the key authorization; one validating TLS-ALPN-01 opens a TLS
// connection to <name>:443 offering only acme-tls/1 and expects a
// self-signed certificate carrying the key authorization's digest
// (RFC 8737 §3).
//
// Before acmez tells the CA to validate, the solver's Wait has every live
// member confirm it holds the token (cluster.PutBlob with wait), bounded
// by challengeSpread.

// challengeSpread bounds the wait for every router to confirm a token.
const challengeSpread = 10 * time.Second

// Bounds on a challenge record from a peer.
const (
	maxChallengeJSON = 2048
	maxToken         = 256
	maxKeyAuth       = 512
)

// challenge is one challenge in progress for an identifier. Immutable
// once published, except cert, built once on first use.
type challenge struct {
	Type    string `json:"type"`
	Token   string `json:"token"`
	KeyAuth string `json:"key_auth"`

	keyAuth []byte // KeyAuth, for HTTPChallenge to return without allocating
	once    sync.Once
	cert    *tls.Certificate
	certErr error
}

// challenges maps identifiers to their challenge in progress. Safe for
// concurrent use: handshakes and requests read it under mu.RLock.
type challenges struct {
	m *Manager

	mu     sync.RWMutex
	byName map[string]*challenge // lower-case identifier → challenge
}

var errNoChallenge = errors.New("acme: no challenge in progress for this name")

func (c *challenges) set(id string, ch *challenge) {
	ch.keyAuth = []byte(ch.KeyAuth)
	c.mu.Lock()
	c.byName[id] = ch
	c.mu.Unlock()
}

func (c *challenges) remove(id string) {
	c.mu.Lock()
	delete(c.byName, id)
	c.mu.Unlock()
}

func (c *challenges) get(name []byte) *challenge {
	c.mu.RLock()
	ch := c.byName[string(name)]
	c.mu.RUnlock()
	return ch
}

// HTTPChallenge answers an HTTP-01 request (router.Challenges): the key
// authorization when a challenge with this token is in progress for host
// (its port ignored, compared case-insensitively). It allocates nothing.
func (m *Manager) HTTPChallenge(host, token []byte) ([]byte, bool) {
	var buf [maxName + 8]byte
	name, ok := lowerHost(buf[:0], host)
	if !ok {
		return nil, false
	}
	ch := m.chal.get(name)
	if ch == nil || ch.Type != HTTP01 || string(token) != ch.Token {
		return nil, false
	}
	m.m.answeredHTTP.Inc()
	return ch.keyAuth, true
}

// alpnCertificate is the TLS-ALPN-01 challenge certificate for a hello's
// name.
func (m *Manager) alpnCertificate(serverName string) (*tls.Certificate, error) {
	var buf [maxName + 8]byte
	name, ok := lowerHost(buf[:0], []byte(serverName))
	if !ok {
		return nil, errNoChallenge
	}
	ch := m.chal.get(name)
	if ch == nil || ch.Type != TLSALPN01 {
		return nil, errNoChallenge
	}
	ch.once.Do(func() {
		ch.cert, ch.certErr = acmez.TLSALPN01ChallengeCert(acmeproto.Challenge{
			Type: TLSALPN01, Token: ch.Token, KeyAuthorization: ch.KeyAuth,
			Identifier: acmeproto.Identifier{Type: "dns", Value: string(name)},
		})
	})
	if ch.certErr != nil {
		return nil, ch.certErr
	}
	m.m.answeredALPN.Inc()
	return ch.cert, nil
}

// lowerHost appends host without a port, lower-cased and without a
// trailing dot, to dst; false when it is too long to be a DNS name.
func lowerHost(dst, host []byte) ([]byte, bool) {
	if i := lastColon(host); i >= 0 {
		host = host[:i]
	}
	if len(host) > 0 && host[len(host)-1] == '.' {
		host = host[:len(host)-1]
	}
	if len(host) == 0 || len(host) > maxName || len(host) > cap(dst)-len(dst) {
		return dst, false
	}
	for _, c := range host {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst, true
}

// lastColon finds a port separator: a colon after the last ']' (IPv6
// literals are never ACME names, but must not be cut inside).
func lastColon(b []byte) int {
	for i := len(b) - 1; i >= 0; i-- {
		switch b[i] {
		case ':':
			return i
		case ']':
			return -1
		}
	}
	return -1
}

// solver is acmez's Solver for both challenge types: Present publishes the
// challenge here and to the cluster, Wait has every router confirm it,
// CleanUp withdraws it.
type solver struct{ c *challenges }

var (
	_ acmez.Solver = solver{}
	_ acmez.Waiter = solver{}
)

func (s solver) Present(ctx context.Context, chal acmeproto.Challenge) error {
	id, ok := normalizeName(chal.Identifier.Value)
	if !ok {
		return errors.New("acme: challenge for an identifier that is not a DNS name")
	}
	ch := &challenge{Type: chal.Type, Token: chal.Token, KeyAuth: chal.KeyAuthorization}
	s.c.set(id, ch)
	if cl := s.c.m.cfg.Cluster; cl != nil {
		b, _ := json.Marshal(ch)
		if err := cl.PutBlob(ctx, blobChal+id, b, false); err != nil {
			return err
		}
	}
	return nil
}

func (s solver) Wait(ctx context.Context, chal acmeproto.Challenge) error {
	cl := s.c.m.cfg.Cluster
	if cl == nil {
		return nil
	}
	id, _ := normalizeName(chal.Identifier.Value)
	b, _ := json.Marshal(&challenge{Type: chal.Type, Token: chal.Token, KeyAuth: chal.KeyAuthorization})
	wctx, cancel := context.WithTimeout(ctx, challengeSpread)
	defer cancel()
	start := time.Now()
	if err := cl.PutBlob(wctx, blobChal+id, b, true); err != nil {
		// The CA may still reach a router that has it (this one, say).
		s.c.m.log.Warn("acme: not every router confirmed the challenge token in time; a validation reaching one of them fails",
			"name", id, "type", chal.Type, "err", err)
		return nil
	}
	s.c.m.log.Debug("acme: challenge token on every router", "name", id, "type", chal.Type, "took", time.Since(start))
	return nil
}

func (s solver) CleanUp(_ context.Context, chal acmeproto.Challenge) error {
	id, ok := normalizeName(chal.Identifier.Value)
	if !ok {
		return nil
	}
	s.c.remove(id)
	if cl := s.c.m.cfg.Cluster; cl != nil {
		return cl.DeleteBlob(blobChal + id)
	}
	return nil
}

// applyPeerChallenge takes a challenge record a peer shared (or its
// deletion) for identifier id.
func (c *challenges) applyPeerChallenge(id string, val []byte, ok bool) {
	name, valid := normalizeName(id)
	if !valid || name != id {
		return
	}
	if !ok {
		c.remove(id)
		return
	}
	ch, err := parseChallenge(val)
	if err != nil {
		c.m.log.Debug("acme: peer's challenge record dropped", "name", id, "err", err)
		return
	}
	c.set(id, ch)
}

// parseChallenge decodes a challenge record from a peer (FuzzParseChallenge):
// a known type, a token and a key authorization made of base64url
// characters (RFC 8555 §8.1: the token, a dot, the account key's
// thumbprint), the key authorization starting with the token.
func parseChallenge(b []byte) (*challenge, error) {
	if len(b) > maxChallengeJSON {
		return nil, errors.New("acme: challenge record too large")
	}
	var ch challenge
	if err := json.Unmarshal(b, &ch); err != nil {
		return nil, err
	}
	if ch.Type != HTTP01 && ch.Type != TLSALPN01 {
		return nil, errors.New("acme: unknown challenge type")
	}
	if len(ch.Token) == 0 || len(ch.Token) > maxToken || !base64url(ch.Token) {
		return nil, errors.New("acme: bad challenge token")
	}
	tok, thumb, found := strings.Cut(ch.KeyAuth, ".")
	if len(ch.KeyAuth) > maxKeyAuth || !found || tok != ch.Token || thumb == "" || !base64url(thumb) {
		return nil, errors.New("acme: bad key authorization")
	}
	return &challenge{Type: ch.Type, Token: ch.Token, KeyAuth: ch.KeyAuth}, nil
}

func base64url(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
