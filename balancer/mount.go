package balancer

import (
	"bytes"
	"sort"
	"strings"
)

// Mount points: a key "example.com/api" serves requests for host
// example.com whose path is /api or below it (/api/..., not /apix); the
// longest matching prefix wins, and a request no mount matches goes through
// the host rules of Lookup. This is uWSGI's --subscription-mountpoints key
// form, with any number of path segments.
//
// The index lives in the table's shards (shard.mounts): lower-cased host →
// its mount pools, longest prefix first, in the shard of the host. Writers
// update the one host's list under the Table's mutex when a mount pool is
// created or deleted; readers pay one atomic load of that shard, and
// nothing at all when no mount exists. (Rebuilding one index from every
// pool on each change made 5,000 mount keys take 35 s to create next to
// 20,000 other pools.)
type mount struct {
	prefix string // "/api", from the key, case-sensitive like paths
	pool   *Pool
}

// splitMount splits a mount key into its lower-cased host and path prefix;
// ok is false for keys without a '/' or with nothing before it.
func splitMount(key string) (host, prefix string, ok bool) {
	i := strings.IndexByte(key, '/')
	if i <= 0 {
		return "", "", false
	}
	return strings.ToLower(key[:i]), key[i:], true
}

// reindexMounts updates the mount list of p's host if p is a mount pool:
// p is in it while it is in the table. Caller holds t.mu.
func (t *Table) reindexMounts(p *Pool) {
	host, prefix, ok := splitMount(p.Key)
	if !ok {
		return
	}
	present := t.Pool(p.Key) == p
	t.updateShard(t.shardOf([]byte(host)), func(s *shard) {
		old := s.mounts[host]
		ms := make([]mount, 0, len(old)+1)
		for _, m := range old {
			if m.pool != p {
				ms = append(ms, m)
			}
		}
		t.mountCount.Add(int64(len(ms) - len(old)))
		if present {
			ms = append(ms, mount{prefix, p})
			t.mountCount.Add(1)
			sort.Slice(ms, func(i, j int) bool {
				if len(ms[i].prefix) != len(ms[j].prefix) {
					return len(ms[i].prefix) > len(ms[j].prefix)
				}
				return ms[i].pool.Key < ms[j].pool.Key // "A.test/x" vs "a.test/x": stable
			})
		}
		switch {
		case len(ms) == 0:
			delete(s.mounts, host)
		case s.mounts == nil: // the shard's first mount (updateShard copies only non-empty indexes)
			s.mounts = map[string][]mount{host: ms}
		default:
			s.mounts[host] = ms
		}
	})
}

// HasMounts reports whether any mount key exists, so a caller can skip
// computing the decoded path LookupPath needs.
func (t *Table) HasMounts() bool { return t.mountCount.Load() > 0 }

// LookupPath is Lookup with mount points: the mount of host (compared
// case-insensitively, with and without its port) with the longest prefix of
// path wins; otherwise Lookup(host). path is the decoded request path (what
// the app sees as PATH_INFO), so "/%61pi" cannot slip past an "/api" mount.
// A matching mount wins even while it has no node: its requests get 503,
// not the host's app. LookupPath allocates nothing.
func (t *Table) LookupPath(host, path []byte) *Pool {
	if t.HasMounts() && len(host) <= maxKeyLen {
		var buf [maxKeyLen]byte
		l, _ := lowerInto(&buf, host)
		if p := matchMount(t.shards[t.shardOf(l)].Load().mounts[string(l)], path); p != nil {
			return p
		}
		if h := stripPort(l); len(h) != len(l) {
			if p := matchMount(t.shards[t.shardOf(h)].Load().mounts[string(h)], path); p != nil {
				return p
			}
		}
	}
	return t.Lookup(host)
}

func matchMount(ms []mount, path []byte) *Pool {
	for _, m := range ms {
		if underPrefix(path, m.prefix) {
			return m.pool
		}
	}
	return nil
}

// underPrefix reports whether path is prefix or below it: "/api" covers
// "/api" and "/api/x" but not "/apix"; "/api/" covers "/api/" and below.
func underPrefix(path []byte, prefix string) bool {
	if !bytes.HasPrefix(path, []byte(prefix)) {
		return false
	}
	return len(path) == len(prefix) || prefix[len(prefix)-1] == '/' || path[len(prefix)] == '/'
}
