package tls

import (
	"bytes"
	ctls "crypto/tls"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fastrouter/fastrouter/internal/testcert"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fixture is a Dir with an exact, a wildcard and an upper-case-named pair,
// plus a default pair outside it.
type fixture struct {
	ca                      *testcert.CA
	dir                     string
	def, exact, wild, upper *testcert.Cert
	cfg                     Config
	log                     *logBuf
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{ca: testcert.NewCA(t, "test CA"), dir: t.TempDir()}
	f.def = f.ca.Server(t, "default.test")
	f.exact = f.ca.Server(t, "a.example.com")
	f.wild = f.ca.Server(t, "*.example.com")
	f.upper = f.ca.Server(t, "upper.example.org")
	writePair(t, f.dir, "a.example.com", f.exact)
	writePair(t, f.dir, "_wildcard.example.com", f.wild)
	writePair(t, f.dir, "UPPER.Example.org", f.upper)
	defDir := t.TempDir()
	f.cfg, f.log = testConfig(t)
	f.cfg.Dir = f.dir
	f.cfg.CertFile = filepath.Join(defDir, "default.crt")
	f.cfg.KeyFile = filepath.Join(defDir, "default.key")
	writeFile(t, f.cfg.CertFile, f.def.CertPEM)
	writeFile(t, f.cfg.KeyFile, f.def.KeyPEM)
	return f
}

func TestGetCertificateSelection(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	long := strings.Repeat("a", 250) + ".example.com"
	tests := []struct {
		name, sni string
		want      *testcert.Cert
		unknown   bool // counted as an unknown SNI name
	}{
		{"exact", "a.example.com", f.exact, false},
		{"exact upper-case SNI", "A.EXAMPLE.COM", f.exact, false},
		{"exact trailing dot", "a.example.com.", f.exact, false},
		{"wildcard", "b.example.com", f.wild, false},
		{"wildcard upper-case SNI", "B.Example.COM", f.wild, false},
		{"wildcard is one label only", "x.b.example.com", f.def, true},
		{"wildcard does not cover apex", "example.com", f.def, true},
		{"upper-case file name", "upper.example.org", f.upper, false},
		{"no SNI", "", f.def, false},
		{"unknown name", "other.test", f.def, true},
		{"over-long name", long, f.def, true},
		{"dot only", ".", f.def, true},
		{"leading dot", ".example.com", f.def, true},
	}
	var unknown float64
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := s.GetCertificate(&ctls.ClientHelloInfo{ServerName: tt.sni})
			if err != nil {
				t.Fatalf("GetCertificate(%q) error %v", tt.sni, err)
			}
			if c.Leaf == nil {
				t.Fatalf("GetCertificate(%q): Leaf not parsed at load", tt.sni)
			}
			if got, want := c.Leaf.SerialNumber, tt.want.Leaf.SerialNumber; got.Cmp(want) != 0 {
				t.Errorf("GetCertificate(%q) = %v (%v); want %v", tt.sni, c.Leaf.DNSNames, got, tt.want.Leaf.DNSNames)
			}
		})
		if tt.unknown {
			unknown++
		}
	}
	if got := testutil.ToFloat64(s.m.unknownSNI); got != unknown {
		t.Errorf("fastrouter_tls_unknown_sni_total = %v; want %v", got, unknown)
	}
	if got, want := s.Names(), []string{"*.example.com", "a.example.com", "upper.example.org"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q; want %q", got, want)
	}
	if got := testutil.ToFloat64(s.m.certs); got != 4 {
		t.Errorf("fastrouter_tls_certificates = %v; want 4", got)
	}
	if got := testutil.ToFloat64(s.m.reloadOK); got != 1 {
		t.Errorf("reloads{ok} = %v; want 1 (the load in New)", got)
	}
	// A nil hello (never sent by crypto/tls) is served like no SNI.
	if c, err := s.GetCertificate(nil); err != nil || c.Leaf.SerialNumber.Cmp(f.def.Leaf.SerialNumber) != 0 {
		t.Errorf("GetCertificate(nil) = %v, %v; want the default", c, err)
	}
}

