package queue

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// ownKey is the key of Coordinator's own structure s of the queue. It
// carries the queue's {hash tag}, as asynq's keys do, so a Redis Cluster
// keeps an order's index next to its tasks.
func ownKey(queue, s string) string { return "coordinator:{" + queue + "}:" + s }

// orderKey is the Redis set of an order's task ids. Site names contain no
// ':', so the key is unambiguous whatever the order number holds.
func (q *Queue) orderKey(site, orderNumber string) string {
	return q.orderKeys + site + ":" + orderNumber
}

// indexTask adds the job's task id to its order's index, in the accepts'
// group commit, and reports whether the index holds o.LegacyID and
// o.UnlessExists.
func (q *Queue) indexTask(ctx context.Context, j pipeline.Job, o pipeline.EnqueueOptions) (legacy, superseding bool, err error) {
	key := q.orderKey(j.Ref.Site, j.Ref.OrderNumber)
	var legacyCmd, supersedingCmd *redis.BoolCmd
	err = q.index.do(ctx, func(ctx context.Context, p redis.Pipeliner) {
		if o.LegacyID != "" {
			legacyCmd = p.SIsMember(ctx, key, o.LegacyID)
		}
		if o.UnlessExists != "" {
			supersedingCmd = p.SIsMember(ctx, key, o.UnlessExists)
		}
		p.SAdd(ctx, key, j.ID)
		// The index outlives its tasks by a day; it is never shortened,
		// so a line's return keeps its order's index as long as itself.
		ttl := q.retentionOf(j.Kind) + 24*time.Hour
		p.ExpireNX(ctx, key, ttl)
		p.ExpireGT(ctx, key, ttl)
	})
	if err != nil {
		return false, false, err
	}
	return legacyCmd != nil && legacyCmd.Val(), supersedingCmd != nil && supersedingCmd.Val(), nil
}

// Order reads the tasks of an order's lines, of every registered kind.
func (q *Queue) Order(ctx context.Context, site, orderNumber string) ([]pipeline.Entry, error) {
	ids, err := q.rdb.SMembers(ctx, q.orderKey(site, orderNumber)).Result()
	if err != nil {
		return nil, fmt.Errorf("order %s: %w: %v", orderNumber, fulfillment.ErrUnavailable, err)
	}
	slices.Sort(ids)
	var entries []pipeline.Entry
	for _, id := range ids {
		e, found, err := q.Task(ctx, id)
		if err != nil && errors.Is(err, fulfillment.ErrUnavailable) {
			return nil, err
		}
		if found && err == nil { // an undecodable task is skipped, not a failure of the order
			entries = append(entries, e)
		}
	}
	return entries, nil
}

// Task reads one task of a registered kind; found is false when it does not
// exist (never queued, expired after the retention, or of no known kind).
func (q *Queue) Task(ctx context.Context, id string) (pipeline.Entry, bool, error) {
	info, err := q.info(id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound):
		return pipeline.Entry{}, false, nil
	case err != nil:
		return pipeline.Entry{}, false, fmt.Errorf("task %s: %w: %v", id, fulfillment.ErrUnavailable, err)
	}
	k, ok := q.byType[info.Type]
	if !ok {
		return pipeline.Entry{}, false, nil
	}
	e, err := entryOf(k.Name, info)
	return e, err == nil, err
}

// Exists reports whether any of the line's tasks ids exists, in any state:
// its order's index, then asynq's Inspector.
func (q *Queue) Exists(ctx context.Context, key fulfillment.Key, ids ...string) (bool, error) {
	// Every task is in its order's index, which outlives it: a task the
	// index does not hold does not exist, and one round trip of our own
	// says so for all of them (most enrollments have no return); one it
	// holds is asked of asynq (it may have expired, or its enqueue failed).
	indexed, err := q.rdb.SMIsMember(ctx, q.orderKey(key.Site, key.OrderNumber), anys(ids)...).Result()
	if err != nil {
		return false, fmt.Errorf("tasks of %s: %w: %v", key.OrderNumber, fulfillment.ErrUnavailable, err)
	}
	for i, id := range ids {
		if !indexed[i] {
			continue
		}
		_, err := q.info(id)
		switch {
		case errors.Is(err, asynq.ErrTaskNotFound):
		case err != nil:
			return false, fmt.Errorf("task %s: %w: %v", id, fulfillment.ErrUnavailable, err)
		default:
			return true, nil
		}
	}
	return false, nil
}

// anys is ids as go-redis's variadic arguments.
func anys(ids []string) []any {
	out := make([]any, len(ids))
	for i, id := range ids {
		out[i] = id
	}
	return out
}

// A task's result in asynq (asynq.ResultWriter) is either canceledResult,
// left by a task that was not needed any more so that it reads back as
// canceled, not done (what earlier versions wrote too), or what its kind
// recorded (Attempt.Result) after resultPrefix, so that no kind's result
// can read as the marker.
var (
	canceledResult = []byte("canceled")
	resultPrefix   = []byte("result:")
)

// resultWriter gives a kind's handler asynq's ResultWriter: each Write
// replaces the task's result with resultPrefix and the bytes written.
type resultWriter struct{ w io.Writer }

func (r resultWriter) Write(p []byte) (int, error) {
	if _, err := r.w.Write(append(slices.Clip(resultPrefix), p...)); err != nil {
		return 0, fmt.Errorf("record the task's result: %w", err)
	}
	return len(p), nil
}

// entryOf maps an asynq task to its line task and job.
func entryOf(kind string, info *asynq.TaskInfo) (pipeline.Entry, error) {
	var ref fulfillment.Ref
	if err := json.Unmarshal(info.Payload, &ref); err != nil {
		return pipeline.Entry{}, fmt.Errorf("decode task %s: %w", info.ID, err)
	}
	t := fulfillment.Task{
		Kind:       kind,
		Attempts:   info.Retried,
		LastError:  info.LastErr,
		TaskID:     info.ID,
		AcceptedAt: ref.AcceptedAt,
		UpdatedAt:  ref.AcceptedAt,
		Ref:        ref,
	}
	if r, ok := bytes.CutPrefix(info.Result, resultPrefix); ok {
		t.Result = string(r)
	}
	if info.LastFailedAt.After(t.UpdatedAt) {
		t.UpdatedAt = info.LastFailedAt
	}
	switch info.State {
	case asynq.TaskStateActive:
		t.State, t.Attempts = fulfillment.StateRunning, info.Retried+1
	case asynq.TaskStateCompleted:
		t.State, t.Attempts = fulfillment.StateDone, info.Retried+1
		if bytes.Equal(info.Result, canceledResult) {
			t.State = fulfillment.StateCanceled
		}
		c := info.CompletedAt
		t.FinishedAt, t.UpdatedAt = &c, c
	case asynq.TaskStateArchived:
		t.State, t.Attempts = fulfillment.StateFailed, info.Retried+1
	case asynq.TaskStateRetry:
		t.State = fulfillment.StateRetrying
		if pipeline.AwaitsAccount(info.LastErr) {
			t.State = fulfillment.StateAwaitingAccount
		}
		n := info.NextProcessAt
		t.NextAttemptAt = &n
	default: // pending, scheduled, aggregating
		t.State = fulfillment.StateQueued
		if info.Retried > 0 {
			t.State = fulfillment.StateRetrying
		}
	}
	return pipeline.Entry{Task: t, Job: pipeline.Job{Kind: kind, ID: info.ID, Ref: ref, Payload: info.Payload}}, nil
}
