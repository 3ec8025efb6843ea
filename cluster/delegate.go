package cluster

import (
	"bytes"
	"context"
	"log/slog"
	"time"

	"github.com/hashicorp/memberlist"
)

// delegate is the Cluster as memberlist's Delegate. memberlist calls it
// from its packet and stream goroutines, concurrently; none of the methods
// blocks on anything but Cluster.mu.
type delegate Cluster

var _ memberlist.Delegate = (*delegate)(nil)

func (d *delegate) NodeMeta(int) []byte { return nil }

// NotifyMsg merges one broadcast. msg is only valid during the call.
func (d *delegate) NotifyMsg(msg []byte) {
	c := (*Cluster)(d)
	var m message
	if err := decodeMessage(msg, &m); err != nil {
		c.m.messages.WithLabelValues("invalid").Inc()
		c.log.Debug("cluster: invalid message dropped", "err", err, "bytes", len(msg))
		return
	}
	if (m.kind == kindBlob || m.kind == kindBlobAck) && !c.BlobsShared() {
		// Blobs carry private keys: never taken from an unencrypted cluster.
		c.m.messages.WithLabelValues("invalid").Inc()
		return
	}
	now := c.now().UnixNano()
	c.mu.Lock()
	var changed, ack bool
	switch m.kind {
	case kindEntry:
		changed = c.mergeLocked(&m.entry, now)
	case kindReport:
		changed = c.mergeReportLocked(&m.report)
	case kindBlob:
		changed, ack = c.mergeBlobLocked(&m.blob)
	case kindBlobAck:
		c.mergeBlobAckLocked(&m.ack)
	}
	c.mu.Unlock()
	if ack {
		c.sendAck(m.blob.key, m.blob.at)
	}
	switch {
	case changed && m.kind == kindBlob:
		c.m.messages.WithLabelValues("applied").Inc()
		c.notifyBlobs([]string{string(m.blob.key)})
	case changed:
		c.m.messages.WithLabelValues("applied").Inc()
		c.kick()
	default:
		c.m.messages.WithLabelValues("stale").Inc()
	}
}

// GetBroadcasts hands memberlist the queued broadcasts that fit a packet.
func (d *delegate) GetBroadcasts(overhead, limit int) [][]byte {
	return d.queue.GetBroadcasts(overhead, limit)
}

// LocalState encodes the full replicated state for a push/pull.
func (d *delegate) LocalState(join bool) []byte {
	c := (*Cluster)(d)
	start := time.Now()
	msg := c.encodeState()
	c.m.syncBytes.Set(float64(len(msg)))
	c.log.Debug("cluster: state sent", "join", join, "bytes", len(msg), "took", time.Since(start))
	return msg
}

// MergeRemoteState merges a peer's full state.
func (d *delegate) MergeRemoteState(buf []byte, join bool) {
	c := (*Cluster)(d)
	start := time.Now()
	n, changed, err := c.mergeState(buf)
	if err != nil {
		c.m.messages.WithLabelValues("invalid").Inc()
		c.log.Warn("cluster: peer state rejected", "err", err, "bytes", len(buf), "entries_merged", n)
	}
	c.log.Debug("cluster: state merged", "join", join, "entries", n, "changed", changed, "took", time.Since(start))
}

// encodeState builds a kind-3 message of every entry.
func (c *Cluster) encodeState() []byte {
	base := c.now().UnixNano()
	c.mu.Lock()
	raw := make([]byte, 0, c.lastState+c.lastState/8+64)
	raw = appendUvarint(raw, uint64(len(c.pools)))
	for key, nodes := range c.pools {
		raw = appendStr(raw, key)
		raw = appendUvarint(raw, uint64(len(nodes)))
		for _, e := range nodes {
			raw = appendEntry(raw, base, e)
		}
	}
	c.lastState = len(raw)
	c.mu.Unlock()
	raw = c.appendReplayMemory(raw)
	return c.z.sealState(base, c.appendBlobSection(raw, base))
}

// appendReplayMemory appends the state's signed section: the replay
// memory, so that a router that joins (or any peer, at each sync) refuses
// a datagram older than the newest any router accepted. Called without mu
// (the memory has its own lock).
func (c *Cluster) appendReplayMemory(raw []byte) []byte {
	if c.cfg.Signed == nil {
		return raw
	}
	var body []byte
	n := 0
	c.cfg.Signed.SignedTimes(func(key, addr string, unix int64, sig uint64) {
		if key == "" || len(key) > maxKeyLen || len(addr) > maxAddrLen {
			return // never from a datagram that parsed
		}
		body = appendSignedRec(body, key, addr, unix, sig)
		n++
	})
	return appendSigned(raw, n, body)
}

