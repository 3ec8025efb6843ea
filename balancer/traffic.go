package balancer

// AddTraffic counts bytes exchanged with the node, from the node's side as
// uWSGI's router stats do: rx were sent to it (the uwsgi packet and the
// request body), tx came from it (the response body). Safe for concurrent
// use; two atomic adds.
func (n *Node) AddTraffic(rx, tx uint64) {
	if rx != 0 {
		n.rxBytes.Add(rx)
	}
	if tx != 0 {
		n.txBytes.Add(tx)
	}
}