func TestNoDefault(t *testing.T) {
	f := newFixture(t)
	f.cfg.CertFile, f.cfg.KeyFile = "", ""
	s := mustNew(t, f.cfg)
	for _, sni := range []string{"unknown.test", "", "x.y.example.com"} {
		if c, err := s.GetCertificate(&ctls.ClientHelloInfo{ServerName: sni}); !errors.Is(err, ErrNoCertificate) || c != nil {
			t.Errorf("GetCertificate(%q) = %v, %v; want nil, ErrNoCertificate", sni, c, err)
		}
	}
	if got := served(s, "a.example.com"); got == nil || got.Cmp(f.exact.Leaf.SerialNumber) != 0 {
		t.Errorf("a.example.com served %v; want the exact certificate", got)
	}
	if got := testutil.ToFloat64(s.m.certs); got != 3 {
		t.Errorf("fastrouter_tls_certificates = %v; want 3", got)
	}
}

func TestNewErrors(t *testing.T) {
	ca := testcert.NewCA(t, "ca")
	good, other := ca.Server(t, "good.test"), ca.Server(t, "other.test")
	dir := t.TempDir()
	path := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		writeFile(t, p, b)
		return p
	}
	crt, key := path("good.crt", good.CertPEM), path("good.key", good.KeyPEM)
	otherKey := path("other.key", other.KeyPEM)
	garbage := path("garbage.pem", []byte("-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n"))
	missing := filepath.Join(dir, "missing.crt")
	huge := path("huge.crt", append(bytes.Repeat([]byte("x"), maxFileBytes), good.CertPEM...))
	quiet := slog.New(slog.DiscardHandler)
	tests := []struct {
		name string
		cfg  Config
	}{
		{"nothing to serve", Config{}},
		{"cert without key", Config{CertFile: crt}},
		{"key without cert", Config{KeyFile: key}},
		{"missing cert file", Config{CertFile: missing, KeyFile: key}},
		{"garbage cert", Config{CertFile: garbage, KeyFile: key}},
		{"key of another cert", Config{CertFile: crt, KeyFile: otherKey}},
		{"key and cert swapped", Config{CertFile: key, KeyFile: crt}},
		{"cert is a directory", Config{CertFile: dir, KeyFile: key}},
		{"cert file over 4 MiB", Config{CertFile: huge, KeyFile: key}},
		{"missing dir", Config{Dir: filepath.Join(dir, "nope")}},
		{"dir is a file", Config{Dir: crt}},
		{"negative poll interval", Config{CertFile: crt, KeyFile: key, PollInterval: -time.Second}},
		{"missing client CA", Config{CertFile: crt, KeyFile: key, ClientCAFile: missing}},
		{"client CA without certificates", Config{CertFile: crt, KeyFile: key, ClientCAFile: key}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := prometheus.NewRegistry()
			tt.cfg.Registerer, tt.cfg.Logger = reg, quiet
			s, err := New(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatalf("New(%+v) succeeded; want an error", tt.cfg)
			}
			// A failed New leaves the registry usable for the next try.
			s, err = New(Config{CertFile: crt, KeyFile: key, Registerer: reg, Logger: quiet})
			if err != nil {
				t.Fatalf("New after a failed New on the same registry: %v", err)
			}
			s.Close()
		})
	}
	t.Run("registry conflict", func(t *testing.T) {
		reg := prometheus.NewRegistry()
		mustNew(t, Config{CertFile: crt, KeyFile: key, Registerer: reg, Logger: quiet})
		if _, err := New(Config{CertFile: crt, KeyFile: key, Registerer: reg, Logger: quiet}); err == nil {
			t.Fatal("second New on one registry succeeded; want a registration error")
		}
	})
}