// mergeState merges a kind-3 message; it returns the entries read and how
// many changed something.
func (c *Cluster) mergeState(buf []byte) (n, changed int, err error) {
	raw, base, err := c.z.decompressState(buf)
	if err != nil {
		return 0, 0, err
	}
	now := c.now().UnixNano()
	// Decompression happened before the lock; merging runs under it in one
	// pass (tens of ms for 50k entries), so Origin never waits long.
	c.mu.Lock()
	var remember func(key, addr []byte, unix int64, sig uint64)
	if c.cfg.Signed != nil {
		remember = c.cfg.Signed.RememberSigned // lock order: mu, then the memory's
	}
	var blobs func(w *wireBlob)
	var blobKeys []string
	if c.BlobsShared() {
		blobs = func(w *wireBlob) {
			if ch, _ := c.mergeBlobLocked(w); ch {
				blobKeys = append(blobKeys, string(w.key))
			}
		}
	}
	n, err = decodeRawState(raw, base, func(w *wireEntry) {
		if c.mergeLocked(w, now) {
			changed++
		}
	}, remember, blobs)
	c.mu.Unlock()
	if changed > 0 {
		c.kick()
	}
	c.notifyBlobs(blobKeys)
	return n, changed + len(blobKeys), err
}

// kick wakes the applier.
func (c *Cluster) kick() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// broadcast is one queued message. Its name is the entry (or the report's
// router and entry) it is about, so a newer message about the same thing
// replaces an older one still in the queue: each carries the whole entry,
// so nothing is lost.
type broadcast struct {
	name string
	msg  []byte
}

var _ memberlist.NamedBroadcast = (*broadcast)(nil)

func (b *broadcast) Invalidates(memberlist.Broadcast) bool { return false }
func (b *broadcast) Name() string                          { return b.name }
func (b *broadcast) Message() []byte                       { return b.msg }
func (b *broadcast) Finished()                             {}

// queueBroadcast queues msg under name and keeps the queue bounded.
func (c *Cluster) queueBroadcast(name string, msg []byte) {
	c.queue.QueueBroadcast(&broadcast{name: name, msg: msg})
	if c.queue.NumQueued() > c.cfg.MaxQueue {
		c.queue.Prune(c.cfg.MaxQueue)
		c.m.dropped.Inc()
	}
}

// events is the Cluster as memberlist's EventDelegate: it keeps the live
// member set that drains wait on. memberlist never calls it concurrently.
type events Cluster

var _ memberlist.EventDelegate = (*events)(nil)

func (ev *events) NotifyJoin(n *memberlist.Node) {
	c := (*Cluster)(ev)
	c.mu.Lock()
	c.members[routerID(n.Name)] = memberInfo{name: n.Name, addr: n.Address()}
	delete(c.failed, n.Address())
	count := len(c.members)
	c.memberCount.Store(int32(count))
	c.mu.Unlock()
	c.log.Info("cluster: member joined", "member", n.Name, "addr", n.Address(), "members", count)
	c.notifyMembers()
}

func (ev *events) NotifyLeave(n *memberlist.Node) {
	c := (*Cluster)(ev)
	left := n.State == memberlist.StateLeft
	c.mu.Lock()
	delete(c.members, routerID(n.Name))
	if !left && n.Name != c.cfg.Name {
		c.failed[n.Address()] = c.now()
	}
	count := len(c.members)
	c.memberCount.Store(int32(count))
	c.mu.Unlock()
	if n.Name == c.cfg.Name {
		return // our own shutdown
	}
	c.notifyMembers()
	how := "failed"
	if left {
		how = "left"
	}
	c.log.Info("cluster: member gone", "member", n.Name, "addr", n.Address(), "how", how, "members", count)
	// Drains that waited on it may be able to finish now; Tick asks again.
}

func (ev *events) NotifyUpdate(n *memberlist.Node) {
	c := (*Cluster)(ev)
	c.mu.Lock()
	if _, ok := c.members[routerID(n.Name)]; ok {
		c.members[routerID(n.Name)] = memberInfo{name: n.Name, addr: n.Address()}
	}
	c.mu.Unlock()
}

// logWriter routes memberlist's "[LEVEL] memberlist: text" lines into slog.
type logWriter struct{ log *slog.Logger }

func (w *logWriter) Write(p []byte) (int, error) {
	line := bytes.TrimRight(p, "\n")
	level := slog.LevelInfo
	for _, l := range []struct {
		tag   string
		level slog.Level
	}{{"[DEBUG] ", slog.LevelDebug}, {"[INFO] ", slog.LevelInfo}, {"[WARN] ", slog.LevelWarn}, {"[ERR] ", slog.LevelError}} {
		if i := bytes.Index(line, []byte(l.tag)); i >= 0 {
			level, line = l.level, line[i+len(l.tag):]
			break
		}
	}
	if w.log.Enabled(context.Background(), level) {
		w.log.Log(context.Background(), level, string(bytes.TrimPrefix(line, []byte("memberlist: "))), "component", "memberlist")
	}
	return len(p), nil
}
