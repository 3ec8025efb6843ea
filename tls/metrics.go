package tls

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// metrics are registered on Config.Registerer by New.
type metrics struct {
	reloads    *prometheus.CounterVec
	certs      prometheus.Gauge   // certificates in service (default + directory)
	reloadOK   prometheus.Counter // passes that loaded every changed file
	reloadErr  prometheus.Counter // passes where some changed file failed
	unknownSNI prometheus.Counter // SNI names that matched no directory certificate
}

func newMetrics() *metrics {
	reloads := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "fastrouter_tls_reloads_total",
		Help: "Certificate load passes that found changed files (or were forced by SIGHUP), by result: ok, or error when any pair failed to load (the previous certificate stays in service).",
	}, []string{"result"})
	m := &metrics{
		reloads: reloads,
		certs: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "fastrouter_tls_certificates",
			Help: "Certificates in service: the default one plus each SNI name from --tls-dir.",
		}),
		reloadOK:  reloads.WithLabelValues("ok"),
		reloadErr: reloads.WithLabelValues("error"),
		unknownSNI: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "fastrouter_tls_unknown_sni_total",
			Help: "TLS handshakes whose SNI name matched no certificate in --tls-dir nor one obtained by ACME (served the default certificate, or failed without one).",
		}),
	}
	return m
}

// register adds the collectors to reg, or none of them on a conflict.
func (m *metrics) register(reg prometheus.Registerer) error {
	cs := []prometheus.Collector{m.certs, m.reloads, m.unknownSNI}
	for i, c := range cs {
		if err := reg.Register(c); err != nil {
			for _, done := range cs[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("tls: metrics: %w", err)
		}
	}
	return nil
}
