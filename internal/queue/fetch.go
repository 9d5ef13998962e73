package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
)

// What asynq v0.26.0's server uses and this file must match (internal/rdb,
// processor.go, heartbeat.go, server.go).
const (
	leaseDuration   = 30 * time.Second    // rdb.LeaseDuration
	leaseEvery      = 5 * time.Second     // the heartbeater's interval, which extends leases
	statsTTL        = 90 * 24 * time.Hour // rdb.statsTTL
	maxArchiveSize  = 10000               // rdb.maxArchiveSize
	archivedFor     = 90 * 24 * time.Hour // rdb.archivedExpirationInDays
	defaultShutdown = 8 * time.Second     // server's defaultShutdownTimeout
)

// fetchMax bounds the tasks one dequeue takes; idleWait is the mean pause of
// a fetch loop that found the queue empty (asynq's is 1 s).
const (
	fetchMax = 100
	idleWait = 250 * time.Millisecond
)

// fetcher is the worker's batched path: each fetch loop takes as many tasks
// as there are free slots (up to fetchMax) in one script, and the outcomes
// of concurrent attempts share pipelined round trips (a batcher). What it
// writes is exactly what asynq's processor writes for the same outcome —
// the scripts below are asynq v0.26.0's, taking an optional unique key
// instead of coming in two variants — so asynq's recoverer, forwarder,
// janitor, Inspector and asynqmon see tasks as if asynq had run them:
//   - a task taken is active with a lease of 30 s, extended every 5 s while
//     its attempt runs; a lease that could not be extended and ran out
//     cancels the attempt and writes nothing (asynq's recoverer retries the
//     task, as for a worker that died);
//   - done: deleted, or kept as completed for its retention, and counted
//     as processed;
//   - an error: retried after RetryDelay (its retry counted unless it is a
//     Hold), or archived when it is asynq.SkipRetry (permanent) or the
//     retries reached the task's bound;
//   - at shutdown, attempts still running after the shutdown timeout are
//     canceled and their tasks put back at the head of the queue.
//
// A write that fails for want of Redis is tried again each second until
// the task's lease ends, as asynq's syncer does; then the recoverer has it.
type fetcher struct {
	rdb        redis.UniversalClient
	name       string
	handlers   map[string]handler // by task type
	slots      chan struct{}      // one per attempt in flight, shared with asynq's server
	loops      int
	retryDelay asynq.RetryDelayFunc
	isFailure  func(error) bool
	grace      time.Duration // the shutdown timeout
	log        *slog.Logger
	writes     *batcher
	keys       queueKeys

	base    context.Context    // the attempts' parent
	abort   context.CancelFunc // cancels base: the shutdown timeout is up
	quit    chan struct{}      // closed at shutdown: take no more tasks
	stopped chan struct{}      // closed when the last attempt ended
	loopsWG sync.WaitGroup
	tasksWG sync.WaitGroup

	mu      sync.Mutex
	running map[*task]struct{}
}

// task is a task taken by a fetch loop, while its attempt runs and its
// outcome is written.
type task struct {
	m      msg
	cancel context.CancelFunc
	lease  atomic.Int64 // when the lease ends, Unix ns
}

func newFetcher(rdb redis.UniversalClient, name string, handlers map[string]handler, slots chan struct{}, loops int,
	retryDelay asynq.RetryDelayFunc, isFailure func(error) bool, grace time.Duration, log *slog.Logger) *fetcher {
	if grace <= 0 {
		grace = defaultShutdown
	}
	f := &fetcher{
		rdb: rdb, name: name, handlers: handlers, slots: slots, loops: loops,
		retryDelay: retryDelay, isFailure: isFailure, grace: grace, log: log,
		writes:  newBatcher(rdb, 0, doneScript, completeScript, retryScript, archiveScript, requeueScript),
		keys:    newQueueKeys(name),
		quit:    make(chan struct{}),
		stopped: make(chan struct{}),
		running: map[*task]struct{}{},
	}
	f.base, f.abort = context.WithCancel(context.Background())
	return f
}

