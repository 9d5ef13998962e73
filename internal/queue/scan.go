package queue

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// scanPage is how many tasks one list call reads.
const scanPage = 500

// Scan calls fn for every task of a registered kind in the queue, read from
// asynq's task lists state by state (o.OpenOnly: pending, scheduled, retry
// and active only), at most o.Max tasks. A task that moves between lists
// while they are read may be seen twice or not at all; the listing it feeds
// is a snapshot, not a transaction.
func (q *Queue) Scan(ctx context.Context, o pipeline.ScanOptions, fn func(pipeline.Entry) error) (bool, error) {
	type lister func(string, ...asynq.ListOption) ([]*asynq.TaskInfo, error)
	lists := []lister{q.inspector.ListActiveTasks, q.inspector.ListPendingTasks, q.inspector.ListScheduledTasks,
		q.inspector.ListRetryTasks}
	if !o.OpenOnly {
		lists = append(lists, q.inspector.ListArchivedTasks, q.inspector.ListCompletedTasks)
	}
	seen := 0
	for _, list := range lists {
		for page := 1; ; page++ {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			infos, err := list(q.name, asynq.Page(page), asynq.PageSize(scanPage))
			if errors.Is(err, asynq.ErrQueueNotFound) || (err != nil && strings.Contains(err.Error(), "does not exist")) {
				return false, nil // nothing was ever queued
			}
			if err != nil {
				return false, fmt.Errorf("list tasks: %w: %v", fulfillment.ErrUnavailable, err)
			}
			for _, info := range infos {
				k, ok := q.byType[info.Type]
				if !ok {
					continue
				}
				if seen == o.Max {
					return true, nil
				}
				seen++
				e, err := entryOf(k.Name, info)
				if err != nil {
					continue // not a line's task: nothing to list
				}
				if err := fn(e); err != nil {
					return false, err
				}
			}
			if len(infos) < scanPage {
				break
			}
		}
	}
	return false, nil
}

// RunNow moves a task waiting for its next attempt (retry or scheduled) to
// pending, so a worker takes it now rather than after its backoff. It
// reports false when the task is in another state or gone.
func (q *Queue) RunNow(ctx context.Context, id string) (bool, error) {
	info, err := q.inspector.GetTaskInfo(q.name, id)
	switch {
	case errors.Is(err, asynq.ErrTaskNotFound), errors.Is(err, asynq.ErrQueueNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("task %s: %w: %v", id, fulfillment.ErrUnavailable, err)
	}
	if info.State != asynq.TaskStateRetry && info.State != asynq.TaskStateScheduled {
		return false, nil
	}
	err = q.inspector.RunTask(q.name, id)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, asynq.ErrTaskNotFound):
		return false, nil
	}
	// It may have become pending or active meanwhile: nothing to do.
	if info, ierr := q.inspector.GetTaskInfo(q.name, id); ierr == nil &&
		info.State != asynq.TaskStateRetry && info.State != asynq.TaskStateScheduled {
		return false, nil
	}
	return false, fmt.Errorf("run %s now: %w: %v", id, fulfillment.ErrUnavailable, err)
}
