package cluster

import (
	"context"
	"errors"
	"sort"
	"strings"
	"time"
)

// Blobs are a small replicated map of opaque values by key, for what other
// packages share across the cluster (package acme: certificates and their
// keys, the ACME account, challenge tokens, order requests). The cluster
// does not look inside them.
//
// Each key is a last-writer-wins register ordered by a stamp of the hybrid
// clock (state.go); a delete is a tombstone, forgotten after
// blobTombstoneTTL. A change made here travels
//
//   - by gossip when its message fits a packet (challenge tokens, order
//     requests: a few hundred bytes), else
//   - over memberlist's reliable (TCP) channel to every live member
//     (certificates: a few KiB), and
//   - in every full state (push/pull), so a router that joins later, or
//     missed a message, gets every blob at its first sync.
//
// PutBlob with wait returns once every live member has confirmed it holds
// the value (or a newer one): an ACME challenge token must be answerable by
// any router before the CA is told to validate.
//
// Blobs carry private keys, so they are shared only in an encrypted cluster
// (Config.SecretKey): without it the blob methods fail with
// ErrBlobsNotShared, no state carries blobs and blob messages received are
// dropped as invalid.
//
// Bounds: a key is at most maxBlobKeyLen bytes of printable text, a value
// at most MaxBlobLen bytes, and keys plus values at most Config.MaxBlobBytes
// (default DefaultMaxBlobBytes, 8 MiB: about 2,000 certificates with their
// keys and metadata), so that a full state stays far below memberlist's
// 20 MB push/pull limit. A blob over the bound is refused (PutBlob returns
// ErrBlobsFull; a peer's is not merged and counts in
// fastrouter_cluster_blobs_refused_total).

// Blob bounds and timings.
const (
	maxBlobKeyLen       = 512
	MaxBlobLen          = 64 << 10 // largest value
	DefaultMaxBlobBytes = 8 << 20
	maxBlobs            = 1 << 16 // keys, tombstones included
	blobTombstoneTTL    = time.Hour
	// gossipBlobMax is the largest blob message sent by gossip; larger ones
	// go over TCP. memberlist packets carry ~1400 bytes.
	gossipBlobMax = 1024
	// reliableQueue bounds the large blob messages waiting to be sent;
	// beyond it they are dropped (counted) and the next push/pull carries
	// them.
	reliableQueue = 256
)

// Blob errors.
var (
	ErrBlobsNotShared = errors.New("cluster: blobs are shared only when the cluster is encrypted (--cluster-secret-file)")
	ErrBlobTooLarge   = errors.New("cluster: blob key or value too large")
	ErrBlobsFull      = errors.New("cluster: replicated blobs at their size bound")
)

// BlobWatcher hears of changes other routers made to the blobs, and of
// membership changes. Calls come from memberlist's and the cluster's
// goroutines, never with a cluster lock held: they may read the blobs but
// must return quickly.
type BlobWatcher interface {
	// BlobChanged: key now has another value, or was deleted, because of
	// a peer. Changes made through this router's own PutBlob and
	// DeleteBlob are not reported.
	BlobChanged(key string)
	// MembersChanged: a member joined or left; Leader may have changed.
	MembersChanged()
}

// blob is one replicated value. Guarded by Cluster.mu; val is never
// modified in place (readers outside mu copy it).
type blob struct {
	val       []byte
	at        stamp
	deleted   bool
	changedAt int64 // local unix ns of the last change (tombstone GC)
}

// ackWait is a PutBlob waiting for every live member to confirm (key, at).
// Guarded by Cluster.mu.
type ackWait struct {
	key   string
	at    stamp
	acked map[uint64]bool
}

// wireBlob is a decoded blob (message or state record). Slices alias the
// input.
type wireBlob struct {
	key     []byte
	at      stamp
	deleted bool
	ack     bool // message only: the sender waits for acknowledgements
	val     []byte
}

// wireBlobAck is a decoded kind-5 message: router holds (key, at) or newer.
type wireBlobAck struct {
	key    []byte
	at     stamp
	router uint64
}

// SetBlobWatcher installs w (nil: none). It may be called at any time.
func (c *Cluster) SetBlobWatcher(w BlobWatcher) {
	if w == nil {
		c.watcher.Store(nil)
		return
	}
	c.watcher.Store(&w)
}

func (c *Cluster) watch() BlobWatcher {
	if p := c.watcher.Load(); p != nil {
		return *p
	}
	return nil
}

// BlobsShared reports whether blobs travel: the cluster is encrypted.
func (c *Cluster) BlobsShared() bool { return len(c.cfg.SecretKey) > 0 }