// failKeys are the keys of asynq's retry and archive scripts: the task's
// hash, the queue's active list and lease set, set (retry or archived), and
// the day's and all-time processed and failed counts.
func (k queueKeys) failKeys(taskKey, set, day string) []string {
	return []string{taskKey, k.active, k.lease, set, k.processed + ":" + day, k.failed + ":" + day, k.processed, k.failed}
}

func (f *fetcher) start() {
	for range f.loops {
		f.loopsWG.Add(1)
		go f.loop()
	}
	go f.leases()
}

// shutdown stops taking tasks, waits up to the shutdown timeout for the
// attempts running, then cancels the rest and puts their tasks back.
func (f *fetcher) shutdown() {
	close(f.quit)
	f.loopsWG.Wait()
	ended := make(chan struct{})
	go func() { f.tasksWG.Wait(); close(ended) }()
	select {
	case <-ended:
	case <-time.After(f.grace):
	}
	// The rest are canceled and put back: within about a second (run
	// abandons an attempt that does not return), plus their last writes.
	f.abort()
	<-ended
	close(f.stopped)
	f.writes.close()
}

// loop takes tasks while there are free slots: at least one, and every other
// slot free at that moment, up to fetchMax.
//
// Each dequeue also records the ids it took under a key of its own
// (takenKey), dropped by the loop's next dequeue. A dequeue whose reply
// never arrived (a connection cut, a timeout) leaves its tasks active with
// nobody running them, and go-redis may have sent the script again, taking
// more: the record finds them, and requeueTaken puts them back at the head
// of the queue at once, instead of asynq's recoverer retrying them a
// minute later with an attempt counted.
func (f *fetcher) loop() {
	defer f.loopsWG.Done()
	var logged time.Time
	warn := func(msg string, err error) {
		if time.Since(logged) > 10*time.Second {
			f.log.Warn(msg, "queue", f.name, "err", err)
			logged = time.Now()
		}
	}
	token := strconv.FormatUint(rand.Uint64(), 36)
	prev := f.takenKey(token, 0)
	var lost *taken // a dequeue whose reply was lost or whose record was not yet put back
	for seq := uint64(1); ; seq++ {
		if lost != nil {
			err := f.requeueTaken(lost)
			switch {
			case err == nil:
				lost = nil
			case !time.Now().Before(lost.ends):
				lost = nil // their lease ended: asynq's recoverer has them
			default:
				warn("worker_requeue_taken_failed", err)
				f.pause(time.Second)
				select {
				case <-f.quit:
					return // the recoverer will have them
				default:
					continue
				}
			}
		}
		select {
		case <-f.quit:
			return
		case f.slots <- struct{}{}:
		}
		select {
		case <-f.quit: // both were ready: select chose at random
			<-f.slots
			return
		default:
		}
		n := 1
	more:
		for n < fetchMax {
			select {
			case f.slots <- struct{}{}:
				n++
			default:
				break more
			}
		}
		rec := &taken{key: f.takenKey(token, seq), ends: time.Now().Add(leaseDuration)}
		tasks, err := f.dequeue(n, rec, prev)
		for range n - len(tasks) {
			<-f.slots
		}
		for _, t := range tasks {
			f.tasksWG.Add(1)
			go f.run(t)
		}
		switch {
		case err != nil:
			lost = rec // prev stays: this dequeue may not have dropped it
			warn("worker_dequeue_failed", err)
			f.pause(time.Second)
			continue
		case rec.recorded > len(rec.held):
			// go-redis sent the script again after a reply it did not
			// get: the tasks the earlier run took are not ours to run.
			if err := f.requeueTaken(rec); err != nil {
				lost = rec // tried again before the next dequeue
				warn("worker_requeue_taken_failed", err)
			}
		case len(tasks) == 0:
			f.pause(idleWait/2 + rand.N(idleWait))
		}
		prev = rec.key
	}
}

