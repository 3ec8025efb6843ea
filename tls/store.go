package tls

import (
	"bytes"
	ctls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// DefaultPollInterval is how often the certificate files are re-checked when
// Config.PollInterval is zero.
const DefaultPollInterval = 2 * time.Second

// maxNameLen caps the SNI name looked up: a DNS name has at most 253 bytes
// (RFC 1035, without the trailing dot). Longer names match nothing.
const maxNameLen = 253

// ErrNoCertificate is returned by GetCertificate when neither the SNI name
// nor a default certificate gives a certificate; crypto/tls then ends the
// handshake with an alert.
var ErrNoCertificate = errors.New("tls: no certificate for this server name and no default certificate")

// Config configures a Store. Zero values mean the documented default.
type Config struct {
	// CertFile and KeyFile name the default certificate chain and key (PEM).
	// Both or neither.
	CertFile, KeyFile string
	// Dir holds SNI certificates, Dir/<name>.crt + Dir/<name>.key, and
	// wildcards as Dir/_wildcard.<domain>.crt/.key (see the package doc).
	Dir string
	// ClientCAFile, when set, is a PEM bundle of CAs: clients are asked for a
	// certificate and one that is given must verify against the bundle
	// (tls.VerifyClientCertIfGiven). Read once by New.
	ClientCAFile string
	// PollInterval is how often the default files and Dir are re-checked.
	// Default DefaultPollInterval; negative is an error.
	PollInterval time.Duration
	// Logger, default slog.Default().
	Logger *slog.Logger
	// Registerer receives the metrics; default a private registry.
	Registerer prometheus.Registerer
	// Now is the clock used for expiry warnings; default time.Now.
	Now func() time.Time
	// Managed, if set, holds certificates obtained at run time (package
	// acme, --acme-*). A handshake asks it after the --tls-dir names and
	// before the default certificate, so files keep priority for their
	// names; and it alone answers ACME TLS-ALPN-01 challenges (RFC 8737).
	// With Managed, no certificate file is required.
	Managed Managed
}

// Managed is a source of certificates obtained at run time.
type Managed interface {
	// GetCertificate returns the certificate for hello, or nil and nil
	// when it has none for that name. A hello that offers only the
	// "acme-tls/1" protocol is a CA validating a TLS-ALPN-01 challenge:
	// the answer is the challenge certificate, or an error. It must be
	// safe for concurrent use and should not block.
	GetCertificate(hello *ctls.ClientHelloInfo) (*ctls.Certificate, error)
}

// ALPNChallenge is the protocol a CA offers, alone, when it validates a
// TLS-ALPN-01 challenge (RFC 8737 §6.2). A connection that negotiated it
// carries no application data: the router closes it after the handshake.
const ALPNChallenge = "acme-tls/1"

// Store holds the certificates in service and keeps them up to date. Its
// methods are safe for concurrent use. GetCertificate takes no lock: it reads
// an immutable snapshot through an atomic pointer, and every reload publishes
// a new snapshot.
type Store struct {
	cfg       Config // immutable after New
	log       *slog.Logger
	clientCAs *x509.CertPool // immutable; nil without ClientCAFile
	m         *metrics

	snap atomic.Pointer[snapshot] // the certificates handshakes see

	mu     sync.Mutex       // serialises reloads (poller and Reload); guards the fields below
	def    *pair            // default pair; nil without CertFile
	pairs  map[string]*pair // by file base name in Dir (case kept)
	dirErr string           // last Dir read error logged, "" when readable
	// first is set during New's load: a default pair that fails then is
	// New's error, which its caller reports; logging it too would say it
	// twice.
	first bool

	polls atomic.Uint64 // completed polls; lets tests wait for one without sleeping

	startOnce, closeOnce sync.Once
	started              atomic.Bool   // the poller was launched; final once Close's startOnce returns
	stop                 chan struct{} // closed by Close
	done                 chan struct{} // closed when the poller returns
}

// snapshot is an immutable view of the certificates in service.
type snapshot struct {
	exact map[string]*ctls.Certificate // lower-case name → certificate
	wild  map[string]*ctls.Certificate // lower-case parent domain of *.domain → certificate
	def   *ctls.Certificate            // default; may be nil
	names []string                     // sorted: exact names and "*.domain"
}

// pair is one certificate/key file pair and the outcome of its last load.
// Owned by the Store and guarded by Store.mu.
type pair struct {
	name             string // "" for the default pair, else the file base name
	crtPath, keyPath string
	crtID, keyID     fileID            // fingerprints at the last load attempt
	tried            bool              // a load was attempted at least once
	cert             *ctls.Certificate // last good certificate; kept while newer files fail
	err              error             // last attempt's error; nil when it loaded
}

// New validates cfg and loads every certificate once. A bad default pair, an
// unreadable Dir or ClientCAFile, or a metrics registration conflict is an
// error. A bad pair inside Dir is logged, counted as a failed reload and
// skipped: one bad file must not keep the router from serving the others.
func New(cfg Config) (*Store, error) {
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("tls: certificate and key files must be given together")
	}
	if cfg.CertFile == "" && cfg.Dir == "" && cfg.Managed == nil {
		return nil, errors.New("tls: no certificate source: give a certificate and key, or a certificate directory")
	}
	if cfg.PollInterval < 0 {
		return nil, fmt.Errorf("tls: negative poll interval %v", cfg.PollInterval)
	}
	if cfg.PollInterval == 0 {
		cfg.PollInterval = DefaultPollInterval
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Registerer == nil {
		cfg.Registerer = prometheus.NewRegistry()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Dir != "" {
		fi, err := os.Stat(cfg.Dir)
		if err != nil {
			return nil, fmt.Errorf("tls: certificate directory: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("tls: certificate directory %s: not a directory", cfg.Dir)
		}
	}
	s := &Store{
		cfg:   cfg,
		log:   cfg.Logger,
		pairs: map[string]*pair{},
		stop:  make(chan struct{}),
		done:  make(chan struct{}),
	}
	if cfg.ClientCAFile != "" {
		pool, err := loadCAs(cfg.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		s.clientCAs = pool
	}
	if cfg.CertFile != "" {
		s.def = &pair{crtPath: cfg.CertFile, keyPath: cfg.KeyFile}
	}
	s.m = newMetrics()
	s.mu.Lock()
	s.first = true
	defErr, dirErr := s.refresh(true)
	s.first = false
	s.mu.Unlock()
	if defErr != nil {
		return nil, fmt.Errorf("tls: default certificate: %w", defErr)
	}
	if dirErr != nil {
		return nil, fmt.Errorf("tls: certificate directory: %w", dirErr)
	}
	// Registered last so that a failed New leaves the registry untouched
	// and can be retried with it.
	if err := s.m.register(cfg.Registerer); err != nil {
		return nil, err
	}
	if snap := s.snap.Load(); snap.def == nil && len(snap.names) == 0 && cfg.Managed == nil {
		s.log.Warn("tls: no certificate loaded yet; handshakes fail until one appears", "dir", cfg.Dir)
	}
	return s, nil
}

// Start launches the poller goroutine, which the Store owns until Close.
// Calls after the first, or after Close, do nothing.
func (s *Store) Start() {
	s.startOnce.Do(func() {
		select {
		case <-s.stop:
			return // closed before started
		default:
		}
		s.started.Store(true)
		go s.poll()
	})
}

// Close stops the poller and waits for it. The certificates stay in
// service: handshakes keep working, only reloading stops. Safe to call more
// than once and from several goroutines.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		close(s.stop)
		// Orders Close after a Start running concurrently: once this
		// returns, started is final (a later Start sees stop closed).
		s.startOnce.Do(func() {})
	})
	if s.started.Load() {
		<-s.done
	}
	return nil
}

func (s *Store) poll() {
	defer close(s.done)
	t := time.NewTicker(s.cfg.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			s.pollOnce()
		}
	}
}