func (c *Cluster) checkBlob(key string, n int) error {
	if !c.BlobsShared() {
		return ErrBlobsNotShared
	}
	if key == "" || len(key) > maxBlobKeyLen || !validText([]byte(key)) || n > MaxBlobLen {
		return ErrBlobTooLarge
	}
	return nil
}

// PutBlob sets key to val (copied) on every router. With wait it returns
// only when every live member has confirmed the value, or ctx ends (its
// error then; the value stays set and keeps travelling).
func (c *Cluster) PutBlob(ctx context.Context, key string, val []byte, wait bool) error {
	if err := c.checkBlob(key, len(val)); err != nil {
		return err
	}
	at := stamp{c.clock.tick(), c.id}
	c.mu.Lock()
	if err := c.setBlobLocked(key, append([]byte{}, val...), false, at); err != nil {
		c.mu.Unlock()
		return err
	}
	var w *ackWait
	if wait {
		w = &ackWait{key: key, at: at, acked: map[uint64]bool{}}
		c.acks[key] = w
	}
	msg := appendBlobMsg(nil, c.now().UnixNano(), key, at, false, wait, val)
	c.mu.Unlock()
	c.sendBlob(key, msg)
	if w == nil {
		return nil
	}
	return c.awaitAcks(ctx, w)
}

// DeleteBlob deletes key on every router.
func (c *Cluster) DeleteBlob(key string) error {
	if err := c.checkBlob(key, 0); err != nil {
		return err
	}
	at := stamp{c.clock.tick(), c.id}
	c.mu.Lock()
	if b := c.blobs[key]; b == nil || b.deleted {
		c.mu.Unlock()
		return nil
	}
	err := c.setBlobLocked(key, nil, true, at)
	msg := appendBlobMsg(nil, c.now().UnixNano(), key, at, true, false, nil)
	c.mu.Unlock()
	if err == nil {
		c.sendBlob(key, msg)
	}
	return err
}

// SeedBlob sets key to val as of at, unless the replicated map already
// holds a version at least as new: a router that starts with values saved
// on its disk offers them without overwriting newer ones a peer has. It
// sends nothing; the next push/pull carries the value. It reports whether
// the value was taken.
func (c *Cluster) SeedBlob(key string, val []byte, at time.Time) (bool, error) {
	if err := c.checkBlob(key, len(val)); err != nil {
		return false, err
	}
	st := stamp{at.UnixNano(), c.id}
	c.mu.Lock()
	defer c.mu.Unlock()
	if b := c.blobs[key]; b != nil && !st.after(b.at) {
		return false, nil
	}
	c.clock.observe(st.ver)
	if err := c.setBlobLocked(key, append([]byte{}, val...), false, st); err != nil {
		return false, err
	}
	return true, nil
}

// Blob returns a copy of key's value and the time of its version.
func (c *Cluster) Blob(key string) (val []byte, at time.Time, ok bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	b := c.blobs[key]
	if b == nil || b.deleted {
		return nil, time.Time{}, false
	}
	return append([]byte{}, b.val...), time.Unix(0, b.at.ver), true
}

// BlobKeys returns the live keys starting with prefix, sorted.
func (c *Cluster) BlobKeys(prefix string) []string {
	c.mu.Lock()
	var out []string
	for k, b := range c.blobs {
		if !b.deleted && strings.HasPrefix(k, prefix) {
			out = append(out, k)
		}
	}
	c.mu.Unlock()
	sort.Strings(out)
	return out
}

// Leader returns the name of the live member with the lowest name, this
// router included (itself before Start): the router that does what the
// cluster wants done once (package acme: ordering certificates), chosen as
// the drain notifier is when a drain's origin is gone. Every router
// computes the same from the same membership; while membership changes,
// two routers may briefly both consider themselves the leader.
func (c *Cluster) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	best := c.cfg.Name
	for _, m := range c.members {
		if m.name < best {
			best = m.name
		}
	}
	return best
}

// IsLeader reports whether this router is the Leader.
func (c *Cluster) IsLeader() bool { return c.Leader() == c.cfg.Name }

// setBlobLocked stores a version, keeping the byte bound.
func (c *Cluster) setBlobLocked(key string, val []byte, deleted bool, at stamp) error {
	b := c.blobs[key]
	old := 0
	if b != nil {
		old = len(key) + len(b.val)
	} else if len(c.blobs) >= maxBlobs {
		return ErrBlobsFull
	}
	if grow := len(key) + len(val) - old; grow > 0 && c.blobBytes+grow > c.cfg.MaxBlobBytes {
		return ErrBlobsFull
	}
	if b == nil {
		b = &blob{}
		c.blobs[key] = b
	}
	c.blobBytes += len(key) + len(val) - old
	b.val, b.at, b.deleted, b.changedAt = val, at, deleted, c.now().UnixNano()
	return nil
}

