package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// orderKey is the Redis set of an order's task ids. Site names contain no
// ':', so the key is unambiguous whatever the order number holds.
func (e *Enqueuer) orderKey(site, orderNumber string) string {
	return "coordinator:{" + e.queue + "}:order:" + site + ":" + orderNumber
}

// indexTTL keeps an order's index a day longer than its tasks.
func (e *Enqueuer) indexTTL() time.Duration { return e.retention + 24*time.Hour }

// index records the line's task under its order, before the task is
// enqueued, so that every queued task is findable.
func (e *Enqueuer) index(ctx context.Context, o fulfillment.Order, id string) error {
	if err := e.indexer.add(ctx, e.orderKey(o.Site, o.OrderNumber), id); err != nil {
		return fmt.Errorf("index %s: %w: %v", id, fulfillment.ErrUnavailable, err)
	}
	return nil
}

// Lines reports the state of every line of an order. An order with no
// surviving task is fulfillment.ErrNotFound.
func (e *Enqueuer) Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	tasks, err := e.tasks(ctx, site, orderNumber)
	if err != nil {
		return nil, err
	}
	lines := make([]fulfillment.Line, len(tasks))
	for i, t := range tasks {
		lines[i] = t.line
	}
	return lines, nil
}

// RetryFailed queues the order's failed lines again and returns the order's
// lines afterwards.
func (e *Enqueuer) RetryFailed(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	tasks, err := e.tasks(ctx, site, orderNumber)
	if err != nil {
		return nil, err
	}
	for _, t := range tasks {
		if t.line.State != fulfillment.StateFailed {
			continue
		}
		if _, err := e.Enqueue(ctx, t.order); err != nil {
			return nil, err
		}
	}
	return e.Lines(ctx, site, orderNumber)
}

// orderTask is one line of an order as its task in Redis holds it.
type orderTask struct {
	order fulfillment.Order
	line  fulfillment.Line
}

// tasks reads the tasks of an order's lines, by task id.
func (e *Enqueuer) tasks(ctx context.Context, site, orderNumber string) ([]orderTask, error) {
	ids, err := e.rdb.SMembers(ctx, e.orderKey(site, orderNumber)).Result()
	if err != nil {
		return nil, fmt.Errorf("order %s: %w: %v", orderNumber, fulfillment.ErrUnavailable, err)
	}
	slices.Sort(ids)
	var tasks []orderTask
	for _, id := range ids {
		info, err := e.inspector.GetTaskInfo(e.queue, id)
		if errors.Is(err, asynq.ErrTaskNotFound) || errors.Is(err, asynq.ErrQueueNotFound) {
			continue // expired after retention, or never enqueued
		}
		if err != nil {
			return nil, fmt.Errorf("task %s: %w: %v", id, fulfillment.ErrUnavailable, err)
		}
		o, line, err := lineOf(info)
		if err != nil {
			return nil, err
		}
		tasks = append(tasks, orderTask{o, line})
	}
	if len(tasks) == 0 {
		return nil, fmt.Errorf("order %s: %w", orderNumber, fulfillment.ErrNotFound)
	}
	return tasks, nil
}

// lineOf maps an asynq task to its order line and that line's state.
func lineOf(info *asynq.TaskInfo) (fulfillment.Order, fulfillment.Line, error) {
	var o fulfillment.Order
	if err := json.Unmarshal(info.Payload, &o); err != nil {
		return o, fulfillment.Line{}, fmt.Errorf("decode task %s: %w", info.ID, err)
	}
	l := fulfillment.Line{
		CourseID:   o.CourseID,
		CourseMode: o.CourseMode,
		Attempts:   info.Retried,
		LastError:  info.LastErr,
		TaskID:     info.ID,
		AcceptedAt: o.AcceptedAt,
		UpdatedAt:  o.AcceptedAt,
	}
	if info.LastFailedAt.After(l.UpdatedAt) {
		l.UpdatedAt = info.LastFailedAt
	}
	switch info.State {
	case asynq.TaskStateActive:
		l.State, l.Attempts = fulfillment.StateRunning, info.Retried+1
	case asynq.TaskStateCompleted:
		l.State, l.Attempts = fulfillment.StateEnrolled, info.Retried+1
		t := info.CompletedAt
		l.EnrolledAt, l.UpdatedAt = &t, t
	case asynq.TaskStateArchived:
		l.State, l.Attempts = fulfillment.StateFailed, info.Retried+1
	case asynq.TaskStateRetry:
		l.State = fulfillment.StateRetrying
		t := info.NextProcessAt
		l.NextAttemptAt = &t
	default: // pending, scheduled, aggregating
		l.State = fulfillment.StateQueued
		if info.Retried > 0 {
			l.State = fulfillment.StateRetrying
		}
	}
	return o, l, nil
}

// TaskState reports the state of a line's task; found is false when the task
// no longer exists in Redis (lost, or older than the retention).
func (e *Enqueuer) TaskState(ctx context.Context, taskID string) (state fulfillment.State, lastErr string, found bool, err error) {
	info, err := e.inspector.GetTaskInfo(e.queue, taskID)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return "", "", false, nil
	case err != nil:
		return "", "", false, fmt.Errorf("task %s: %w: %v", taskID, fulfillment.ErrUnavailable, err)
	}
	_, line, err := lineOf(info)
	if err != nil {
		return "", "", true, err
	}
	return line.State, line.LastError, true, nil
}
