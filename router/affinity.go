package router

import (
	"bytes"
	"errors"
	"strings"

	"github.com/fastrouter/fastrouter/balancer"
	"github.com/fastrouter/fastrouter/internal/ascii"
)

// hashSource is where hash pools find their key (Config.HashKey).
// Immutable.
type hashSource struct {
	header, cookie []byte // one is set
}

// parseHashKey parses "header:NAME" or "cookie:NAME".
func parseHashKey(s string) (hashSource, error) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || name == "" || strings.ContainsAny(name, " \t\r\n;,=") {
		return hashSource{}, errors.New("router: hash key: want header:NAME or cookie:NAME")
	}
	switch kind {
	case "header":
		return hashSource{header: []byte(name)}, nil
	case "cookie":
		return hashSource{cookie: []byte(name)}, nil
	}
	return hashSource{}, errors.New("router: hash key: want header:NAME or cookie:NAME")
}

// affinityKey returns the key iphash and hash pools pick by, or nil (the
// balancer then spreads by weight). It allocates nothing.
//
// iphash: the client, i.e. the right-most X-Forwarded-For entry when the
// peer is a trusted proxy (the address that proxy saw), else the peer's
// address. hash: the configured header's or cookie's value.
func (rt *Router) affinityKey(x *exchange, algo balancer.Algo) []byte {
	r := &x.req
	switch algo {
	case balancer.AlgoIPHash:
		if r.Trusted {
			if v := lastHeader(r.Headers, "x-forwarded-for"); len(v) > 0 {
				if i := bytes.LastIndexByte(v, ','); i >= 0 {
					v = v[i+1:]
				}
				if v = ascii.TrimOWS(v); len(v) > 0 {
					return v
				}
			}
		}
		if !r.Remote.Addr().IsValid() {
			return nil
		}
		x.keyBuf = r.Remote.Addr().Unmap().As16()
		return x.keyBuf[:]
	case balancer.AlgoHash:
		src := &rt.hash
		switch {
		case src.header != nil:
			for i := range r.Headers {
				if ascii.EqualFoldBytes(r.Headers[i].Name, src.header) {
					return r.Headers[i].Value
				}
			}
		case src.cookie != nil:
			for i := range r.Headers {
				if ascii.EqualFold(r.Headers[i].Name, "cookie") {
					if v := cookieValue(r.Headers[i].Value, src.cookie); v != nil {
						return v
					}
				}
			}
		}
	}
	return nil
}

// lastHeader returns the value of the last header named lower (given in
// lower case), or nil.
func lastHeader(hs []hdr, lower string) []byte {
	var v []byte
	for i := range hs {
		if ascii.EqualFold(hs[i].Name, lower) {
			v = hs[i].Value
		}
	}
	return v
}

// cookieValue finds name's value in a Cookie header ("a=1; b=2"), or nil.
func cookieValue(h, name []byte) []byte {
	for len(h) > 0 {
		var pair []byte
		if i := bytes.IndexByte(h, ';'); i >= 0 {
			pair, h = h[:i], h[i+1:]
		} else {
			pair, h = h, nil
		}
		pair = ascii.TrimOWS(pair)
		if eq := bytes.IndexByte(pair, '='); eq > 0 && bytes.Equal(pair[:eq], name) {
			v := pair[eq+1:]
			if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
				v = v[1 : len(v)-1]
			}
			return v
		}
	}
	return nil
}
