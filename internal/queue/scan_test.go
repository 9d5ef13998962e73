package queue_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// Scan reads the tasks of registered kinds from every list asynq keeps
// (open ones only when asked), and RunNow moves a waiting task to pending.
func TestScanAndRunNow(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	q := queue.New(rdb, testKinds(noop), testOptions(name))
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx := context.Background()

	if truncated, err := q.Scan(ctx, pipeline.ScanOptions{Max: 10}, func(pipeline.Entry) error { return nil }); err != nil || truncated {
		t.Fatalf("scan of a queue never used: %v %v", truncated, err)
	}
	for _, o := range []string{"S-1", "S-2", "S-3"} {
		if _, err := q.Enqueue(ctx, job(t, "ping", o), pipeline.EnqueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	failed := job(t, "ping", "S-1").ID
	if err := insp.ArchiveTask(name, failed); err != nil {
		t.Fatal(err)
	}
	// A task waiting for a later attempt, and one of a kind nobody registered.
	waiting := job(t, "pong", "S-4")
	c := asynq.NewClientFromRedisClient(rdb)
	if _, err := c.Enqueue(asynq.NewTask("test:pong", waiting.Payload), asynq.TaskID(waiting.ID), asynq.Queue(name),
		asynq.ProcessIn(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Enqueue(asynq.NewTask("other:kind", []byte("{}")), asynq.Queue(name)); err != nil {
		t.Fatal(err)
	}

	scan := func(o pipeline.ScanOptions) ([]string, bool) {
		t.Helper()
		var ids []string
		truncated, err := q.Scan(ctx, o, func(e pipeline.Entry) error { ids = append(ids, e.Task.TaskID); return nil })
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(ids)
		return ids, truncated
	}
	all := []string{failed, job(t, "ping", "S-2").ID, job(t, "ping", "S-3").ID, waiting.ID}
	slices.Sort(all)
	if got, truncated := scan(pipeline.ScanOptions{Max: 100}); !slices.Equal(got, all) || truncated {
		t.Errorf("scan: %v (truncated %v), want %v", got, truncated, all)
	}
	open := slices.DeleteFunc(slices.Clone(all), func(id string) bool { return id == failed })
	if got, _ := scan(pipeline.ScanOptions{OpenOnly: true, Max: 100}); !slices.Equal(got, open) {
		t.Errorf("open scan: %v, want %v", got, open)
	}
	if got, truncated := scan(pipeline.ScanOptions{Max: 2}); len(got) != 2 || !truncated {
		t.Errorf("bounded scan: %v (truncated %v), want 2 and truncated", got, truncated)
	}

	if ok, err := q.RunNow(ctx, waiting.ID); err != nil || !ok {
		t.Fatalf("run now: %v %v", ok, err)
	}
	if info, err := insp.GetTaskInfo(name, waiting.ID); err != nil || info.State != asynq.TaskStatePending {
		t.Errorf("after run now: %v %v, want pending", info.State, err)
	}
	for _, id := range []string{waiting.ID, failed, "missing"} { // pending, archived, gone: not waiting
		if ok, err := q.RunNow(ctx, id); err != nil || ok {
			t.Errorf("run now %s: %v %v, want false", id, ok, err)
		}
	}
}
