package queue_test

import (
	"context"
	"errors"
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

// Accepts running while Redis is killed fail or succeed, and every one that
// succeeded is in Redis after the restart (it persists each write before
// answering): a failed batch of the order index answers an error to every
// accept in it, and an accept is answered only after asynq's client queued
// its task.
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
	insp := asynq.NewInspectorFromRedisClient(rdb)
	ctx := context.Background()
	exists := func(id string) bool { _, err := insp.GetTaskInfo(name, id); return err == nil }
	if _, err := q.Enqueue(ctx, job(t, "ping", "R-1"), pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	srv.Kill()
	if _, err := q.Enqueue(ctx, job(t, "ping", "R-2"), pipeline.EnqueueOptions{}); !errors.Is(err, fulfillment.ErrUnavailable) {
		t.Fatalf("enqueue with Redis down: %v, want ErrUnavailable", err)
	}
	srv.Start()
	if !exists(job(t, "ping", "R-1").ID) {
		t.Fatal("the task answered before the restart is gone")
	}
	// The script cache is empty now: asynq's client loads its script again.
	if id, err := q.Enqueue(ctx, job(t, "ping", "R-3"), pipeline.EnqueueOptions{}); err != nil || id == "" {
		t.Fatalf("first enqueue after the restart: %q %v, want queued", id, err)
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
		if !exists(k.(string)) {
			lost++
		}
		return true
	})
	if answered == 0 || failed.Load() == 0 || lost > 0 {
		t.Fatalf("%d accepts answered, %d failed, %d answered ones lost", answered, failed.Load(), lost)
	}
	t.Logf("%d accepts answered and found, %d failed while Redis was down", answered, failed.Load())
}

// BenchmarkEnqueue is the accept's Redis work from concurrent requests: the
// order index group-committed, one asynq enqueue per request.
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
// (a flush or a restore): the next enqueue goes through a new asynq client,
// which names the queue again, as asynq's Inspector looks queues up there.
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
	if e, found, err := q.Task(ctx, j.ID); err != nil || !found || e.Task.State != fulfillment.StateQueued {
		t.Fatalf("task after the queue named itself again: %+v %v %v", e.Task, found, err)
	}
}
