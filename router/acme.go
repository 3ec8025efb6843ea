package router

import (
	"bytes"

	"github.com/valyala/fasthttp"
)

// Challenges answers ACME HTTP-01 challenges (RFC 8555 §8.3) on the clear
// text listeners (--http and --http-to-https), before any routing: a CA
// validating a certificate order asks
// http://<name>/.well-known/acme-challenge/<token> on port 80.
// *acme.Manager implements it.
type Challenges interface {
	// HTTPChallenge returns the key authorization to answer for token at
	// host, or false when no challenge with that token is in progress for
	// host (the request is then routed as any other: an app may answer its
	// own challenges). It must not retain host or token, and must not
	// block.
	HTTPChallenge(host, token []byte) (keyAuth []byte, ok bool)
}

// acmePrefix is where HTTP-01 tokens are asked for (RFC 8555 §8.3).
var acmePrefix = []byte("/.well-known/acme-challenge/")

// alpnChallenge is the protocol a CA validating TLS-ALPN-01 negotiates; such
// a connection carries no request (RFC 8737 §3) and is closed after the
// handshake.
const alpnChallenge = "acme-tls/1"

// answerChallenge answers ctx when it asks for an HTTP-01 token that
// rt.cfg.Challenges knows, and reports whether it did. Only GET and HEAD in
// origin form are considered; the cost for every other request is a prefix
// check.
func (rt *Router) answerChallenge(ctx *fasthttp.RequestCtx) bool {
	if rt.cfg.Challenges == nil {
		return false
	}
	h := &ctx.Request.Header
	uri := h.RequestURI()
	if !bytes.HasPrefix(uri, acmePrefix) || !(h.IsGet() || h.IsHead()) {
		return false
	}
	token := uri[len(acmePrefix):]
	if i := bytes.IndexByte(token, '?'); i >= 0 {
		token = token[:i]
	}
	keyAuth, ok := rt.cfg.Challenges.HTTPChallenge(h.Host(), token)
	if !ok {
		return false
	}
	ctx.SetStatusCode(fasthttp.StatusOK)
	ctx.Response.Header.SetContentTypeBytes(textPlain)
	ctx.SetBody(keyAuth)
	return true
}
