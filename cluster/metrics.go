package cluster

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on the Registerer passed in Config; main only
// creates a Cluster when clustering is configured, so a single router
// exports none of them.
type metrics struct {
	messages  *prometheus.CounterVec // received broadcasts by result
	denied    *prometheus.CounterVec // peers' entries refused by Config.Admission, by reason
	sent      prometheus.Counter
	applied   prometheus.Counter
	dropped   prometheus.Counter
	syncBytes prometheus.Gauge
	// blobsRefused counts peers' blobs not merged: over Config.MaxBlobBytes.
	blobsRefused prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, c *Cluster) (*metrics, error) {
	m := &metrics{
		messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_cluster_messages_total",
			Help: "Cluster broadcasts received, by result: applied (changed the state), stale (nothing new), invalid (dropped).",
		}, []string{"result"}),
		denied: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "fastrouter_cluster_denied_total",
			Help: "Nodes relayed by other routers that this router's admission rules refused (not applied here), by reason: " +
				"node_address, unsigned, proof, no_key, signature, stale, replay, replay_full, command.",
		}, []string{"reason"}),
		sent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_cluster_broadcasts_total",
			Help: "Node entries queued for gossip by this router.",
		}),
		applied: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_cluster_applied_total",
			Help: "Node entries from other routers applied to the routing table.",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_cluster_queue_pruned_total",
			Help: "Times the gossip queue overflowed and its oldest broadcasts were dropped, or the queue of large blob messages was full (push/pull repairs them).",
		}),
		blobsRefused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_cluster_blobs_refused_total",
			Help: "Shared values (ACME certificates, keys, challenges) from other routers not kept because the replicated values would pass their size bound.",
		}),
		syncBytes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fastrouter_cluster_state_bytes",
			Help: "Size of the last full state this router sent in a push/pull (compressed).",
		}),
	}
	for _, r := range []string{"applied", "stale", "invalid"} {
		m.messages.WithLabelValues(r)
	}
	members := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fastrouter_cluster_members",
		Help: "Live members of the router cluster, this router included.",
	}, func() float64 { return float64(c.numMembers()) })
	entries := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fastrouter_cluster_entries",
		Help: "Node entries in the replicated state, tombstones included.",
	}, func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return float64(c.entries)
	})
	queued := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fastrouter_cluster_broadcast_queue",
		Help: "Broadcasts waiting to be gossiped.",
	}, func() float64 { return float64(c.queue.NumQueued()) })
	blobBytes := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "fastrouter_cluster_blob_bytes",
		Help: "Bytes of shared values (ACME certificates, keys, challenges) in the replicated state, keys included.",
	}, func() float64 {
		c.mu.Lock()
		defer c.mu.Unlock()
		return float64(c.blobBytes)
	})
	for _, col := range []prometheus.Collector{m.messages, m.denied, m.sent, m.applied, m.dropped, m.syncBytes, m.blobsRefused, members, entries, queued, blobBytes} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("cluster: metrics: %w", err)
		}
	}
	return m, nil
}
