package queue_test

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// asynq archives a task whose retries reached its bound whatever the
// handler returns; a Hold does not count as a retry. With
// worker.retry.max_attempts: 1 every attempt is the last: a held one (a
// wait for an earlier event, a busy slot, an account) must still run again,
// not be archived, and a counted failure still ends the task.
func TestHeldLastAttemptRunsAgain(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, queue.Options{Name: name, MaxAttempts: 1, Retention: time.Hour, TaskTimeout: time.Minute})
	var mu sync.Mutex
	seen := map[string][]pipeline.Attempt{}
	proc := processorFunc(func(_ context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		mu.Lock()
		seen[a.Job.Ref.OrderNumber] = append(seen[a.Job.Ref.OrderNumber], a)
		n := len(seen[a.Job.Ref.OrderNumber])
		mu.Unlock()
		switch {
		case a.Job.Ref.OrderNumber == "FAIL":
			return fulfillment.StateFailed, errors.New("no such user")
		case n < 3:
			return fulfillment.StateRetrying, pipeline.Wait(errors.New("waiting for task note_1"))
		}
		return fulfillment.StateDone, nil
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 2, InitialDelay: 10 * time.Millisecond,
		MaxDelay: 10 * time.Millisecond, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	ctx := context.Background()
	held, failed := job(t, "ping", "HELD"), job(t, "ping", "FAIL")
	for _, j := range []pipeline.Job{held, failed} {
		if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitTask(t, q, held.ID, func(tk fulfillment.Task) bool { return !tk.State.Open() })
	waitTask(t, q, failed.ID, func(tk fulfillment.Task) bool { return !tk.State.Open() })
	if e, _, _ := q.Task(ctx, held.ID); e.Task.State != fulfillment.StateDone || e.Task.Attempts != 1 {
		t.Errorf("held at its last attempt: %+v, want done after its waits, one attempt", e.Task)
	}
	if e, _, _ := q.Task(ctx, failed.ID); e.Task.State != fulfillment.StateFailed {
		t.Errorf("failed at its last attempt: %+v, want failed", e.Task)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, a := range seen["HELD"] {
		if a.Number != 1 || !a.Last || a.Final {
			t.Errorf("attempt %+v: want number 1, last, not final", a)
		}
	}
}

// A task queued with a bound one short (by a version without the spare
// retry) still gets worker.retry.max_attempts attempts: the worker reads its
// last attempt from the configuration, not from the task.
func TestOlderTaskGetsEveryAttempt(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	// Bound 2: what the older version wrote for max_attempts 3.
	q := queue.New(rdb, kinds, queue.Options{Name: name, MaxAttempts: 2, Retention: time.Hour, TaskTimeout: time.Minute})
	var mu sync.Mutex
	var seen []pipeline.Attempt
	proc := processorFunc(func(_ context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		mu.Lock()
		seen = append(seen, a)
		mu.Unlock()
		if a.Last {
			return fulfillment.StateFailed, errors.New("LMS 500")
		}
		return fulfillment.StateRetrying, errors.New("LMS 500")
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 1, MaxAttempts: 3, InitialDelay: 10 * time.Millisecond,
		MaxDelay: 10 * time.Millisecond, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	j := job(t, "ping", "OLD")
	if _, err := q.Enqueue(context.Background(), j, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	waitTask(t, q, j.ID, func(tk fulfillment.Task) bool { return !tk.State.Open() })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) != 3 || !seen[2].Last || seen[1].Last {
		t.Fatalf("attempts %+v: want 3, the third the last", seen)
	}
}
