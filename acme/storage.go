package acme

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"
)

// Blob keys under which a Manager shares what it knows through the cluster.
// Every router reads what it is sent; only the leader writes certificates.
const (
	blobStore = "acme/s/"    // + a certmagic storage key: account, certificates, keys, metadata, OCSP staples
	blobChal  = "acme/ch/"   // + identifier: a challenge in progress (challenge.go)
	blobWant  = "acme/want/" // + name: a router asks the leader to order it (ondemand.go)
	blobErr   = "acme/err/"  // + name: the leader's last failure for it (order.go)
	blobLock  = "acme/lock/" // + name: an order in progress, and by whom (order.go)
)

// storage is the certmagic.Storage of a Manager: the files under
// Config.Dir in certmagic's layout (certmagic.FileStorage), whose lock
// files also keep two processes sharing the directory during a binary
// upgrade from ordering the same name twice; and, in a cluster, the
// replicated blobs: every value stored here is also put to the cluster
// under blobStore+key, and values peers put are written to the directory
// by Manager.applyPeer. A file's modification time is its version's time
// in the cluster, so values a restarted router offers again (seed) never
// override newer ones.
//
// Safe for concurrent use.
type storage struct {
	fs *certmagic.FileStorage
	cl Cluster // nil: nothing shared
}

var _ certmagic.Storage = (*storage)(nil)

// shared reports whether a storage key travels: everything but certmagic's
// probe files (checkStorage) and its cleaning timestamp.
func shared(key string) bool {
	return !strings.HasPrefix(key, "rw_test_") && key != "last_clean.json"
}

func (s *storage) Store(ctx context.Context, key string, value []byte) error {
	if err := s.fs.Store(ctx, key, value); err != nil {
		return err
	}
	if s.cl == nil || !shared(key) {
		return nil
	}
	if err := s.cl.PutBlob(ctx, blobStore+key, value, false); err != nil {
		// Not shared, so not kept: certmagic undoes the whole certificate.
		_ = s.fs.Delete(ctx, key)
		return err
	}
	if _, at, ok := s.cl.Blob(blobStore + key); ok {
		_ = os.Chtimes(s.fs.Filename(key), at, at)
	}
	return nil
}

func (s *storage) Load(ctx context.Context, key string) ([]byte, error) { return s.fs.Load(ctx, key) }

func (s *storage) Delete(ctx context.Context, key string) error {
	if err := s.fs.Delete(ctx, key); err != nil {
		return err
	}
	if s.cl == nil || !shared(key) {
		return nil
	}
	// A key may name a directory: delete what lies under it too.
	keys := append(s.cl.BlobKeys(blobStore+key+"/"), blobStore+key)
	var errs []error
	for _, k := range keys {
		errs = append(errs, s.cl.DeleteBlob(k))
	}
	return errors.Join(errs...)
}

func (s *storage) Exists(ctx context.Context, key string) bool { return s.fs.Exists(ctx, key) }

func (s *storage) List(ctx context.Context, prefix string, recursive bool) ([]string, error) {
	return s.fs.List(ctx, prefix, recursive)
}

func (s *storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	return s.fs.Stat(ctx, key)
}

func (s *storage) Lock(ctx context.Context, name string) error   { return s.fs.Lock(ctx, name) }
func (s *storage) Unlock(ctx context.Context, name string) error { return s.fs.Unlock(ctx, name) }

// applyPeer brings the file for a storage key in line with the cluster's
// value (written, with the version's time as its modification time, or
// deleted). The key comes from a peer: it must pass validKey first.
func (s *storage) applyPeer(ctx context.Context, key string, val []byte, at time.Time, ok bool) error {
	if !ok {
		err := os.Remove(s.fs.Filename(key))
		if errors.Is(err, fs.ErrNotExist) {
			err = nil
		}
		return err
	}
	if cur, err := s.fs.Load(ctx, key); err == nil && string(cur) == string(val) {
		_ = os.Chtimes(s.fs.Filename(key), at, at)
		return nil
	}
	if err := s.fs.Store(ctx, key, val); err != nil {
		return err
	}
	return os.Chtimes(s.fs.Filename(key), at, at)
}

// seed offers every shared file to the cluster as of its modification
// time, and brings the files a newer cluster value replaced up to date
// (reported through changed).
func (s *storage) seed(ctx context.Context, changed func(key string)) (int, error) {
	if s.cl == nil {
		return 0, nil
	}
	keys, err := s.fs.List(ctx, "", true)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	n := 0
	for _, key := range keys {
		if !validKey(key) || !shared(key) {
			continue
		}
		fi, err := os.Stat(s.fs.Filename(key))
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		val, err := s.fs.Load(ctx, key)
		if err != nil {
			continue
		}
		took, err := s.cl.SeedBlob(blobStore+key, val, fi.ModTime())
		if err != nil {
			return n, err
		}
		if took {
			n++
		} else if v, at, ok := s.cl.Blob(blobStore + key); ok && string(v) != string(val) {
			if err := s.applyPeer(ctx, key, v, at, true); err == nil {
				changed(key)
			}
		}
	}
	return n, nil
}

// validKey reports whether a storage key is one certmagic or this package
// writes, and so safe to turn into a file name under Config.Dir: slash-
// separated components of lower-case letters, digits, '-', '_', '.' and
// '@' (an account's email), under a known top directory, never "." or "..",
// and not the lock directory. Keys from peers pass it before touching the
// disk (FuzzValidKey).
func validKey(key string) bool {
	if len(key) == 0 || len(key) > 512 {
		return false
	}
	top, _, _ := strings.Cut(key, "/")
	switch top {
	case "certificates", "acme", "ocsp":
	default:
		return false
	}
	for _, part := range strings.Split(key, "/") {
		if part == "" || part == "." || part == ".." {
			return false
		}
		for i := 0; i < len(part); i++ {
			c := part[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.' || c == '@' || c == '+') {
				return false
			}
		}
	}
	return true
}