// taken is what one dequeue took: its record's key, the lease it gave,
// how many ids the record holds and those the reply named (held: run by
// this loop, or left to the recoverer when unreadable).
type taken struct {
	key      string
	ends     time.Time
	recorded int
	held     []string
}

// takenKey is where a loop's seq-th dequeue records the ids it took.
func (f *fetcher) takenKey(token string, seq uint64) string {
	return ownKey(f.name, "taken:"+token+":"+strconv.FormatUint(seq, 10))
}

// requeueTaken puts back the tasks rec recorded that are still active under
// its lease, but those it holds, and drops the record.
func (f *fetcher) requeueTaken(rec *taken) error {
	ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
	defer cancel()
	args := make([]any, 0, len(rec.held)+2)
	args = append(args, f.keys.task, rec.ends.Unix())
	for _, id := range rec.held {
		args = append(args, id)
	}
	n, err := requeueTakenScript.Run(ctx, f.rdb, []string{f.keys.active, f.keys.lease, f.keys.pending, rec.key}, args...).Int()
	if err != nil {
		return fmt.Errorf("requeue taken tasks: %w", err)
	}
	if n > 0 {
		f.log.Warn("worker_requeued_taken", "queue", f.name, "tasks", n,
			"detail", "a dequeue's reply was lost; its tasks were put back")
	}
	return nil
}

func (f *fetcher) pause(d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-f.quit:
	case <-t.C:
	}
}

// dequeue takes up to n tasks off the queue with rec's lease, recording
// their ids under rec's key (and in rec), and drops the record of the
// loop's previous dequeue (prev).
func (f *fetcher) dequeue(n int, rec *taken, prev string) ([]*task, error) {
	ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
	defer cancel()
	res, err := dequeueScript.Run(ctx, f.rdb,
		[]string{f.keys.pending, f.keys.paused, f.keys.active, f.keys.lease, rec.key, prev},
		rec.ends.Unix(), f.keys.task, n).Slice()
	if err != nil {
		return nil, fmt.Errorf("dequeue from %s: %w", f.name, err)
	}
	if len(res) == 0 {
		return nil, errors.New("dequeue: empty reply")
	}
	recorded, _ := res[0].(int64)
	rec.recorded = int(recorded)
	res = res[1:]
	tasks := make([]*task, 0, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		raw, _ := res[i+1].(string)
		rec.held = append(rec.held, id)
		m, err := decodeMsg([]byte(raw))
		if err == nil && raw == "" {
			err = errors.New("no task message")
		}
		if err != nil {
			// asynq's Dequeue fails on such a task too and leaves it
			// active: when its lease ends the recoverer retries it.
			f.log.Error("task_message_invalid", "queue", f.name, "task_id", id, "err", err)
			continue
		}
		t := &task{m: m}
		t.lease.Store(rec.ends.UnixNano())
		tasks = append(tasks, t)
	}
	return tasks, nil
}

// run runs the task's attempt and writes its outcome, holding its slot. As
// asynq's processor, it stops waiting for an attempt whose context ended
// (its deadline, its lease lost, the shutdown timeout): the attempt's own
// outcome is taken if it comes within a second, else the context's error,
// and the slot is free again even if the attempt never returns.
func (f *fetcher) run(t *task) {
	defer f.tasksWG.Done()
	defer func() { <-f.slots }()
	select {
	case <-f.quit: // taken by a dequeue that crossed the shutdown
		f.finish(t, nil, nil, true)
		return
	default:
	}
	ctx, cancel := context.WithDeadline(f.base, deadline(t.m, time.Now()))
	defer cancel()
	t.cancel = cancel
	f.mu.Lock()
	f.running[t] = struct{}{}
	f.mu.Unlock()
	type result struct {
		written []byte // the task's result, if any
		err     error
	}
	done := make(chan result, 1)
	go func() {
		written, err := f.perform(ctx, t)
		done <- result{written, err}
	}()
	var r result
	select {
	case r = <-done:
	case <-ctx.Done():
		wait := time.NewTimer(time.Second)
		select {
		case r = <-done:
		case <-wait.C:
			r.err = ctx.Err()
			f.log.Error("task_attempt_abandoned", "task_id", t.m.ID, "err", r.err,
				"detail", "the attempt did not return after its context ended")
		}
		wait.Stop()
	}
	f.mu.Lock()
	delete(f.running, t)
	f.mu.Unlock()
	f.finish(t, r.written, r.err, r.err != nil && f.base.Err() != nil)
}

