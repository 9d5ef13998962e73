// Package metrics defines Coordinator's Prometheus metrics (documented in
// docs/operations.md) on a registry of its own, and the small hooks the other
// packages call; they never import Prometheus themselves.
package metrics

import (
	"errors"
	"net/http"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hibiken/asynq"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/oauth2"
)

// Metrics holds every metric of one process.
type Metrics struct {
	reg *prometheus.Registry

	build          *prometheus.GaugeVec
	httpRequests   *prometheus.CounterVec
	httpDuration   *prometheus.HistogramVec
	fulfill        *prometheus.CounterVec
	tasks          *prometheus.CounterVec
	taskAttempts   *prometheus.HistogramVec
	lmsRequests    *prometheus.CounterVec
	lmsDuration    *prometheus.HistogramVec
	tokenFetches   *prometheus.CounterVec
	reconcileRuns  *prometheus.CounterVec
	reconcileLines *prometheus.CounterVec
}

// New registers the metrics, plus Go runtime and process collectors.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m := &Metrics{
		reg: reg,
		build: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coordinator_build_info",
			Help: "Always 1: the version, Go version and mode (api, worker, all) of this process.",
		}, []string{"version", "goversion", "mode"}),
		httpRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_http_requests_total", Help: "HTTP requests by route, method and status.",
		}, []string{"route", "method", "status"}),
		httpDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coordinator_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"route", "method"}),
		fulfill: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_fulfill_requests_total",
			Help: "Fulfill requests by result: accepted, or the reason it was refused (invalid, body, unsupported_media_type, unavailable).",
		}, []string{"result"}),
		tasks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_tasks_total", Help: "Task attempts by kind (enroll, unenroll) and outcome (enrolled, returned, canceled, retried, awaiting_account, failed).",
		}, []string{"kind", "outcome"}),
		taskAttempts: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coordinator_task_attempts", Help: "Attempts a task took to end, by kind and final outcome (enrolled, returned, canceled, failed).",
			Buckets: []float64{1, 2, 3, 5, 8, 13, 20, 50},
		}, []string{"kind", "outcome"}),
		lmsRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_lms_requests_total",
			Help: "LMS calls by site, endpoint (account, enroll, read_enrollment, unenroll) and status (0: no answer).",
		}, []string{"site", "endpoint", "status"}),
		lmsDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coordinator_lms_request_duration_seconds", Help: "LMS call latency by site and endpoint.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"site", "endpoint"}),
		tokenFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_lms_token_fetches_total",
			Help: "OAuth2 token requests by site and result: ok; rejected (the LMS refused the client: its id or secret); error (no answer, 429 or 5xx).",
		}, []string{"site", "result"}),
		reconcileRuns: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_reconciler_runs_total", Help: "Reconciler runs by result (ok, error, skipped: another process held the lock).",
		}, []string{"result"}),
		reconcileLines: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coordinator_reconciler_lines_total", Help: "Ledger lines the reconciler acted on, by action (requeued, synced).",
		}, []string{"action"}),
	}
	reg.MustRegister(m.build, m.httpRequests, m.httpDuration, m.fulfill, m.tasks, m.taskAttempts,
		m.lmsRequests, m.lmsDuration, m.tokenFetches, m.reconcileRuns, m.reconcileLines)
	return m
}

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// Build sets coordinator_build_info for this process: its version and mode
// (api, worker or all). Dashboards and alerts join on it to tell processes
// apart without knowing the scrape job's name.
func (m *Metrics) Build(version, mode string) {
	m.build.Reset()
	m.build.WithLabelValues(version, runtime.Version(), mode).Set(1)
}

// HTTP records one HTTP request.
func (m *Metrics) HTTP(route, method string, status int, d time.Duration) {
	m.httpRequests.WithLabelValues(route, method, strconv.Itoa(status)).Inc()
	m.httpDuration.WithLabelValues(route, method).Observe(d.Seconds())
}

// Fulfill records a fulfill request's result: accepted, or refused for
// reason. The reason is the result label of a refused request, so no series
// carries an empty label.
func (m *Metrics) Fulfill(accepted bool, reason string) {
	result := "accepted"
	if !accepted {
		result = labelValue(reason)
	}
	m.fulfill.WithLabelValues(result).Inc()
}

