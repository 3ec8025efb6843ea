package subauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Signer signs subscription datagrams the way a uWSGI node does with
// --subscribe-to ...,DIGEST:private.pem (RSA PKCS#1 v1.5), or with Ed25519,
// which uWSGI cannot do but a Guard accepts. Immutable; safe for concurrent
// use.
type Signer struct {
	hash crypto.Hash
	rsa  *rsa.PrivateKey
	ed   ed25519.PrivateKey
}

// LoadSigner reads "DIGEST:FILE" (uWSGI's syntax): FILE is a PEM private
// key, "RSA PRIVATE KEY" (openssl genrsa -traditional) or "PRIVATE KEY"
// (PKCS#8, RSA or Ed25519: openssl genrsa / genpkey). DIGEST applies to
// RSA keys.
func LoadSigner(spec string) (*Signer, error) {
	name, file, ok := strings.Cut(spec, ":")
	if !ok || file == "" {
		return nil, fmt.Errorf("%q: want DIGEST:KEYFILE", spec)
	}
	h, err := ParseDigest(name)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	return NewSigner(h, data)
}

// NewSigner parses the first private key in PEM data.
func NewSigner(h crypto.Hash, data []byte) (*Signer, error) {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return nil, errors.New("no PRIVATE KEY PEM block")
		}
		switch b.Type {
		case "RSA PRIVATE KEY":
			k, err := x509.ParsePKCS1PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			return &Signer{hash: h, rsa: k}, nil
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				return nil, err
			}
			switch k := k.(type) {
			case *rsa.PrivateKey:
				return &Signer{hash: h, rsa: k}, nil
			case ed25519.PrivateKey:
				return &Signer{hash: h, ed: k}, nil
			}
			return nil, fmt.Errorf("unsupported private key type %s (want RSA or Ed25519)", keyKind(k))
		case "ENCRYPTED PRIVATE KEY":
			return nil, errors.New("encrypted private keys are not supported")
		}
	}
}

// Sign signs msg: RSASSA-PKCS1-v1_5 over DIGEST(msg), as OpenSSL's
// EVP_SignFinal in uWSGI's uwsgi_rsa_sign, or Ed25519 over msg itself.
func (s *Signer) Sign(msg []byte) ([]byte, error) {
	if s.ed != nil {
		return ed25519.Sign(s.ed, msg), nil
	}
	d := s.hash.New()
	d.Write(msg)
	return rsa.SignPKCS1v15(rand.Reader, s.rsa, s.hash, d.Sum(nil))
}

// AppendSigned appends sub as a signed datagram, laid out as a uWSGI 2.0
// node lays it out: the vars, then "unix" = now + the command (so an
// unsubscribe sent in the same second as a subscribe is still newer), then
// "sign" over everything from the vars' first byte up to the sign record.
//
// One addition, which uWSGI routers ignore: a "cmd" var (0 subscribe, 1
// unsubscribe) just before "unix". uWSGI's signature does not cover the
// header, where the command is, so a captured subscribe could be turned
// into an unsubscribe by flipping one byte; a Guard checks a signed "cmd"
// against the header.
//
// sub's HasUnix, Unix and Sign are overwritten.
func AppendSigned(dst []byte, sub *uwsgi.Subscription, s *Signer, now time.Time) ([]byte, error) {
	var cmd uint8
	if sub.Unsubscribe {
		cmd = 1
	}
	sub.HasUnix, sub.Unix, sub.Sign = false, uint64(now.Unix())+uint64(cmd), nil
	start := len(dst)
	dst = append(dst, 0, 0, 0, 0)
	dst = uwsgi.AppendSubscriptionVars(dst, sub)
	dst = uwsgi.AppendVarUint(dst, "cmd", uint64(cmd))
	dst = uwsgi.AppendVarUint(dst, "unix", sub.Unix)
	sub.HasUnix = true
	sig, err := s.Sign(dst[start+uwsgi.HeaderLen:])
	if err != nil {
		return dst[:start], err
	}
	sub.Sign = sig
	dst = uwsgi.AppendVar(dst, []byte("sign"), sig)
	size := len(dst) - start - uwsgi.HeaderLen
	if size > uwsgi.MaxVarsSize {
		return dst[:start], errors.New("subauth: datagram larger than 64 KiB")
	}
	uwsgi.PutHeader(dst[start:], uwsgi.Header{Modifier1: uwsgi.ModSubscription, Size: uint16(size), Modifier2: cmd})
	return dst, nil
}
