package queue_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

func TestTaskIDIsStableAndDistinct(t *testing.T) {
	a := queue.TaskID("default", "EDX-1", "course-v1:a+b+c")
	if a != queue.TaskID("default", "EDX-1", "course-v1:a+b+c") {
		t.Error("same line, different ids")
	}
	for _, other := range []string{
		queue.TaskID("other", "EDX-1", "course-v1:a+b+c"),
		queue.TaskID("default", "EDX-2", "course-v1:a+b+c"),
		queue.TaskID("default", "EDX-1", "course-v1:a+b+d"),
		queue.TaskID("default", "EDX-1course-v1:a+b+c", ""),
	} {
		if other == a {
			t.Errorf("different lines share id %s", a)
		}
	}
}

func TestEnqueueIdempotentUntilFailed(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	enq := queue.NewEnqueuer(rdb, queue.EnqueuerOptions{Queue: q, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Minute})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	o := fulfillment.Order{Site: "default", OrderNumber: "EDX-9", CourseID: "course-v1:a+b+c", CourseMode: "audit"}

	id1, err := enq.Enqueue(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	id2, err := enq.Enqueue(context.Background(), o)
	if err != nil || id2 != id1 {
		t.Fatalf("repeat: %q %v, want %q", id2, err, id1)
	}
	if info, _ := insp.GetQueueInfo(q); info.Size != 1 {
		t.Fatalf("queue size %d after a repeat, want 1", info.Size)
	}
	// Fail it for good, as the worker would after a permanent LMS answer.
	if err := insp.ArchiveTask(q, id1); err != nil {
		t.Fatal(err)
	}
	id3, err := enq.Enqueue(context.Background(), o)
	if err != nil || id3 != id1 {
		t.Fatalf("re-request after failure: %q %v", id3, err)
	}
	info, err := insp.GetTaskInfo(q, id1)
	if err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("after re-request the task is %v (%v), want pending", info.State, err)
	}
}

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
	throttled := &lms.Error{Op: "enroll", Status: 429, RetryAfter: 42 * time.Second}
	if d := f(0, throttled, nil); d != 42*time.Second {
		t.Errorf("429 Retry-After 42s: delay %v", d)
	}
	throttled.RetryAfter = time.Hour
	if d := f(0, throttled, nil); d != time.Minute {
		t.Errorf("Retry-After beyond max_delay: delay %v, want max_delay", d)
	}
}

func BenchmarkNewEnrollTask(b *testing.B) {
	o := fulfillment.Order{Site: "default", OrderNumber: "EDX-100001", CourseID: "course-v1:edX+DemoX+Demo_Course",
		CourseMode: "verified", OrderPlaced: time.Unix(1714566902, 0).UTC(), LMSUserID: 42, EmailOptIn: true,
		RequestID: "0123456789abcdef0123456789abcdef", AcceptedAt: time.Now().UTC()}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := queue.NewEnrollTask(o); err != nil {
			b.Fatal(err)
		}
	}
}
