package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// oldestTimeout bounds the look-up one scrape makes.
const oldestTimeout = 5 * time.Second

var oldestDesc = prometheus.NewDesc("coordinator_oldest_open_line_age_seconds",
	"Age of the oldest line accepted and not yet finished, whatever its place in the queue (pending, scheduled, retry, active); 0 when none (the same on every worker: use max).",
	[]string{"queue"}, nil)

// WatchOldestOpen exports the age of the oldest line that may still run,
// read at scrape time by oldest (the ledger's, or the queue's task lists
// without one). Like WatchQueue, only worker processes call it. A failed
// look-up exports nothing, so the alert on coordinator_queue_up (or the
// ledger's) speaks instead of a wrong age.
func (m *Metrics) WatchOldestOpen(queue string, oldest func(context.Context) (time.Time, bool, error)) {
	m.reg.MustRegister(&oldestCollector{queue: queue, oldest: oldest, now: time.Now})
}

type oldestCollector struct {
	queue  string
	oldest func(context.Context) (time.Time, bool, error)
	now    func() time.Time
}

func (c *oldestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- oldestDesc }

func (c *oldestCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), oldestTimeout)
	defer cancel()
	at, ok, err := c.oldest(ctx)
	if err != nil {
		return
	}
	age := 0.0
	if ok {
		age = max(0, c.now().Sub(at).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, c.queue)
}
