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
	"hash/maphash"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/fastrouter/fastrouter/internal/ascii"
)

// shardCount splits the key space so that creating a pool copies 1/1024 of
// the table rather than all of it: O(pools/1024) per creation, so 100k pools
// (a state-file restore, a cluster sync) load in about a second rather than
// the minutes 64 shards took (quadratic). Every shard starts as the one
// shared empty snapshot, so a small table costs 1024 pointers, not maps.
const shardCount = 1024

// shard is an immutable snapshot; writers build a new one and swap it in.
type shard struct {
	exact map[string]*Pool // key as announced
	lower map[string]*Pool // lower-cased key → first pool that folds to it
	wild  map[string]*Pool // ".example.com" for keys "*.example.com" and ".example.com"
	// mounts: lower-cased host → its mount pools, longest prefix first
	// (mount.go), in the shard of the host.
	mounts map[string][]mount
}

// Config configures a Table. The zero value is usable.
type Config struct {
	// DefaultAlgo is the algorithm of pools created without one. Default wrr.
	DefaultAlgo Algo
	// FallbackKey names the pool used when no key matches a host. Empty: none.
	FallbackKey string
	// Now is the clock; nil means time.Now. Tests inject a fake.
	Now func() time.Time
	// Rand is the random source of p2c, shared by every pool; it must be
	// safe for concurrent use and must not allocate. Nil gives each pool its
	// own lock-free generator seeded at random. Tests inject a fixed sequence.
	Rand func() uint64
	// DrainTimeout is the deadline of drains started by a subscription
	// (unsubscribe, drain=1) without one of their own. Default 30s.
	DrainTimeout time.Duration
	// SlowStart ramps a (re)joined node's weight from 1/16 to full over this
	// duration. Zero disables it.
	SlowStart time.Duration
	// Policy is the default overload policy of every pool (its Algo field
	// is ignored: DefaultAlgo is the default algorithm). Per-key policies
	// are set with SetPolicies.
	Policy Policy
	// OnChange, if set, is called after every structural change (pool or node
	// added or removed) with the pool key. It runs with the table lock held
	// and must not call back into the Table.
	OnChange func(key string)
	// OnExpire, if set, is called by Expire for each node it removed, with
	// the node's last announce, after the table lock is released (so it
	// may log, or read the table).
	OnExpire func(key, address string, lastSeen time.Time)
}

