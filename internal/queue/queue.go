// Package queue is Coordinator's seam to asynq and Redis: the enrollment task
// type and payload, the enqueuer that makes a fulfillment line idempotent, and
// the worker that runs tasks against the LMS.
package queue

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
)

// TypeEnroll is the task that enrolls one learner for one fulfillment line.
const TypeEnroll = "lms:fulfill_order_placed_send_enroll_in_course"

// TaskID identifies a fulfillment line's task: the same (site, order number,
// course) always gives the same id, which is what makes repeats idempotent.
func TaskID(site, orderNumber, courseID string) string {
	h := sha256.New()
	for _, s := range []string{site, orderNumber, courseID} {
		h.Write([]byte(s))
		h.Write([]byte{0}) // no field contains NUL, so the join is unambiguous
	}
	return "enroll-" + hex.EncodeToString(h.Sum(nil)[:16])
}

// NewEnrollTask returns the enrollment task for an order line.
func NewEnrollTask(o fulfillment.Order) (*asynq.Task, error) {
	payload, err := json.Marshal(o)
	if err != nil {
		return nil, fmt.Errorf("encode enroll payload: %w", err)
	}
	return asynq.NewTask(TypeEnroll, payload), nil
}

// NewRedisClient connects to the Redis the configuration names. Timeouts are
// short so that an unreachable Redis turns into a quick 503, never a hang.
func NewRedisClient(c config.Redis) (redis.UniversalClient, error) {
	const dial, rw = 2 * time.Second, 3 * time.Second
	switch {
	case c.Sentinel != nil:
		return redis.NewFailoverClient(&redis.FailoverOptions{
			MasterName: c.Sentinel.MasterName, SentinelAddrs: c.Sentinel.Addrs,
			Password: c.Sentinel.Password, SentinelPassword: c.Sentinel.SentinelPassword, DB: c.Sentinel.DB,
			DialTimeout: dial, ReadTimeout: rw, WriteTimeout: rw,
		}), nil
	case c.Cluster != nil:
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs: c.Cluster.Addrs, Password: c.Cluster.Password,
			DialTimeout: dial, ReadTimeout: rw, WriteTimeout: rw,
		}), nil
	}
	opt, err := redis.ParseURL(c.URL)
	if err != nil {
		return nil, fmt.Errorf("redis.url: %w", err)
	}
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = dial, rw, rw
	return redis.NewClient(opt), nil
}

// Enqueuer puts fulfillment lines on the queue, once each.
type Enqueuer struct {
	rdb       redis.UniversalClient
	client    *asynq.Client
	inspector *asynq.Inspector
	queue     string
	maxRetry  int
	retention time.Duration
	timeout   time.Duration
	indexer   *indexer
}

// EnqueuerOptions configure an Enqueuer.
type EnqueuerOptions struct {
	Queue       string
	MaxAttempts int           // attempts per task, the first included
	Retention   time.Duration // how long finished tasks are kept
	TaskTimeout time.Duration // how long one attempt may run
}

// NewEnqueuer returns an Enqueuer over rdb.
func NewEnqueuer(rdb redis.UniversalClient, o EnqueuerOptions) *Enqueuer {
	e := &Enqueuer{
		rdb:       rdb,
		client:    asynq.NewClientFromRedisClient(rdb),
		inspector: asynq.NewInspectorFromRedisClient(rdb),
		queue:     o.Queue,
		maxRetry:  o.MaxAttempts - 1,
		retention: o.Retention,
		timeout:   o.TaskTimeout,
	}
	e.indexer = newIndexer(rdb, e.indexTTL())
	return e
}

// enqueueTimeout bounds one enqueue, so a dead Redis answers 503 quickly.
const enqueueTimeout = 3 * time.Second

// Enqueue queues the order line's enrollment task and returns its id. While
// the line is queued, running, retrying or enrolled, it enqueues nothing and
// returns the same id; once the line failed for good, it queues it again.
// An unreachable Redis yields an error wrapping fulfillment.ErrUnavailable.
func (e *Enqueuer) Enqueue(ctx context.Context, o fulfillment.Order) (string, error) {
	id := TaskID(o.Site, o.OrderNumber, o.CourseID)
	task, err := NewEnrollTask(o)
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(ctx, enqueueTimeout)
	defer cancel()
	if err := e.index(ctx, o, id); err != nil {
		return "", err
	}
	// A few rounds cover a failed task deleted by a concurrent repeat
	// between our conflict and our look-up.
	for range 3 {
		_, err := e.client.EnqueueContext(ctx, task,
			asynq.TaskID(id), asynq.Queue(e.queue), asynq.MaxRetry(e.maxRetry),
			asynq.Retention(e.retention), asynq.Timeout(e.timeout))
		if err == nil {
			return id, nil
		}
		if !errors.Is(err, asynq.ErrTaskIDConflict) {
			return "", fmt.Errorf("enqueue %s: %w: %v", id, fulfillment.ErrUnavailable, err)
		}
		info, err := e.inspector.GetTaskInfo(e.queue, id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
			continue // finished and expired, or deleted: enqueue again
		case err != nil:
			return "", fmt.Errorf("inspect %s: %w: %v", id, fulfillment.ErrUnavailable, err)
		case info.State != asynq.TaskStateArchived:
			return id, nil // queued, running, retrying or enrolled
		}
		// Failed for good: the shop asks to try again.
		if err := e.inspector.DeleteTask(e.queue, id); err != nil && !errors.Is(err, asynq.ErrTaskNotFound) {
			return "", fmt.Errorf("delete failed %s: %w: %v", id, fulfillment.ErrUnavailable, err)
		}
	}
	return "", fmt.Errorf("enqueue %s: %w: the task kept changing state", id, fulfillment.ErrUnavailable)
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
