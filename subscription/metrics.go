package subscription

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the server's Prometheus metrics. Children are resolved once in
// newMetrics, so counting a datagram is one atomic add with no label lookup.
// Immutable after newMetrics; the counters themselves are safe for
// concurrent use.
//
//	fastrouter_subscription_packets_total{result}  subscribe|refresh|unsubscribe|invalid|dropped|denied
//	fastrouter_subscription_expired_total          nodes removed by the expiry timer
type metrics struct {
	packets [numResults]prometheus.Counter // indexed by result
	expired prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	packets := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_subscription_packets_total",
		Help: "Subscription datagrams received, by result: subscribe (new node), refresh, " +
			"unsubscribe, invalid (malformed or refused), dropped (queue or socket buffer full), " +
			"denied (allow-list, signature or replay check; see fastrouter_subscription_denied_total).",
	}, []string{"result"})
	expired := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "fastrouter_subscription_expired_total",
		Help: "Nodes removed because they did not announce within --subscription-tolerance.",
	})
	for _, c := range []prometheus.Collector{packets, expired} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("subscription: metrics: %w", err)
		}
	}
	m := &metrics{expired: expired}
	// Resolving every child up front also makes each result visible (as 0)
	// on /metrics before it first happens.
	for r := range numResults {
		m.packets[r] = packets.WithLabelValues(resultNames[r])
	}
	return m, nil
}