func TestBadPairInDirSkippedAtNew(t *testing.T) {
	f := newFixture(t)
	writeFile(t, filepath.Join(f.dir, "bad.test.crt"), []byte("garbage"))
	writeFile(t, filepath.Join(f.dir, "bad.test.key"), f.exact.KeyPEM)
	writeFile(t, filepath.Join(f.dir, "nokey.test.crt"), f.exact.CertPEM)
	writeFile(t, filepath.Join(f.dir, "nocert.test.key"), f.exact.KeyPEM)
	writeFile(t, filepath.Join(f.dir, ".hidden.crt"), []byte("ignored"))
	s := mustNew(t, f.cfg)
	if got, want := s.Names(), []string{"*.example.com", "a.example.com", "upper.example.org"}; !slices.Equal(got, want) {
		t.Errorf("Names() = %q; want %q", got, want)
	}
	if got := testutil.ToFloat64(s.m.reloadErr); got != 1 {
		t.Errorf("reloads{error} = %v; want 1", got)
	}
	for _, name := range []string{"bad.test", "nokey.test"} {
		if n := f.log.count("certificate not loaded", "name="+name); n != 1 {
			t.Errorf("%d log lines about %s; want 1\n%s", n, name, f.log)
		}
	}
	if n := f.log.count("hidden"); n != 0 {
		t.Errorf("hidden file was looked at:\n%s", f.log)
	}
}

func TestSANMismatchWarned(t *testing.T) {
	f := newFixture(t)
	writePair(t, f.dir, "wrong.test", f.ca.Server(t, "right.test"))
	s := mustNew(t, f.cfg)
	if n := f.log.count("not among the certificate's DNS names", "name=wrong.test"); n != 1 {
		t.Errorf("%d SAN warnings for wrong.test; want 1\n%s", n, f.log)
	}
	if n := f.log.count("not among the certificate's DNS names"); n != 1 {
		t.Errorf("%d SAN warnings in all; want 1 (wildcard and upper-case names match)\n%s", n, f.log)
	}
	// Still served under its file name, as documented.
	if served(s, "wrong.test") == nil {
		t.Error("wrong.test not served")
	}
}

func TestValidityWarned(t *testing.T) {
	f := newFixture(t)
	f.cfg.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
	s := mustNew(t, f.cfg)
	if n := f.log.count("outside its validity period", "validity=\"expired "); n != 4 {
		t.Errorf("%d expiry warnings; want 4 (every certificate)\n%s", n, f.log)
	}
	// Expired certificates are still served: the operator decides.
	if served(s, "a.example.com").Cmp(f.exact.Leaf.SerialNumber) != 0 {
		t.Error("expired certificate not served")
	}
}

func TestPollPicksUpNewPair(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	c := f.ca.Server(t, "new.example.org")
	renamePair(t, f.dir, "new.example.org", c)
	eventually(t, "new pair served", func() bool {
		got := served(s, "new.example.org")
		return got != nil && got.Cmp(c.Leaf.SerialNumber) == 0
	})
	if !slices.Contains(s.Names(), "new.example.org") {
		t.Errorf("Names() = %q; want new.example.org listed", s.Names())
	}
	if got := testutil.ToFloat64(s.m.certs); got != 5 {
		t.Errorf("fastrouter_tls_certificates = %v; want 5", got)
	}
}

// replaced checks that a replacement of a.example.com is picked up and that
// every handshake meanwhile gets the old or the new certificate, never the
// default: a half-done replacement keeps the previous certificate.
func replaced(t *testing.T, f *fixture, s *Store, replace func(*testcert.Cert)) {
	t.Helper()
	next := f.ca.Server(t, "a.example.com")
	oldSN, newSN := f.exact.Leaf.SerialNumber, next.Leaf.SerialNumber
	replace(next)
	eventually(t, "replacement served", func() bool {
		got := served(s, "a.example.com")
		if got == nil || (got.Cmp(oldSN) != 0 && got.Cmp(newSN) != 0) {
			t.Fatalf("a.example.com served %v during replacement; want old %v or new %v", got, oldSN, newSN)
		}
		return got.Cmp(newSN) == 0
	})
	if n := f.log.count("certificate replaced", "name=a.example.com"); n != 1 {
		t.Errorf("%d 'replaced' log lines; want 1\n%s", n, f.log)
	}
}

