package stats

import (
	"github.com/prometheus/client_golang/prometheus"
)

// NodeCollector exports per-node series (--metrics-per-node), computed at
// scrape time from the table's own counters: the request path pays nothing
// for them, and a node's series vanish with the node. They are opt-in
// because their cardinality is the fleet's size (pool × node), which the
// per-pool families are not.
//
//	fastrouter_node_requests_total{pool,node}         requests sent to the node (picks)
//	fastrouter_node_failures_total{pool,node}         connect failures
//	fastrouter_node_inflight_requests{pool,node}      requests holding the node
//	fastrouter_node_weight{pool,node}                 configured weight
//	fastrouter_node_state{pool,node,state}            1 for the node's current state
//	fastrouter_node_last_seen_timestamp_seconds{pool,node}
//	fastrouter_node_sent_bytes_total{pool,node}       bytes sent to the node
//	fastrouter_node_received_bytes_total{pool,node}   response body bytes from the node
//
// A node that leaves and comes back starts its counters from zero, which
// Prometheus treats as a counter reset.
type NodeCollector struct{ table Table }

var _ prometheus.Collector = (*NodeCollector)(nil)

// NewNodeCollector returns a collector of table's nodes. Register it on the
// router's registry.
func NewNodeCollector(table Table) *NodeCollector { return &NodeCollector{table: table} }

var (
	nodeLabels    = []string{"pool", "node"}
	nodeRequests  = prometheus.NewDesc("fastrouter_node_requests_total", "Requests sent to the node (picks), since it joined.", nodeLabels, nil)
	nodeFailures  = prometheus.NewDesc("fastrouter_node_failures_total", "Connect failures of the node, since it joined.", nodeLabels, nil)
	nodeInflight  = prometheus.NewDesc("fastrouter_node_inflight_requests", "Requests currently holding the node.", nodeLabels, nil)
	nodeWeight    = prometheus.NewDesc("fastrouter_node_weight", "The node's configured weight.", nodeLabels, nil)
	nodeState     = prometheus.NewDesc("fastrouter_node_state", "1 for the node's current state (active, draining, drained, failed, backup).", []string{"pool", "node", "state"}, nil)
	nodeLastSeen  = prometheus.NewDesc("fastrouter_node_last_seen_timestamp_seconds", "Unix time of the node's last announce (static nodes: when added).", nodeLabels, nil)
	nodeSent      = prometheus.NewDesc("fastrouter_node_sent_bytes_total", "Bytes sent to the node: uwsgi packets and request bodies.", nodeLabels, nil)
	nodeReceived  = prometheus.NewDesc("fastrouter_node_received_bytes_total", "Response body bytes received from the node.", nodeLabels, nil)
	nodeDescsList = []*prometheus.Desc{nodeRequests, nodeFailures, nodeInflight, nodeWeight, nodeState, nodeLastSeen, nodeSent, nodeReceived}
)

// Describe implements prometheus.Collector.
func (c *NodeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range nodeDescsList {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *NodeCollector) Collect(ch chan<- prometheus.Metric) {
	for _, p := range c.table.Pools() {
		for _, n := range p.Nodes() {
			i := n.Info()
			k, a := p.Key, i.Address
			ch <- prometheus.MustNewConstMetric(nodeRequests, prometheus.CounterValue, float64(i.Requests), k, a)
			ch <- prometheus.MustNewConstMetric(nodeFailures, prometheus.CounterValue, float64(i.Failures), k, a)
			ch <- prometheus.MustNewConstMetric(nodeInflight, prometheus.GaugeValue, float64(i.Inflight), k, a)
			ch <- prometheus.MustNewConstMetric(nodeWeight, prometheus.GaugeValue, float64(i.Weight), k, a)
			ch <- prometheus.MustNewConstMetric(nodeState, prometheus.GaugeValue, 1, k, a, i.State.String())
			ch <- prometheus.MustNewConstMetric(nodeLastSeen, prometheus.GaugeValue, float64(i.LastSeen.UnixNano())/1e9, k, a)
			ch <- prometheus.MustNewConstMetric(nodeSent, prometheus.CounterValue, float64(i.RxBytes), k, a)
			ch <- prometheus.MustNewConstMetric(nodeReceived, prometheus.CounterValue, float64(i.TxBytes), k, a)
		}
	}
}
