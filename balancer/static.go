package balancer

import (
	"cmp"
	"slices"
)

// StaticNode is one configured node (--to KEY=ADDR): a primary of weight 1
// that never expires.
type StaticNode struct{ Key, Address string }

// StaticSet keeps a table's configured nodes in step with the
// configuration as it is reloaded: each Apply adds the nodes newly listed
// and removes the ones an earlier Apply added that are listed no more.
// Static nodes added another way (the admin API) are not its business and
// stay. A StaticSet is not safe for concurrent use: the goroutine that
// loads the configuration owns it.
type StaticSet struct {
	table   *Table
	current map[StaticNode]bool // added by Apply and still listed
}

// NewStaticSet returns a set that has added nothing to t yet.
func NewStaticSet(t *Table) *StaticSet {
	return &StaticSet{table: t, current: map[StaticNode]bool{}}
}

// Apply makes want the configured nodes and returns those it added (in
// want's order) and those it removed (in key then address order). Nodes
// already added are left as they are (their counters and state survive a
// reload). A node the table refuses stops it with that error before
// anything is removed; the set then holds what the previous Apply left plus
// what this one added before the refusal, so the next Apply adds whatever
// it lacks and removes whatever is no longer listed.
func (s *StaticSet) Apply(want []StaticNode) (added, removed []StaticNode, err error) {
	next := make(map[StaticNode]bool, len(want))
	for _, n := range want {
		if !s.current[n] && !next[n] {
			if err := s.table.AddStatic(n.Key, n.Address, 1); err != nil {
				for _, a := range added {
					s.current[a] = true
				}
				return added, nil, err
			}
			added = append(added, n)
		}
		next[n] = true
	}
	for n := range s.current {
		if !next[n] {
			s.table.RemoveNode(n.Key, n.Address)
			removed = append(removed, n)
		}
	}
	s.current = next
	slices.SortFunc(removed, func(a, b StaticNode) int {
		return cmp.Or(cmp.Compare(a.Key, b.Key), cmp.Compare(a.Address, b.Address))
	})
	return added, removed, nil
}
