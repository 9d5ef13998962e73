package queue_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// A task waiting for its learner's account reads back as awaiting_account,
// with no attempt used and its next look when the wait asked, and an
// operator's run-now makes it look again at once.
func TestAwaitingAccountInRedis(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, testOptions(name))
	looks := make(chan struct{}, 10)
	proc := processorFunc(func(_ context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		looks <- struct{}{}
		return fulfillment.StateAwaitingAccount, pipeline.AwaitAccount(errors.New("no LMS account for a@example.com yet"), time.Hour)
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 1, InitialDelay: time.Second,
		MaxDelay: 2 * time.Hour, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	ctx := context.Background()
	j := job(t, "ping", "AWAIT")
	if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	for look := 1; look <= 2; look++ {
		<-looks
		var got fulfillment.Task
		waitTask(t, q, j.ID, func(tk fulfillment.Task) bool { got = tk; return tk.State == fulfillment.StateAwaitingAccount })
		if got.Attempts != 0 || got.NextAttemptAt == nil || time.Until(*got.NextAttemptAt) < 50*time.Minute ||
			got.LastError != "awaiting_account: no LMS account for a@example.com yet" {
			t.Errorf("look %d: %+v, want awaiting with no attempt used and the next look in an hour", look, got)
		}
		if look == 1 {
			if ok, err := q.RunNow(ctx, j.ID); !ok || err != nil {
				t.Fatalf("run now: %v %v", ok, err)
			}
		}
	}
}

// waitTask polls a task until cond holds (bounded, for a loaded machine).
func waitTask(t *testing.T, q *queue.Queue, id string, cond func(fulfillment.Task) bool) {
	t.Helper()
	for range 800 {
		e, _, err := q.Task(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		if cond(e.Task) {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("task %s: condition not met within 20 s", id)
}