func TestPollRenameOver(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	replaced(t, f, s, func(c *testcert.Cert) { renamePair(t, f.dir, "a.example.com", c) })
}

func TestPollRewriteInPlace(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	replaced(t, f, s, func(c *testcert.Cert) { writePair(t, f.dir, "a.example.com", c) })
}

func TestPollRemovedPair(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	for _, ext := range []string{".crt", ".key"} {
		if err := os.Remove(filepath.Join(f.dir, "a.example.com"+ext)); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "removed pair gone", func() bool {
		return !slices.Contains(s.Names(), "a.example.com")
	})
	// a.example.com now falls to the wildcard.
	if got := served(s, "a.example.com"); got == nil || got.Cmp(f.wild.Leaf.SerialNumber) != 0 {
		t.Errorf("a.example.com served %v after removal; want the wildcard", got)
	}
	if got := testutil.ToFloat64(s.m.certs); got != 3 {
		t.Errorf("fastrouter_tls_certificates = %v; want 3", got)
	}
}

func TestPollHalfWrittenPair(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	c := f.ca.Server(t, "half.test")
	errs := testutil.ToFloat64(s.m.reloadErr)
	// Each step is one atomic change, so each must give exactly one log
	// line and one failed reload however many polls see it.
	// Certificate first, key not yet there.
	writeAtomic(t, filepath.Join(f.dir, "half.test.crt"), c.CertPEM)
	eventually(t, "failed load counted", func() bool { return testutil.ToFloat64(s.m.reloadErr) > errs })
	// Then half the key.
	writeAtomic(t, filepath.Join(f.dir, "half.test.key"), c.KeyPEM[:len(c.KeyPEM)/2])
	eventually(t, "second failed load counted", func() bool { return testutil.ToFloat64(s.m.reloadErr) > errs+1 })
	waitPolls(t, s, 5)
	if n := f.log.count("certificate not loaded", "name=half.test"); n != 2 {
		t.Errorf("%d log lines for half.test after 2 changes and many polls; want 2\n%s", n, f.log)
	}
	if got := testutil.ToFloat64(s.m.reloadErr); got != errs+2 {
		t.Errorf("reloads{error} = %v; want %v (one per change, not per poll)", got, errs+2)
	}
	if served(s, "half.test").Cmp(f.def.Leaf.SerialNumber) != 0 || slices.Contains(s.Names(), "half.test") {
		t.Fatalf("half-written pair served; Names() = %q", s.Names())
	}
	writeAtomic(t, filepath.Join(f.dir, "half.test.key"), c.KeyPEM)
	eventually(t, "completed pair served", func() bool {
		return served(s, "half.test").Cmp(c.Leaf.SerialNumber) == 0
	})
}

func TestBadUpdateKeepsPrevious(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	// A certificate for another key: the pair no longer matches.
	writeAtomic(t, filepath.Join(f.dir, "a.example.com.crt"), f.ca.Server(t, "a.example.com").CertPEM)
	eventually(t, "mismatch logged", func() bool {
		return f.log.count("certificate not loaded", "name=a.example.com", "serving_previous=true") == 1
	})
	waitPolls(t, s, 3)
	if got := served(s, "a.example.com"); got.Cmp(f.exact.Leaf.SerialNumber) != 0 {
		t.Errorf("a.example.com served %v; want the previous certificate %v", got, f.exact.Leaf.SerialNumber)
	}
	// Putting the old file back is logged as a recovery, not a replacement.
	writeAtomic(t, filepath.Join(f.dir, "a.example.com.crt"), f.exact.CertPEM)
	eventually(t, "recovery logged", func() bool { return f.log.count("valid again", "name=a.example.com") == 1 })
	if n := f.log.count("certificate replaced"); n != 0 {
		t.Errorf("restoring the same certificate logged a replacement:\n%s", f.log)
	}
}

