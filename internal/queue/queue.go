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
	client    *asynq.Client
	inspector *asynq.Inspector
	kinds     *pipeline.Kinds
	byType    map[string]pipeline.Kind
	name      string
	maxRetry  int
	retention time.Duration
	timeout   time.Duration
	batch     *batcher // the accepts' index writes, at once
	checks    *batcher // the workers' checks, lingering for company
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
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		kinds:     kinds,
		byType:    map[string]pipeline.Kind{},
		name:      o.Name,
		maxRetry:  o.MaxAttempts - 1,
		retention: o.Retention,
		timeout:   o.TaskTimeout,
	}
	for _, k := range kinds.All() {
		q.byType[k.TaskType] = k
	}
	q.batch = newBatcher(rdb, 0)
	q.checks = newBatcher(rdb, checkLinger)
	return q
}

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
// pipeline.ErrSuperseded. Both checks ride in the round trip that indexes the
// task under its order. An unreachable Redis yields an error wrapping
// fulfillment.ErrUnavailable.
func (q *Queue) Enqueue(ctx context.Context, j pipeline.Job, o pipeline.EnqueueOptions) (string, error) {
	k, ok := q.kinds.Get(j.Kind)
	if !ok {
		return "", fmt.Errorf("enqueue: unknown kind %q", j.Kind)
	}
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	// Index the task under its order before queueing it, so that every
	// queued task is findable; the same round trip tells whether an
	// earlier version indexed the line under its legacy id, and whether
	// the superseding task exists.
	var legacy *redis.BoolCmd
	var superseded *redis.IntCmd
	key := q.orderKey(j.Ref.Site, j.Ref.OrderNumber)
	err := q.batch.do(ctx, func(ctx context.Context, p redis.Pipeliner) {
		if o.LegacyID != "" {
			legacy = p.SIsMember(ctx, key, o.LegacyID)
		}
		if o.UnlessExists != "" {
			superseded = p.Exists(ctx, q.taskKey(o.UnlessExists))
		}
		p.SAdd(ctx, key, j.ID)
		p.Expire(ctx, key, q.indexTTL())
	})
	if err != nil {
		return "", fmt.Errorf("index %s: %w: %v", j.ID, fulfillment.ErrUnavailable, err)
	}
	if superseded != nil && superseded.Val() == 1 {
		return j.ID, pipeline.ErrSuperseded
	}
	if legacy != nil && legacy.Val() {
		info, err := q.inspector.GetTaskInfo(q.name, o.LegacyID)
		switch {
		case err == nil && info.State != asynq.TaskStateArchived:
			return o.LegacyID, nil
		case err != nil && !errors.Is(err, asynq.ErrTaskNotFound) && !errors.Is(err, asynq.ErrQueueNotFound):
			return "", fmt.Errorf("inspect %s: %w: %v", o.LegacyID, fulfillment.ErrUnavailable, err)
		}
	}
	task := asynq.NewTask(k.TaskType, j.Payload)
	// A few rounds cover a failed task deleted by a concurrent repeat
	// between our conflict and our look-up.
	for range 3 {
		_, err := q.client.EnqueueContext(ctx, task,
			asynq.TaskID(j.ID), asynq.Queue(q.name), asynq.MaxRetry(q.maxRetry),
			asynq.Retention(q.retention), asynq.Timeout(q.timeout))
		if err == nil {
			return j.ID, nil
		}
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return "", fmt.Errorf("enqueue %s: %w: %v", j.ID, fulfillment.ErrUnavailable, err)
		}
		info, err := q.inspector.GetTaskInfo(q.name, j.ID)
		switch {
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
	for _, pattern := range []string{"asynq:{" + queue + "}:*", "coordinator:{" + queue + "}:*"} {
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
