package metrics

import (
	"context"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// oldestTimeout bounds one look-up.
const oldestTimeout = 5 * time.Second

// oldestRefresh is how often at most the oldest open line is looked up.
// Without a ledger a look-up reads up to pipeline.MaxScan tasks from Redis,
// so it is made in the background, one at a time, and every scrape exports
// the last result: /metrics is unauthenticated, and scrapers must not be
// able to multiply that cost.
const oldestRefresh = 10 * time.Second

var oldestDesc = prometheus.NewDesc("coordinator_oldest_open_line_age_seconds",
	"Age of the oldest line accepted and not yet finished, whatever its place in the queue (pending, scheduled, retry, active); 0 when none (the same on every worker: use max).",
	[]string{"queue"}, nil)

// WatchOldestOpen exports the age of the oldest line that may still run, as
// oldest (the ledger's, or the queue's task lists without one) last found
// it: looked up at most every oldestRefresh, in the background, when a
// scrape finds the last look-up older than that. Only the first scrape
// waits, for the first look-up. Like WatchQueue, only worker processes
// call it. A failed look-up exports nothing, so the alert on
// coordinator_queue_up (or the ledger's) speaks instead of a wrong age.
func (m *Metrics) WatchOldestOpen(queue string, oldest func(context.Context) (time.Time, bool, error)) {
	m.reg.MustRegister(newOldestCollector(queue, oldest, time.Now, oldestRefresh))
}

type oldestCollector struct {
	queue    string
	oldest   func(context.Context) (time.Time, bool, error)
	now      func() time.Time
	interval time.Duration

	mu      sync.Mutex
	started time.Time     // when the last look-up began; zero: none yet
	running chan struct{} // closed when the look-up in flight ends; nil: none
	last    oldestResult
}

// oldestResult is what a look-up found.
type oldestResult struct {
	at   time.Time
	ok   bool // there is an open line
	err  error
	done bool // a look-up has ended
}

func newOldestCollector(queue string, oldest func(context.Context) (time.Time, bool, error), now func() time.Time, interval time.Duration) *oldestCollector {
	return &oldestCollector{queue: queue, oldest: oldest, now: now, interval: interval}
}

func (c *oldestCollector) Describe(ch chan<- *prometheus.Desc) { ch <- oldestDesc }

func (c *oldestCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.result()
	if r.err != nil || !r.done {
		return
	}
	age := 0.0
	if r.ok {
		age = max(0, c.now().Sub(r.at).Seconds())
	}
	ch <- prometheus.MustNewConstMetric(oldestDesc, prometheus.GaugeValue, age, c.queue)
}

// result returns the last look-up's result, first starting a look-up in the
// background when none runs and the last began an interval ago or more. It
// waits only while no look-up has ever ended.
func (c *oldestCollector) result() oldestResult {
	c.mu.Lock()
	if now := c.now(); c.running == nil && (c.started.IsZero() || now.Sub(c.started) >= c.interval) {
		c.started = now
		c.running = make(chan struct{})
		go c.lookUp(c.running)
	}
	r, running := c.last, c.running
	c.mu.Unlock()
	if r.done {
		return r
	}
	<-running
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.last
}

// lookUp runs one look-up and keeps its result.
func (c *oldestCollector) lookUp(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), oldestTimeout)
	defer cancel()
	at, ok, err := c.oldest(ctx)
	c.mu.Lock()
	c.last = oldestResult{at: at, ok: ok, err: err, done: true}
	c.running = nil
	c.mu.Unlock()
	close(done)
}