// Table maps routing keys to pools. It is safe for concurrent use.
type Table struct {
	cfg Config

	mu       sync.Mutex // serialises writers
	policies policies   // per-key overrides; replaced under mu
	shards   [shardCount]atomic.Pointer[shard]
	seed     maphash.Seed // of shardOf; immutable
	count    atomic.Int64 // number of pools
	// mountCount is the number of mount pools (mount.go); their index
	// lives in the shards.
	mountCount atomic.Int64
	hooks      hooks     // replicator hooks (events.go)
	watch      watchList // nodes Tick has work for (watch.go)
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
	if !validKey([]byte(cfg.FallbackKey)) {
		return nil, ErrBadKey
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.DrainTimeout == 0 {
		cfg.DrainTimeout = 30 * time.Second
	}
	if cfg.DrainTimeout < 0 || cfg.SlowStart < 0 {
		return nil, errors.New("balancer: negative drain timeout or slow start")
	}
	cfg.Policy.Algo = ""
	if err := cfg.Policy.Validate(); err != nil {
		return nil, err
	}
	t := &Table{cfg: cfg, seed: maphash.MakeSeed()}
	empty := &shard{} // nil maps read as empty; updateShard copies, never writes it
	for i := range t.shards {
		t.shards[i].Store(empty)
	}
	return t, nil
}

// SetDefaultAlgo changes the algorithm of pools created from now on without
// one (a configuration reload); existing pools keep theirs.
func (t *Table) SetDefaultAlgo(a Algo) error {
	if _, err := ParseAlgo(string(a)); err != nil {
		return err
	}
	t.mu.Lock()
	t.cfg.DefaultAlgo = a
	t.mu.Unlock()
	return nil
}

// Now returns the table's clock reading.
func (t *Table) Now() time.Time { return t.cfg.Now() }

const maxKeyLen = 255

// Errors returned by writers.
var (
	ErrKeyTooLong = errors.New("balancer: key longer than 255 bytes")
	ErrEmptyKey   = errors.New("balancer: empty key")
	ErrBadKey     = errors.New("balancer: key has bytes outside printable ASCII")
	// ErrStaticNode refuses a subscription that names a static node: only
	// the configuration and the admin API may change those.
	ErrStaticNode = errors.New("balancer: a subscription cannot change a static node")
	// ErrTooManySpellings refuses a new pool whose key differs only in
	// case from maxSpellings pools already there (see spellings).
	ErrTooManySpellings = errors.New("balancer: too many pool keys that differ only in case")
)

// maxSpellings bounds the pools whose keys fold to the same lower-case key.
// They all live in one shard, which every creation copies: without a bound
// 20,000 case variants of one name took 1.7 ms each to create (33 s in
// all, quadratic). Hosts match case-insensitively anyway, so more than a
// few spellings of a key serve no one.
const maxSpellings = 16

// spellings counts the pools whose keys equal key but for ASCII case.
// Caller holds t.mu.
func (t *Table) spellings(key []byte) int {
	var buf [maxKeyLen]byte
	l, ok := lowerInto(&buf, key)
	if !ok {
		return 0
	}
	n, ls := 0, string(l)
	for k := range t.shards[t.shardOf(l)].Load().exact {
		if ascii.EqualFoldString(k, ls) {
			n++
		}
	}
	return n
}

// validKey reports whether a key is printable ASCII without spaces: host
// names, ports, wildcards and paths all are, and keys become metric labels
// and JSON, which must not carry control bytes or invalid UTF-8.
func validKey(k []byte) bool {
	for _, c := range k {
		if c <= ' ' || c >= 0x7f {
			return false
		}
	}
	return true
}

// validAddress: node addresses (unix paths may be UTF-8) must be valid
// UTF-8 without control characters.
func validAddress(a []byte) bool {
	if !utf8.Valid(a) {
		return false
	}
	for _, c := range a {
		if c < ' ' || c == 0x7f {
			return false
		}
	}
	return true
}

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

// shardOf hashes an already lower-cased key with the table's random seed.
// A fixed hash (FNV-1a before) let whoever can subscribe choose keys that
// all land in one shard, making every creation copy all of them: quadratic,
// minutes of the writer lock for 100k keys. Allocation-free.
func (t *Table) shardOf(lower []byte) int {
	return int(maphash.Bytes(t.seed, lower) % shardCount)
}

// Lookup finds the pool for a request host: the exact key, then the key
// compared case-insensitively, then both again with the port removed, then
// wildcard keys ("*.example.com" or uWSGI's ".example.com", longest suffix
// first), then the fallback key. It returns nil when nothing matches.
// Lookup allocates nothing.
func (t *Table) Lookup(host []byte) *Pool {
	// A host longer than any key matches nothing. Without this check the
	// port stripping below would let "example.com:" + 300 digits reach
	// "example.com".
	//
	// A matching pool whose nodes all left (kept to answer 503 until it
	// expires) does not shadow a later rule that finds a pool with nodes.
	var empty *Pool
	if len(host) <= maxKeyLen {
		if p := t.lookupKey(host, &empty); p != nil {
			return p
		}
	}
	if t.cfg.FallbackKey != "" {
		if p := t.Pool(t.cfg.FallbackKey); p != nil && (empty == nil || p.HasNodes()) {
			return p
		}
	}
	return empty
}

// lookupKey runs every rule of Lookup except the fallback, returning the
// first match with nodes and noting the first empty match in *empty.
func (t *Table) lookupKey(host []byte, empty **Pool) *Pool {
	if p := t.lookupHost(host); p != nil && keep(p, empty) {
		return p
	}
	if h := stripPort(host); len(h) != len(host) {
		if p := t.lookupHost(h); p != nil && keep(p, empty) {
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
			if p := t.shards[t.shardOf(suffix)].Load().wild[string(suffix)]; p != nil && keep(p, empty) {
				return p
			}
		}
	}
	return nil
}

// keep reports whether p has nodes; an empty p is remembered in *empty.
func keep(p *Pool, empty **Pool) bool {
	if p.HasNodes() {
		return true
	}
	if *empty == nil {
		*empty = p
	}
	return false
}

func (t *Table) lookupHost(host []byte) *Pool {
	var buf [maxKeyLen]byte
	l, ok := lowerInto(&buf, host)
	if !ok {
		return nil
	}
	s := t.shards[t.shardOf(l)].Load()
	if p := s.exact[string(host)]; p != nil && p.HasNodes() {
		return p
	} else if q := s.lower[string(l)]; q != nil && (p == nil || q.HasNodes()) {
		return q
	} else {
		return p
	}
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
	return t.shards[t.shardOf(l)].Load().exact[key]
}

// poolBytes is Pool for a []byte key. Converting the key to a string first
// would allocate for keys longer than 32 bytes on the refresh path.
func (t *Table) poolBytes(key []byte) *Pool {
	var buf [maxKeyLen]byte
	l, ok := lowerInto(&buf, key)
	if !ok {
		return nil
	}
	return t.shards[t.shardOf(l)].Load().exact[string(key)]
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
	// Drain asks for the node to be drained (the drain=1 extension);
	// DrainTimeout overrides Config.DrainTimeout when non-zero.
	Drain        bool
	DrainTimeout time.Duration
	// Backup is the node's backup level (the backup=N extension): level N
	// serves only while no lower level has a usable node. 0 = primary.
	Backup uint64
	// Proof is the signed subscription datagram that carried this announce
	// (nil when unsigned). The table ignores it; a cluster relays it so
	// that other routers verify the signature themselves. Only valid
	// during the call.
	Proof []byte
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
	if p := t.poolBytes(a.Key); p != nil {
		for _, n := range p.Nodes() {
			if n.Address == string(a.Address) {
				return t.refreshNode(n, a, now, false)
			}
		}
	}
	ep, algo, err := parseAnnounce(a)
	if err != nil {
		return 0, err
	}

	t.mu.Lock()
	defer t.mu.Unlock()
	key := string(a.Key)
	p := t.Pool(key)
	res := CreatedNode
	if p == nil {
		if t.spellings(a.Key) >= maxSpellings {
			return 0, ErrTooManySpellings
		}
		// Algorithm: the file's per-pool setting, else the datagram's
		// algo=, else the default (read under mu: reloads change it).
		pol := t.policies[strings.ToLower(key)].over(Policy{Algo: algo})
		pol = pol.over(t.policyFor(key))
		p = newPool(key, pol, &t.cfg, &t.watch)
		res = CreatedPool
	} else if n := p.Node(string(a.Address)); n != nil { // raced with another writer
		return t.refreshNode(n, a, now, true)
	}
	n := t.newNode(a, ep, p, now)
	nodes := append(cloneNodes(p.Nodes()), n)
	p.nodes.Store(&nodes)
	p.signal(int(p.waiting.Load())) // queued requests may take the newcomer
	wasEmpty := p.emptySince.Swap(0) != 0
	if res == CreatedPool {
		t.putPool(p)
	} else if wasEmpty {
		t.index(p)
	}
	t.changed(key)
	return res, nil
}

// parseAnnounce checks what a new node's announce must hold (the key, the
// address) and parses its endpoint and algorithm.
func parseAnnounce(a *Announce) (Endpoint, Algo, error) {
	if !validKey(a.Key) {
		return Endpoint{}, "", ErrBadKey
	}
	if !validAddress(a.Address) {
		return Endpoint{}, "", ErrBadAddress
	}
	ep, err := ParseEndpoint(string(a.Address))
	if err != nil {
		return Endpoint{}, "", err
	}
	var algo Algo
	if len(a.Algo) > 0 {
		if algo, err = ParseAlgo(string(a.Algo)); err != nil {
			return Endpoint{}, "", err
		}
	}
	return ep, algo, nil
}

// refreshNode applies a to n, a node it announces again: Refreshed, or
// ErrStaticNode when a subscription would take over a static node. locked
// says whether the caller holds t.mu (taken here only to record a change).
func (t *Table) refreshNode(n *Node, a *Announce, now int64, locked bool) (Result, error) {
	if n.Static && !a.Static {
		return 0, ErrStaticNode
	}
	if t.refreshLifecycle(n, a) || n.level.Load() != a.Backup {
		if !locked {
			t.mu.Lock()
		}
		t.changed(n.pool.Key)
		if !locked {
			t.mu.Unlock()
		}
	}
	refresh(n, a, now)
	return Refreshed, nil
}

// newNode makes the node a first announces in pool p (not yet published).
func (t *Table) newNode(a *Announce, ep Endpoint, p *Pool, now int64) *Node {
	n := &Node{
		Address:   string(a.Address),
		Endpoint:  ep,
		Static:    a.Static,
		Modifier1: a.Modifier1,
		Modifier2: a.Modifier2,
		pool:      p,
		hash:      hashBytes(a.Address),
	}
	refresh(n, a, now)
	n.joined.Store(now)
	if a.Drain {
		n.startDrain(t.cfg.Now(), t.drainTimeout(a))
	}
	return n
}

// refreshLifecycle applies what an announce means for a known node's drain:
// the node announcing again after it unsubscribed is a new process and comes
// back; drain=1 starts a drain; otherwise a drain stays (it is sticky).
// It only touches atomics and reports whether the node's state changed.
func (t *Table) refreshLifecycle(n *Node, a *Announce) bool {
	switch {
	case a.Drain:
		return n.startDrain(t.cfg.Now(), t.drainTimeout(a))
	case n.unsubscribed.Load():
		n.revive(t.cfg.Now())
		return true
	}
	return false
}

func (t *Table) drainTimeout(a *Announce) time.Duration {
	if a.DrainTimeout > 0 {
		return a.DrainTimeout
	}
	return t.cfg.DrainTimeout
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
	n.level.Store(a.Backup)
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
	t.indexWith(p, true)
	t.count.Add(1)
	t.reindexMounts(p)
}

// dropPool unpublishes a pool. Caller holds t.mu.
func (t *Table) dropPool(p *Pool) {
	var buf [maxKeyLen]byte
	l, _ := lowerInto(&buf, []byte(p.Key))
	t.updateShard(t.shardOf(l), func(s *shard) { delete(s.exact, p.Key) })
	t.reindex(p, true)
	t.count.Add(-1)
	t.reindexMounts(p)
}

// index makes p the holder of its case-folded and wildcard slots when the
// slot is free or held by a pool without nodes. Caller holds t.mu.
func (t *Table) index(p *Pool) { t.indexWith(p, false) }

// indexWith is index; with publish it also puts p in the exact map, in
// the same copy of its shard (a creation then copies the shard once, not
// twice). Caller holds t.mu.
func (t *Table) indexWith(p *Pool, publish bool) {
	var buf [maxKeyLen]byte
	l, _ := lowerInto(&buf, []byte(p.Key))
	t.updateShard(t.shardOf(l), func(s *shard) {
		if publish {
			s.exact[p.Key] = p
		}
		if q := s.lower[string(l)]; q == nil || (q != p && !q.HasNodes()) {
			s.lower[string(l)] = p
		}
	})
	if w := wildSuffix(string(l)); w != "" {
		t.updateShard(t.shardOf([]byte(w)), func(s *shard) {
			if q := s.wild[w]; q == nil || (q != p && !q.HasNodes()) {
				s.wild[w] = p
			}
		})
	}
}

// reindex hands p's slots to another pool of the same folded key or
// wildcard, preferring one with nodes. When p is gone (dropped) a slot goes
// to any other pool or is freed; when p merely emptied, it keeps the slot
// unless a pool with nodes can take it. Caller holds t.mu.
func (t *Table) reindex(p *Pool, gone bool) {
	var buf [maxKeyLen]byte
	l, _ := lowerInto(&buf, []byte(p.Key))
	lk := string(l)
	t.updateShard(t.shardOf(l), func(s *shard) {
		if s.lower[lk] != p {
			return
		}
		if q := bestOf(p, gone, func(yield func(*Pool)) {
			for k, q := range s.exact {
				if ascii.EqualFoldString(k, lk) {
					yield(q)
				}
			}
		}); q != nil {
			s.lower[lk] = q
		} else {
			delete(s.lower, lk)
		}
	})
	w := wildSuffix(lk)
	if w == "" {
		return
	}
	ws := t.shardOf([]byte(w))
	if t.shards[ws].Load().wild[w] != p {
		return
	}
	// Another spelling of the same wildcard ("*.x" vs ".x", in any case)
	// takes over. They live in the shards of their folded keys: scanning
	// every shard instead made removing N wildcard pools O(N²) (2.4 ms
	// each at 20k, under the writer lock).
	q := bestOf(p, gone, func(yield func(*Pool)) {
		for _, sp := range [2]string{"*" + w, w} {
			for k, q := range t.shards[t.shardOf([]byte(sp))].Load().exact {
				if ascii.EqualFoldString(k, sp) {
					yield(q)
				}
			}
		}
	})
	t.updateShard(ws, func(s *shard) {
		if q != nil {
			s.wild[w] = q
		} else {
			delete(s.wild, w)
		}
	})
}

// bestOf picks p's successor among cands: a pool with nodes first; when p
// is gone, any other pool; otherwise p itself.
func bestOf(p *Pool, gone bool, cands func(func(*Pool))) *Pool {
	var withNodes, other *Pool
	cands(func(q *Pool) {
		if q == p {
			return
		}
		if q.HasNodes() && withNodes == nil {
			withNodes = q
		} else if other == nil {
			other = q
		}
	})
	switch {
	case withNodes != nil:
		return withNodes
	case gone:
		return other
	}
	return p
}

// updateShard copies shard i, applies f and publishes it. Caller holds t.mu.
func (t *Table) updateShard(i int, f func(*shard)) {
	old := t.shards[i].Load()
	s := &shard{
		exact: make(map[string]*Pool, len(old.exact)+1),
		lower: make(map[string]*Pool, len(old.lower)+1),
		wild:  make(map[string]*Pool, len(old.wild)),
	}
	if len(old.mounts) > 0 {
		s.mounts = make(map[string][]mount, len(old.mounts))
		for k, v := range old.mounts {
			s.mounts[k] = v
		}
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
	old[i].CloseIdle()
	nodes := make([]*Node, 0, len(old)-1)
	nodes = append(append(nodes, old[:i]...), old[i+1:]...)
	p.nodes.Store(&nodes)
	if len(nodes) == 0 {
		// The pool stays, answering 503 + Retry-After rather than 404, so a
		// deploy gap looks like what it is; Expire deletes it after the
		// tolerance unless a node joins again.
		p.emptySince.Store(t.cfg.Now().UnixNano())
		t.reindex(p, false)
	}
	t.changed(key)
	return true
}

// DeletePool removes a pool and all its nodes at once.
func (t *Table) DeletePool(key string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.Pool(key)
	if p == nil {
		return false
	}
	for _, n := range p.Nodes() {
		n.removed.Store(true)
		n.CloseIdle()
	}
	empty := []*Node{}
	p.nodes.Store(&empty)
	t.dropPool(p)
	t.changed(key)
	return true
}

// Expire removes every non-static node whose last announce is older than
// tolerance and returns how many it removed. The subscription server calls it
// from a timer, so silent nodes disappear even when no request asks for them
// (uWSGI only expires lazily, on lookup). Config.OnExpire hears of each.
func (t *Table) Expire(tolerance time.Duration) int {
	cutoff := t.cfg.Now().Add(-tolerance).UnixNano()
	type victim struct {
		key, addr string
		seen      int64
	}
	var victims []victim
	var emptied []*Pool
	for i := range t.shards {
		for _, p := range t.shards[i].Load().exact {
			if es := p.emptySince.Load(); es != 0 && es < cutoff && len(p.Nodes()) == 0 {
				emptied = append(emptied, p)
			}
			for _, n := range p.Nodes() {
				if !n.Static && n.lastSeen.Load() < cutoff {
					victims = append(victims, victim{p.Key, n.Address, 0})
				}
			}
		}
	}
	if len(victims) == 0 && len(emptied) == 0 {
		return 0
	}
	t.mu.Lock()
	for _, p := range emptied {
		if t.Pool(p.Key) == p && len(p.Nodes()) == 0 && p.emptySince.Load() < cutoff {
			t.dropPool(p)
			t.changed(p.Key)
		}
	}
	removed := victims[:0]
	for _, v := range victims {
		// Re-check under the lock: a refresh may have raced the scan.
		if p := t.Pool(v.key); p != nil {
			if n := p.Node(v.addr); n != nil {
				if seen := n.lastSeen.Load(); seen < cutoff && t.removeLocked(v.key, v.addr) {
					v.seen = seen
					removed = append(removed, v)
				}
			}
		}
	}
	t.mu.Unlock()
	if t.cfg.OnExpire != nil {
		for _, v := range removed {
			t.cfg.OnExpire(v.key, v.addr, time.Unix(0, v.seen))
		}
	}
	return len(removed)
}

// AddStatic adds a node that never expires (--to KEY=ADDR, admin API).
func (t *Table) AddStatic(key, address string, weight uint64) error {
	return t.AddStaticBackup(key, address, weight, 0)
}

// AddStaticBackup is AddStatic for a node at a backup level (0 = primary).
// Adding a known static node again sets its weight and level.
func (t *Table) AddStaticBackup(key, address string, weight, backup uint64) error {
	_, err := t.Announce(&Announce{Key: []byte(key), Address: []byte(address), Weight: weight, Static: true, Backup: backup})
	if err != nil {
		return fmt.Errorf("static node %s=%s: %w", key, address, err)
	}
	return nil
}
