package queue

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// Processor runs one attempt of a task and returns the task's new state
// (pipeline.Service).
type Processor interface {
	Process(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error)
}

// handler adapts one kind's tasks to the processor: it is the asynq.Handler
// of the kind's task type.
type handler struct {
	kind        string
	proc        Processor
	maxAttempts int // worker.retry.max_attempts; 0: read from the task's bound
}

// ProcessTask runs one attempt of a task and returns what asynq's processor
// expects of a handler: nil when the task is done (or canceled, which it
// keeps as its result), an error that is asynq.SkipRetry when it failed for
// good (archived at once), another error to retry it with backoff — not
// counted as an attempt when it is a pipeline.Hold (the worker's IsFailure).
func (h handler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	// The task's bound has a spare retry (spareRetry): the configured last
	// attempt is Last, asynq's own bound Final. (A task queued by a version
	// without the spare has none: its Last is its Final.)
	last := retried >= maxRetry-spareRetry
	if h.maxAttempts > 0 {
		last = retried+1 >= h.maxAttempts
	}
	a := pipeline.Attempt{
		Job:    pipeline.Job{Kind: h.kind, ID: id, Payload: t.Payload()},
		Number: retried + 1, Last: last || retried >= maxRetry, Final: retried >= maxRetry,
	}
	w := t.ResultWriter()
	if w != nil {
		a.Result = resultWriter{w}
	}
	state, err := h.proc.Process(ctx, a)
	switch state {
	case fulfillment.StateFailed:
		return permanent{err}
	case fulfillment.StateRetrying, fulfillment.StateAwaitingAccount:
		return err // a wait for an account is held: it costs no attempt
	case fulfillment.StateCanceled:
		if w == nil {
			return nil
		}
		if _, err := w.Write(canceledResult); err != nil {
			// Without its mark the task would read as done: run it again,
			// uncounted; it is canceled again.
			return pipeline.Hold(fmt.Errorf("record the cancellation: %w", err))
		}
	}
	return nil
}

// permanent marks an error asynq must not retry (it is asynq.SkipRetry to
// errors.Is) while keeping the message asynq stores as the task's last
// error: the handler's own, with nothing appended.
type permanent struct{ err error }

func (p permanent) Error() string        { return p.err.Error() }
func (p permanent) Unwrap() error        { return p.err }
func (p permanent) Is(target error) bool { return target == asynq.SkipRetry }

// RetryDelay returns asynq's retry delay: what the error asked for (a 429's
// Retry-After), else exponential backoff from initial to max with jitter over
// the upper half of each step, so a recovering LMS is not hit in lockstep.
func RetryDelay(initial, maxDelay time.Duration) asynq.RetryDelayFunc {
	return func(n int, err error, _ *asynq.Task) time.Duration {
		if d, ok := pipeline.RetryIn(err); ok {
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
	Queue       string
	Concurrency int // attempts in flight in all, split between the servers
	// Servers is how many asynq servers share the process, its
	// concurrency and its Redis client (default 1). An asynq server takes
	// one task per Redis round trip; several take tasks in parallel
	// (docs/performance.md).
	Servers int
	// MaxAttempts is worker.retry.max_attempts, the attempts a failing
	// task gets whatever bound it was queued with (0: the task's bound).
	MaxAttempts     int
	InitialDelay    time.Duration
	MaxDelay        time.Duration
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Worker processes the queue's tasks of every registered kind with asynq
// servers. asynq does the queueing: it takes tasks under a lease, extends
// it while they run, retries and archives them, moves due retries back to
// pending, recovers the tasks of a worker that died (their lease expired),
// deletes completed tasks after their retention, and at shutdown puts back
// the tasks still running.
type Worker struct {
	srvs []*asynq.Server
	mux  *asynq.ServeMux
}

// taskCheckInterval is how long an idle asynq server waits before it looks
// for a task again (asynq's default is 1 s): a task queued into an idle
// worker starts within a quarter of a second.
const taskCheckInterval = 250 * time.Millisecond

// NewWorker returns a worker that hands the tasks of every kind to proc.
func NewWorker(rdb redis.UniversalClient, kinds *pipeline.Kinds, proc Processor, o WorkerOptions) *Worker {
	concurrency := max(1, o.Concurrency)
	n := max(1, min(o.Servers, concurrency))
	w := &Worker{mux: asynq.NewServeMux()}
	for i := range n {
		// The concurrency is split evenly; the first servers take the rest.
		c := concurrency / n
		if i < concurrency%n {
			c++
		}
		w.srvs = append(w.srvs, asynq.NewServerFromRedisClient(rdb, asynq.Config{
			Concurrency:    c,
			Queues:         map[string]int{o.Queue: 1},
			RetryDelayFunc: RetryDelay(o.InitialDelay, o.MaxDelay),
			// A store outage or a wait for another task is retried without
			// counting as an attempt (asynq leaves the retry counter alone).
			IsFailure:         func(err error) bool { return !pipeline.IsHold(err) },
			ShutdownTimeout:   o.ShutdownTimeout,
			TaskCheckInterval: taskCheckInterval,
			// A task that waits for another (a subscriber's earlier event, a
			// running enrollment) goes back to the retry set; asynq's default
			// 5 s between moves of due tasks would add up to 5 s per wait.
			DelayedTaskCheckInterval: time.Second,
			Logger:                   slogAdapter{o.Logger},
			LogLevel:                 asynq.WarnLevel,
			HealthCheckFunc: func(err error) {
				if err != nil {
					o.Logger.Warn("worker_redis_unhealthy", "err", err)
				}
			},
		}))
	}
	for _, k := range kinds.All() {
		w.mux.Handle(k.TaskType, handler{kind: k.Name, proc: proc, maxAttempts: o.MaxAttempts})
	}
	return w
}

// Start begins processing in the background.
func (w *Worker) Start() error {
	for i, srv := range w.srvs {
		if err := srv.Start(w.mux); err != nil {
			for _, started := range w.srvs[:i] {
				started.Shutdown()
			}
			return fmt.Errorf("start worker: %w", err)
		}
	}
	return nil
}

// Shutdown stops taking tasks and waits up to the shutdown timeout for those
// in flight; unfinished ones go back to the queue. The servers stop in
// parallel, so the whole takes one shutdown timeout, not one per server.
func (w *Worker) Shutdown() {
	var wg sync.WaitGroup
	for _, srv := range w.srvs {
		wg.Go(srv.Shutdown)
	}
	wg.Wait()
}

// slogAdapter lets asynq log through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(args ...any) { a.l.Debug("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Info(args ...any)  { a.l.Info("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Warn(args ...any)  { a.l.Warn("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Error(args ...any) { a.l.Error("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Fatal(args ...any) { a.l.Error("asynq_fatal", "detail", fmt.Sprint(args...)) }
