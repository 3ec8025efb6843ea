// Package subauth decides which nodes may enter the routing table. A
// subscription datagram says where traffic for a domain goes, so whoever
// can send one unchecked can hijack that domain; this package is the check
// the subscription server runs on each datagram (Admit), and the same rules
// for every other way a node enters: a configured node, the admin API, the
// state file and a binary upgrade's hand-off (AdmitNode, AdmitKey), and a
// node relayed by a cluster peer (AdmitRelayed, relay.go). The rules:
//
//   - source allow-list (--subscription-allow): the datagram's UDP source
//     must be in one of the prefixes;
//   - node allow-list (--node-allow): a subscribe may only point the router
//     at node addresses inside the prefixes (no metadata service, no admin
//     port); unix socket paths are refused once a list is set;
//   - signatures (--subscriptions-sign-check DIGEST:DIR), byte-compatible
//     with uWSGI 2.0: RSA PKCS#1 v1.5 with DIGEST over the vars that precede
//     the final "sign" record, public key DIR/<key>.pem with every byte of
//     the key outside [0-9A-Za-z._-] replaced by '_'. Ed25519 public keys
//     in the same layout are accepted too (DIGEST does not apply to them).
//     A pool without a usable key cannot get a node by any path;
//   - freshness (--subscriptions-sign-tolerance): a signed datagram's "unix"
//     time must be within the tolerance of now, and newer than the last one
//     accepted for the same key and node address. That memory outlives the
//     node, so neither a captured subscribe nor a captured unsubscribe can
//     be replayed, whereas uWSGI 2.0 lets both be replayed
//     (core/subscription.c uwsgi_subscription_sign_check checks a
//     refresh only against the node's first time, and an unsubscribe not
//     at all). It outlives the process too when its times
//     are carried over (SignedTimes, RememberSigned);
//   - command binding: uWSGI's signature does not cover the header byte
//     that says subscribe or unsubscribe; datagrams signed by this package
//     (fastrouter subscribe) carry a signed "cmd" var, checked against it.
//
// Denied datagrams are counted by reason in
// fastrouter_subscription_denied_total{reason}; the other paths report
// their denials to their caller.
package subauth