// deadline is asynq's computeDeadline: the earlier of now + the task's
// timeout and its deadline.
func deadline(m msg, now time.Time) time.Time {
	switch {
	case m.Timeout != 0 && m.Deadline != 0:
		return time.Unix(min(now.Unix()+m.Timeout, m.Deadline), 0)
	case m.Timeout != 0:
		return now.Add(time.Duration(m.Timeout) * time.Second)
	case m.Deadline != 0:
		return time.Unix(m.Deadline, 0)
	}
	return now.Add(asynqDefaultTimeout) // the processor's default is the client's
}

// perform calls the task's handler; a panic is an error, as in asynq.
func (f *fetcher) perform(ctx context.Context, t *task) (result []byte, err error) {
	h, ok := f.handlers[t.m.Type]
	if !ok {
		return nil, fmt.Errorf("handler not found for task %q", t.m.Type) // asynq's NotFound
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	defer func() {
		if x := recover(); x != nil {
			f.log.Error("task_panic", "task_id", t.m.ID, "panic", fmt.Sprint(x), "stack", string(debug.Stack()))
			result, err = nil, fmt.Errorf("panic: %v", x)
		}
	}()
	return h.attempt(ctx, t.m.ID, int(t.m.Retried), int(t.m.Retry), t.m.Payload)
}

// finish writes the attempt's outcome, as asynq's processor would: requeue
// puts the task back at the head of the queue (the shutdown timeout is up,
// or it was never started).
func (f *fetcher) finish(t *task, result []byte, err error, requeue bool) {
	now := time.Now()
	leaseEnds := time.Unix(0, t.lease.Load())
	if !now.Before(leaseEnds) {
		return // the recoverer has it, as asynq's processor leaves it
	}
	m, id, k := t.m, t.m.ID, f.keys
	taskKey := k.task + id
	stats := now.Add(statsTTL).Unix()
	day := now.UTC().Format("2006-01-02")
	var op string
	var add func(ctx context.Context, p redis.Pipeliner)
	switch {
	case requeue:
		op = "requeue"
		add = func(ctx context.Context, p redis.Pipeliner) {
			requeueScript.EvalSha(ctx, p, []string{k.active, k.lease, k.pending, taskKey}, id)
		}
	case err == nil:
		keys := []string{k.active, k.lease, taskKey, k.processed + ":" + day, k.processed}
		script, args := doneScript, []any{id, stats, int64(math.MaxInt64)}
		op = "done"
		if m.Retention > 0 {
			m.CompletedAt = now.Unix()
			keys = []string{k.active, k.lease, k.completed, taskKey, k.processed + ":" + day, k.processed}
			script, args = completeScript, []any{id, stats, now.Unix() + m.Retention, m.encode(), int64(math.MaxInt64)}
			if result != nil {
				args = append(args, result) // what asynq's ResultWriter writes
			}
			op = "complete"
		}
		if m.UniqueKey != "" {
			keys = append(keys, m.UniqueKey)
		}
		add = func(ctx context.Context, p redis.Pipeliner) { script.EvalSha(ctx, p, keys, args...) }
	case errors.Is(err, asynq.SkipRetry) || m.Retried >= m.Retry:
		op = "archive"
		m.ErrorMsg, m.LastFailedAt = err.Error(), now.Unix()
		keys := append(k.failKeys(taskKey, k.archived, day), k.task)
		args := []any{id, m.encode(), now.Unix(), now.Add(-archivedFor).Unix(), maxArchiveSize, stats, int64(math.MaxInt64)}
		add = func(ctx context.Context, p redis.Pipeliner) { archiveScript.EvalSha(ctx, p, keys, args...) }
	default:
		op = "retry"
		failure := f.isFailure(err)
		at := now.Add(f.retryDelay(int(m.Retried), err, asynq.NewTask(m.Type, m.Payload)))
		if failure {
			m.Retried++
		}
		m.ErrorMsg, m.LastFailedAt = err.Error(), now.Unix()
		keys := k.failKeys(taskKey, k.retry, day)
		args := []any{id, m.encode(), at.Unix(), stats, failure, int64(math.MaxInt64)}
		add = func(ctx context.Context, p redis.Pipeliner) { retryScript.EvalSha(ctx, p, keys, args...) }
	}
	f.write(id, op, add, leaseEnds)
}

// write runs add's commands in a shared round trip. Like asynq's syncer, it
// tries again each second, whatever the error, until the lease ends (or
// the shutdown timeout is up): only the scripts' own refusals end it, when
// the task is no longer this attempt's (deleted, or recovered after a lease
// that could not be extended).
func (f *fetcher) write(id, op string, add func(ctx context.Context, p redis.Pipeliner), leaseEnds time.Time) {
	ctx, cancel := context.WithDeadline(context.Background(), leaseEnds)
	defer cancel()
	for n := 0; ; n++ {
		err := f.writes.do(ctx, add)
		switch {
		case err == nil:
			return
		case isRefusal(err):
			f.log.Warn("task_write_refused", "task_id", id, "op", op, "err", err)
			return
		case n == 0:
			f.log.Warn("task_write_failed", "task_id", id, "op", op, "err", err)
		}
		t := time.NewTimer(time.Second)
		select {
		case <-ctx.Done():
		case <-f.base.Done():
		case <-t.C:
			continue
		}
		t.Stop()
		f.log.Error("task_write_abandoned", "task_id", id, "op", op, "err", err,
			"detail", "asynq's recoverer retries the task when its lease has ended")
		return
	}
}

// isRefusal reports the scripts' answers that writing again cannot change.
func isRefusal(err error) bool {
	return redis.HasErrorPrefix(err, "NOT FOUND") || redis.HasErrorPrefix(err, "INTERNAL")
}

// leases extends the leases of the running attempts every leaseEvery, as
// asynq's heartbeater does for its workers, and cancels an attempt whose
// lease ended unextended (asynq cancels it too, and writes nothing).
func (f *fetcher) leases() {
	tick := time.NewTicker(leaseEvery)
	defer tick.Stop()
	for {
		select {
		case <-f.stopped:
			return
		case <-tick.C:
		}
		now := time.Now()
		f.mu.Lock()
		tasks := make([]*task, 0, len(f.running))
		for t := range f.running {
			tasks = append(tasks, t)
		}
		f.mu.Unlock()
		if len(tasks) == 0 {
			continue
		}
		ends := now.Add(leaseDuration)
		zs := make([]redis.Z, len(tasks))
		for i, t := range tasks {
			zs[i] = redis.Z{Member: t.m.ID, Score: float64(ends.Unix())}
		}
		ctx, cancel := context.WithTimeout(context.Background(), enqueueTimeout)
		err := f.rdb.ZAddXX(ctx, f.keys.lease, zs...).Err()
		cancel()
		if err != nil {
			f.log.Warn("worker_lease_not_extended", "queue", f.name, "tasks", len(tasks), "err", err)
		}
		for _, t := range tasks {
			if err == nil {
				t.lease.Store(ends.UnixNano())
			} else if now.UnixNano() >= t.lease.Load() {
				t.cancel()
			}
		}
	}
}

// dequeueScript is asynq's dequeueCmd taking up to ARGV[3] tasks, which it
// also records (loop): it answers how many the record holds, then each
// task's id and message ("" when the task's hash is gone).
//
// KEYS[1] pending, KEYS[2] paused, KEYS[3] active, KEYS[4] lease,
// KEYS[5] this dequeue's record, KEYS[6] the previous dequeue's record.
// ARGV[1] lease expiration (Unix s), ARGV[2] task key prefix, ARGV[3] n.
var dequeueScript = redis.NewScript(`
redis.call("DEL", KEYS[6])
local out = {0}
if redis.call("EXISTS", KEYS[2]) == 1 then
	out[1] = redis.call("LLEN", KEYS[5])
	return out
end
for i = 1, tonumber(ARGV[3]) do
	local id = redis.call("RPOPLPUSH", KEYS[1], KEYS[3])
	if not id then
		break
	end
	local key = ARGV[2] .. id
	redis.call("HSET", key, "state", "active")
	redis.call("HDEL", key, "pending_since")
	redis.call("ZADD", KEYS[4], ARGV[1], id)
	redis.call("RPUSH", KEYS[5], id)
	out[#out + 1] = id
	out[#out + 1] = redis.call("HGET", key, "msg") or ""
end
if #out > 1 then
	redis.call("EXPIRE", KEYS[5], 3600)
end
out[1] = redis.call("LLEN", KEYS[5])
return out`)

// requeueTakenScript puts the tasks a dequeue recorded back at the head of
// the queue as asynq's requeueCmd does — but those held (ARGV[3:]), those
// no longer active under that dequeue's lease (done, recovered, taken again
// since) and those whose hash is gone (left to the recoverer, as asynq
// leaves them) — and drops the record; it answers how many it put back.
//
// KEYS active, lease, pending, the record. ARGV task key prefix, the
// dequeue's lease expiration (Unix s), held ids.
var requeueTakenScript = redis.NewScript(`
local held = {}
for i = 3, #ARGV do
	held[ARGV[i]] = true
end
local n = 0
for _, id in ipairs(redis.call("LRANGE", KEYS[4], 0, -1)) do
	local lease = redis.call("ZSCORE", KEYS[2], id)
	if not held[id] and lease and tonumber(lease) == tonumber(ARGV[2]) and
	   redis.call("EXISTS", ARGV[1] .. id) == 1 and redis.call("LREM", KEYS[1], 0, id) > 0 then
		redis.call("ZREM", KEYS[2], id)
		redis.call("RPUSH", KEYS[3], id)
		redis.call("HSET", ARGV[1] .. id, "state", "pending")
		n = n + 1
	end
end
redis.call("DEL", KEYS[4])
return n`)

// doneScript is asynq's doneCmd, with doneUniqueCmd's release of the
// unique lock when KEYS[6] is given.
//
// KEYS active, lease, task, processed:<day>, processed[, unique key].
// ARGV id, stats expiration, max int64.
var doneScript = redis.NewScript(`
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("DEL", KEYS[3]) == 0 then
  return redis.error_reply("NOT FOUND")
end
local n = redis.call("INCR", KEYS[4])
if tonumber(n) == 1 then
	redis.call("EXPIREAT", KEYS[4], ARGV[2])
end
local total = redis.call("GET", KEYS[5])
if tonumber(total) == tonumber(ARGV[3]) then
	redis.call("SET", KEYS[5], 1)
else
	redis.call("INCR", KEYS[5])
end
if KEYS[6] and redis.call("GET", KEYS[6]) == ARGV[1] then
  redis.call("DEL", KEYS[6])
end
return redis.status_reply("OK")`)

// completeScript is asynq's markAsCompleteCmd, with the unique variant's
// release of the lock when KEYS[7] is given.
//
// KEYS active, lease, completed, task, processed:<day>, processed[, unique].
// ARGV id, stats expiration, task expiration (Unix s), message, max int64[,
// result] (the result asynq's ResultWriter would have written before).
var completeScript = redis.NewScript(`
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZADD", KEYS[3], ARGV[3], ARGV[1]) ~= 1 then
  return redis.error_reply("INTERNAL")
end
redis.call("HSET", KEYS[4], "msg", ARGV[4], "state", "completed")
if ARGV[6] then
	redis.call("HSET", KEYS[4], "result", ARGV[6])
end
local n = redis.call("INCR", KEYS[5])
if tonumber(n) == 1 then
	redis.call("EXPIREAT", KEYS[5], ARGV[2])
end
local total = redis.call("GET", KEYS[6])
if tonumber(total) == tonumber(ARGV[5]) then
	redis.call("SET", KEYS[6], 1)
else
	redis.call("INCR", KEYS[6])
end
if KEYS[7] and redis.call("GET", KEYS[7]) == ARGV[1] then
  redis.call("DEL", KEYS[7])
end
return redis.status_reply("OK")`)

// retryScript is asynq's retryCmd.
//
// KEYS task, active, lease, retry, processed:<day>, failed:<day>,
// processed, failed. ARGV id, message, retry at (Unix s), stats
// expiration, is failure (1/0), max int64.
var retryScript = redis.NewScript(`
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[3], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "retry")
if tonumber(ARGV[5]) == 1 then
	local n = redis.call("INCR", KEYS[5])
	if tonumber(n) == 1 then
		redis.call("EXPIREAT", KEYS[5], ARGV[4])
	end
	local m = redis.call("INCR", KEYS[6])
	if tonumber(m) == 1 then
		redis.call("EXPIREAT", KEYS[6], ARGV[4])
	end
    local total = redis.call("GET", KEYS[7])
    if tonumber(total) == tonumber(ARGV[6]) then
    	redis.call("SET", KEYS[7], 1)
    	redis.call("SET", KEYS[8], 1)
    else
    	redis.call("INCR", KEYS[7])
    	redis.call("INCR", KEYS[8])
    end
end
return redis.status_reply("OK")`)

// archiveScript is asynq's archiveCmd.
//
// KEYS task, active, lease, archived, processed:<day>, failed:<day>,
// processed, failed, task key prefix. ARGV id, message, died at (Unix s),
// cutoff (Unix s), archive size, stats expiration, max int64.
var archiveScript = redis.NewScript(`
if redis.call("LREM", KEYS[2], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[3], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
redis.call("ZADD", KEYS[4], ARGV[3], ARGV[1])
local old = redis.call("ZRANGE", KEYS[4], "-inf", ARGV[4], "BYSCORE")
if #old > 0 then
	for _, id in ipairs(old) do
		redis.call("DEL", KEYS[9] .. id)
	end
	redis.call("ZREM", KEYS[4], unpack(old))
end

local extra = redis.call("ZRANGE", KEYS[4], 0, -ARGV[5])
if #extra > 0 then
	for _, id in ipairs(extra) do
		redis.call("DEL", KEYS[9] .. id)
	end
	redis.call("ZREM", KEYS[4], unpack(extra))
end

redis.call("HSET", KEYS[1], "msg", ARGV[2], "state", "archived")
local n = redis.call("INCR", KEYS[5])
if tonumber(n) == 1 then
	redis.call("EXPIREAT", KEYS[5], ARGV[6])
end
local m = redis.call("INCR", KEYS[6])
if tonumber(m) == 1 then
	redis.call("EXPIREAT", KEYS[6], ARGV[6])
end
local total = redis.call("GET", KEYS[7])
if tonumber(total) == tonumber(ARGV[7]) then
   	redis.call("SET", KEYS[7], 1)
   	redis.call("SET", KEYS[8], 1)
else
  	redis.call("INCR", KEYS[7])
   	redis.call("INCR", KEYS[8])
end
return redis.status_reply("OK")`)

// requeueScript is asynq's requeueCmd: back to the head of the queue.
//
// KEYS active, lease, pending, task. ARGV id.
var requeueScript = redis.NewScript(`
if redis.call("LREM", KEYS[1], 0, ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
if redis.call("ZREM", KEYS[2], ARGV[1]) == 0 then
  return redis.error_reply("NOT FOUND")
end
redis.call("RPUSH", KEYS[3], ARGV[1])
redis.call("HSET", KEYS[4], "state", "pending")
return redis.status_reply("OK")`)
