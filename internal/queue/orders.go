package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// orderKey is the Redis set of an order's task ids. Site names contain no
// ':', so the key is unambiguous whatever the order number holds.
func (q *Queue) orderKey(site, orderNumber string) string {
	return q.keys.order + site + ":" + orderNumber
}

// indexTTL keeps an order's index a day longer than its tasks.
func (q *Queue) indexTTL() time.Duration { return q.retention + 24*time.Hour }

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
	info, err := q.inspector.GetTaskInfo(q.name, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
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

// taskKey is the hash asynq keeps a task in (asynq:{queue}:t:<id>, its layout
// since v0.18; pinned by TestEnqueueUnlessExists and TestExists).
func (q *Queue) taskKey(id string) string { return q.keys.task + id }

// Exists reports whether a task exists, with an EXISTS on the hash asynq
// keeps it in (not a read of the whole task), group-committed with the
// other workers' checks.
func (q *Queue) Exists(ctx context.Context, id string) (bool, error) {
	var n *redis.IntCmd
	err := q.checks.do(ctx, func(ctx context.Context, p redis.Pipeliner) { n = p.Exists(ctx, q.taskKey(id)) })
	if err != nil {
		return false, fmt.Errorf("task %s: %w: %v", id, fulfillment.ErrUnavailable, err)
	}
	return n.Val() == 1, nil
}

// canceledResult is the result a task that was not needed any more leaves,
// so that a completed task reads back as canceled, not done.
var canceledResult = []byte("canceled")

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
	if info.LastFailedAt.After(t.UpdatedAt) {
		t.UpdatedAt = info.LastFailedAt
	}
	switch info.State {
	case asynq.TaskStateActive:
		t.State, t.Attempts = fulfillment.StateRunning, info.Retried+1
	case asynq.TaskStateCompleted:
		t.State, t.Attempts = fulfillment.StateDone, info.Retried+1
		if string(info.Result) == string(canceledResult) {
			t.State = fulfillment.StateCanceled
		} else {
			t.Result = string(info.Result) // what the task recorded (Kind.Records)
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
