package subauth

// replayMemory remembers, per routing key and announced node address, the
// unix time of the last signed datagram accepted. It is independent of the
// routing table, so it survives the node's removal: an unsubscribe captured
// on the wire cannot be replayed after the node re-subscribed, and a
// captured subscribe cannot re-create a node that left.
//
// Bounded: an entry whose time is older than the tolerance is useless (any
// datagram at or before it fails the freshness check anyway) and is pruned;
// at most max entries are kept, and when that many are all fresh a new
// key/address pair is denied (ErrFull) rather than evicting one and
// reopening it to replays. Only datagrams that verify create entries, so
// only a key holder can fill it.
//
// Not safe for concurrent use (the Guard's mutex guards it).
type replayMemory struct {
	max       int
	m         map[string]*int64 // id → last accepted unix time; pointer: refreshes update in place without allocating
	lastPrune int64             // unix seconds
	scratch   []byte
}

// id builds the lookup id of key and address in scratch space; valid until
// the next call.
func (r *replayMemory) id(key, address []byte) []byte {
	b := append(r.scratch[:0], key...)
	b = append(b, 0) // keys and addresses are opaque bytes; the length prefix below makes the split unambiguous
	b = append(b, address...)
	b = append(b, byte(len(key)), byte(len(key)>>8))
	r.scratch = b
	return b
}

// replayed reports whether unix is not newer than the last accepted time
// for id.
func (r *replayMemory) replayed(id []byte, unix int64) bool {
	last, ok := r.m[string(id)]
	return ok && unix <= *last
}

// record remembers unix as the last accepted time for id. It returns false
// when the memory is full of fresh entries.
func (r *replayMemory) record(id []byte, unix, now, tolerance int64) bool {
	if last, ok := r.m[string(id)]; ok {
		*last = unix
		return true
	}
	if now-r.lastPrune >= tolerance || (len(r.m) >= r.max && now != r.lastPrune) {
		r.prune(now - tolerance)
		r.lastPrune = now
	}
	if len(r.m) >= r.max {
		return false
	}
	v := unix
	r.m[string(id)] = &v
	return true
}

// prune drops entries older than oldest.
func (r *replayMemory) prune(oldest int64) {
	for k, last := range r.m {
		if *last < oldest {
			delete(r.m, k)
		}
	}
}

func (r *replayMemory) len() int { return len(r.m) }
