package subauth

import (
	"bytes"
	"net/netip"

	"github.com/fastrouter/fastrouter/internal/uwsgi"
)

// Cluster peers relay the nodes they admitted (package cluster). A router
// that checks signatures does not take a peer's word for a node: the peer
// relays the signed datagram that announced the node (the proof), and this
// router checks it as if the datagram had come to its own subscription
// server, with its own key directory and its own replay memory. So every
// router enforces its own rules on every node it routes, whatever the
// peers' configuration, and a forged or replayed cluster message cannot
// put a node into a signed pool. What the peers are still trusted with (and
// what --cluster-secret-file protects) is the rest of the entry: drains,
// removals, attributes and last-seen times.

// AdmitRelayed decides whether a node relayed by a cluster peer may enter
// (or be revived or changed in) the table. key and address are the entry's;
// proof is the signed datagram the peer accepted for it (nil if none). The
// rules:
//
//   - address must be inside --node-allow;
//   - with signatures on, proof must be a signed subscribe for key whose
//     announced address is address as the peer resolved it (":port" takes
//     the IP from the datagram's source, which only the peer saw, so any IP
//     with that port matches; proto=h adds "http://"), fresh, and not
//     older than the newest datagram this router accepted for the key and
//     announced address (equal only if it is that very subscribe, as when
//     the time came with the peer's state); its signature is verified and
//     its time remembered, as for a datagram. A proof no newer than a
//     subscribe this router has verified itself is admitted without
//     verifying again: the key holder's newest word about the node is that
//     it is there.
//
// Nothing is counted here (the cluster counts by Reason). Safe for
// concurrent use. The slices are not retained.
func (g *Guard) AdmitRelayed(key, address, proof []byte) error {
	if d := g.admitRelayed(key, address, proof); d != nil {
		return d
	}
	return nil
}

func (g *Guard) admitRelayed(key, address, proof []byte) *Denial {
	if len(g.nodes) > 0 && !g.nodeAllowed(address) {
		return ErrNodeAddress
	}
	if g.hash == 0 {
		return nil
	}
	if proof == nil {
		return ErrUnsigned
	}
	var sub uwsgi.Subscription
	if uwsgi.ParseSubscription(proof, &sub) != nil {
		return ErrProof
	}
	if sub.Sign == nil || !sub.HasUnix {
		return ErrUnsigned
	}
	if sub.Unsubscribe || !bytes.Equal(sub.Key, key) || !announces(&sub, address) {
		return ErrProof
	}
	now := g.now()
	unix, d := g.fresh(&sub, now.Unix())
	if d != nil {
		return d
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	id := g.seen.id(sub.Key, sub.Address)
	if last := g.seen.get(id); last != nil && unix <= last.unix {
		switch {
		case last.claim && g.keys.get(key, now) != nil:
			return nil
		case unix < last.unix || last.sig == 0 || last.sig != sigID(sub.Sign):
			return ErrReplay
		}
		// The very subscribe another router accepted (its time came with
		// the state): verified here like any new one.
	}
	return g.verifyAndRecord(&sub, proof, id, unix, now, true)
}

// announces reports whether sub's address is what a subscription server
// resolves it to as address (subscription's applier.resolve): the same
// bytes; for ":port", an IP literal followed by those bytes; for proto=h
// without a scheme, "http://" before either.
func announces(sub *uwsgi.Subscription, address []byte) bool {
	a := sub.Address
	if sub.IsHTTP() && !hasHTTPScheme(a) {
		if !hasHTTPScheme(address) {
			return false
		}
		address = address[len("http://"):]
	}
	if len(a) == 0 || a[0] != ':' {
		return bytes.Equal(a, address)
	}
	host, ok := bytes.CutSuffix(address, a)
	if !ok {
		return false
	}
	if len(host) > 2 && host[0] == '[' && host[len(host)-1] == ']' {
		ip, err := netip.ParseAddr(string(host[1 : len(host)-1]))
		return err == nil && ip.Is6()
	}
	ip, err := netip.ParseAddr(string(host))
	return err == nil && ip.Is4()
}

func hasHTTPScheme(a []byte) bool {
	return len(a) >= 7 && bytes.EqualFold(a[:7], []byte("http://"))
}

// SignedTimes calls fn with every time in the replay memory that still
// matters (not older than the tolerance): the newest signed datagram
// accepted per key and announced address, and sig, which identifies that
// datagram if it was a subscribe (0 for an unsubscribe; opaque, for
// RememberSigned). A state file, a binary upgrade's hand-off and a
// cluster's state exchange carry them, so that a datagram captured before
// a restart, or accepted by another router, cannot be replayed here. fn
// runs with the Guard's lock held: it must not call the Guard. Nothing is
// called without signatures.
func (g *Guard) SignedTimes(fn func(key, address string, unix int64, sig uint64)) {
	if g.hash == 0 {
		return
	}
	oldest := g.now().Unix() - g.tolerance
	g.mu.Lock()
	defer g.mu.Unlock()
	for id, s := range g.seen.m {
		if s.unix >= oldest {
			k, a := splitID(id)
			fn(k, a, s.unix, s.sig)
		}
	}
}

// RememberSigned imports a time (and sig) that SignedTimes reported here
// before a restart or at another router: datagrams for key and announced
// address not newer than unix are replays from then on, except that a
// relayed subscribe identified by sig may still be verified and admitted
// (AdmitRelayed). It raises the memory's time, never lowers it; it never
// lets a node in by itself. Times outside the tolerance of now, oversized
// keys or addresses, and times that find the memory full are ignored. Safe
// for concurrent use; the slices are not retained.
func (g *Guard) RememberSigned(key, address []byte, unix int64, sig uint64) {
	if g.hash == 0 || len(key) == 0 || len(key) > uwsgi.MaxKeyLen || len(address) > uwsgi.MaxAddressLen {
		return
	}
	now := g.now().Unix()
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.seen.raise(g.seen.id(key, address), unix, sig, now, g.tolerance) {
		g.changed()
	}
}
