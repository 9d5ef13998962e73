package queue

import (
	"bytes"
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

// handler adapts one kind's tasks to the processor.
type handler struct {
	kind        string
	proc        Processor
	maxAttempts int // worker.retry.max_attempts; 0: read from the task's bound
}

// attempt runs one attempt of a task and returns what asynq's processor
// expects of a handler: nil when the task is done, permanent when it failed
// for good (archived at once), another error to retry it with backoff.
// canceled reports a task canceled by its order's return, which keeps that
// as its result.
func (h handler) attempt(ctx context.Context, id string, retried, maxRetry int, payload []byte) (result []byte, err error) {
	// The message's bound has a spare retry (spareRetry): the configured
	// last attempt is Last, asynq's own bound Final. (A task queued by an
	// earlier version has no spare: its Last is its Final.)
	last := retried >= maxRetry-spareRetry
	if h.maxAttempts > 0 {
		last = retried+1 >= h.maxAttempts
	}
	var recorded bytes.Buffer
	state, err := h.proc.Process(ctx, pipeline.Attempt{
		Job:    pipeline.Job{Kind: h.kind, ID: id, Payload: payload},
		Number: retried + 1, Last: last || retried >= maxRetry, Final: retried >= maxRetry,
		Result: &recorded,
	})
	switch state {
	case fulfillment.StateFailed:
		return nil, permanent{err}
	case fulfillment.StateRetrying, fulfillment.StateAwaitingAccount:
		return nil, err // a wait for an account is held: it costs no attempt
	case fulfillment.StateCanceled:
		return canceledResult, nil
	}
	if recorded.Len() > 0 {
		return recorded.Bytes(), nil
	}
	return nil, nil
}

// asynqHandler runs the tasks asynq's own server takes (worker.go's
// NewWorker) in a slot shared with the batched fetch, so the two together
// never run more than worker.concurrency attempts.
type asynqHandler struct {
	h     handler
	slots chan struct{}
}

func (a asynqHandler) ProcessTask(ctx context.Context, t *asynq.Task) error {
	select {
	case a.slots <- struct{}{}:
		defer func() { <-a.slots }()
	case <-ctx.Done():
		return ctx.Err()
	}
	id, _ := asynq.GetTaskID(ctx)
	retried, _ := asynq.GetRetryCount(ctx)
	maxRetry, _ := asynq.GetMaxRetry(ctx)
	result, err := a.h.attempt(ctx, id, retried, maxRetry, t.Payload())
	if w := t.ResultWriter(); result != nil && w != nil {
		_, _ = w.Write(result)
	}
	return err
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
	Concurrency int // attempts in flight in all
	// Servers is how many fetch loops take tasks off the queue (default 1),
	// each many tasks per Redis round trip (fetch.go).
	Servers int
	// MaxAttempts is worker.retry.max_attempts, the attempts a failing
	// task gets whatever bound it was queued with (0: the task's bound).
	MaxAttempts     int
	InitialDelay    time.Duration
	MaxDelay        time.Duration
	ShutdownTimeout time.Duration
	Logger          *slog.Logger
}

// Worker processes the queue's tasks of every registered kind. Tasks are
// taken many per Redis round trip by the fetch loops of fetch.go, and their
// outcomes written in shared pipelines, with asynq v0.26.0's own scripts
// (leases, retries, archiving and statistics as asynq's processor keeps
// them). One asynq.Server runs beside them for what asynq does per queue
// rather than per task — moving due retries to pending, recovering tasks
// whose lease expired (a worker that died), deleting expired completed
// tasks, announcing the server to asynqmon — and takes tasks too, one at a
// time, in the same slots.
type Worker struct {
	srv   *asynq.Server
	mux   *asynq.ServeMux
	fetch *fetcher
}

// NewWorker returns a worker that hands the tasks of every kind to proc.
func NewWorker(rdb redis.UniversalClient, kinds *pipeline.Kinds, proc Processor, o WorkerOptions) *Worker {
	slots := make(chan struct{}, max(1, o.Concurrency))
	retryDelay := RetryDelay(o.InitialDelay, o.MaxDelay)
	// A store outage or a wait for another task is retried without counting
	// as an attempt (asynq leaves the retry counter alone).
	isFailure := func(err error) bool { return !pipeline.IsHold(err) }
	w := &Worker{mux: asynq.NewServeMux()}
	w.srv = asynq.NewServerFromRedisClient(rdb, asynq.Config{
		Concurrency:     1,
		Queues:          map[string]int{o.Queue: 1},
		RetryDelayFunc:  retryDelay,
		IsFailure:       isFailure,
		ShutdownTimeout: o.ShutdownTimeout,
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
	})
	hs := handlers(kinds, proc, o)
	for typ, h := range hs {
		w.mux.Handle(typ, asynqHandler{h: h, slots: slots})
	}
	w.fetch = newFetcher(rdb, o.Queue, hs, slots, max(1, o.Servers), retryDelay, isFailure, o.ShutdownTimeout, o.Logger)
	return w
}

// handlers returns the handler of each registered kind, by task type.
func handlers(kinds *pipeline.Kinds, proc Processor, o WorkerOptions) map[string]handler {
	hs := map[string]handler{}
	for _, k := range kinds.All() {
		hs[k.TaskType] = handler{kind: k.Name, proc: proc, maxAttempts: o.MaxAttempts}
	}
	return hs
}

// Start begins processing in the background.
func (w *Worker) Start() error {
	if err := w.srv.Start(w.mux); err != nil {
		return fmt.Errorf("start worker: %w", err)
	}
	w.fetch.start()
	return nil
}

// Shutdown stops taking tasks and waits up to the shutdown timeout for those
// in flight; unfinished ones go back to the queue. asynq's server and the
// fetch stop in parallel, so the whole takes one shutdown timeout.
func (w *Worker) Shutdown() {
	var wg sync.WaitGroup
	wg.Go(w.srv.Shutdown)
	wg.Go(w.fetch.shutdown)
	wg.Wait()
}

// slogAdapter lets asynq log through slog.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Debug(args ...any) { a.l.Debug("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Info(args ...any)  { a.l.Info("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Warn(args ...any)  { a.l.Warn("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Error(args ...any) { a.l.Error("asynq", "detail", fmt.Sprint(args...)) }
func (a slogAdapter) Fatal(args ...any) { a.l.Error("asynq_fatal", "detail", fmt.Sprint(args...)) }