// pollOnce runs one pass, recovering from a panic so that a bug in one pass
// neither kills the process nor stops later passes.
func (s *Store) pollOnce() {
	defer func() {
		if r := recover(); r != nil {
			s.log.Error("tls: BUG: certificate poll panicked", "panic", r)
		}
		s.polls.Add(1)
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refresh(false)
}

// Reload re-reads the default pair and every pair in Dir now, whether or not
// their files look changed (SIGHUP). A default pair that fails to load keeps
// the previous one in service, and its error is returned, as is an
// unreadable Dir (whose certificates then stay as they were). Bad pairs
// inside Dir are logged and keep their previous certificate; they are not
// returned.
func (s *Store) Reload() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	defErr, dirErr := s.refresh(true)
	if defErr != nil {
		defErr = fmt.Errorf("tls: default certificate: %w", defErr)
	}
	if dirErr != nil {
		dirErr = fmt.Errorf("tls: certificate directory: %w", dirErr)
	}
	return errors.Join(defErr, dirErr)
}

// refresh checks every file, reloads what changed (everything when force),
// and publishes a new snapshot when anything did. It returns the default
// pair's load error and the Dir read error. Caller holds s.mu.
func (s *Store) refresh(force bool) (defErr, dirErr error) {
	var tried, failed, changed bool
	note := func(p *pair, attempted, swapped bool) {
		tried = tried || attempted
		failed = failed || (attempted && p.err != nil)
		changed = changed || swapped
	}
	if s.def != nil {
		attempted, swapped := s.load(s.def, force)
		note(s.def, attempted, swapped)
		if attempted {
			defErr = s.def.err
		}
	}
	if s.cfg.Dir != "" {
		prev := s.dirErr
		var dirChanged bool
		dirChanged, dirErr = s.scanDir(force, note)
		changed = changed || dirChanged
		if dirErr != nil && (force || s.dirErr != prev) {
			// Counted once per new error, like the log line, not per poll.
			tried, failed = true, true
		}
	}
	if changed || s.snap.Load() == nil {
		s.publish()
	}
	if tried {
		if failed {
			s.m.reloadErr.Inc()
		} else {
			s.m.reloadOK.Inc()
		}
	}
	return defErr, dirErr
}