func TestReloadKeepsOldDefault(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	writeFile(t, f.cfg.CertFile, []byte("-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n"))
	if err := s.Reload(); err == nil {
		t.Fatal("Reload with a bad default succeeded; want an error")
	}
	if got := served(s, ""); got.Cmp(f.def.Leaf.SerialNumber) != 0 {
		t.Errorf("default after a bad Reload = %v; want the old %v", got, f.def.Leaf.SerialNumber)
	}
	if got := testutil.ToFloat64(s.m.reloadErr); got != 1 {
		t.Errorf("reloads{error} = %v; want 1", got)
	}
	next := f.ca.Server(t, "default.test")
	writeFile(t, f.cfg.KeyFile, next.KeyPEM)
	writeFile(t, f.cfg.CertFile, next.CertPEM)
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if got := served(s, ""); got.Cmp(next.Leaf.SerialNumber) != 0 {
		t.Errorf("default after Reload = %v; want the new %v", got, next.Leaf.SerialNumber)
	}
	// Reload re-reads unchanged files without logging them again.
	before := f.log.count("certificate loaded")
	if err := s.Reload(); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	if after := f.log.count("certificate loaded"); after != before {
		t.Errorf("Reload of unchanged files logged %d loads", after-before)
	}
}

func TestReloadUnreadableDir(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	moved := f.dir + ".moved"
	if err := os.Rename(f.dir, moved); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Rename(moved, f.dir) })
	if err := s.Reload(); err == nil {
		t.Fatal("Reload with the directory gone succeeded; want an error")
	}
	if got := served(s, "a.example.com"); got.Cmp(f.exact.Leaf.SerialNumber) != 0 {
		t.Errorf("a.example.com served %v; want its certificate kept while the directory is unreadable", got)
	}
}

func TestPollDefaultReplaced(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	s.Start()
	next := f.ca.Server(t, "default.test")
	dir := filepath.Dir(f.cfg.CertFile)
	renamePair(t, dir, "default", next)
	eventually(t, "new default served", func() bool { return served(s, "").Cmp(next.Leaf.SerialNumber) == 0 })
}

func TestStartClose(t *testing.T) {
	f := newFixture(t)
	s := mustNew(t, f.cfg)
	if err := s.Close(); err != nil { // before Start
		t.Fatal(err)
	}
	s.Start() // after Close: no poller
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if served(s, "a.example.com") == nil {
		t.Error("certificates not served after Close")
	}

	s2 := mustNew(t, Config{CertFile: f.cfg.CertFile, KeyFile: f.cfg.KeyFile, PollInterval: time.Millisecond, Logger: f.cfg.Logger})
	s2.Start()
	s2.Start()
	waitPolls(t, s2, 2)
	done := make(chan struct{})
	go func() { s2.Close(); s2.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
	n := s2.polls.Load()
	time.Sleep(20 * time.Millisecond)
	if s2.polls.Load() != n {
		t.Error("poller still running after Close")
	}
}

func TestMetricNames(t *testing.T) {
	f := newFixture(t)
	reg := prometheus.NewRegistry()
	f.cfg.Registerer = reg
	mustNew(t, f.cfg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	want := []string{"fastrouter_tls_certificates", "fastrouter_tls_reloads_total", "fastrouter_tls_unknown_sni_total"}
	if !slices.Equal(names, want) {
		t.Errorf("metrics %q; want %q", names, want)
	}
	n, err := testutil.GatherAndCount(reg, "fastrouter_tls_reloads_total")
	if err != nil || n != 2 {
		t.Errorf("reloads_total has %d series (%v); want 2: ok and error, present from the start", n, err)
	}
}
