package queue_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// testKinds are two kinds owned by this test, not by any flow of the
// program: the queue must serve whatever is registered.
func testKinds(handle func(context.Context, pipeline.Job) error) *pipeline.Kinds {
	return pipeline.NewKinds(
		pipeline.Kind{Name: "ping", TaskType: "test:ping", Done: "pinged", Rank: 1, Handle: pipeline.NoResult(handle),
			LegacyID: func(k fulfillment.Key) string { return "ping-" + pipeline.Digest(k) }},
		pipeline.Kind{Name: "pong", TaskType: "test:pong", Done: "ponged", Rank: 2, Handle: pipeline.NoResult(handle)},
	)
}

func job(t testing.TB, kind, order string) pipeline.Job {
	t.Helper()
	ref := fulfillment.Ref{Site: "default", OrderNumber: order, CourseID: "course-v1:a+b+c", CourseMode: "audit",
		AcceptedAt: time.Now().UTC().Truncate(time.Second)}
	b, err := json.Marshal(ref)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.Job{Kind: kind, ID: pipeline.TaskID(kind, ref.Key()), Ref: ref, Payload: b}
}

// testOptions are the queue options of most tests: three attempts, an
// hour's retention, a minute per attempt.
func testOptions(name string) queue.Options {
	return queue.Options{Name: name, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Minute}
}

func newQueue(t *testing.T) (*queue.Queue, *asynq.Inspector, string) {
	rdb, name := queuetest.Redis(t)
	q := queue.New(rdb, testKinds(noop), testOptions(name))
	return q, asynq.NewInspectorFromRedisClient(rdb), name
}

func noop(context.Context, pipeline.Job) error { return nil }

func TestEnqueueIdempotentUntilFailed(t *testing.T) {
	t.Parallel()
	q, insp, name := newQueue(t)
	ctx := context.Background()
	j := job(t, "ping", "EDX-9")

	id1, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{})
	if err != nil || id1 != j.ID {
		t.Fatalf("enqueue: %q %v, want %q", id1, err, j.ID)
	}
	if id2, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil || id2 != id1 {
		t.Fatalf("repeat: %q %v, want %q", id2, err, id1)
	}
	if info, _ := insp.GetQueueInfo(name); info.Size != 1 {
		t.Fatalf("queue size %d after a repeat, want 1", info.Size)
	}
	// Another kind of the same line is a task of its own.
	if id, err := q.Enqueue(ctx, job(t, "pong", "EDX-9"), pipeline.EnqueueOptions{}); err != nil || id == id1 {
		t.Fatalf("pong of the same line: %q %v, want its own id", id, err)
	}
	// Fail it for good, as the worker would after a permanent answer.
	if err := insp.ArchiveTask(name, id1); err != nil {
		t.Fatal(err)
	}
	if id3, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil || id3 != id1 {
		t.Fatalf("re-request after failure: %q %v", id3, err)
	}
	info, err := insp.GetTaskInfo(name, id1)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after re-request the task is %v (%v), want pending", info.State, err)
	}
	if info.Type != "test:ping" {
		t.Errorf("task type %q, want the kind's test:ping", info.Type)
	}
}

// A line an earlier version queued under its legacy id (indexed under the
// order) is not queued again under the new id while that task is in effect.
func TestEnqueueHonoursLegacyID(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	q := queue.New(rdb, testKinds(noop), testOptions(name))
	ctx := context.Background()
	j := job(t, "ping", "EDX-OLD")
	legacy := "ping-" + pipeline.Digest(j.Ref.Key())
	// What the earlier version did: index the id under the order, then
	// enqueue with it.
	if err := rdb.SAdd(ctx, "coordinator:{"+name+"}:order:default:EDX-OLD", legacy).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("test:ping", j.Payload),
		asynq.TaskID(legacy), asynq.Queue(name), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	id, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{LegacyID: legacy})
	if err != nil || id != legacy {
		t.Fatalf("enqueue of a legacy line: %q %v, want the legacy id %q", id, err, legacy)
	}
	if info, _ := asynq.NewInspectorFromRedisClient(rdb).GetQueueInfo(name); info.Size != 1 {
		t.Fatalf("queue size %d, want only the legacy task", info.Size)
	}
	// Its order lists it, read as its kind.
	es, err := q.Order(ctx, "default", "EDX-OLD")
	if err != nil || len(es) != 1 || es[0].Job.Kind != "ping" || es[0].Task.TaskID != legacy {
		t.Fatalf("order = %+v %v, want the legacy ping task", es, err)
	}
}

