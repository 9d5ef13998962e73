package queue_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// The worker's batched fetch (fetch.go) writes asynq's task states itself.
// The same tasks with the same outcomes, run once by asynq's own server and
// once by the fetch alone, must leave Redis the same: each task's state,
// bound, retries, last error, result and timestamps, the queue's lists and
// sets, and its processed/failed statistics — with and without retention.
// This pins the fetch's scripts to asynq's processor as TestTaskMessagePinned
// pins the enqueue to its client.
func TestFetchWritesWhatAsynqWrites(t *testing.T) {
	t.Parallel()
	for _, retention := range []time.Duration{0, time.Hour} {
		t.Run(fmt.Sprint("retention ", retention), func(t *testing.T) {
			t.Parallel()
			theirs := runOutcomes(t, retention, false)
			ours := runOutcomes(t, retention, true)
			for _, k := range slices.Sorted(maps.Keys(theirs)) {
				if ours[k] != theirs[k] {
					t.Errorf("%s:\n asynq %s\n fetch %s", k, theirs[k], ours[k])
				}
			}
			if len(ours) != len(theirs) {
				t.Errorf("fetch left %d facts, asynq %d:\n asynq %v\n fetch %v", len(ours), len(theirs), theirs, ours)
			}
		})
	}
}

// runOutcomes runs one task of each outcome through asynq's server alone or
// the batched fetch alone, then one that is still running at shutdown, and
// describes what Redis holds afterwards.
func runOutcomes(t *testing.T, retention time.Duration, fetch bool) map[string]string {
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, queue.Options{Name: name, MaxAttempts: 3, Retention: retention, TaskTimeout: time.Minute})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	var mu sync.Mutex
	runs := map[string]int{}
	started := make(chan struct{}, 1)
	proc := processorFunc(func(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		mu.Lock()
		runs[a.Job.Ref.OrderNumber]++
		n := runs[a.Job.Ref.OrderNumber]
		mu.Unlock()
		switch a.Job.Ref.OrderNumber {
		case "CANCEL":
			return fulfillment.StateCanceled, nil
		case "HOLD": // held once: no retry counted
			if n == 1 {
				return fulfillment.StateRetrying, pipeline.Hold(errors.New("redis: failing over"))
			}
		case "RETRY": // failed once: one retry counted
			if n == 1 {
				return fulfillment.StateRetrying, errors.New("LMS answered 503")
			}
		case "FAIL":
			return fulfillment.StateFailed, errors.New("no such user")
		case "EXHAUST": // archived when its retries reach the bound
			return fulfillment.StateRetrying, errors.New("LMS answered 502")
		case "SLOW": // still running at shutdown: put back
			started <- struct{}{}
			<-ctx.Done()
			return fulfillment.StateRetrying, ctx.Err()
		}
		return fulfillment.StateDone, nil
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 4, InitialDelay: 10 * time.Millisecond,
		MaxDelay: 10 * time.Millisecond, ShutdownTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	start, stop := w.StartFetchOnly, w.ShutdownFetchOnly
	if !fetch {
		start, stop = func() {
			if err := w.StartAsynqOnly(); err != nil {
				t.Fatal(err)
			}
		}, w.ShutdownAsynqOnly
	}
	ctx := context.Background()
	orders := []string{"OK", "CANCEL", "HOLD", "RETRY", "FAIL", "EXHAUST"}
	ids := map[string]string{}
	for _, o := range orders {
		j := job(t, "ping", o)
		ids[o] = j.ID
		if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	start()
	// Neither runs asynq's forwarder alone: retries are moved to pending
	// the same way for both.
	for i := 0; ; i++ {
		if i == 800 {
			t.Fatalf("tasks not finished within 20 s (fetch %v)", fetch)
		}
		if _, err := insp.RunAllRetryTasks(name); err != nil && !errors.Is(err, asynq.ErrQueueNotFound) {
			t.Fatal(err)
		}
		info, err := insp.GetQueueInfo(name)
		if err != nil {
			t.Fatal(err)
		}
		if info.Pending+info.Active+info.Retry == 0 {
			break
		}
		time.Sleep(25 * time.Millisecond)
	}
	slow := job(t, "pong", "SLOW")
	ids["SLOW"] = slow.ID
	if _, err := q.Enqueue(ctx, slow, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-started:
	case <-time.After(20 * time.Second):
		t.Fatalf("SLOW not started (fetch %v)", fetch)
	}
	stop()

	facts := map[string]string{}
	for o, id := range ids {
		info, err := insp.GetTaskInfo(name, id)
		if errors.Is(err, asynq.ErrTaskNotFound) {
			facts["task "+o] = "deleted"
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		facts["task "+o] = fmt.Sprintf("state=%v type=%s max_retry=%d retried=%d err=%q result=%q retention=%v timeout=%v deadline=%v failed_at=%v completed_at=%v",
			info.State, info.Type, info.MaxRetry, info.Retried, info.LastErr, info.Result, info.Retention, info.Timeout,
			info.Deadline.IsZero(), recent(info.LastFailedAt), recent(info.CompletedAt))
		raw, err := rdb.HGetAll(ctx, "asynq:{"+name+"}:t:"+id).Result()
		if err != nil {
			t.Fatal(err)
		}
		facts["hash fields "+o] = strings.Join(slices.Sorted(maps.Keys(raw)), ",")
	}
	for _, set := range []string{"pending", "active", "lease", "retry", "archived", "completed"} {
		members, err := members(ctx, rdb, "asynq:{"+name+"}:"+set)
		if err != nil {
			t.Fatal(err)
		}
		var os []string
		for _, m := range members {
			for o, id := range ids {
				if id == m {
					os = append(os, o)
				}
			}
		}
		slices.Sort(os)
		facts["set "+set] = strings.Join(os, ",")
	}
	day := time.Now().UTC().Format("2006-01-02")
	for _, stat := range []string{"processed", "failed", "processed:" + day, "failed:" + day} {
		v, err := rdb.Get(ctx, "asynq:{"+name+"}:"+stat).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatal(err)
		}
		ttl, _ := rdb.TTL(ctx, "asynq:{"+name+"}:"+stat).Result()
		facts["stat "+stat] = fmt.Sprintf("%s ttl>80d=%v", v, ttl > 80*24*time.Hour)
	}
	mu.Lock()
	for o, n := range runs {
		facts["attempts "+o] = fmt.Sprint(n)
	}
	mu.Unlock()
	return facts
}

// recent tells a timestamp set just now from one not set.
func recent(ts time.Time) string {
	switch {
	case ts.IsZero():
		return "unset"
	case time.Since(ts) < time.Minute:
		return "now"
	}
	return ts.String()
}

// members reads a list or a sorted set.
func members(ctx context.Context, rdb redis.UniversalClient, key string) ([]string, error) {
	typ, err := rdb.Type(ctx, key).Result()
	switch {
	case err != nil:
		return nil, err
	case typ == "list":
		return rdb.LRange(ctx, key, 0, -1).Result()
	case typ == "zset":
		return rdb.ZRange(ctx, key, 0, -1).Result()
	}
	return nil, nil
}

// A task's lease is extended while its attempt runs, as asynq's heartbeater
// extends its workers' leases, so asynq's recoverer never takes a long
// attempt for a dead worker's; a paused queue gives the fetch nothing.
func TestFetchLeaseAndPause(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, testOptions(name))
	insp := asynq.NewInspectorFromRedisClient(rdb)
	release := make(chan struct{})
	proc := processorFunc(func(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		if a.Job.Ref.OrderNumber == "LONG" {
			<-release
		}
		return fulfillment.StateDone, nil
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 4, InitialDelay: time.Second,
		MaxDelay: time.Second, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	long, paused := job(t, "ping", "LONG"), job(t, "ping", "PAUSED")
	if _, err := q.Enqueue(ctx, long, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	w.StartFetchOnly()
	defer w.ShutdownFetchOnly()
	lease := "asynq:{" + name + "}:lease"
	var first float64
	for i := 0; ; i++ {
		s, err := rdb.ZScore(ctx, lease, long.ID).Result()
		if err == nil {
			first = s
			break
		}
		if i == 800 {
			t.Fatal("LONG not taken within 20 s")
		}
		time.Sleep(25 * time.Millisecond)
	}
	time.Sleep(6 * time.Second) // one lease extension (every 5 s)
	if s, err := rdb.ZScore(ctx, lease, long.ID).Result(); err != nil || s <= first {
		t.Errorf("lease of a running attempt: %v %v, want extended beyond %v", s, err, first)
	}
	close(release)
	waitTask(t, q, long.ID, func(tk fulfillment.Task) bool { return tk.State == fulfillment.StateDone })

	if err := insp.PauseQueue(name); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Enqueue(ctx, paused, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // several fetches
	if info, err := insp.GetTaskInfo(name, paused.ID); err != nil || info.State != asynq.TaskStatePending {
		t.Fatalf("task of a paused queue: %+v %v, want pending", info, err)
	}
	if err := insp.UnpauseQueue(name); err != nil {
		t.Fatal(err)
	}
	waitTask(t, q, paused.ID, func(tk fulfillment.Task) bool { return tk.State == fulfillment.StateDone })
}

// The fetch rewrites the messages of tasks it retries, completes or
// archives: a message asynq wrote with every field it has — headers, a
// unique key, a deadline, a group — is read whole, written back byte for
// byte, and, with the fields the fetch changes, read by asynq as meant; a
// field this asynq does not know is kept.
func TestMessageRoundTrip(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	ctx := context.Background()
	c := asynq.NewClientFromRedisClient(rdb)
	deadline := time.Now().Add(time.Hour).Truncate(time.Second)
	task := asynq.NewTaskWithHeaders("test:ping", []byte(`{"a":1}`), map[string]string{"trace": "abc"})
	info, err := c.Enqueue(task, asynq.Queue(name), asynq.Unique(time.Hour), asynq.Deadline(deadline),
		asynq.MaxRetry(7), asynq.Retention(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	grouped, err := c.Enqueue(asynq.NewTask("test:pong", nil), asynq.Queue(name), asynq.Group("g1"))
	if err != nil {
		t.Fatal(err)
	}
	key := func(id string) string { return "asynq:{" + name + "}:t:" + id }
	for _, id := range []string{info.ID, grouped.ID} {
		raw, err := rdb.HGet(ctx, key(id), "msg").Bytes()
		if err != nil {
			t.Fatal(err)
		}
		m, err := queue.DecodeMsg(raw)
		again := m.Encode()
		if err != nil || string(again) != string(raw) {
			t.Fatalf("task %s: re-encoded %x (%v), want %x", id, again, err, raw)
		}
		// Field 99, a varint, appended: kept.
		future := append(slices.Clone(raw), 0x98, 0x06, 0x2a)
		if m, err := queue.DecodeMsg(future); err != nil || string(m.Encode()) != string(future) {
			t.Fatalf("unknown field: re-encoded %x (%v), want %x", m.Encode(), err, future)
		}
	}

	raw, err := rdb.HGet(ctx, key(info.ID), "msg").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	m, err := queue.DecodeMsg(raw)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != "test:ping" || string(m.Payload) != `{"a":1}` || m.ID != info.ID || m.Queue != name || m.Retry != 7 ||
		m.UniqueKey == "" || m.Deadline != deadline.Unix() || m.Retention != 3600 || m.Timeout != 0 {
		t.Fatalf("decoded %+v", m)
	}
	g, err := rdb.HGet(ctx, key(grouped.ID), "msg").Bytes()
	if err != nil {
		t.Fatal(err)
	}
	if gm, err := queue.DecodeMsg(g); err != nil || gm.GroupKey != "g1" || gm.Retry != 25 || gm.Timeout != 1800 {
		t.Fatalf("decoded grouped %+v %v", gm, err)
	}
	// What a retry writes, read back by asynq.
	m.Retried, m.ErrorMsg, m.LastFailedAt = 2, "LMS answered 503", time.Now().Unix()
	if err := rdb.HSet(ctx, key(info.ID), "msg", m.Encode()).Err(); err != nil {
		t.Fatal(err)
	}
	back, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(name, info.ID)
	if err != nil {
		t.Fatal(err)
	}
	if back.Retried != 2 || back.LastErr != "LMS answered 503" || back.MaxRetry != 7 || back.Headers["trace"] != "abc" ||
		!back.Deadline.Equal(deadline) || back.Retention != time.Hour || recent(back.LastFailedAt) != "now" {
		t.Fatalf("asynq reads the rewritten message as %+v", back)
	}
}

// An attempt that does not return when its context ends — its deadline, or
// the shutdown timeout — gives its slot back after a second, as asynq's
// processor stops waiting for it: past its deadline the task is retried
// with the context's error; at shutdown it is put back, and so is every
// task a fetch took across the shutdown. Nothing stays active.
func TestFetchStuckAttemptsAndShutdown(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, queue.Options{Name: name, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Second})
	insp := asynq.NewInspectorFromRedisClient(rdb)
	stuck := make(chan struct{})
	defer close(stuck)
	started := make(chan string, 4)
	proc := processorFunc(func(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		switch o := a.Job.Ref.OrderNumber; {
		case strings.HasPrefix(o, "STUCK"):
			started <- o
			<-stuck // ignores ctx
			return fulfillment.StateDone, nil
		}
		time.Sleep(2 * time.Millisecond)
		return fulfillment.StateDone, nil
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 8, Servers: 2, InitialDelay: time.Minute,
		MaxDelay: time.Minute, ShutdownTimeout: 200 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	ctx := context.Background()
	timedOut := job(t, "ping", "STUCK-DEADLINE")
	if _, err := q.Enqueue(ctx, timedOut, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	w.StartFetchOnly()
	<-started
	for i := 0; ; i++ {
		info, err := insp.GetTaskInfo(name, timedOut.ID)
		if err != nil {
			t.Fatal(err)
		}
		if info.State == asynq.TaskStateRetry {
			if info.Retried != 1 || !strings.Contains(info.LastErr, "deadline exceeded") {
				t.Errorf("attempt past its deadline: retried %d, %q", info.Retried, info.LastErr)
			}
			break
		}
		if i == 400 {
			t.Fatalf("attempt past its deadline: task %v after 10 s, want retry", info.State)
		}
		time.Sleep(25 * time.Millisecond)
	}

	atShutdown := job(t, "ping", "STUCK-SHUTDOWN")
	if _, err := q.Enqueue(ctx, atShutdown, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	<-started
	const backlog = 400
	for i := range backlog {
		if _, err := q.Enqueue(ctx, job(t, "pong", fmt.Sprint("B-", i)), pipeline.EnqueueOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // the fetch is busy with the backlog
	begun := time.Now()
	w.ShutdownFetchOnly()
	if d := time.Since(begun); d > 10*time.Second {
		t.Errorf("shutdown took %v", d)
	}
	if info, err := insp.GetTaskInfo(name, atShutdown.ID); err != nil || info.State != asynq.TaskStatePending || info.Retried != 0 {
		t.Errorf("attempt stuck at shutdown: %+v %v, want pending, no retry counted", info, err)
	}
	info, err := insp.GetQueueInfo(name)
	if err != nil {
		t.Fatal(err)
	}
	if info.Active != 0 || info.Pending+info.Completed+info.Retry != backlog+2 {
		t.Errorf("after shutdown: %d active, %d pending + %d completed + %d retry, want 0 active and %d in all",
			info.Active, info.Pending, info.Completed, info.Retry, backlog+2)
	}
	if info.Pending < 2 {
		t.Errorf("after shutdown: %d pending, want the stuck task and some of the backlog put back", info.Pending)
	}
}

// An error's text is stored in the task's message, whose strings asynq
// reads as UTF-8: a text cut inside a character must not make the task (and
// with it asynq's recoverer's listing of the queue) unreadable.
func TestFetchStoresReadableErrors(t *testing.T) {
	t.Parallel()
	rdb, name := queuetest.Redis(t)
	kinds := testKinds(noop)
	q := queue.New(rdb, kinds, testOptions(name))
	proc := processorFunc(func(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error) {
		return fulfillment.StateFailed, errors.New("LMS 502: caf\xc3")
	})
	w := queue.NewWorker(rdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 2, InitialDelay: time.Second,
		MaxDelay: time.Second, ShutdownTimeout: time.Second, Logger: slog.New(slog.DiscardHandler)})
	w.StartFetchOnly()
	defer w.ShutdownFetchOnly()
	j := job(t, "ping", "UTF8")
	if _, err := q.Enqueue(context.Background(), j, pipeline.EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	waitTask(t, q, j.ID, func(tk fulfillment.Task) bool { return tk.State == fulfillment.StateFailed })
	info, err := asynq.NewInspectorFromRedisClient(rdb).GetTaskInfo(name, j.ID)
	if err != nil || info.LastErr != "LMS 502: caf\uFFFD" {
		t.Fatalf("archived task: %+v %v, want its error readable", info, err)
	}
}

// A dequeue whose reply is lost — the connection cut after Redis ran the
// script — leaves its tasks active with nobody running them; when go-redis
// sends the script again, the first run's tasks are left the same way. The
// loop's record of what each dequeue took finds them and puts them back at
// once: every task runs within seconds, once, with no attempt counted (not
// a minute later through asynq's recoverer, which does not run here).
func TestFetchLostDequeueReply(t *testing.T) {
	t.Parallel()
	for _, retries := range []int{-1, 3} { // go-redis sends nothing again; sends again
		t.Run(fmt.Sprint("max retries ", retries), func(t *testing.T) {
			t.Parallel()
			rdb, name := queuetest.Redis(t)
			ctx := context.Background()
			if err := queue.LoadDequeueScript(ctx, rdb); err != nil { // the first run is an EVALSHA
				t.Fatal(err)
			}
			opt, err := redis.ParseURL(queuetest.URL())
			if err != nil {
				t.Fatal(err)
			}
			proxy := newReplyDropper(t, opt.Addr, queue.DequeueScriptHash)
			wopt := *opt
			wopt.Addr, wopt.MaxRetries = proxy.addr, retries
			wrdb := redis.NewClient(&wopt)
			defer wrdb.Close()

			kinds := testKinds(noop)
			q := queue.New(rdb, kinds, testOptions(name))
			var mu sync.Mutex
			runs := map[string]int{}
			proc := processorFunc(func(ctx context.Context, a pipeline.Attempt) (fulfillment.State, error) {
				mu.Lock()
				runs[a.Job.ID]++
				mu.Unlock()
				return fulfillment.StateDone, nil
			})
			const n = 30
			var ids []string
			for i := range n {
				j := job(t, "ping", fmt.Sprint("LOST-", i))
				ids = append(ids, j.ID)
				if _, err := q.Enqueue(ctx, j, pipeline.EnqueueOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			proxy.drop.Store(1) // the first dequeue's reply
			var logs logtest.Buffer
			w := queue.NewWorker(wrdb, kinds, proc, queue.WorkerOptions{Queue: name, Concurrency: 4, InitialDelay: time.Minute,
				MaxDelay: time.Minute, ShutdownTimeout: time.Second, Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
			w.StartFetchOnly()
			defer w.ShutdownFetchOnly()
			insp := asynq.NewInspectorFromRedisClient(rdb)
			for i := 0; ; i++ {
				info, err := insp.GetQueueInfo(name)
				if err != nil {
					t.Fatal(err)
				}
				if info.Completed == n {
					break
				}
				if i == 400 {
					t.Fatalf("after 10 s: %d completed, %d active, %d pending of %d", info.Completed, info.Active, info.Pending, n)
				}
				time.Sleep(25 * time.Millisecond)
			}
			if proxy.dropped.Load() != 1 {
				t.Fatalf("%d dequeue replies dropped, want 1", proxy.dropped.Load())
			}
			// Which way the tasks came back: the loop's own retry after the
			// failed dequeue, or go-redis's resend whose reply arrived.
			out := logs.String()
			if !strings.Contains(out, `"worker_requeued_taken"`) {
				t.Errorf("no worker_requeued_taken logged:\n%s", out)
			}
			if failed := strings.Contains(out, `"worker_dequeue_failed"`); failed != (retries < 0) {
				t.Errorf("worker_dequeue_failed logged: %v, want %v:\n%s", failed, retries < 0, out)
			}
			mu.Lock()
			defer mu.Unlock()
			for _, id := range ids {
				info, err := insp.GetTaskInfo(name, id)
				if err != nil || info.Retried != 0 || runs[id] != 1 {
					t.Errorf("task %s: %+v %v, ran %d times; want done once, no retry counted", id, info, err, runs[id])
				}
			}
		})
	}
}

// replyDropper is a TCP proxy to Redis that cuts a connection instead of
// passing on the reply to a command naming hash, as often as drop says.
type replyDropper struct {
	addr    string
	drop    atomic.Int32
	dropped atomic.Int32
}

func newReplyDropper(t *testing.T, target, hash string) *replyDropper {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	p := &replyDropper{addr: ln.Addr().String()}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			var armed atomic.Bool
			go relay(s, c, func(b []byte) bool { // client to Redis
				if strings.Contains(string(b), hash) && p.drop.Add(-1) >= 0 {
					armed.Store(true)
				}
				return true
			})
			go relay(c, s, func(b []byte) bool { // Redis to client
				if armed.Load() && b[0] == '*' { // the script's answer, not an error
					p.dropped.Add(1)
					return false
				}
				return true
			})
		}
	}()
	return p
}

// relay copies what src sends to dst, chunk by chunk, until a read or
// write fails or pass refuses a chunk; it closes dst, and src too when pass
// refused (the other direction's relay then ends as well).
func relay(dst, src net.Conn, pass func([]byte) bool) {
	defer dst.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !pass(buf[:n]) {
				src.Close()
				return
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
