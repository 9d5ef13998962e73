// Package queue is Coordinator's seam to asynq: it queues the tasks of
// whatever kinds the pipeline registers with asynq's client, idempotently by
// task id; reads them back with asynq's Inspector, and through an index of
// each order's task ids that it keeps in Redis itself, as line tasks for
// status, retry and reconciliation; and runs asynq servers that hand each
// task to the pipeline. It uses asynq's public API only: asynq's keys,
// messages and scripts are asynq's business.
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
	client    atomic.Pointer[asynq.Client]
	republish atomic.Bool // asynq:queues lost the queue's name: enqueue through a new client
	inspector *asynq.Inspector
	kinds     *pipeline.Kinds
	byType    map[string]pipeline.Kind
	name      string
	orderKeys string // prefix of an order's index
	maxRetry  int
	retention time.Duration
	tombstone time.Duration // retention of a task that supersedes others
	timeout   time.Duration
	index     *batcher // the accepts' index writes and checks, group-committed
}

// Options configure a Queue.
type Options struct {
	Name        string        // the asynq queue
	MaxAttempts int           // attempts per task, the first included
	Retention   time.Duration // how long finished tasks are kept
	// ReturnRetention is how long a finished task that supersedes others
	// (pipeline.Kinds.Supersedes: a line's return) is kept, so that a
	// repeat of the line's fulfillment long after still finds it; at
	// least Retention.
	ReturnRetention time.Duration
	TaskTimeout     time.Duration // how long one attempt may run
}

// retentionOf is how long a finished task of kind is kept.
func (q *Queue) retentionOf(kind string) time.Duration {
	if q.kinds.Supersedes(kind) {
		return q.tombstone
	}
	return q.retention
}

// New returns a Queue over rdb for the kinds registered.
func New(rdb redis.UniversalClient, kinds *pipeline.Kinds, o Options) *Queue {
	q := &Queue{
		rdb:       rdb,
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		kinds:     kinds,
		byType:    map[string]pipeline.Kind{},
		name:      o.Name,
		orderKeys: ownKey(o.Name, "order:"),
		maxRetry:  o.MaxAttempts - 1,
		retention: o.Retention,
		tombstone: max(o.Retention, o.ReturnRetention),
		timeout:   o.TaskTimeout,
		index:     newBatcher(rdb),
	}
	q.client.Store(asynq.NewClientFromRedisClient(rdb))
	for _, k := range kinds.All() {
		q.byType[k.TaskType] = k
	}
	return q
}

