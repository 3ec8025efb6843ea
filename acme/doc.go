// Package acme is fastrouter's automatic HTTPS: it obtains certificates
// from an ACME CA (RFC 8555; Let's Encrypt by default) for the names it is
// given (--acme-domain) and, on demand, for the names of subscribed pools
// (--acme-on-demand), keeps them renewed, staples OCSP responses, and in a
// router cluster orders each name once and shares the result. docs/acme.md
// is the operator's guide.
//
// Libraries: certmagic (github.com/caddyserver/certmagic) does the
// certificate work (storage layout, keys, CSRs, locks, obtain and renew),
// acmez (github.com/mholt/acmez, certmagic's own ACME client) speaks the
// protocol. x/crypto/acme/autocert was the smaller alternative; it was not
// chosen because its Cache has no locks (two routers would order twice),
// it keeps TLS-ALPN-01 challenge certificates in memory only (another
// router cannot answer them), and it has no renewal information (ARI) nor
// OCSP stapling. This package does not use certmagic's ACMEIssuer either:
// its challenge solvers bind ports 80 and 443 themselves when nothing
// listens there; issuer.go orders through acmez with solvers that answer
// on the router's own listeners (challenge.go).
//
// What the router consumes (consumer-side interfaces):
//
//   - Manager.GetCertificate is tls.Config.Managed: certificates in
//     service by SNI name, and TLS-ALPN-01 challenge certificates for a CA
//     offering only acme-tls/1;
//   - Manager.HTTPChallenge is router.Config.Challenges: HTTP-01 tokens on
//     the --http listeners, before routing;
//   - Manager.ServeHTTP is GET /api/certificates; Certificates feeds the
//     status page;
//   - Manager.BlobChanged and MembersChanged are cluster.BlobWatcher.
//
// Cluster (Config.Cluster, encrypted): the leader, the live member with
// the lowest name, is the only router that orders (order.go). Everything
// certmagic stores (the account, certificates, keys, metadata, OCSP
// staples) is written to the local directory and put to the cluster as
// blobs (storage.go); every router writes what it receives to its own
// directory and serves from it (served.go), so a router that joins later
// gets every certificate in its first state sync, and a restart finds them
// on disk. Challenge tokens travel too, and the leader tells the CA to
// validate only once every live member confirmed it holds the token. Other
// routers ask the leader for names (their --acme-domain, and on-demand
// requests) with want blobs. No shared disk is needed.
package acme
