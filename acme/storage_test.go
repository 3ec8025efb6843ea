package acme

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

// TestStorageShares: a value stored is put to the cluster, the file's
// modification time is its version's; a directory delete deletes every
// blob under it; probe files stay local.
func TestStorageShares(t *testing.T) {
	cl := newFakeCluster("a", "a", "a", "b")
	dir := t.TempDir()
	s := &storage{fs: &certmagic.FileStorage{Path: dir}, cl: cl}
	ctx := context.Background()
	key := "certificates/ca/x.test/x.test.crt"
	if err := s.Store(ctx, key, []byte("pem")); err != nil {
		t.Fatal(err)
	}
	val, at, ok := cl.Blob(blobStore + key)
	if !ok || string(val) != "pem" {
		t.Fatalf("blob %q %v", val, ok)
	}
	fi, err := os.Stat(filepath.Join(dir, filepath.FromSlash(key)))
	if err != nil || !fi.ModTime().Equal(at) {
		t.Errorf("file time %v; want the blob's %v (%v)", fi.ModTime(), at, err)
	}
	if err := s.Store(ctx, "rw_test_123", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := cl.Blob(blobStore + "rw_test_123"); ok {
		t.Error("certmagic's probe file was shared")
	}
	if err := s.Store(ctx, "certificates/ca/x.test/x.test.key", []byte("k")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, "certificates/ca/x.test"); err != nil {
		t.Fatal(err)
	}
	if keys := cl.BlobKeys(blobStore); len(keys) != 0 {
		t.Errorf("after deleting the directory, blobs %q remain", keys)
	}
}

// TestStorageSeed: files older than the cluster's versions are replaced by
// them; newer or unknown ones are offered.
func TestStorageSeed(t *testing.T) {
	cl := newFakeCluster("a", "a", "a")
	dir := t.TempDir()
	s := &storage{fs: &certmagic.FileStorage{Path: dir}, cl: cl}
	ctx := context.Background()
	write := func(key, val string, at time.Time) {
		if err := s.fs.Store(ctx, key, []byte(val)); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(s.fs.Filename(key), at, at)
	}
	now := time.Now()
	write("certificates/ca/old.test/old.test.crt", "old", now.Add(-time.Hour))
	write("certificates/ca/new.test/new.test.crt", "mine", now)
	write("locks/issue_cert_x.lock", "lock", now)
	cl.set(blobStore+"certificates/ca/old.test/old.test.crt", []byte("newer"), now.Add(-time.Minute))
	var changed []string
	n, err := s.seed(ctx, func(k string) { changed = append(changed, k) })
	if err != nil || n != 1 {
		t.Fatalf("seed: %d %v; want 1 offered", n, err)
	}
	if b, _ := s.fs.Load(ctx, "certificates/ca/old.test/old.test.crt"); string(b) != "newer" {
		t.Errorf("the older file was not replaced: %q", b)
	}
	if len(changed) != 1 || !strings.Contains(changed[0], "old.test") {
		t.Errorf("changed %q", changed)
	}
	if v, _, ok := cl.Blob(blobStore + "certificates/ca/new.test/new.test.crt"); !ok || string(v) != "mine" {
		t.Error("the unknown file was not offered")
	}
	if _, _, ok := cl.Blob(blobStore + "locks/issue_cert_x.lock"); ok {
		t.Error("a lock file was offered")
	}
}

func TestValidKey(t *testing.T) {
	for key, want := range map[string]bool{
		"certificates/acme-v02.api.letsencrypt.org-directory/a.test/a.test.crt": true,
		"acme/127.0.0.1-14000-dir/users/ops@example.test/account.json":          true,
		"ocsp/a.test-1f":                true,
		"locks/x":                       false,
		"certificates/../../etc/passwd": false,
		"certificates/./x":              false,
		"certificates//x":               false,
		"/certificates/x":               false,
		"certificates/X.test":           false,
		"certificates/a test":           false,
		"certificates\\..\\x":           false,
		"rw_test_1":                     false,
		"":                              false,
		"certificates/" + strings.Repeat("a", 600): false,
	} {
		if got := validKey(key); got != want {
			t.Errorf("validKey(%q) = %v; want %v", key, got, want)
		}
	}
}

// FuzzValidKey: a key validKey accepts never names a file outside the
// directory, nor the lock directory.
func FuzzValidKey(f *testing.F) {
	for _, k := range []string{"certificates/a/b.test/b.test.crt", "ocsp/x-1", "../x", "acme/a/../../x", "certificates/.."} {
		f.Add(k)
	}
	dir := "/var/lib/fastrouter/acme"
	f.Fuzz(func(t *testing.T, key string) {
		if !validKey(key) {
			return
		}
		p := (&certmagic.FileStorage{Path: dir}).Filename(key)
		rel, err := filepath.Rel(dir, p)
		if err != nil || strings.HasPrefix(rel, "..") || filepath.IsAbs(rel) || rel == "." {
			t.Fatalf("validKey(%q) but it names %s", key, p)
		}
		if strings.HasPrefix(rel, "locks") || bytes.ContainsAny([]byte(key), "\\\x00") {
			t.Fatalf("validKey(%q) accepted a lock or odd byte", key)
		}
	})
}
