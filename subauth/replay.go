package subauth

// replayMemory remembers, per routing key and announced node address, the
// unix time of the last signed datagram accepted. It is independent of the
// routing table, so it survives the node's removal: an unsubscribe captured
// on the wire cannot be replayed after the node re-subscribed, and a
// captured subscribe cannot re-create a node that left.
//
// Times also come from elsewhere (RememberSigned): the state file, the
// previous process of a binary upgrade, other routers of a cluster. Such a
// time only raises the bar for replays; it never counts as a verified
// subscribe (claim), because this process did not check its signature.
//
// Bounded: an entry whose time is older than the tolerance is useless (any
// datagram at or before it fails the freshness check anyway) and is pruned;
// at most max entries are kept, and when that many are all fresh a new
// key/address pair is denied (ErrFull) rather than evicting one and
// reopening it to replays. Only datagrams that verify create entries from
// the network, so only a key holder can fill it; imported times never
// displace fresh entries.
//
// Not safe for concurrent use (the Guard's mutex guards it).
type replayMemory struct {
	max       int
	m         map[string]*seen // id → last accepted; pointer: refreshes update in place without allocating
	lastPrune int64            // unix seconds
	scratch   []byte
}

// seen is what the memory keeps of the last signed datagram accepted for
// one key and address.
type seen struct {
	unix int64
	// sig identifies that datagram when it was a subscribe (0 for an
	// unsubscribe): the first 8 bytes of its signature. RSA PKCS#1 v1.5
	// and Ed25519 signatures are deterministic, so the same subscribe
	// arriving twice (directly and relayed by a peer, or relayed after it
	// was accepted elsewhere) is recognised; an unsubscribe whose header
	// byte was flipped (the header is not signed) is not mistaken for it.
	sig uint64
	// claim: it was a subscribe whose signature this process verified, so
	// the key holder's newest word about the node is "it is here".
	claim bool
	// relayed: it was verified as a peer's relayed datagram (AdmitRelayed).
	relayed bool
}

// id builds the lookup id of key and address in scratch space; valid until
// the next call. Layout: key, 0, address, len(key) as u16 LE (splitID).
func (r *replayMemory) id(key, address []byte) []byte {
	b := append(r.scratch[:0], key...)
	b = append(b, 0) // keys and addresses are opaque bytes; the length suffix makes the split unambiguous
	b = append(b, address...)
	b = append(b, byte(len(key)), byte(len(key)>>8))
	r.scratch = b
	return b
}

// splitID returns the key and address an id was built from.
func splitID(id string) (key, address string) {
	n := len(id)
	kl := int(id[n-2]) | int(id[n-1])<<8
	return id[:kl], id[kl+1 : n-2]
}

// get returns what is remembered for id, or nil.
func (r *replayMemory) get(id []byte) *seen { return r.m[string(id)] }

// record remembers s as the last accepted datagram for id. It returns false
// when the memory is full of fresh entries.
func (r *replayMemory) record(id []byte, s seen, now, tolerance int64) bool {
	if last, ok := r.m[string(id)]; ok {
		*last = s
		return true
	}
	if !r.room(now, tolerance) {
		return false
	}
	v := s
	r.m[string(id)] = &v
	return true
}

// room makes room for one more entry if it can, pruning what is older than
// the tolerance (at most once a second when full, so a flood of new pairs
// cannot make every datagram walk the map).
func (r *replayMemory) room(now, tolerance int64) bool {
	if now-r.lastPrune >= tolerance || (len(r.m) >= r.max && now != r.lastPrune) {
		r.prune(now - tolerance)
		r.lastPrune = now
	}
	return len(r.m) < r.max
}

// raise imports a time accepted elsewhere, with the id of the datagram
// when it was a subscribe (see seen.sig): the entry takes them if unix is
// newer, and is no longer a claim of this process. Times outside
// [now-tolerance, now+tolerance] are ignored (useless, or bogus). It
// reports whether the memory changed.
func (r *replayMemory) raise(id []byte, unix int64, sig uint64, now, tolerance int64) bool {
	if unix < now-tolerance || unix > now+tolerance {
		return false
	}
	if last, ok := r.m[string(id)]; ok {
		if unix <= last.unix {
			return false
		}
		*last = seen{unix: unix, sig: sig}
		return true
	}
	if !r.room(now, tolerance) {
		return false
	}
	r.m[string(id)] = &seen{unix: unix, sig: sig}
	return true
}

// prune drops entries older than oldest.
func (r *replayMemory) prune(oldest int64) {
	for k, last := range r.m {
		if last.unix < oldest {
			delete(r.m, k)
		}
	}
}

func (r *replayMemory) len() int { return len(r.m) }

// sigID is the first 8 bytes of a signature (zero-padded), see seen.sig.
func sigID(sig []byte) uint64 {
	var v uint64
	for i := 0; i < 8 && i < len(sig); i++ {
		v |= uint64(sig[i]) << (8 * i)
	}
	return v
}
