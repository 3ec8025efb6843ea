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
			return nil, fmt.Errorf("unsupported private key type %T (want RSA or Ed25519)", k)
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
// sub's HasUnix, Unix and Sign are overwritten.
func AppendSigned(dst []byte, sub *uwsgi.Subscription, s *Signer, now time.Time) ([]byte, error) {
	sub.HasUnix = true
	sub.Unix = uint64(now.Unix())
	if sub.Unsubscribe {
		sub.Unix++
	}
	sub.Sign = nil
	sig, err := s.Sign(uwsgi.AppendSubscriptionVars(nil, sub))
	if err != nil {
		return dst, err
	}
	sub.Sign = sig
	return uwsgi.AppendSubscription(dst, sub), nil
}