func TestTaskStatesAndExists(t *testing.T) {
	t.Parallel()
	q, insp, name := newQueue(t)
	ctx := context.Background()
	j := job(t, "ping", "EDX-C")
	if ok, err := q.Exists(ctx, j.Ref.Key(), j.ID); err != nil || ok {
		t.Fatalf("Exists before enqueue: %v %v", ok, err)
	}
	if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	e, found, err := q.Task(ctx, j.ID)
	if err != nil || !found || e.Task.State != fulfillment.StateQueued || e.Job.Ref.OrderNumber != "EDX-C" || e.Task.Kind != "ping" {
		t.Fatalf("Task = %+v %v %v, want a queued ping of EDX-C", e, found, err)
	}
	if ok, err := q.Exists(ctx, j.Ref.Key(), j.ID); err != nil || !ok {
		t.Fatalf("Exists of a queued task: %v %v", ok, err)
	}
	if err := insp.ArchiveTask(name, j.ID); err != nil {
		t.Fatal(err)
	}
	if e, _, _ := q.Task(ctx, j.ID); e.Task.State != fulfillment.StateFailed {
		t.Fatalf("archived task reads %q, want failed", e.Task.State)
	}
	if ok, _ := q.Exists(ctx, j.Ref.Key(), j.ID); !ok {
		t.Fatal("an archived task reads as missing")
	}
	if err := insp.DeleteTask(name, j.ID); err != nil {
		t.Fatal(err)
	}
	if ok, _ := q.Exists(ctx, j.Ref.Key(), j.ID); ok {
		t.Fatal("a deleted task reads as existing")
	}
}

