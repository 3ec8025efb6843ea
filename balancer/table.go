// Package balancer holds the routing table: host keys mapped to pools of
// backend nodes, the nodes' state and counters, and the algorithms that pick a
// node for a request.
//
// Reads are lock-free: a lookup is one atomic load of a copy-on-write shard
// map plus plain map reads, and allocates nothing. Writers (subscriptions,
// expiry, the admin API, static configuration) serialise on the Table's mutex
// and publish new maps. Refreshes of known nodes only touch atomics, so the
// common announce never copies anything.
//
// The package knows nothing of HTTP, sockets or uwsgi; callers feed it
// announces and ask it for nodes.
package balancer

import (
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// shardCount splits the key space so that creating a pool copies 1/64 of the
// table, which keeps bulk loads (state files, cluster sync) near-linear.
const shardCount = 64

// shard is an immutable snapshot; writers build a new one and swap it in.
type shard struct {
	exact map[string]*Pool // key as announced
	lower map[string]*Pool // lower-cased key → first pool that folds to it
	wild  map[string]*Pool // ".example.com" for keys "*.example.com" and ".example.com"
}

// Config configures a Table. The zero value is usable.
type Config struct {
	// DefaultAlgo is the algorithm of pools created without one. Default wrr.
	DefaultAlgo Algo
	// FallbackKey names the pool used when no key matches a host. Empty: none.
	FallbackKey string
	// Now is the clock; nil means time.Now. Tests inject a fake.
	Now func() time.Time
	// OnChange, if set, is called after every structural change (pool or node
	// added or removed) with the pool key. It runs with the table lock held
	// and must not call back into the Table.
	OnChange func(key string)
}

// Table maps routing keys to pools. It is safe for concurrent use.
type Table struct {
	cfg Config

	mu     sync.Mutex // serialises writers
	shards [shardCount]atomic.Pointer[shard]
	count  atomic.Int64 // number of pools
}

// New returns an empty table.
func New(cfg Config) (*Table, error) {
	if cfg.DefaultAlgo == "" {
		cfg.DefaultAlgo = AlgoWRR
	}
	if _, err := ParseAlgo(string(cfg.DefaultAlgo)); err != nil {
		return nil, err
	}
	if len(cfg.FallbackKey) > maxKeyLen {
		return nil, ErrKeyTooLong
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	t := &Table{cfg: cfg}
	for i := range t.shards {
		t.shards[i].Store(&shard{exact: map[string]*Pool{}, lower: map[string]*Pool{}, wild: map[string]*Pool{}})
	}
	return t, nil
}

// Now returns the table's clock reading.
func (t *Table) Now() time.Time { return t.cfg.Now() }

const maxKeyLen = 255

// Errors returned by writers.
var (
	ErrKeyTooLong = errors.New("balancer: key longer than 255 bytes")
	ErrEmptyKey   = errors.New("balancer: empty key")
)

// lowerInto lower-cases ASCII b into buf and returns the filled prefix; ok is
// false when b does not fit.
func lowerInto(buf *[maxKeyLen]byte, b []byte) ([]byte, bool) {
	if len(b) > len(buf) {
		return nil, false
	}
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		buf[i] = c
	}
	return buf[:len(b)], true
}

// shardOf hashes an already lower-cased key (FNV-1a).
func shardOf(lower []byte) int {
	h := uint32(2166136261)
	for _, c := range lower {
		h ^= uint32(c)
		h *= 16777619
	}
	return int(h % shardCount)
}

// Lookup finds the pool for a request host: the exact key, then the key
// compared case-insensitively, then both again with the port removed, then
// wildcard keys ("*.example.com" or uWSGI's ".example.com", longest suffix
// first), then the fallback key. It returns nil when nothing matches.
// Lookup allocates nothing.
func (t *Table) Lookup(host []byte) *Pool {
	if p := t.lookupHost(host); p != nil {
		return p
	}
	if h := stripPort(host); len(h) != len(host) {
		if p := t.lookupHost(h); p != nil {
			return p
		}
	}
	var buf [maxKeyLen]byte
	if l, ok := lowerInto(&buf, stripPort(host)); ok {
		for i := 0; i < len(l); i++ {
			if l[i] != '.' {
				continue
			}
			suffix := l[i:]
			if p := t.shards[shardOf(suffix)].Load().wild[string(suffix)]; p != nil {
				return p
			}
		}
	}
	if t.cfg.FallbackKey != "" {
		return t.Pool(t.cfg.FallbackKey)
	}
	return nil
}

func (t *Table) lookupHost(host []byte) *Pool {
	var buf [maxKeyLen]byte
	l, ok := lowerInto(&buf, host)
	if !ok {
		return nil
	}
	s := t.shards[shardOf(l)].Load()
	if p := s.exact[string(host)]; p != nil {
		return p
	}
	return s.lower[string(l)]
}

// stripPort removes a trailing ":port" (digits only) from host, keeping
// "[v6]" brackets' content intact.
func stripPort(host []byte) []byte {
	for i := len(host) - 1; i >= 0; i-- {
		c := host[i]
		if c == ':' {
			if i == len(host)-1 {
				return host
			}
			return host[:i]
		}
		if c < '0' || c > '9' {
			return host
		}
	}
	return host
}

// wildSuffix returns the ".suffix" a wildcard key serves, or "" when key is
// not a wildcard.
func wildSuffix(lowerKey string) string {
	switch {
	case len(lowerKey) > 2 && lowerKey[0] == '*' && lowerKey[1] == '.':
		return lowerKey[1:]
	case len(lowerKey) > 1 && lowerKey[0] == '.':
		return lowerKey
	}
	return ""
}

// Pool returns the pool with exactly this key, or nil.
func (t *Table) Pool(key string) *Pool {
	var buf [maxKeyLen]byte
	l, ok := lowerInto(&buf, []byte(key))
	if !ok {
		return nil
	}
	return t.shards[shardOf(l)].Load().exact[key]
}

// Pools returns every pool, sorted by key.
func (t *Table) Pools() []*Pool {
	out := make([]*Pool, 0, t.count.Load())
	for i := range t.shards {
		for _, p := range t.shards[i].Load().exact {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// Len returns the number of pools.
func (t *Table) Len() int { return int(t.count.Load()) }

// Announce is a node's subscription (or a static node). Byte slices are only
// read during the call.
type Announce struct {
	Key, Address         []byte
	Modifier1, Modifier2 uint8
	Weight               uint64 // 0 means 1
	Cores, Load          uint64
	Notify               []byte
	Algo                 []byte // algorithm of the pool if this creates it
	Static               bool
}

// Result says what an Announce did.
type Result uint8

const (
	Refreshed   Result = iota // known node, counters and last-seen updated
	CreatedNode               // new node in an existing pool
	CreatedPool               // new pool with this node
)

// Announce subscribes a node or refreshes a known one. A refresh updates
// weight, cores, load, notify and the last-seen time; it never changes the
// modifiers (as uWSGI) nor the node's state. A refresh allocates nothing.
func (t *Table) Announce(a *Announce) (Result, error) {
	if len(a.Key) == 0 {
		return 0, ErrEmptyKey
	}
	if len(a.Key) > maxKeyLen {
		return 0, ErrKeyTooLong
	}
	now := t.cfg.Now().UnixNano()
	if p := t.Pool(string(a.Key)); p != nil {
		for _, n := range p.Nodes() {
			if n.Address == string(a.Address) {
				refresh(n, a, now)
				return Refreshed, nil
			}
		}
	}
	ep, err := ParseEndpoint(string(a.Address))
	if err != nil {
		return 0, err
	}
	algo := t.cfg.DefaultAlgo
	if len(a.Algo) > 0 {
		if algo, err = ParseAlgo(string(a.Algo)); err != nil {
			return 0, err
		}
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	key := string(a.Key)
	p := t.Pool(key)
	res := CreatedNode
	if p == nil {
		p = newPool(key, algo)
		res = CreatedPool
	} else if n := p.Node(string(a.Address)); n != nil { // raced with another writer
		refresh(n, a, now)
		return Refreshed, nil
	}
	n := &Node{
		Address:   string(a.Address),
		Endpoint:  ep,
		Static:    a.Static,
		Modifier1: a.Modifier1,
		Modifier2: a.Modifier2,
	}
	refresh(n, a, now)
	nodes := append(cloneNodes(p.Nodes()), n)
	p.nodes.Store(&nodes)
	if res == CreatedPool {
		t.putPool(p)
	}
	t.changed(key)
	return res, nil
}

func refresh(n *Node, a *Announce, now int64) {
	w := int64(a.Weight)
	if w <= 0 || a.Weight > 1<<20 {
		w = 1 // uWSGI maps 0 to 1; huge weights would overflow the WRR sums
		if a.Weight > 1<<20 {
			w = 1 << 20
		}
	}
	n.weight.Store(w)
	n.cores.Store(a.Cores)
	n.load.Store(a.Load)
	n.lastSeen.Store(now)
	if len(a.Notify) > 0 {
		if cur := n.notify.Load(); cur == nil || *cur != string(a.Notify) {
			s := string(a.Notify)
			n.notify.Store(&s)
		}
	}
}

func cloneNodes(s []*Node) []*Node { return append(make([]*Node, 0, len(s)+1), s...) }

// putPool publishes a new pool. Caller holds t.mu.
func (t *Table) putPool(p *Pool) {
	var buf [maxKeyLen]byte
	l, _ := lowerInto(&buf, []byte(p.Key))
	t.updateShard(shardOf(l), func(s *shard) {
		s.exact[p.Key] = p
		if _, ok := s.lower[string(l)]; !ok {
			s.lower[string(l)] = p
		}
	})
	if w := wildSuffix(string(l)); w != "" {
		t.updateShard(shardOf([]byte(w)), func(s *shard) {
			if _, ok := s.wild[w]; !ok {
				s.wild[w] = p
			}
		})
	}
	t.count.Add(1)
}

// dropPool unpublishes a pool. Caller holds t.mu.
func (t *Table) dropPool(p *Pool) {
	var buf [maxKeyLen]byte
	l, _ := lowerInto(&buf, []byte(p.Key))
	t.updateShard(shardOf(l), func(s *shard) {
		delete(s.exact, p.Key)
		if s.lower[string(l)] == p {
			delete(s.lower, string(l))
			for k, q := range s.exact { // another key folding to the same name takes over
				if len(k) == len(l) && equalFold(k, string(l)) {
					s.lower[string(l)] = q
					break
				}
			}
		}
	})
	if w := wildSuffix(string(l)); w != "" {
		t.updateShard(shardOf([]byte(w)), func(s *shard) {
			if s.wild[w] == p {
				delete(s.wild, w)
			}
		})
		// Another spelling of the same wildcard ("*.x" vs ".x") takes over.
		for i := range t.shards {
			for _, q := range t.shards[i].Load().exact {
				var qb [maxKeyLen]byte
				ql, _ := lowerInto(&qb, []byte(q.Key))
				if wildSuffix(string(ql)) == w {
					t.updateShard(shardOf([]byte(w)), func(s *shard) { s.wild[w] = q })
					break
				}
			}
		}
	}
	t.count.Add(-1)
}

func equalFold(a, b string) bool {
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// updateShard copies shard i, applies f and publishes it. Caller holds t.mu.
func (t *Table) updateShard(i int, f func(*shard)) {
	old := t.shards[i].Load()
	s := &shard{
		exact: make(map[string]*Pool, len(old.exact)+1),
		lower: make(map[string]*Pool, len(old.lower)+1),
		wild:  make(map[string]*Pool, len(old.wild)),
	}
	for k, v := range old.exact {
		s.exact[k] = v
	}
	for k, v := range old.lower {
		s.lower[k] = v
	}
	for k, v := range old.wild {
		s.wild[k] = v
	}
	f(s)
	t.shards[i].Store(s)
}

func (t *Table) changed(key string) {
	if t.cfg.OnChange != nil {
		t.cfg.OnChange(key)
	}
}

// RemoveNode takes the node out of its pool at once: it gets no new request,
// requests in flight finish. An emptied pool is deleted. It reports whether
// the node existed.
func (t *Table) RemoveNode(key, address string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.removeLocked(key, address)
}

func (t *Table) removeLocked(key, address string) bool {
	p := t.Pool(key)
	if p == nil {
		return false
	}
	old := p.Nodes()
	i := -1
	for j, n := range old {
		if n.Address == address {
			i = j
			break
		}
	}
	if i < 0 {
		return false
	}
	old[i].removed.Store(true)
	nodes := make([]*Node, 0, len(old)-1)
	nodes = append(append(nodes, old[:i]...), old[i+1:]...)
	p.nodes.Store(&nodes)
	if len(nodes) == 0 {
		t.dropPool(p)
	}
	t.changed(key)
	return true
}

// Expire removes every non-static node whose last announce is older than
// tolerance and returns how many it removed. The subscription server calls it
// from a timer, so silent nodes disappear even when no request asks for them
// (uWSGI only expires lazily, on lookup).
func (t *Table) Expire(tolerance time.Duration) int {
	cutoff := t.cfg.Now().Add(-tolerance).UnixNano()
	type victim struct{ key, addr string }
	var victims []victim
	for i := range t.shards {
		for _, p := range t.shards[i].Load().exact {
			for _, n := range p.Nodes() {
				if !n.Static && n.lastSeen.Load() < cutoff {
					victims = append(victims, victim{p.Key, n.Address})
				}
			}
		}
	}
	if len(victims) == 0 {
		return 0
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	removed := 0
	for _, v := range victims {
		// Re-check under the lock: a refresh may have raced the scan.
		if p := t.Pool(v.key); p != nil {
			if n := p.Node(v.addr); n != nil && n.lastSeen.Load() < cutoff && t.removeLocked(v.key, v.addr) {
				removed++
			}
		}
	}
	return removed
}

// AddStatic adds a node that never expires (--to KEY=ADDR, admin API).
func (t *Table) AddStatic(key, address string, weight uint64) error {
	_, err := t.Announce(&Announce{Key: []byte(key), Address: []byte(address), Weight: weight, Static: true})
	if err != nil {
		return fmt.Errorf("static node %s=%s: %w", key, address, err)
	}
	return nil
}
