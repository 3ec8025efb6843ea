package subauth

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ParseSignCheck parses --subscriptions-sign-check "DIGEST:DIR". DIGEST is
// an OpenSSL digest name as uWSGI takes it (SHA1, SHA256, SHA384, SHA512,
// any case; SHA2-256 and friends too).
func ParseSignCheck(s string) (crypto.Hash, string, error) {
	name, dir, ok := strings.Cut(s, ":")
	if !ok || dir == "" {
		return 0, "", fmt.Errorf("%q: want DIGEST:DIR", s)
	}
	h, err := ParseDigest(name)
	if err != nil {
		return 0, "", err
	}
	return h, dir, nil
}

// ParseDigest maps an OpenSSL digest name to a crypto.Hash.
func ParseDigest(name string) (crypto.Hash, error) {
	switch strings.ToUpper(name) {
	case "SHA1", "SHA-1":
		return crypto.SHA1, nil
	case "SHA256", "SHA-256", "SHA2-256":
		return crypto.SHA256, nil
	case "SHA384", "SHA-384", "SHA2-384":
		return crypto.SHA384, nil
	case "SHA512", "SHA-512", "SHA2-512":
		return crypto.SHA512, nil
	}
	return 0, fmt.Errorf("unsupported digest %q (want SHA1, SHA256, SHA384 or SHA512)", name)
}

// KeyFile is the file name of key's public key in the key directory, as
// uWSGI's uwsgi_sanitize_cert_filename builds it: every byte outside
// [0-9A-Za-z._-] becomes '_', then ".pem". No name can leave the directory:
// '/' is replaced.
func KeyFile(key []byte) string {
	return string(appendKeyFile(nil, key))
}

func appendKeyFile(dst, key []byte) []byte {
	for _, c := range key {
		switch {
		case '0' <= c && c <= '9', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', c == '.', c == '-', c == '_':
		default:
			c = '_'
		}
		dst = append(dst, c)
	}
	return append(dst, ".pem"...)
}

// maxKeyFile bounds what is read of one key file.
const maxKeyFile = 64 << 10

// keyRecheck is how long a key file, once loaded, is used without looking
// at the file again. A replaced or deleted key takes effect within it.
const keyRecheck = time.Second

// pubKey is one loaded public key file (or a file that failed to load:
// err set, so that a bad file is reported once, not on every datagram).
// Owned by keyCache.
type pubKey struct {
	rsa     *rsa.PublicKey
	ed      ed25519.PublicKey
	err     error
	checked time.Time // last stat of the file
	mod     time.Time // the file's mtime and size when loaded
	size    int64
}

func (k *pubKey) verify(h crypto.Hash, msg, sig []byte) bool {
	switch {
	case k.ed != nil:
		return len(sig) == ed25519.SignatureSize && ed25519.Verify(k.ed, msg, sig)
	case k.rsa != nil:
		d := h.New()
		d.Write(msg)
		return rsa.VerifyPKCS1v15(k.rsa, h, d.Sum(nil), sig) == nil
	}
	return false
}

// keyCache loads public keys from the key directory on demand and keeps
// them while their file is unchanged. Not safe for concurrent use (the
// Guard's mutex guards it). Bounded: only files that exist are kept.
type keyCache struct {
	dir     string
	log     *slog.Logger
	m       map[string]*pubKey // by file name
	scratch []byte
}

// get returns the usable public key for routing key key, or nil.
func (c *keyCache) get(key []byte, now time.Time) *pubKey {
	c.scratch = appendKeyFile(c.scratch[:0], key)
	e := c.m[string(c.scratch)]
	if e != nil && now.Sub(e.checked) < keyRecheck && now.Sub(e.checked) >= 0 {
		if e.err != nil {
			return nil
		}
		return e
	}
	name := string(c.scratch)
	path := filepath.Join(c.dir, name)
	fi, err := os.Stat(path)
	if err != nil {
		delete(c.m, name) // gone (or never there): no entry, nothing kept
		return nil
	}
	if e != nil && fi.ModTime().Equal(e.mod) && fi.Size() == e.size {
		e.checked = now
		if e.err != nil {
			return nil
		}
		return e
	}
	e = &pubKey{checked: now, mod: fi.ModTime(), size: fi.Size()}
	if e.rsa, e.ed, e.err = readPublicKey(path); e.err != nil {
		c.log.Warn("subscription key file unusable; datagrams for its key are denied",
			"file", path, "err", e.err)
	}
	c.m[name] = e
	if e.err != nil {
		return nil
	}
	return e
}

func readPublicKey(path string) (*rsa.PublicKey, ed25519.PublicKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, nil, err
	}
	if len(data) > maxKeyFile {
		return nil, nil, errors.New("larger than 64 KiB")
	}
	return ParsePublicKey(data)
}

// ParsePublicKey reads the first public key in PEM data: "PUBLIC KEY"
// (SubjectPublicKeyInfo, what openssl rsa -pubout and openssl pkey -pubout
// write, and what uWSGI's PEM_read_PUBKEY reads) holding an RSA or Ed25519
// key, or "RSA PUBLIC KEY" (PKCS#1).
func ParsePublicKey(data []byte) (*rsa.PublicKey, ed25519.PublicKey, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, nil, errors.New("no PUBLIC KEY PEM block")
		}
		switch b.Type {
		case "PUBLIC KEY":
			k, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			switch k := k.(type) {
			case *rsa.PublicKey:
				return k, nil, nil
			case ed25519.PublicKey:
				return nil, k, nil
			}
			return nil, nil, fmt.Errorf("unsupported public key type %s (want RSA or Ed25519)", keyKind(k))
		case "RSA PUBLIC KEY":
			k, err := x509.ParsePKCS1PublicKey(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			return k, nil, nil
		}
	}
}

// keyKind names a key's algorithm for the operator who must replace it
// (rather than its Go type).
func keyKind(k any) string {
	switch k.(type) {
	case *ecdsa.PrivateKey, *ecdsa.PublicKey:
		return "ECDSA"
	case *ecdh.PrivateKey, *ecdh.PublicKey:
		return "ECDH (X25519)"
	}
	return "unknown"
}
