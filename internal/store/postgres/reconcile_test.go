package postgres

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// The queue keeps a task's last error as the handler returned it, NUL bytes
// included; PostgreSQL refuses NUL in text and jsonb. The
// reconciler copies a failed task's last error into the ledger and into its
// fulfillment_completed event: cleaned, one such task no longer fails every
// reconcile pass.
func TestReconcileCleansTheQueuesLastError(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	rdb, qname := queuetest.Redis(t)
	kinds := pipeline.NewKinds(pipeline.Kind{Name: "ping", TaskType: "test:ping", Done: "pinged", Rank: 1,
		Handle: pipeline.NoResult(func(context.Context, pipeline.Job) error { return nil })})
	q := queue.New(rdb, kinds, queue.Options{Name: qname, MaxAttempts: 1, Retention: time.Hour, TaskTimeout: time.Minute})
	var mu sync.Mutex
	var told []fulfillment.Completed
	svc := pipeline.New(pipeline.Options{Kinds: kinds, Queue: q, Ledger: NewLedger(connect(t, true), qname),
		ReconcileQuiet: time.Nanosecond, Completed: func(_ context.Context, c fulfillment.Completed) error {
			mu.Lock()
			defer mu.Unlock()
			told = append(told, c)
			return nil
		}})
	ref := fulfillment.Ref{Site: "default", OrderNumber: "NUL-1", CourseID: "course-v1:a+b+c", CourseMode: "audit"}
	id, err := svc.Accept(ctx, "ping", ref, ref)
	if err != nil {
		t.Fatal(err)
	}

	// A worker that never reached the ledger failed the task in the queue
	// with an LMS's binary answer in its error.
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Queues: map[string]int{qname: 1}, Concurrency: 1,
		Logger: quietAsynq{}})
	if err := srv.Start(asynq.HandlerFunc(func(context.Context, *asynq.Task) error {
		return fmt.Errorf("lms enroll: 500: \x00\x00 gzip: %w", asynq.SkipRetry)
	})); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if info, err := insp.GetTaskInfo(qname, id); err == nil && info.State == asynq.TaskStateArchived {
			if !strings.Contains(info.LastErr, "\x00") {
				t.Fatalf("the queue's last error %q holds no NUL: the test needs one", info.LastErr)
			}
			break
		}
		if time.Now().After(deadline) {
			info, err := insp.GetTaskInfo(qname, id)
			t.Fatalf("the task was never failed in the queue: %+v %v", info, err)
		}
	}

	for pass := range 2 {
		if res, err := svc.Reconcile(ctx); err != nil || (pass == 0 && res.Synced != 1) {
			t.Fatalf("reconcile pass %d: %+v %v, want the failed task synced without error", pass, res, err)
		}
	}
	lines, err := svc.Lines(ctx, "default", "NUL-1")
	if err != nil || len(lines) != 1 {
		t.Fatalf("lines: %v %v", lines, err)
	}
	want := "lms enroll: 500: \uFFFD\uFFFD gzip"
	if l := lines[0]; l.State != fulfillment.StateFailed || !strings.HasPrefix(l.LastError, want) {
		t.Errorf("ledger line %s %q, want failed with %q", l.State, l.LastError, want)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(told) != 1 || strings.Contains(told[0].LastError, "\x00") || !utf8.ValidString(told[0].LastError) {
		t.Errorf("fulfillment_completed told %+v, want once with the cleaned error", told)
	}
}

// quietAsynq keeps the asynq server's start and stop lines out of the test
// output.
type quietAsynq struct{}

func (quietAsynq) Debug(...any) {}
func (quietAsynq) Info(...any)  {}
func (quietAsynq) Warn(...any)  {}
func (quietAsynq) Error(...any) {}
func (quietAsynq) Fatal(...any) {}