// scanDir reloads the pairs in Dir whose files changed, adds new ones and
// drops those whose .crt is gone. When Dir cannot be read the pairs stay as
// they were. Caller holds s.mu.
func (s *Store) scanDir(force bool, note func(p *pair, attempted, swapped bool)) (changed bool, err error) {
	entries, err := os.ReadDir(s.cfg.Dir)
	if err != nil {
		if msg := err.Error(); msg != s.dirErr || force {
			s.dirErr = msg
			s.log.Error("tls: cannot read certificate directory; keeping its certificates", "dir", s.cfg.Dir, "err", err)
		}
		return false, err
	}
	if s.dirErr != "" {
		s.log.Info("tls: certificate directory readable again", "dir", s.cfg.Dir)
		s.dirErr = ""
	}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		fname := e.Name()
		base, ok := strings.CutSuffix(fname, ".crt")
		if !ok || base == "" || strings.HasPrefix(fname, ".") {
			continue
		}
		seen[base] = true
		p := s.pairs[base]
		if p == nil {
			p = &pair{
				name:    base,
				crtPath: filepath.Join(s.cfg.Dir, fname),
				keyPath: filepath.Join(s.cfg.Dir, base+".key"),
			}
			s.pairs[base] = p
		}
		attempted, swapped := s.load(p, force)
		note(p, attempted, swapped)
	}
	for base, p := range s.pairs {
		if seen[base] {
			continue
		}
		delete(s.pairs, base)
		if p.cert != nil {
			changed = true
			s.log.Info("tls: certificate removed", "name", base, "file", p.crtPath)
		}
	}
	return changed, nil
}