// Task records the outcome of one attempt of a task of a kind (attempt
// counts from 1).
func (m *Metrics) Task(kind, outcome string, attempt int) {
	m.tasks.WithLabelValues(kind, outcome).Inc()
	if outcome != "retried" && outcome != "awaiting_account" { // not an end
		m.taskAttempts.WithLabelValues(kind, outcome).Observe(float64(attempt))
	}
}

// LMS records one LMS call. The endpoint label is snake_case whatever the
// caller names the operation ("read enrollment" becomes read_enrollment).
func (m *Metrics) LMS(site, endpoint string, status int, d time.Duration) {
	endpoint = labelValue(endpoint)
	m.lmsRequests.WithLabelValues(site, endpoint, strconv.Itoa(status)).Inc()
	m.lmsDuration.WithLabelValues(site, endpoint).Observe(d.Seconds())
}

// Token records one token request. A refusal by the token endpoint (a 4xx
// other than 429: wrong client id or secret) is told apart from the LMS not
// answering, so that an outage does not read as a credentials problem.
func (m *Metrics) Token(site string, err error) {
	m.tokenFetches.WithLabelValues(site, tokenResult(err)).Inc()
}

func tokenResult(err error) string {
	var re *oauth2.RetrieveError
	switch {
	case err == nil:
		return "ok"
	case errors.As(err, &re) && re.Response != nil &&
		re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 && re.Response.StatusCode != http.StatusTooManyRequests:
		return "rejected"
	}
	return "error"
}

// labelValue turns an operation or reason name into a snake_case label value.
func labelValue(s string) string {
	s = strings.ToLower(strings.TrimSpace(s))
	if s == "" {
		return "unknown"
	}
	return strings.Map(func(r rune) rune {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// Reconcile records one reconciler run.
func (m *Metrics) Reconcile(ran bool, requeued, synced int, err error) {
	switch {
	case err != nil:
		m.reconcileRuns.WithLabelValues("error").Inc()
	case !ran:
		m.reconcileRuns.WithLabelValues("skipped").Inc()
	default:
		m.reconcileRuns.WithLabelValues("ok").Inc()
	}
	m.reconcileLines.WithLabelValues("requeued").Add(float64(requeued))
	m.reconcileLines.WithLabelValues("synced").Add(float64(synced))
}

// WatchQueue exports the depth of each state of a queue, the age of its
// oldest pending task and whether Redis could be read, all read from Redis
// at scrape time. Only processes that run the worker call it: the queue is
// one per deployment, so these gauges say the same on every process that
// exports them; aggregate them with max by (queue), never sum.
func (m *Metrics) WatchQueue(insp *asynq.Inspector, queue string) {
	m.reg.MustRegister(&queueCollector{insp: insp, queue: queue})
}

var (
	depthDesc = prometheus.NewDesc("coordinator_queue_tasks", "Tasks in the queue by state (the same on every worker: use max, not sum).", []string{"queue", "state"}, nil)
	ageDesc   = prometheus.NewDesc("coordinator_queue_oldest_pending_age_seconds", "Age of the oldest pending task.", []string{"queue"}, nil)
	upDesc    = prometheus.NewDesc("coordinator_queue_up", "1 when the queue could be read from Redis at scrape time.", []string{"queue"}, nil)
)

type queueCollector struct {
	insp  *asynq.Inspector
	queue string
}

func (c *queueCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- depthDesc
	ch <- ageDesc
	ch <- upDesc
}

func (c *queueCollector) Collect(ch chan<- prometheus.Metric) {
	info, err := c.insp.GetQueueInfo(c.queue)
	if err != nil {
		// A queue nothing was ever enqueued to does not exist yet: it is
		// empty, not unreachable. asynq reports that with an error of its
		// internal package, so ask Redis for the list of queues instead.
		queues, qerr := c.insp.Queues()
		if qerr != nil || slices.Contains(queues, c.queue) {
			ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 0, c.queue)
			return
		}
		info = &asynq.QueueInfo{}
	}
	ch <- prometheus.MustNewConstMetric(upDesc, prometheus.GaugeValue, 1, c.queue)
	for state, n := range map[string]int{"pending": info.Pending, "active": info.Active, "scheduled": info.Scheduled,
		"retry": info.Retry, "archived": info.Archived, "completed": info.Completed} {
		ch <- prometheus.MustNewConstMetric(depthDesc, prometheus.GaugeValue, float64(n), c.queue, state)
	}
	ch <- prometheus.MustNewConstMetric(ageDesc, prometheus.GaugeValue, info.Latency.Seconds(), c.queue)
}