// spareRetry is how many retries asynq's bound on a task (asynq.MaxRetry)
// has beyond worker.retry.max_attempts. asynq archives a task whose retries
// reached the bound whatever its handler returns, a Hold too; a Hold does
// not count as a retry (IsFailure is false for it), so with one spare the
// attempt the pipeline treats as the last (Attempt.Last) can still be held —
// put back for a wait (Behind, Slots, an account) or a store's failure —
// and run again without being archived. The pipeline itself ends a task
// whose last attempt failed (asynq.SkipRetry: archived at once); the spare
// is used only by asynq's recoverer (a worker that died mid-attempt counts
// one) and by an attempt that ran past its deadline, after which
// Attempt.Final is set.
const spareRetry = 1

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
// The task is indexed under its order first (group-committed with
// concurrent accepts: one round trip per batch), so that every task asynq
// holds is found by its order; that round trip also tells whether the order
// holds the legacy id and the superseding task's id, which are then looked
// up with the Inspector. Then asynq's client queues the task under its id
// (asynq.TaskID), which asynq refuses when a task of that id exists. The id
// is returned only after Redis answered both.
func (q *Queue) Enqueue(ctx context.Context, j pipeline.Job, o pipeline.EnqueueOptions) (string, error) {
	k, ok := q.kinds.Get(j.Kind)
	if !ok {
		return "", fmt.Errorf("enqueue: unknown kind %q", j.Kind)
	}
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	unavailable := func(op, id string, err error) error {
		return fmt.Errorf("%s %s: %w: %v", op, id, fulfillment.ErrUnavailable, err)
	}
	legacy, superseding, err := q.indexTask(ctx, j, o)
	if err != nil {
		return "", unavailable("index", j.ID, err)
	}
	// Only a task indexed under the order may exist: a task is indexed
	// before it is queued, and its index outlives it unless it kept
	// running (retrying, awaiting an account) for more than a day — for
	// which the worker's check of CanceledBy before every attempt remains.
	if superseding {
		switch _, err := q.info(o.UnlessExists); {
		case err == nil:
			return j.ID, pipeline.ErrSuperseded
		case !errors.Is(err, asynq.ErrTaskNotFound):
			return "", unavailable("inspect", o.UnlessExists, err)
		}
	}
	if legacy {
		info, err := q.info(o.LegacyID)
		switch {
		case err == nil && info.State != asynq.TaskStateArchived:
			return o.LegacyID, nil
		case err != nil && !errors.Is(err, asynq.ErrTaskNotFound):
			return "", unavailable("inspect", o.LegacyID, err)
		}
	}
	task := asynq.NewTask(k.TaskType, j.Payload)
	// A few rounds cover a failed task deleted by a concurrent repeat
	// between our conflict and our look-up.
	for range 3 {
		_, err := q.asynqClient().EnqueueContext(ctx, task,
			asynq.TaskID(j.ID), asynq.Queue(q.name), asynq.MaxRetry(q.maxRetry+spareRetry),
			asynq.Retention(q.retentionOf(j.Kind)), asynq.Timeout(q.timeout))
		if err == nil {
			return j.ID, nil
		}
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return "", unavailable("enqueue", j.ID, err)
		}
		info, err := q.info(j.ID)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			continue // finished and expired, deleted, or the queue's name lost: enqueue again
		case err != nil:
			return "", unavailable("inspect", j.ID, err)
		case info.State != asynq.TaskStateArchived:
			return j.ID, nil // queued, running, retrying or done
		}
		// Failed for good: the shop asks to try again.
		if err := q.inspector.DeleteTask(q.name, j.ID); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return "", unavailable("delete failed", j.ID, err)
		}
	}
	return "", fmt.Errorf("enqueue %s: %w: the task kept changing state", j.ID, fulfillment.ErrUnavailable)
}

// info reads a task with asynq's Inspector. A queue the Inspector does not
// know reads as a missing task: Redis lost asynq's set of queue names
// (flushed, or restored from an older copy), which asynq's client fills in
// only at its first enqueue to a queue — so the next enqueue goes through a
// new client, which names the queue again.
func (q *Queue) info(id string) (*asynq.TaskInfo, error) {
	info, err := q.inspector.GetTaskInfo(q.name, id)
	if errors.Is(err, asynq.ErrQueueNotFound) {
		q.republish.Store(true)
		return nil, fmt.Errorf("%w (queue %s not known to asynq)", asynq.ErrTaskNotFound, q.name)
	}
	return info, err
}

// asynqClient is the client to enqueue with: a new one when asynq's set of
// queue names lost this queue's (info), since a client names a queue only
// at its first enqueue to it.
func (q *Queue) asynqClient() *asynq.Client {
	if q.republish.CompareAndSwap(true, false) {
		q.client.Store(asynq.NewClientFromRedisClient(q.rdb))
	}
	return q.client.Load()
}

// Purge deletes a queue and every key that belongs to it — asynq's (tasks,
// completed-task retention, statistics), found by the queue's {hash tag}
// that asynq puts in each of them, and Coordinator's order index — and
// forgets the queue's name. It is for tests and benchmarks that make their
// own queues; asynq's Inspector.DeleteQueue leaves completed tasks and
// statistics behind.
func Purge(ctx context.Context, rdb redis.UniversalClient, queue string) error {
	var keys []string
	for _, pattern := range []string{"asynq:{" + queue + "}:*", ownKey(queue, "*")} {
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
	return rdb.SRem(ctx, "asynq:queues", queue).Err()
}
