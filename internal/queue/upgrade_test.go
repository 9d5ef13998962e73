package queue_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// snapshotQueue is the queue of testdata/upgrade-b7f0732.json: every key of
// it as the queue of commit b7f0732 wrote them (asynq v0.26.0's task hashes
// and lists, written by hand then, and the order index), taken with DUMP
// after that version's queue and worker, with the test kinds, MaxAttempts
// 3 and a retention of 50 years, had run ping tasks of the orders UP-DONE
// (done), UP-CANCELED (canceled), UP-FAILED (failed: "no such user"),
// UP-RETRY (retrying after a counted "LMS 500", next in an hour) and
// UP-AWAIT (awaiting_account, next in two hours), then queued ping and pong
// of UP-PENDING and pong of UP-DONE. asynq's keys carry the queue's name
// inside them and inside each task's message, so the snapshot is restored
// under that name: a run of this test owns it while it holds snapshotLock.
const (
	snapshotQueue = "upgrade-b7f0732"
	snapshotLock  = "coordinator-test-lock:" + snapshotQueue
)

// Tasks and indexes written by the earlier queue are shown and run by this
// one: each order reads back in its state, a repeat is still idempotent, a
// failed task is queued again, and the worker runs every open task with its
// attempt counted on from the earlier one's.
func TestUpgradeFromHandWrittenQueue(t *testing.T) {
	t.Parallel()
	rdb, _ := queuetest.Redis(t)
	ctx := context.Background()
	if ok, err := rdb.SetNX(ctx, snapshotLock, "1", 2*time.Minute).Result(); err != nil || !ok {
		t.Skipf("another run holds the snapshot's queue %s (%v)", snapshotQueue, err)
	}
	t.Cleanup(func() {
		if err := queue.Purge(context.Background(), rdb, snapshotQueue); err != nil {
			t.Logf("purge %s: %v", snapshotQueue, err)
		}
		rdb.Del(context.Background(), snapshotLock)
	})
	if err := queue.Purge(ctx, rdb, snapshotQueue); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile("testdata/upgrade-b7f0732.json")
	if err != nil {
		t.Fatal(err)
	}
	var keys []struct{ Key, Dump string }
	if err := json.Unmarshal(b, &keys); err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		d, err := base64.StdEncoding.DecodeString(k.Dump)
		if err != nil {
			t.Fatal(err)
		}
		if err := rdb.Restore(ctx, k.Key, 0, string(d)).Err(); err != nil {
			if strings.Contains(err.Error(), "version") {
				t.Skipf("this Redis cannot read the snapshot's DUMP format: %v", err)
			}
			t.Fatalf("restore %s: %v", k.Key, err)
		}
	}
	// asynq's client named the queue in its set of queues when it wrote it.
	if err := rdb.SAdd(ctx, "asynq:queues", snapshotQueue).Err(); err != nil {
		t.Fatal(err)
	}

	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, queue.Options{Name: snapshotQueue, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Minute})
	type seen struct {
		state    fulfillment.State
		attempts int
		err      string
	}
	want := map[string]seen{
		"ping UP-DONE":     {fulfillment.StateDone, 1, ""},
		"pong UP-DONE":     {fulfillment.StateQueued, 0, ""},
		"ping UP-CANCELED": {fulfillment.StateCanceled, 1, ""},
		"ping UP-FAILED":   {fulfillment.StateFailed, 1, "no such user"},
		"ping UP-RETRY":    {fulfillment.StateRetrying, 1, "LMS 500"},
		"ping UP-AWAIT":    {fulfillment.StateAwaitingAccount, 0, "awaiting_account: no LMS account for a@example.com yet"},
		"ping UP-PENDING":  {fulfillment.StateQueued, 0, ""},
		"pong UP-PENDING":  {fulfillment.StateQueued, 0, ""},
	}
	for _, order := range []string{"UP-DONE", "UP-CANCELED", "UP-FAILED", "UP-RETRY", "UP-AWAIT", "UP-PENDING"} {
		es, err := q.Order(ctx, "default", order)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range es {
			key := e.Task.Kind + " " + order
			if got := (seen{e.Task.State, e.Task.Attempts, e.Task.LastError}); got != want[key] || e.Job.Ref.OrderNumber != order {
				t.Errorf("%s reads %+v (order %q), want %+v", key, got, e.Job.Ref.OrderNumber, want[key])
			}
			delete(want, key)
		}
	}
	if len(want) > 0 {
		t.Fatalf("not listed under their orders: %v", want)
	}
	n := 0
	if _, err := q.Scan(ctx, pipeline.ScanOptions{Max: 100}, func(pipeline.Entry) error { n++; return nil }); err != nil || n != 8 {
		t.Fatalf("scan found %d tasks (%v), want 8", n, err)
	}

	// A repeat of a done line queues nothing; a failed one is queued again.
	for _, order := range []string{"UP-DONE", "UP-FAILED"} {
		j := job(t, "ping", order)
		if id, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil || id != j.ID {
			t.Fatalf("repeat of %s: %q %v", order, id, err)
		}
	}
	if e, _, _ := q.Task(ctx, job(t, "ping", "UP-DONE").ID); e.Task.State != fulfillment.StateDone {
		t.Fatalf("a repeat of a done line made it %s", e.Task.State)
	}

	var mu sync.Mutex
	attempts := map[string]pipeline.Attempt{}
	proc := processorFunc(func(_ context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		mu.Lock()
		attempts[a.Job.Kind+" "+a.Job.Ref.OrderNumber] = a
		mu.Unlock()
		return fulfillment.StateDone, nil
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: snapshotQueue, Concurrency: 4, MaxAttempts: 3,
		InitialDelay: time.Second, MaxDelay: time.Second, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	for _, order := range []string{"UP-RETRY", "UP-AWAIT"} {
		if ok, err := q.RunNow(ctx, job(t, "ping", order).ID); !ok || err != nil {
			t.Fatalf("run %s now: %v %v", order, ok, err)
		}
	}
	runs := map[string]int{ // the attempt's number
		"ping UP-RETRY": 2, "ping UP-AWAIT": 1, "ping UP-FAILED": 1, "ping UP-PENDING": 1, "pong UP-PENDING": 1, "pong UP-DONE": 1,
	}
	for key := range runs {
		kind, order, _ := strings.Cut(key, " ")
		waitTask(t, q, job(t, kind, order).ID, func(tk fulfillment.Task) bool { return tk.State == fulfillment.StateDone })
	}
	mu.Lock()
	defer mu.Unlock()
	for key, number := range runs {
		if a, ok := attempts[key]; !ok || a.Number != number || a.Last || a.Final {
			t.Errorf("%s: attempt %+v (run %v), want number %d, not the last", key, a, ok, number)
		}
		delete(attempts, key)
	}
	if len(attempts) > 0 {
		t.Errorf("finished tasks ran again: %v", attempts)
	}
}
