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
// mountIndex is an immutable snapshot: lower-cased host → its mount pools,
// longest prefix first. Writers rebuild it under the Table's mutex when a
// mount pool is created or deleted, which is rare; readers pay one atomic
// load, and nothing at all when no mount exists.
type mountIndex map[string][]mount

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

// reindexMounts rebuilds the mount index if p is a mount pool. Caller holds
// t.mu.
func (t *Table) reindexMounts(p *Pool) {
	if _, _, ok := splitMount(p.Key); !ok {
		return
	}
	idx := mountIndex{}
	for i := range t.shards {
		for k, q := range t.shards[i].Load().exact {
			if h, pre, ok := splitMount(k); ok {
				idx[h] = append(idx[h], mount{pre, q})
			}
		}
	}
	for _, ms := range idx {
		sort.Slice(ms, func(i, j int) bool {
			if len(ms[i].prefix) != len(ms[j].prefix) {
				return len(ms[i].prefix) > len(ms[j].prefix)
			}
			return ms[i].pool.Key < ms[j].pool.Key // "A.test/x" vs "a.test/x": stable
		})
	}
	if len(idx) == 0 {
		t.mounts.Store(nil)
		return
	}
	t.mounts.Store(&idx)
}

// HasMounts reports whether any mount key exists, so a caller can skip
// computing the decoded path LookupPath needs.
func (t *Table) HasMounts() bool { return t.mounts.Load() != nil }

// LookupPath is Lookup with mount points: the mount of host (compared
// case-insensitively, with and without its port) with the longest prefix of
// path wins; otherwise Lookup(host). path is the decoded request path (what
// the app sees as PATH_INFO), so "/%61pi" cannot slip past an "/api" mount.
// A matching mount wins even while it has no node: its requests get 503,
// not the host's app. LookupPath allocates nothing.
func (t *Table) LookupPath(host, path []byte) *Pool {
	if idx := t.mounts.Load(); idx != nil && len(host) <= maxKeyLen {
		var buf [maxKeyLen]byte
		l, _ := lowerInto(&buf, host)
		if p := matchMount((*idx)[string(l)], path); p != nil {
			return p
		}
		if h := stripPort(l); len(h) != len(l) {
			if p := matchMount((*idx)[string(h)], path); p != nil {
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
