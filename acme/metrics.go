package acme

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on Config.Registerer by New. Label values are
// fixed sets.
type metrics struct {
	ordersOK, ordersErr     prometheus.Counter
	renewalsOK, renewalsErr prometheus.Counter
	certs                   prometheus.Gauge
	onDemandRequested       prometheus.Counter
	onDemandNotPool         prometheus.Counter
	onDemandNotAllowed      prometheus.Counter
	onDemandLimited         prometheus.Counter
	answeredHTTP            prometheus.Counter
	answeredALPN            prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	orders := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_acme_orders_total",
		Help: "ACME orders for names without a certificate made by this router (the leader, in a cluster), by result: ok or error.",
	}, []string{"result"})
	renewals := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_acme_renewals_total",
		Help: "ACME certificate renewals made by this router (the leader, in a cluster), by result: ok or error.",
	}, []string{"result"})
	certs := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "fastrouter_acme_certificates",
		Help: "Certificates obtained by ACME in service at this router.",
	})
	onDemand := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_acme_on_demand_total",
		Help: "TLS handshakes for a name without a certificate under --acme-on-demand, by outcome: requested (an order was asked for), " +
			"not_pool (no pool has that exact key: default certificate), not_allowed (outside --acme-allow), rate_limited.",
	}, []string{"result"})
	answered := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_acme_challenges_answered_total",
		Help: "ACME challenges answered by this router, by type: http-01 (on --http) or tls-alpn-01 (on --https).",
	}, []string{"type"})
	m := &metrics{
		ordersOK: orders.WithLabelValues("ok"), ordersErr: orders.WithLabelValues("error"),
		renewalsOK: renewals.WithLabelValues("ok"), renewalsErr: renewals.WithLabelValues("error"),
		certs:              certs,
		onDemandRequested:  onDemand.WithLabelValues("requested"),
		onDemandNotPool:    onDemand.WithLabelValues("not_pool"),
		onDemandNotAllowed: onDemand.WithLabelValues("not_allowed"),
		onDemandLimited:    onDemand.WithLabelValues("rate_limited"),
		answeredHTTP:       answered.WithLabelValues(HTTP01),
		answeredALPN:       answered.WithLabelValues(TLSALPN01),
	}
	cs := []prometheus.Collector{orders, renewals, certs, onDemand, answered}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("acme: metrics: %w", err)
		}
	}
	return m, nil
}
