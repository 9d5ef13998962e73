package queue_test

import (
	"context"
	"errors"
	"os"
	"regexp"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// The queue writes asynq's tasks itself (message.go), byte for byte what
// asynq.Client writes, because asynq's client cannot share a pipeline. This
// pins that to the asynq release in go.mod: an upgrade fails here first, and
// must be checked against the new release's internal/base, internal/proto and
// internal/rdb before queue.asynqVersion is changed.
func TestTaskMessagePinned(t *testing.T) {
	t.Parallel()
	mod, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/hibiken/asynq (\S+)`).FindSubmatch(mod)
	if m == nil || string(m[1]) != queue.AsynqVersion {
		t.Fatalf("go.mod requires asynq %q, but the queue's task encoding, keys and enqueue script were written "+
			"for %s: check internal/queue/message.go against the new release before changing asynqVersion", m, queue.AsynqVersion)
	}

	rdb, name := queuetest.Redis(t)
	ctx := context.Background()
	o := queue.Options{Name: name, MaxAttempts: 4, Retention: 36 * time.Hour, TaskTimeout: 90 * time.Second}
	q := queue.New(rdb, testKinds(noop), o)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	j := job(t, "ping", "EDX-PIN")
	taskKey := "asynq:{" + name + "}:t:" + j.ID

	// What asynq's own client writes for the same task: 4 attempts are 3
	// retries, and the bound has one retry to spare (queue.spareRetry).
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("test:ping", j.Payload),
		asynq.TaskID(j.ID), asynq.Queue(name), asynq.MaxRetry(4), asynq.Retention(o.Retention),
		asynq.Timeout(o.TaskTimeout)); err != nil {
		t.Fatal(err)
	}
	theirs, err := rdb.HGetAll(ctx, taskKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	if err := insp.DeleteTask(name, j.ID); err != nil {
		t.Fatal(err)
	}
	if got := queue.TaskMessage("test:ping", j.Payload, j.ID, name, 4, o.TaskTimeout, o.Retention); string(got) != theirs["msg"] {
		t.Fatalf("task message differs from asynq.Client's:\n ours   %x\n theirs %x", got, theirs["msg"])
	}

	// Asynq's defaults (25 retries, a 30-minute timeout, no retention), as
	// a second set of fields.
	j2 := job(t, "pong", "EDX-PIN")
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask("test:pong", j2.Payload),
		asynq.TaskID(j2.ID), asynq.Queue(name)); err != nil {
		t.Fatal(err)
	}
	theirs2, err := rdb.HGet(ctx, "asynq:{"+name+"}:t:"+j2.ID, "msg").Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := queue.TaskMessage("test:pong", j2.Payload, j2.ID, name, 25, 30*time.Minute, 0); string(got) != theirs2 {
		t.Fatalf("task message with asynq's defaults differs:\n ours   %x\n theirs %x", got, theirs2)
	}
	if err := insp.DeleteTask(name, j2.ID); err != nil {
		t.Fatal(err)
	}

	// Ours, through Enqueue.
	if id, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil || id != j.ID {
		t.Fatalf("enqueue: %q %v", id, err)
	}
	ours, err := rdb.HGetAll(ctx, taskKey).Result()
	if err != nil {
		t.Fatal(err)
	}
	if ours["msg"] != theirs["msg"] || ours["state"] != theirs["state"] || len(ours) != len(theirs) || ours["pending_since"] == "" {
		t.Fatalf("task hash differs from asynq.Client's:\n ours   %q\n theirs %q", ours, theirs)
	}
	if pending, _ := rdb.LRange(ctx, "asynq:{"+name+"}:pending", 0, -1).Result(); !slices.Equal(pending, []string{j.ID}) {
		t.Fatalf("pending list %q, want [%s]", pending, j.ID)
	}
	if ok, _ := rdb.SIsMember(ctx, "asynq:queues", name).Result(); !ok {
		t.Fatal("queue not named in asynq:queues")
	}

	// asynq's Inspector reads it back...
	info, err := insp.GetTaskInfo(name, j.ID)
	if err != nil {
		t.Fatal(err)
	}
	if info.Type != "test:ping" || string(info.Payload) != string(j.Payload) || info.Queue != name || info.MaxRetry != 4 ||
		info.Timeout != o.TaskTimeout || info.Retention != o.Retention || info.State != asynq.TaskStatePending {
		t.Fatalf("Inspector reads %+v", info)
	}
	// ...and asynq's server runs it, completing it with its retention.
	type seen struct {
		id       string
		payload  string
		maxRetry int
		deadline time.Time
	}
	ran := make(chan seen, 1)
	srv := asynq.NewServerFromRedisClient(rdb, asynq.Config{Concurrency: 1, Queues: map[string]int{name: 1},
		LogLevel: asynq.ErrorLevel})
	mux := asynq.NewServeMux()
	mux.HandleFunc("test:ping", func(ctx context.Context, task *asynq.Task) error {
		id, _ := asynq.GetTaskID(ctx)
		mr, _ := asynq.GetMaxRetry(ctx)
		dl, _ := ctx.Deadline()
		ran <- seen{id, string(task.Payload()), mr, dl}
		return nil
	})
	if err := srv.Start(mux); err != nil {
		t.Fatal(err)
	}
	defer srv.Shutdown()
	select {
	case s := <-ran:
		if s.id != j.ID || s.payload != string(j.Payload) || s.maxRetry != 4 ||
			time.Until(s.deadline) > o.TaskTimeout || time.Until(s.deadline) < o.TaskTimeout-30*time.Second {
			t.Fatalf("server ran %+v", s)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("asynq's server did not run the task")
	}
	waitState(t, insp, name, j.ID, asynq.TaskStateCompleted)
}

func waitState(t *testing.T, insp *asynq.Inspector, queueName, id string, want asynq.TaskState) {
	t.Helper()
	var info *asynq.TaskInfo
	var err error
	for range 400 {
		if info, err = insp.GetTaskInfo(queueName, id); err == nil && info.State == want {
			return
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("task %s: %+v %v, want %v", id, info, err, want)
}

// A Redis restarted between two accepts has lost its script cache: the
// batch's NOSCRIPT is answered by loading the script and resending, not by a
// 503. Accepts running while Redis is killed fail or succeed, and every one
// that succeeded is in Redis after the restart (it persists each write
// before answering): a failed batch answers an error to every accept in it.
func TestEnqueueAcrossRedisRestart(t *testing.T) {
	t.Parallel()
	srv := queuetest.StartServer(t)
	opt, err := redis.ParseURL(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = time.Second, time.Second, time.Second
	opt.MaxRetries = -1 // as a failure shows without retries
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	name := queuetest.Name()
	q := queue.New(rdb, testKinds(noop), testOptions(name))
	ctx := context.Background()
	if _, err := q.Enqueue(ctx, job(t, "ping", "R-1"), pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if _, err := q.Enqueue(ctx, job(t, "ping", "R-2"), pipeline.EnqueueOptions{}); !errors.Is(err, fulfillment.ErrUnavailable) {
		t.Fatalf("enqueue with Redis down: %v, want ErrUnavailable", err)
	}
	srv.Start()
	if n, _ := rdb.Exists(ctx, "asynq:{"+name+"}:t:"+job(t, "ping", "R-1").ID).Result(); n != 1 {
		t.Fatal("the task answered before the restart is gone")
	}
	// The script cache is empty now.
	if id, err := q.Enqueue(ctx, job(t, "ping", "R-3"), pipeline.EnqueueOptions{}); err != nil || id == "" {
		t.Fatalf("first enqueue after the restart: %q %v, want queued (NOSCRIPT answered)", id, err)
	}
	if stats, _ := rdb.Info(ctx, "commandstats").Result(); !regexp.MustCompile(`cmdstat_script(\|load)?:calls=1,`).MatchString(stats) {
		t.Fatalf("the script was not reloaded after the restart:\n%s", stats)
	}
	// Mid-batch: many accepts at once, Redis killed under them.
	var ok sync.Map
	var failed atomic.Int64
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				j := job(t, "ping", "M-"+string(rune('a'+g))+"-"+strconv.Itoa(i))
				if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err == nil {
					ok.Store(j.ID, true)
				} else {
					failed.Add(1)
				}
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	srv.Kill()
	// Down until accepts have seen it (dials are retried, so how long that
	// takes depends on the machine's load), then back.
	for deadline := time.Now().Add(30 * time.Second); failed.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
	srv.Start()
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()
	var answered, lost int
	ok.Range(func(k, _ any) bool {
		answered++
		if n, _ := rdb.Exists(ctx, "asynq:{"+name+"}:t:"+k.(string)).Result(); n != 1 {
			lost++
		}
		return true
	})
	if answered == 0 || failed.Load() == 0 || lost > 0 {
		t.Fatalf("%d accepts answered, %d failed, %d answered ones lost", answered, failed.Load(), lost)
	}
	t.Logf("%d accepts answered and found, %d failed while Redis was down", answered, failed.Load())
}

func BenchmarkTaskMessage(b *testing.B) {
	payload := []byte(`{"site":"default","order_number":"EDX-1","course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","edx_lms_user_id":42}`)
	b.ReportAllocs()
	for b.Loop() {
		_ = queue.TaskMessage("coordinator:enroll", payload, "enroll_0123456789abcdef0123456789abcdef", "fulfillment", 19, time.Minute, 7*24*time.Hour)
	}
}

// BenchmarkEnqueue is the accept's Redis write from concurrent requests:
// group-committed, one pipelined round trip per batch.
func BenchmarkEnqueue(b *testing.B) {
	rdb, name := queuetest.Redis(b)
	q := queue.New(rdb, testKinds(noop), testOptions(name))
	ctx := context.Background()
	var n atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			j := job(b, "ping", "B-"+strconv.Itoa(int(n.Add(1))))
			if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{UnlessExists: "pong_x", LegacyID: "ping-x"}); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// A repeat finds its task even when Redis lost asynq's set of queue names
// (a flush or a restore): the queue names itself again, as asynq's
// Inspector looks queues up there.
func TestEnqueueRepublishesQueue(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	q := queue.New(rdb, testKinds(noop), testOptions(name))
	ctx := context.Background()
	j := job(t, "ping", "EDX-Q")
	if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := rdb.SRem(ctx, "asynq:queues", name).Err(); err != nil {
		t.Fatal(err)
	}
	if id, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil || id != j.ID {
		t.Fatalf("repeat after asynq:queues was lost: %q %v", id, err)
	}
	if ok, _ := rdb.SIsMember(ctx, "asynq:queues", name).Result(); !ok {
		t.Fatal("the queue did not name itself again")
	}
}