import (
	"crypto"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// DefaultTolerance is the default --subscriptions-sign-tolerance. uWSGI
// uses 86400 s, which lets a captured datagram re-create a node for a day.
const DefaultTolerance = 60 * time.Second

// DefaultMaxRemembered bounds the replay memory: one entry per key and node
// address that sent a signed datagram within the last tolerance.
const DefaultMaxRemembered = 1 << 16

// Denial is a reason a node is refused: a datagram, a relayed cluster
// entry, an admin call or a configured node. Each is a preallocated value
// (denials are input-driven), compared by identity, and Reason is its
// metric label.
type Denial struct{ msg, reason string }

func (d *Denial) Error() string { return d.msg }

// Reason is the label of the denied counters: source, node_address, ...
func (d *Denial) Reason() string { return d.reason }

// Reasons a node is denied; the subscription server logs each at debug
// level, and counts it under its Reason.
var (
	ErrSource      = &Denial{"subauth: source not in --subscription-allow", "source"}
	ErrNodeAddress = &Denial{"subauth: node address not in --node-allow", "node_address"}
	ErrUnsigned    = &Denial{"subauth: datagram not signed (no unix or no sign record)", "unsigned"}
	ErrNoKey       = &Denial{"subauth: no usable public key for this key", "no_key"}
	ErrSignature   = &Denial{"subauth: signature does not verify", "signature"}
	ErrStale       = &Denial{"subauth: unix time outside --subscriptions-sign-tolerance", "stale"}
	ErrReplay      = &Denial{"subauth: unix time not newer than the last accepted for this key and address", "replay"}
	ErrFull        = &Denial{"subauth: replay memory full", "replay_full"}
	ErrCommand     = &Denial{"subauth: signed cmd differs from the header's command", "command"}
	// ErrDuplicate: the very subscribe was accepted already, relayed by a
	// cluster peer (or at another router, whose time came with its state)
	// before it arrived here directly. Nothing to apply.
	ErrDuplicate = &Denial{"subauth: datagram already accepted (relayed by a cluster peer)", "duplicate"}
	// ErrProof: a relayed datagram that does not announce the entry it
	// travels with (another key or address, an unsubscribe, garbage).
	ErrProof = &Denial{"subauth: relayed datagram does not announce this node", "proof"}
)

// reasons lists every Denial Admit returns, in a fixed order (the
// children of the datagram counter). ErrProof is for relayed nodes only.
var reasons = []*Denial{ErrSource, ErrNodeAddress, ErrUnsigned, ErrNoKey, ErrSignature, ErrStale,
	ErrReplay, ErrFull, ErrCommand, ErrDuplicate}

// Config configures a Guard. The zero Config admits everything.
type Config struct {
	// Hash is the digest of RSA signatures; zero disables signature checks
	// (then KeyDir must be empty). See ParseSignCheck.
	Hash crypto.Hash
	// KeyDir holds the public keys, DIR/<sanitised key>.pem (see KeyFile).
	// Files are looked up when a datagram arrives, so keys can be added,
	// replaced or removed while the router runs (seen within a second).
	KeyDir string
	// Tolerance is how far a signed datagram's unix time may be from now,
	// either way. At least one second. Default DefaultTolerance.
	Tolerance time.Duration
	// Sources are the networks datagrams may come from (UDP). Empty: any.
	// Datagrams on unix sockets are not checked: the socket file's
	// permissions decide who may send.
	Sources []netip.Prefix
	// Nodes are the networks a subscribed node address may point into.
	// Empty: anywhere, including unix socket paths. When set, unix socket
	// paths are refused.
	Nodes []netip.Prefix
	// MaxRemembered bounds the replay memory. Default DefaultMaxRemembered.
	MaxRemembered int
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Logger receives warnings about unusable key files. Default: discard.
	Logger *slog.Logger
	// Registerer receives fastrouter_subscription_denied_total. Default: a
	// private registry.
	Registerer prometheus.Registerer
	// OnChange, if set, is called whenever the replay memory took a new
	// time, so that a state file can persist it (see SignedTimes). It is
	// called with the Guard's lock held: it must not block nor call back.
	OnChange func()
}

// Guard admits or denies subscription datagrams. AllowSource is safe for
// concurrent use; Admit may be called from several goroutines too, but is
// serialised inside (the subscription server calls it from its one applier
// goroutine).
type Guard struct {
	// Immutable after New.
	hash      crypto.Hash // 0: no signatures required
	dir       string
	tolerance int64 // seconds
	sources   []netip.Prefix
	nodes     []netip.Prefix
	now       func() time.Time
	log       *slog.Logger
	denied    map[*Denial]prometheus.Counter // children resolved once; read-only map
	onChange  func()                         // may be nil

	mu   sync.Mutex // guards keys and seen
	keys keyCache
	seen replayMemory
}

// New validates cfg once and returns a Guard. It registers the denied
// counter on cfg.Registerer.
func New(cfg Config) (*Guard, error) {
	if (cfg.Hash == 0) != (cfg.KeyDir == "") {
		return nil, errors.New("subauth: Hash and KeyDir go together")
	}
	if cfg.KeyDir != "" {
		fi, err := os.Stat(cfg.KeyDir)
		if err != nil {
			return nil, fmt.Errorf("subauth: key directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("subauth: key directory %s is not a directory", cfg.KeyDir)
		}
	}
	switch {
	case cfg.Tolerance == 0:
		cfg.Tolerance = DefaultTolerance
	case cfg.Tolerance < time.Second:
		return nil, fmt.Errorf("subauth: tolerance %s below 1s", cfg.Tolerance)
	}
	switch {
	case cfg.MaxRemembered == 0:
		cfg.MaxRemembered = DefaultMaxRemembered
	case cfg.MaxRemembered < 0:
		return nil, fmt.Errorf("subauth: negative MaxRemembered %d", cfg.MaxRemembered)
	}
	for _, ps := range [][]netip.Prefix{cfg.Sources, cfg.Nodes} {
		for _, p := range ps {
			if !p.IsValid() {
				return nil, fmt.Errorf("subauth: invalid prefix %v", p)
			}
		}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_subscription_denied_total",
		Help: "Subscription datagrams denied by the allow-lists or the signature check, by reason: " +
			"source, node_address, unsigned, no_key, signature, stale, replay, replay_full, command, duplicate.",
	}, []string{"reason"})
	if err := cfg.Registerer.Register(vec); err != nil {
		return nil, fmt.Errorf("subauth: metrics: %w", err)
	}
	g := &Guard{
		hash:      cfg.Hash,
		dir:       cfg.KeyDir,
		tolerance: int64(cfg.Tolerance / time.Second),
		sources:   canonical(cfg.Sources),
		nodes:     canonical(cfg.Nodes),
		now:       cfg.Now,
		log:       cfg.Logger,
		denied:    make(map[*Denial]prometheus.Counter, len(reasons)),
		onChange:  cfg.OnChange,
		keys:      keyCache{dir: cfg.KeyDir, log: cfg.Logger, m: map[string]*pubKey{}},
		seen:      replayMemory{max: cfg.MaxRemembered, m: map[string]*seen{}},
	}
	for _, r := range reasons {
		g.denied[r] = vec.WithLabelValues(r.reason)
	}
	return g, nil
}

// canonical unmaps IPv4-in-IPv6 prefixes so that checks on unmapped
// addresses match them.
func canonical(ps []netip.Prefix) []netip.Prefix {
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out
}

// Signing reports whether signatures are required.
func (g *Guard) Signing() bool { return g.hash != 0 }

// Filtering reports whether a source allow-list is set.
func (g *Guard) Filtering() bool { return len(g.sources) > 0 }

// AllowSource reports whether a datagram from src may be processed at all.
// src is the zero AddrPort for unix datagram sockets, which are allowed.
// It is cheap and allocation-free: readers call it before queueing, so a
// flood from outside the allow-list cannot crowd out real announces.
func (g *Guard) AllowSource(src netip.AddrPort) bool {
	if len(g.sources) == 0 || !src.IsValid() {
		return true
	}
	if contains(g.sources, src.Addr()) {
		return true
	}
	g.denied[ErrSource].Inc()
	return false
}

func contains(ps []netip.Prefix, a netip.Addr) bool {
	a = a.Unmap()
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Admit decides whether a parsed datagram may be applied. datagram is the
// whole datagram sub was parsed from (the signature covers part of it);
// address is the node address after ":port" resolution. It returns nil or
// one of the Err* values, which it has counted.
//
// With signatures on, every datagram, unsubscribe and drain included, must
// carry "unix" and a final "sign" that verifies with the key's public key,
// its unix time must be within the tolerance of now and newer than the last
// one accepted for this key and announced address.
func (g *Guard) Admit(sub *uwsgi.Subscription, datagram, address []byte) error {
	if d := g.admit(sub, datagram, address); d != nil {
		g.denied[d].Inc()
		return d
	}
	return nil
}

func (g *Guard) admit(sub *uwsgi.Subscription, datagram, address []byte) *Denial {
	if len(g.nodes) > 0 && !sub.Unsubscribe && !g.nodeAllowed(address) {
		return ErrNodeAddress
	}
	if g.hash == 0 {
		return nil
	}
	if sub.Sign == nil || !sub.HasUnix {
		return ErrUnsigned
	}
	now := g.now()
	unix, d := g.fresh(sub, now.Unix())
	if d != nil {
		return d
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.seen.id(sub.Key, sub.Address)
	if last := g.seen.get(id); last != nil && unix <= last.unix {
		if unix == last.unix && last.sig != 0 && last.sig == sigID(sub.Sign) && (last.relayed || !last.claim) {
			// The subscribe a peer relayed, or whose time came from
			// elsewhere, arriving here directly as well.
			return ErrDuplicate
		}
		return ErrReplay
	}
	return g.verifyAndRecord(sub, datagram, id, unix, now, false)
}

// fresh returns sub's unix time if it is within the tolerance of now.
func (g *Guard) fresh(sub *uwsgi.Subscription, now int64) (int64, *Denial) {
	if sub.Unix > math.MaxInt64 {
		return 0, ErrStale
	}
	unix := int64(sub.Unix)
	if unix < now-g.tolerance || unix > now+g.tolerance {
		return 0, ErrStale
	}
	return unix, nil
}

// verifyAndRecord checks sub's signature and command binding and
// remembers its time under id. Caller holds g.mu and has checked
// freshness and replay.
func (g *Guard) verifyAndRecord(sub *uwsgi.Subscription, datagram, id []byte, unix int64, now time.Time, relayed bool) *Denial {
	pk := g.keys.get(sub.Key, now)
	if pk == nil {
		return ErrNoKey
	}
	signed := datagram[uwsgi.HeaderLen : uwsgi.HeaderLen+sub.SignedLen]
	if !pk.verify(g.hash, signed, sub.Sign) {
		return ErrSignature
	}
	if !commandMatches(signed, sub.Unsubscribe) {
		return ErrCommand
	}
	rec := seen{unix: unix, claim: !sub.Unsubscribe, relayed: relayed}
	if !sub.Unsubscribe {
		rec.sig = sigID(sub.Sign)
	}
	if !g.seen.record(id, rec, now.Unix(), g.tolerance) {
		return ErrFull
	}
	g.changed()
	return nil
}

func (g *Guard) changed() {
	if g.onChange != nil {
		g.onChange()
	}
}

// AdmitNode decides whether a node that comes without a datagram may enter
// the table: a configured node (--to), one added through the admin API, one
// restored from the state file or from the previous process of a binary
// upgrade. The rules are those of a datagram that can be checked without
// one: the address must be inside --node-allow, and with signatures on the
// pool must have a usable public key (a pool without one cannot exist on
// a signing router, whatever path its nodes take). Safe for concurrent use;
// nothing is counted (the caller reports the error). The error wraps one of
// the Err* values and says what to change.
func (g *Guard) AdmitNode(key, address []byte) error {
	if len(g.nodes) > 0 && !g.nodeAllowed(address) {
		return &NodeError{Denial: ErrNodeAddress,
			text: fmt.Sprintf("node address %q is not inside --node-allow %s", address, prefixList(g.nodes))}
	}
	return g.AdmitKey(key)
}

// AdmitKey applies the pool-key rules alone (a pools: section entry): with
// signatures on, the pool must have a usable public key.
func (g *Guard) AdmitKey(key []byte) error {
	if g.hash == 0 {
		return nil
	}
	g.mu.Lock()
	pk := g.keys.get(key, g.now())
	g.mu.Unlock()
	if pk == nil {
		return &NodeError{Denial: ErrNoKey, text: fmt.Sprintf("pool %q has no usable public key %s "+
			"(with --subscriptions-sign-check every pool needs one)", key, filepath.Join(g.dir, KeyFile(key)))}
	}
	return nil
}

// NodeError is AdmitNode's refusal: a sentence for the operator, wrapping
// the Denial (errors.Is(err, ErrNodeAddress) holds).
type NodeError struct {
	*Denial
	text string
}

func (e *NodeError) Error() string { return e.text }
func (e *NodeError) Unwrap() error { return e.Denial }

func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// nodeAllowed reports whether address points into the node allow-list:
// "ip:port", "[ip6]:port" or "http://" + either inside a prefix. Unix socket
// paths and anything else are refused.
func (g *Guard) nodeAllowed(address []byte) bool {
	a := string(address)
	a = strings.TrimPrefix(a, "http://")
	ap, err := netip.ParseAddrPort(a)
	if err != nil {
		return false
	}
	return contains(g.nodes, ap.Addr())
}

// commandMatches checks a signed "cmd" var (sent by AppendSigned; uWSGI
// nodes send none) against the header's command, which the signature does
// not cover. Without the var there is nothing to check.
func commandMatches(signed []byte, unsubscribe bool) bool {
	for off := 0; off < len(signed); {
		k, v, next, err := uwsgi.NextVar(signed, off)
		if err != nil {
			return false // cannot happen: the datagram parsed
		}
		if string(k) == "cmd" {
			return (string(v) != "0") == unsubscribe
		}
		off = next
	}
	return true
}
