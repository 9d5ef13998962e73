// Package queue is Coordinator's seam to asynq and Redis, and nothing else:
// it queues the tasks of whatever kinds the pipeline registers, idempotently
// by task id; reads them back as line tasks for status, retry and
// reconciliation; and runs a worker that hands each task to the pipeline.
package queue

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// Queue puts the tasks of lines on one asynq queue and reads them back. It
// implements pipeline.Queue.
type Queue struct {
	rdb       redis.UniversalClient
	inspector *asynq.Inspector
	kinds     *pipeline.Kinds
	byType    map[string]pipeline.Kind
	name      string
	keys      queueKeys
	maxRetry  int
	retention time.Duration
	timeout   time.Duration
	batch     *batcher    // the accepts' enqueues, at once
	checks    *batcher    // the workers' checks, lingering for company
	published atomic.Bool // the queue is named in asynq:queues
}

// Options configure a Queue.
type Options struct {
	Name        string        // the asynq queue
	MaxAttempts int           // attempts per task, the first included
	Retention   time.Duration // how long finished tasks are kept
	TaskTimeout time.Duration // how long one attempt may run
}

// New returns a Queue over rdb for the kinds registered.
func New(rdb redis.UniversalClient, kinds *pipeline.Kinds, o Options) *Queue {
	q := &Queue{
		rdb:       rdb,
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		kinds:     kinds,
		byType:    map[string]pipeline.Kind{},
		name:      o.Name,
		keys:      newQueueKeys(o.Name),
		maxRetry:  o.MaxAttempts - 1,
		retention: o.Retention,
		timeout:   o.TaskTimeout,
	}
	if q.timeout <= 0 {
		q.timeout = asynqDefaultTimeout // what asynq.Client sets without a timeout or deadline
	}
	for _, k := range kinds.All() {
		q.byType[k.TaskType] = k
	}
	q.batch = newBatcher(rdb, 0, enqueueScript)
	q.checks = newBatcher(rdb, checkLinger)
	return q
}

// spareRetry is how many retries asynq's bound on a task (its message's
// max retry) has beyond worker.retry.max_attempts. asynq archives a task
// whose retries reached the bound whatever its handler returns, a Hold too;
// a Hold does not count as a retry, so with one spare the attempt the
// pipeline treats as the last (Attempt.Last) can still be held — put back
// for a wait (Behind, Slots, an account) or a store's failure — and run
// again without being archived. The pipeline itself ends a task whose last
// attempt failed (permanent: archived at once); the spare is used only by
// asynq's recoverer (a worker that died mid-attempt counts one), after
// which Attempt.Final is set.
const spareRetry = 1

// checkLinger is how long a worker's check waits for others to share its
// round trip: nothing next to an LMS call, much in Redis load at thousands of
// tasks a second.
const checkLinger = time.Millisecond

// enqueueTimeout bounds one enqueue, so a dead Redis answers 503 quickly.
const enqueueTimeout = 3 * time.Second

