package balancer

import "sync"

// watchList holds the nodes Table.Tick has work for: draining ones (drain
// completion, deadlines) and those holding idle keep-alive connections
// (expiry). Tick used to walk every node of every pool ten times a second,
// which at 60k pools took a third of a core; now it walks this list.
//
// A node enters when it starts draining (startDrain) or parks its first idle
// connection (PutIdle), both after their state change; Tick removes it, under
// mu, only when it finds neither, so an entry racing with a removal is never
// lost. Safe for concurrent use; the zero value is ready.
type watchList struct {
	mu    sync.Mutex
	nodes map[*Node]struct{}
}

func (w *watchList) add(n *Node) {
	w.mu.Lock()
	if w.nodes == nil {
		w.nodes = make(map[*Node]struct{})
	}
	w.nodes[n] = struct{}{}
	w.mu.Unlock()
}

// snapshot appends the watched nodes to dst.
func (w *watchList) snapshot(dst []*Node) []*Node {
	w.mu.Lock()
	for n := range w.nodes {
		dst = append(dst, n)
	}
	w.mu.Unlock()
	return dst
}

// settle forgets n if it has nothing left for Tick.
func (w *watchList) settle(n *Node) {
	w.mu.Lock()
	if n.nIdle.Load() == 0 && n.stored() != StateDraining {
		delete(w.nodes, n)
	}
	w.mu.Unlock()
}

// watch puts n on its table's watch list (nodes built outside a table have
// none).
func (n *Node) watch() {
	if n.pool != nil && n.pool.watch != nil {
		n.pool.watch.add(n)
	}
}