// load re-reads p when its fingerprints changed since the last attempt, or
// when force. It logs once per attempt: a failure, a new certificate, or a
// replaced one (not an unchanged re-read). swapped reports whether the
// certificate in service for p changed. Caller holds s.mu.
func (s *Store) load(p *pair, force bool) (attempted, swapped bool) {
	crtID, keyID := statID(p.crtPath), statID(p.keyPath)
	if p.tried && !force && crtID == p.crtID && keyID == p.keyID {
		return false, false
	}
	// Fingerprints are taken before reading: a write racing the read leaves
	// a newer fingerprint on disk, so the next poll reads the files again.
	p.crtID, p.keyID, p.tried = crtID, keyID, true
	cert, err := loadPairFiles(p.crtPath, p.keyPath)
	if err != nil {
		p.err = err
		if !s.first || p != s.def {
			s.log.Warn("tls: certificate not loaded", s.attrs(p, "err", err, "serving_previous", p.cert != nil)...)
		}
		return true, false
	}
	prevErr := p.err
	p.err = nil
	old := p.cert
	if old != nil && sameChain(old, cert) {
		// Same chain re-read (forced reload, touched file, a failed
		// rewrite undone): keep the old pointer, nothing to publish.
		if prevErr != nil {
			s.log.Info("tls: certificate files valid again", s.attrs(p)...)
		}
		return true, false
	}
	p.cert = cert
	msg := "tls: certificate loaded"
	if old != nil {
		msg = "tls: certificate replaced"
	}
	leaf := cert.Leaf
	s.log.Info(msg, s.attrs(p, "subject", leaf.Subject.String(), "sans", leaf.DNSNames,
		"not_after", leaf.NotAfter.UTC().Format(time.RFC3339))...)
	if v := validity(leaf, s.cfg.Now()); v != "" {
		s.log.Warn("tls: certificate outside its validity period", s.attrs(p, "validity", v)...)
	}
	if p.name != "" && !coversName(leaf, p.name) {
		s.log.Warn("tls: file name not among the certificate's DNS names; clients will reject it",
			s.attrs(p, "sans", leaf.DNSNames)...)
	}
	return true, true
}

func (s *Store) attrs(p *pair, kv ...any) []any {
	name := p.name
	if name == "" {
		name = "(default)"
	}
	return append([]any{"name", name, "file", p.crtPath}, kv...)
}

func sameChain(a, b *ctls.Certificate) bool {
	return slices.EqualFunc(a.Certificate, b.Certificate, bytes.Equal)
}

// coversName reports whether a file base name (wildcard form included)
// appears among the leaf's DNS SANs, case-insensitively.
func coversName(leaf *x509.Certificate, base string) bool {
	want := strings.ToLower(base)
	if d, ok := wildcardDomain(want); ok {
		want = "*." + d
	}
	for _, n := range leaf.DNSNames {
		if strings.ToLower(n) == want {
			return true
		}
	}
	return false
}

// wildcardDomain returns d for the lower-case file base names
// "_wildcard.d" and "*.d".
func wildcardDomain(name string) (string, bool) {
	for _, prefix := range []string{"_wildcard.", "*."} {
		if d, ok := strings.CutPrefix(name, prefix); ok && d != "" {
			return d, true
		}
	}
	return "", false
}

// publish builds a snapshot from the loaded pairs and stores it, then
// updates the gauge. Caller holds s.mu.
func (s *Store) publish() {
	snap := &snapshot{
		exact: map[string]*ctls.Certificate{},
		wild:  map[string]*ctls.Certificate{},
	}
	if s.def != nil {
		snap.def = s.def.cert
	}
	bases := make([]string, 0, len(s.pairs))
	for base, p := range s.pairs {
		if p.cert != nil {
			bases = append(bases, base)
		}
	}
	// Sorted so that two files differing only in case resolve the same way
	// on every pass.
	sort.Strings(bases)
	for _, base := range bases {
		cert := s.pairs[base].cert
		name := strings.ToLower(base)
		m, key, shown := snap.exact, name, name
		if d, ok := wildcardDomain(name); ok {
			m, key, shown = snap.wild, d, "*."+d
		}
		if _, dup := m[key]; dup {
			s.log.Warn("tls: two certificate files for one name; using the first in sort order",
				"name", shown, "ignored", s.pairs[base].crtPath)
			continue
		}
		m[key] = cert
		snap.names = append(snap.names, shown)
	}
	sort.Strings(snap.names)
	s.snap.Store(snap)
	n := len(snap.names)
	if snap.def != nil {
		n++
	}
	s.m.certs.Set(float64(n))
}