// Enqueue queues the job's task and returns its id. While the task is queued,
// running, retrying or done, it enqueues nothing and returns the same id; once
// the task failed for good, it queues it again. When o.LegacyID names a task
// an earlier version queued for the same line and kind that is still in
// effect, that id is returned and nothing is queued; when the task
// o.UnlessExists exists, nothing is queued and the error is
// pipeline.ErrSuperseded. An unreachable Redis yields an error wrapping
// fulfillment.ErrUnavailable.
//
// The task is written by enqueueScript inside the accepts' group commit:
// one command, in a pipeline shared with concurrent accepts, indexes the task
// under its order, makes both checks and queues the task as asynq's client
// would (message.go). The id is returned only after Redis answered that
// command; a batch that failed fails every accept in it.
func (q *Queue) Enqueue(ctx context.Context, j pipeline.Job, o pipeline.EnqueueOptions) (string, error) {
	k, ok := q.kinds.Get(j.Kind)
	if !ok {
		return "", fmt.Errorf("enqueue: unknown kind %q", j.Kind)
	}
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	msg := taskMessage(k.TaskType, j.Payload, j.ID, q.name, q.maxRetry+spareRetry, q.timeout, q.retention)
	keys := []string{q.taskKey(j.ID), q.keys.pending, q.orderKey(j.Ref.Site, j.Ref.OrderNumber)}
	if o.UnlessExists != "" {
		keys = append(keys, q.taskKey(o.UnlessExists))
	}
	ttl := int64(q.indexTTL() / time.Second)
	legacyID := o.LegacyID
	// A few rounds cover a failed task deleted by a concurrent repeat
	// between our conflict and our look-up.
	unavailable := func(err error) error { return fmt.Errorf("enqueue %s: %w: %v", j.ID, fulfillment.ErrUnavailable, err) }
	for range 3 {
		if !q.published.Load() {
			// asynq's client names the queue in asynq:queues before its
			// first enqueue (Inspector and asynqmon look queues up there).
			if err := q.rdb.SAdd(ctx, allQueues, q.name).Err(); err != nil {
				return "", unavailable(err)
			}
			q.published.Store(true)
		}
		var res *redis.Cmd
		err := q.batch.do(ctx, func(ctx context.Context, p redis.Pipeliner) {
			res = enqueueScript.EvalSha(ctx, p, keys, msg, j.ID, time.Now().UnixNano(), ttl, legacyID)
		})
		if err != nil {
			return "", unavailable(err)
		}
		n, err := res.Int()
		if err != nil {
			return "", unavailable(err)
		}
		switch n {
		case enqueueQueued:
			return j.ID, nil
		case enqueueSuperseded:
			return j.ID, pipeline.ErrSuperseded
		case enqueueLegacy:
			info, err := q.inspector.GetTaskInfo(q.name, legacyID)
			switch {
			case err == nil && info.State != asynq.TaskStateArchived:
				return legacyID, nil
			case err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
				return "", fmt.Errorf("inspect %s: %w: %v", legacyID, fulfillment.ErrUnavailable, err)
			}
			legacyID = "" // not in effect: queue ours
			continue
		}
		// A task of this id exists (or the reply was unreadable): look.
		info, err := q.inspector.GetTaskInfo(q.name, j.ID)
		switch {
		case errors.Is(err, asynq.ErrQueueNotFound):
			// Redis lost asynq:queues (flushed, restored): name the queue
			// again, then look again.
			q.published.Store(false)
			continue
		case errors.Is(err, asynq.ErrTaskNotFound):
			continue // finished and expired, or deleted: enqueue again
		case err != nil:
			return "", fmt.Errorf("inspect %s: %w: %v", j.ID, fulfillment.ErrUnavailable, err)
		case info.State != asynq.TaskStateArchived:
			return j.ID, nil // queued, running, retrying or done
		}
		// Failed for good: the shop asks to try again.
		if err := q.inspector.DeleteTask(q.name, j.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return "", fmt.Errorf("delete failed %s: %w: %v", j.ID, fulfillment.ErrUnavailable, err)
		}
	}
	return "", fmt.Errorf("enqueue %s: %w: the task kept changing state", j.ID, fulfillment.ErrUnavailable)
}

// Purge deletes a queue and every key that belongs to it — asynq's (tasks,
// completed-task retention, statistics) and Coordinator's order index — and
// forgets the queue's name. It is for tests and benchmarks that make their
// own queues; asynq's Inspector.DeleteQueue leaves completed tasks and
// statistics behind.
func Purge(ctx context.Context, rdb redis.UniversalClient, queue string) error {
	var keys []string
	for _, pattern := range []string{asynqKey(queue, "*"), ownKey(queue, "*")} {
		// SCAN, not KEYS: the server may be shared, and must not stall.
		iter := rdb.Scan(ctx, 0, pattern, 1000).Iterator()
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return fmt.Errorf("purge %s: %w", queue, err)
		}
	}
	for chunk := range slices.Chunk(keys, 1000) {
		if err := rdb.Del(ctx, chunk...).Err(); err != nil {
			return fmt.Errorf("purge %s: %w", queue, err)
		}
	}
	return rdb.SRem(ctx, allQueues, queue).Err()
}