// mergeBlobLocked merges a peer's blob. changed: it replaced ours (the
// watcher is told). ack: the sender waits for acknowledgements, and we now
// hold its version or a newer one.
func (c *Cluster) mergeBlobLocked(w *wireBlob) (changed, ack bool) {
	c.clock.observe(w.at.ver)
	if b := c.blobs[string(w.key)]; b != nil && !w.at.after(b.at) {
		return false, w.ack
	}
	var val []byte
	if !w.deleted {
		val = append([]byte{}, w.val...)
	}
	if err := c.setBlobLocked(string(w.key), val, w.deleted, w.at); err != nil {
		c.m.blobsRefused.Inc()
		return false, false
	}
	return true, w.ack
}

// mergeBlobAckLocked records a member's acknowledgement.
func (c *Cluster) mergeBlobAckLocked(a *wireBlobAck) {
	if w := c.acks[string(a.key)]; w != nil && !w.at.after(a.at) {
		w.acked[a.router] = true
	}
}

// ackedLocked reports whether every live member but this one acknowledged w.
func (c *Cluster) ackedLocked(w *ackWait) bool {
	for id := range c.members {
		if id != c.id && !w.acked[id] {
			return false
		}
	}
	return true
}

// awaitAcks waits until w is acknowledged by every live member (members
// that leave meanwhile are not waited for), or ctx ends.
func (c *Cluster) awaitAcks(ctx context.Context, w *ackWait) error {
	defer func() {
		c.mu.Lock()
		if c.acks[w.key] == w {
			delete(c.acks, w.key)
		}
		c.mu.Unlock()
	}()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		c.mu.Lock()
		done := c.ackedLocked(w)
		c.mu.Unlock()
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-c.stop:
			return errStopped
		case <-t.C:
		}
	}
}

// sendBlob sends a blob message: by gossip when it fits a packet, else to
// the reliable sender.
func (c *Cluster) sendBlob(key string, msg []byte) {
	if len(msg) <= gossipBlobMax {
		c.queueBroadcast("b\x00"+key, msg)
		return
	}
	select {
	case c.reliable <- msg:
	default:
		c.m.dropped.Inc() // the next push/pull carries it
	}
}

// sendAck gossips this router's acknowledgement of (key, at).
func (c *Cluster) sendAck(key []byte, at stamp) {
	msg := appendBlobAckMsg(nil, c.now().UnixNano(), key, at, c.id)
	c.queueBroadcast("a\x00"+string(key), msg)
}

// reliableLoop sends large blob messages to every live member over TCP,
// one member at a time (each send is bounded by memberlist's TCPTimeout).
func (c *Cluster) reliableLoop() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stop:
			return
		case msg := <-c.reliable:
			ml := c.ml.Load()
			if ml == nil {
				continue
			}
			for _, n := range ml.Members() {
				if n.Name == c.cfg.Name {
					continue
				}
				if err := ml.SendReliable(n, msg); err != nil {
					c.log.Debug("cluster: blob not sent; the next sync carries it", "member", n.Name, "err", err)
				}
				select {
				case <-c.stop:
					return
				default:
				}
			}
		}
	}
}

// collectBlobsLocked forgets tombstones older than blobTombstoneTTL.
func (c *Cluster) collectBlobsLocked(now int64) {
	for k, b := range c.blobs {
		if b.deleted && now-b.changedAt > int64(blobTombstoneTTL) {
			c.blobBytes -= len(k)
			delete(c.blobs, k)
		}
	}
}

// appendBlobSection appends the state's blob section (nothing when there
// are no blobs or they are not shared).
func (c *Cluster) appendBlobSection(raw []byte, base int64) []byte {
	if !c.BlobsShared() {
		return raw
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.blobs) == 0 {
		return raw
	}
	raw = append(raw, 0) // section marker (see the wire format)
	raw = appendUvarint(raw, uint64(len(c.blobs)))
	for k, b := range c.blobs {
		raw = appendBlobRec(raw, base, k, b.at, b.deleted, b.val)
	}
	return raw
}

// notifyBlobs tells the watcher about keys changed by a peer.
func (c *Cluster) notifyBlobs(keys []string) {
	if w := c.watch(); w != nil {
		for _, k := range keys {
			w.BlobChanged(k)
		}
	}
}

func (c *Cluster) notifyMembers() {
	if w := c.watch(); w != nil {
		w.MembersChanged()
	}
}

// Members returns the live members' names, sorted (this router included
// once started).
func (c *Cluster) Members() []string {
	c.mu.Lock()
	out := make([]string, 0, len(c.members))
	for _, m := range c.members {
		out = append(out, m.name)
	}
	c.mu.Unlock()
	sort.Strings(out)
	return out
}
