package tls

import (
	ctls "crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// maxFileBytes bounds what is read from one certificate, key or CA file, so
// a wrong path (a log file, /dev/zero) cannot exhaust memory. Real chains and
// CA bundles are a few KiB to a few hundred KiB.
const maxFileBytes = 4 << 20

var (
	errNotRegular = errors.New("tls: not a regular file")
	errTooLarge   = errors.New("tls: file larger than 4 MiB")
	errNoLeaf     = errors.New("tls: no certificate in PEM data")
)

// fileID fingerprints a file between polls. The zero value means "missing".
// inode catches a rename-over even when size and mtime happen to match;
// size and mtime catch an in-place rewrite.
type fileID struct {
	dev, ino uint64
	size     int64
	mtime    int64 // UnixNano
	ok       bool
}

func idOf(fi os.FileInfo) fileID {
	dev, ino := inode(fi)
	return fileID{dev: dev, ino: ino, size: fi.Size(), mtime: fi.ModTime().UnixNano(), ok: true}
}

// statID fingerprints path, following symlinks (certbot's live/ directory
// and Kubernetes secret volumes are symlinks to the real files).
func statID(path string) fileID {
	fi, err := os.Stat(path)
	if err != nil {
		return fileID{}
	}
	return idOf(fi)
}

// readFile reads a regular file of at most maxFileBytes. Callers take the
// file's fingerprint before reading, so a write that races the read leaves a
// newer fingerprint behind and the next poll reads the file again.
func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %w", path, errNotRegular)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("%s: %w", path, errTooLarge)
	}
	return b, nil
}

// loadPair parses a PEM certificate chain and its PEM private key, checks
// that they match, and parses the leaf once so no handshake has to. Any
// input gives a certificate or an error, never a panic (FuzzLoadPair).
func loadPair(certPEM, keyPEM []byte) (*ctls.Certificate, error) {
	cert, err := ctls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if len(cert.Certificate) == 0 {
		return nil, errNoLeaf
	}
	// X509KeyPair fills Leaf since Go 1.23 (GODEBUG x509keypairleaf=1); a
	// binary built with that GODEBUG off must still not parse per handshake.
	if cert.Leaf == nil {
		leaf, err := x509.ParseCertificate(cert.Certificate[0])
		if err != nil {
			return nil, err
		}
		cert.Leaf = leaf
	}
	return &cert, nil
}

// loadPairFiles reads and loads a certificate and key file.
func loadPairFiles(certFile, keyFile string) (*ctls.Certificate, error) {
	certPEM, err := readFile(certFile)
	if err != nil {
		return nil, err
	}
	keyPEM, err := readFile(keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := loadPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s, %s: %w", certFile, keyFile, err)
	}
	return cert, nil
}

// loadCAs reads a PEM bundle of client CA certificates.
func loadCAs(path string) (*x509.CertPool, error) {
	b, err := readFile(path)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return nil, fmt.Errorf("tls: %s: no PEM certificate found", path)
	}
	return pool, nil
}

// validity describes a certificate that is not valid at now, or "".
func validity(leaf *x509.Certificate, now time.Time) string {
	switch {
	case now.After(leaf.NotAfter):
		return "expired " + leaf.NotAfter.UTC().Format(time.RFC3339)
	case now.Before(leaf.NotBefore):
		return "not valid before " + leaf.NotBefore.UTC().Format(time.RFC3339)
	}
	return ""
}