// The worker hands every registered kind's tasks to the processor, and maps
// its states onto asynq: done and canceled complete (canceled keeping that
// as its result, done what the kind recorded), failed is archived at once.
func TestWorkerRunsEveryKind(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, queue.Options{Name: name, MaxAttempts: 5, Retention: time.Hour, TaskTimeout: time.Minute})
	var held sync.Once
	proc := processorFunc(func(_ context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		switch a.Job.Ref.OrderNumber {
		case "HOLD":
			state, err := fulfillment.StateDone, error(nil)
			held.Do(func() { state, err = fulfillment.StateRetrying, pipeline.Hold(errors.New("redis: failing over")) })
			return state, err
		case "CANCEL":
			return fulfillment.StateCanceled, nil
		case "FAIL":
			return fulfillment.StateFailed, errors.New("no such user")
		case "OK":
			if a.Result == nil {
				return fulfillment.StateFailed, errors.New("no result writer")
			}
			if _, err := a.Result.Write([]byte("uuid-" + a.Job.ID)); err != nil {
				return fulfillment.StateRetrying, err
			}
		}
		return fulfillment.StateDone, nil
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 3, Servers: 2, InitialDelay: time.Second,
		MaxDelay: time.Second, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	defer w.Shutdown()
	ctx := context.Background()
	want := map[string]fulfillment.State{}
	var holdID, okID string
	for kind, orders := range map[string][]string{"ping": {"OK", "CANCEL", "HOLD"}, "pong": {"FAIL"}} {
		for _, o := range orders {
			j := job(t, kind, o)
			if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
				t.Fatal(err)
			}
			want[j.ID] = map[string]fulfillment.State{"OK": fulfillment.StateDone, "CANCEL": fulfillment.StateCanceled,
				"FAIL": fulfillment.StateFailed, "HOLD": fulfillment.StateDone}[o]
			switch o {
			case "HOLD":
				holdID = j.ID
			case "OK":
				okID = j.ID
			}
		}
	}
	for id, state := range want {
		var got fulfillment.Task
		for range 800 { // up to 20 s: the held task is retried after ≥ 1 s, under load later
			e, _, err := q.Task(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			if got = e.Task; !got.State.Open() {
				break
			}
			time.Sleep(25 * time.Millisecond)
		}
		if got.State != state || (state == fulfillment.StateFailed && got.LastError != "no such user") {
			t.Errorf("task %s ended %q (%q), want %q", id, got.State, got.LastError, state)
		}
		// What a kind recorded reads back as the task's result; the
		// queue's own mark of a canceled task is no kind's result.
		if wantResult := map[bool]string{true: "uuid-" + id}[id == okID]; got.Result != wantResult {
			t.Errorf("task %s: result %q, want %q", id, got.Result, wantResult)
		}
	}
	// The held attempt was retried without counting: one attempt in all.
	if e, _, _ := q.Task(ctx, holdID); e.Task.Attempts != 1 {
		t.Errorf("held task: %d attempts counted, want 1", e.Task.Attempts)
	}
}

type processorFunc func(context.Context, pipeline.Attempt) (fulfillment.State, error)

// Process reads the job's reference from its payload, as pipeline.Service
// does, and runs f.
func (f processorFunc) Process(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error) {
	if err := json.Unmarshal(a.Job.Payload, &a.Job.Ref); err != nil {
		return fulfillment.StateFailed, pipeline.Permanent(err)
	}
	return f(ctx, a)
}

type retryIn time.Duration

func (r retryIn) Error() string          { return "throttled" }
func (r retryIn) RetryIn() time.Duration { return time.Duration(r) }

func TestRetryDelay(t *testing.T) {
	f := queue.RetryDelay(5*time.Second, time.Minute)
	for n := range 70 {
		d := f(n, errors.New("503"), nil)
		if d < 5*time.Second || d > time.Minute {
			t.Errorf("retry %d: delay %v outside [5s, 1m]", n, d)
		}
	}
	if d := f(0, errors.New("x"), nil); d > 5*time.Second {
		t.Errorf("first retry delay %v, want about initial_delay", d)
	}
	if d := f(10, errors.New("x"), nil); d < 30*time.Second {
		t.Errorf("10th retry delay %v, want near max_delay", d)
	}
	if d := f(0, retryIn(42*time.Second), nil); d != 42*time.Second {
		t.Errorf("Retry-After 42s: delay %v", d)
	}
	if d := f(0, retryIn(time.Hour), nil); d != time.Minute {
		t.Errorf("Retry-After beyond max_delay: delay %v, want max_delay", d)
	}
}

// A task is not queued while the task it must give way to exists, in any
// state: the order's index names it, and asynq's Inspector finds it. A task
// the index names that asynq does not hold (deleted, expired, or never
// queued) does not stop it.
func TestEnqueueUnlessExists(t *testing.T) {
	t.Parallel()
	q, insp, name := newQueue(t)
	ctx := context.Background()
	ping, pong := job(t, "ping", "EDX-E"), job(t, "pong", "EDX-E")
	unless := pipeline.EnqueueOptions{UnlessExists: pong.ID}
	if id, err := q.Enqueue(ctx, ping, unless); err != nil || id != ping.ID {
		t.Fatalf("without the other task: %q %v, want queued", id, err)
	}
	if err := insp.DeleteTask(name, ping.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, pong, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, state := range []string{"queued", "archived"} {
		if state == "archived" {
			if err := insp.ArchiveTask(name, pong.ID); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := q.Enqueue(ctx, ping, unless); !errors.Is(err, pipeline.ErrSuperseded) {
			t.Fatalf("with the other task %s: %v, want ErrSuperseded", state, err)
		}
		if _, found, _ := q.Task(ctx, ping.ID); found {
			t.Fatalf("queued although superseded (other task %s)", state)
		}
	}
	if err := insp.DeleteTask(name, pong.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, ping, unless); err != nil {
		t.Fatalf("after the other task was deleted: %v, want queued", err)
	}
}