// GetCertificate picks the certificate for a handshake: the exact SNI name,
// then the wildcard for its parent domain, then Config.Managed, then the
// default. It is meant for crypto/tls.Config.GetCertificate and takes no
// lock; without Managed it allocates nothing. The SNI name is untrusted: it
// is lower-cased into a bounded stack buffer and names over 253 bytes match
// nothing.
func (s *Store) GetCertificate(hello *ctls.ClientHelloInfo) (*ctls.Certificate, error) {
	snap := s.snap.Load()
	if hello != nil && hello.ServerName != "" {
		if c := snap.lookup(hello.ServerName); c != nil {
			return c, nil
		}
	}
	if s.cfg.Managed != nil && hello != nil {
		c, err := s.cfg.Managed.GetCertificate(hello)
		if c != nil || err != nil {
			return c, err
		}
	}
	if hello != nil && hello.ServerName != "" {
		s.m.unknownSNI.Inc()
	}
	if snap.def != nil {
		return snap.def, nil
	}
	return nil, ErrNoCertificate
}

// isChallengeHello reports whether hello is a CA validating a TLS-ALPN-01
// challenge: it offers "acme-tls/1" and nothing else (RFC 8737 §3).
func isChallengeHello(hello *ctls.ClientHelloInfo) bool {
	return len(hello.SupportedProtos) == 1 && hello.SupportedProtos[0] == ALPNChallenge
}

// challengeConfig is GetConfigForClient with Managed: a challenge hello gets
// a configuration of its own that serves the challenge certificate and
// negotiates "acme-tls/1"; any other hello the listener's configuration
// (nil), which never offers that protocol.
func (s *Store) challengeConfig(hello *ctls.ClientHelloInfo) (*ctls.Config, error) {
	if !isChallengeHello(hello) {
		return nil, nil
	}
	c, err := s.cfg.Managed.GetCertificate(hello)
	if err != nil {
		return nil, err
	}
	if c == nil {
		return nil, errNoChallenge
	}
	return &ctls.Config{
		MinVersion:   ctls.VersionTLS12,
		Certificates: []ctls.Certificate{*c},
		NextProtos:   []string{ALPNChallenge},
	}, nil
}

var errNoChallenge = errors.New("tls: no ACME challenge in progress for this name")

// lookup finds the certificate for an SNI name in the exact then wildcard
// maps.
func (sn *snapshot) lookup(name string) *ctls.Certificate {
	if len(name) > maxNameLen+1 { // +1: a trailing dot is allowed
		return nil
	}
	var buf [maxNameLen + 1]byte
	b := buf[:copy(buf[:], name)]
	b = bytes.TrimSuffix(b, []byte{'.'})
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	// string(b) in a map index does not allocate.
	if c, ok := sn.exact[string(b)]; ok {
		return c
	}
	if i := bytes.IndexByte(b, '.'); i > 0 && i+1 < len(b) {
		if c, ok := sn.wild[string(b[i+1:])]; ok {
			return c
		}
	}
	return nil
}

// Names returns the SNI names in service, sorted: exact names and "*.domain"
// for wildcards. The default certificate is not listed.
func (s *Store) Names() []string {
	return slices.Clone(s.snap.Load().names)
}

// tls12Suites are the TLS 1.2 suites offered: ECDHE key exchange with an AEAD
// only. TLS 1.3 suites are not configurable and Go's are all modern.
// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 is required by HTTP/2 (RFC 9113 §9.2.2).
var tls12Suites = []uint16{
	ctls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	ctls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	ctls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	ctls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	ctls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	ctls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// TLSConfig returns a new server configuration that takes its certificates
// from s: TLS 1.2 minimum, ECDHE+AEAD suites for 1.2, Go's defaults for 1.3,
// curves and session tickets, ALPN nextProtos as given (the router passes
// "h2", "http/1.1"), and client certificate verification when ClientCAFile
// is set. With Managed, a CA validating a TLS-ALPN-01 challenge gets a
// configuration of its own (challengeConfig). The caller owns the returned
// config.
func (s *Store) TLSConfig(nextProtos []string) *ctls.Config {
	c := &ctls.Config{
		MinVersion:     ctls.VersionTLS12,
		CipherSuites:   slices.Clone(tls12Suites),
		GetCertificate: s.GetCertificate,
		NextProtos:     slices.Clone(nextProtos),
	}
	if s.clientCAs != nil {
		c.ClientAuth = ctls.VerifyClientCertIfGiven
		c.ClientCAs = s.clientCAs
	}
	if s.cfg.Managed != nil {
		c.GetConfigForClient = s.challengeConfig
	}
	return c
}
