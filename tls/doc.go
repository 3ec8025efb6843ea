// Package tls holds the certificates the HTTPS front serves and builds its
// server *crypto/tls.Config. Its name collides with crypto/tls: import it as
// routertls.
//
// Certificates come from two places, both read by New:
//
//   - a default pair (--tls-cert, --tls-key), served when the client sends no
//     SNI name or a name no other certificate matches;
//   - a directory (--tls-dir) of pairs named after the host they serve:
//     DIR/<name>.crt holds the PEM certificate chain (leaf first) and
//     DIR/<name>.key its PEM private key. DIR/_wildcard.<domain>.crt/.key
//     (mkcert's naming; a literal "*.<domain>" file name works too) serves
//     *.<domain>: exactly one label below <domain>, as in RFC 6125, so
//     _wildcard.example.com serves a.example.com but neither example.com nor
//     a.b.example.com. File names starting with "." are ignored (editors' and
//     atomic writers' temporaries, Kubernetes' ..data links).
//
// Names are matched case-insensitively. A handshake picks the exact SNI name,
// then the wildcard of its parent domain, then the default; with none of
// them the handshake fails with an alert. A certificate is selected by its
// file name only; a name missing from the certificate's DNS SANs is logged as
// a warning at load, because clients will reject it.
//
// The default files and the directory are polled (Config.PollInterval,
// default 2s): a file is re-read when its inode, size or modification time
// changes, so both an atomic rename-over (certbot, Kubernetes secrets) and an
// in-place rewrite are seen. A pair is swapped in only when both files parse
// and the key matches the certificate; until then the previous certificate
// for that name, if any, stays in service, and the failure is logged once per
// change, not once per poll. A pair whose .crt is removed stops being served.
// Store.Reload (SIGHUP) re-reads every file whatever its fingerprint, for the
// rare rewrite that keeps size and mtime.
//
// Certificates obtained at run time by ACME (package acme) reach handshakes
// through Config.Managed: asked after the directory's names and before the
// default, so a file always wins for its name. Managed also answers the
// TLS-ALPN-01 challenges (RFC 8737) a CA validates with.
//
// SNI certificates that uWSGI nodes deliver in subscription packets
// (sni_key, sni_crt, sni_ca) are NOT read by this package; only files are.
package tls
