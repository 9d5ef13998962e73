package queue

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
)

// Fulfiller enrolls an order line's learner; its errors carry the LMS outcome
// class (lms.IsPermanent, lms.RetryAfter).
type Fulfiller interface {
	Fulfill(ctx context.Context, o fulfillment.Order) error
}

// Sites resolves a site name to the client of its LMS.
type Sites interface {
	Fulfiller(ctx context.Context, site string) (Fulfiller, error)
}

// Recorder keeps the ledger of attempts and outcomes (the Postgres tier).
type Recorder interface {
	Started(ctx context.Context, o fulfillment.Order) error
	Finished(ctx context.Context, o fulfillment.Order, state fulfillment.State, lastError string) error
}

// Observer receives task outcomes (metrics): enrolled, retried or failed,
// with the attempt number counted from 1.
type Observer interface {
	Task(outcome string, attempt int)
}

// EnrollHandler runs enrollment tasks.
type EnrollHandler struct {
	Sites    Sites
	Recorder Recorder // nil without the Postgres tier
	Observer Observer // nil: not measured
	Logger   *slog.Logger
}

func (h *EnrollHandler) observe(outcome string, attempt int) {
	if h.Observer != nil {
		h.Observer.Task(outcome, attempt)
	}
}

// ProcessTask enrolls the task's learner. A permanent LMS failure (or the
// last attempt's) is returned marked permanent, so asynq archives the task as
// failed at once; any other error is retried with backoff.
func (h *EnrollHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	var o fulfillment.Order
	if err := json.Unmarshal(t.Payload(), &o); err != nil {
		h.Logger.ErrorContext(ctx, "task_payload_invalid", "task_id", id, "err", err)
		return permanent{fmt.Errorf("decode payload: %w", err)}
	}
	log := h.Logger.With("task_id", id, "order_number", o.OrderNumber, "course_id", o.CourseID,
		"site", o.Site, "request_id", o.RequestID, "attempt", retried+1)
	h.record(ctx, log, func(ctx context.Context, r Recorder) error { return r.Started(ctx, o) })
	start := time.Now()
	f, err := h.Sites.Fulfiller(ctx, o.Site)
	if err == nil {
		err = f.Fulfill(ctx, o)
	}
	state, event, level := fulfillment.StateRetrying, "enrollment_retrying", slog.LevelWarn
	switch {
	case err == nil:
		state, event, level = fulfillment.StateEnrolled, "enrolled", slog.LevelInfo
	case lms.IsPermanent(err), retried >= maxRetry:
		state, event, level = fulfillment.StateFailed, "enrollment_failed", slog.LevelError
	}
	attrs := []any{"duration_ms", time.Since(start).Milliseconds()}
	lastErr := ""
	if err != nil {
		lastErr = err.Error()
		attrs = append(attrs, "err", lastErr)
	}
	log.Log(ctx, level, event, attrs...)
	h.observe(outcomes[state], retried+1)
	h.record(ctx, log, func(ctx context.Context, r Recorder) error { return r.Finished(ctx, o, state, lastErr) })
	if state == fulfillment.StateFailed {
		return permanent{err}
	}
	return err
}

// outcomes names the task outcomes metrics count, by the line's new state.
var outcomes = map[fulfillment.State]string{
	fulfillment.StateEnrolled: "enrolled",
	fulfillment.StateRetrying: "retried",
	fulfillment.StateFailed:   "failed",
}

// permanent marks an error asynq must not retry (it is asynq.SkipRetry to
// errors.Is) while keeping the message asynq stores as the task's last
// error: the LMS's own, with nothing appended.
type permanent struct{ err error }

func (p permanent) Error() string        { return p.err.Error() }
func (p permanent) Unwrap() error        { return p.err }
func (p permanent) Is(target error) bool { return target == asynq.SkipRetry }

// record writes to the ledger when there is one. A ledger failure does not
// fail the enrollment: the reconciler copies the outcome from Redis later.
func (h *EnrollHandler) record(ctx context.Context, log *slog.Logger, write func(context.Context, Recorder) error) {
	if h.Recorder == nil {
		return
	}
	// The write must land even when the task's own deadline has passed.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := write(wctx, h.Recorder); err != nil {
		log.WarnContext(ctx, "ledger_write_failed", "err", err.Error())
	}
}

// RetryDelay returns asynq's retry delay: what the LMS asked for in a 429's
// Retry-After, else exponential backoff from initial to max with jitter over
// the upper half of each step, so a recovering LMS is not hit in lockstep.
func RetryDelay(initial, maxDelay time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration {
		if d, ok := lms.RetryAfter(err); ok {
			return min(d, maxDelay)
		}
		d := maxDelay
		if n < 40 && initial<<n > 0 && initial<<n < maxDelay {
			d = initial << n
		}
		d = d/2 + rand.N(d/2+1)
		return max(d, initial)
	}
}

// WorkerOptions configure a Worker.
type WorkerOptions struct {
	Queue           string
	Concurrency     int
	InitialDelay    time.Duration
	MaxDelay        time.Duration
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Worker processes the fulfillment queue.
type Worker struct {
	srv *asynq.Server
	mux *asynq.ServeMux
}

// NewWorker returns a worker for the queue that hands enrollment tasks to h.
func NewWorker(rdb redis.UniversalClient, h *EnrollHandler, o WorkerOptions) *Worker {
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:     o.Concurrency,
		Queues:          map[string]int{o.Queue: 1},
		RetryDelayFunc:  RetryDelay(o.InitialDelay, o.MaxDelay),
		ShutdownTimeout: o.ShutdownTimeout,
		Logger:          slogAdapter{o.Logger},
		LogLevel:        asynq.WarnLevel,
		HealthCheckFunc: func(err error) {
			if err != nil {
				o.Logger.Warn("worker_redis_unhealthy", "err", err)
			}
		},
	})
	mux := asynq.NewServeMux()
	mux.Handle(TypeEnroll, h)
	return &Worker{srv: srv, mux: mux}
}

// Start begins processing in the background.
func (w *Worker) Start() error {
	if err := w.srv.Start(w.mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	return nil
}

// Shutdown stops taking tasks and waits up to the shutdown timeout for those
// in flight; unfinished ones go back to the queue.
func (w *Worker) Shutdown() { w.srv.Shutdown() }

// slogAdapter lets asynq log through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(args ...any) { a.l.Debug("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Info(args ...any)  { a.l.Info("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Warn(args ...any)  { a.l.Warn("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Error(args ...any) { a.l.Error("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Fatal(args ...any) { a.l.Error("asynq_fatal", "detail", fmt.Sprint(args...)) }
