package metrics

import "github.com/prometheus/client_golang/prometheus"

// Webhooks counts shop deliveries (POST /webhooks/{name}) per integration.
// Its labels come from the configuration (integration names) and a fixed set
// of results, never from a delivery.
type Webhooks struct{ deliveries *prometheus.CounterVec }

// Webhooks registers coordinator_webhooks_total on the process's registry.
// Call it once per Metrics.
func (m *Metrics) Webhooks() *Webhooks {
	w := &Webhooks{deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coordinator_webhooks_total",
		Help: "Shop deliveries by integration and result (accepted, ignored, ping, refused, invalid, too_large, unavailable).",
	}, []string{"integration", "result"})}
	m.reg.MustRegister(w.deliveries)
	return w
}

// Webhook records one delivery to a configured integration.
func (w *Webhooks) Webhook(integration, result string) {
	w.deliveries.WithLabelValues(labelValue(integration), labelValue(result)).Inc()
}
