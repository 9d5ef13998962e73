package postgres

import (
	"context"
	"fmt"
	"hash/fnv"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Tasks is what the reconciler needs of the queue.
type Tasks interface {
	Enqueuer
	TaskState(ctx context.Context, taskID string) (state fulfillment.State, lastErr string, found bool, err error)
}

// Observer receives reconciler runs (metrics).
type Observer interface {
	Reconcile(ran bool, requeued, synced int, err error)
}

// Reconciler makes the queue agree with the ledger: it re-queues open lines
// whose task no longer exists in Redis (Redis restarted without persistence,
// was flushed, or was down when the line was accepted), and records outcomes
// the worker could not write. One process at a time runs it across the
// fleet, under a Postgres advisory lock.
type Reconciler struct {
	pool     *pgxpool.Pool
	ledger   *Ledger
	tasks    Tasks
	interval time.Duration
	lockKey  int64
	log      *slog.Logger
	// Observer, when set, is told of every run.
	Observer Observer
}

// NewReconciler returns a reconciler for the named queue; processes sharing
// the queue share the lock.
func NewReconciler(pool *pgxpool.Pool, tasks Tasks, queue string, interval time.Duration, log *slog.Logger) *Reconciler {
	h := fnv.New64a()
	h.Write([]byte("coordinator-reconcile:" + queue))
	return &Reconciler{pool: pool, ledger: NewLedger(pool), tasks: tasks, interval: interval,
		lockKey: int64(h.Sum64() >> 1), log: log}
}

// Run reconciles every interval until ctx ends.
func (r *Reconciler) Run(ctx context.Context) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		res, err := r.Once(ctx)
		if r.Observer != nil && ctx.Err() == nil {
			r.Observer.Reconcile(res.Ran, res.Requeued, res.Synced, err)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.WarnContext(ctx, "reconcile_failed", "err", err.Error())
		case res.Ran && (res.Requeued > 0 || res.Synced > 0):
			r.log.InfoContext(ctx, "reconciled", "checked", res.Checked, "requeued", res.Requeued, "synced", res.Synced)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Result says what one reconciliation did.
type Result struct {
	Ran      bool // false when another process held the lock
	Checked  int  // open lines looked at
	Requeued int  // lines whose lost task was queued again
	Synced   int  // final outcomes copied from Redis into the ledger
}

const reconcileBatch = 1000

// Once runs one reconciliation if no other process is running one.
func (r *Reconciler) Once(ctx context.Context) (Result, error) {
	var res Result
	conn, err := r.pool.Acquire(ctx)
	if err != nil {
		return res, fmt.Errorf("reconcile: connect: %w", err)
	}
	defer conn.Release()
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", r.lockKey).Scan(&res.Ran); err != nil {
		return res, fmt.Errorf("reconcile: lock: %w", err)
	}
	if !res.Ran {
		return res, nil
	}
	defer unlock(ctx, conn.Conn(), r.lockKey)

	var last int64
	for {
		rows, err := conn.Query(ctx, `
			SELECT id, task_id, payload FROM fulfillment_lines
			WHERE state IN ('queued', 'running', 'retrying') AND id > $1 ORDER BY id LIMIT $2`, last, reconcileBatch)
		if err != nil {
			return res, fmt.Errorf("reconcile: list open lines: %w", err)
		}
		type open struct {
			id     int64
			taskID string
			order  fulfillment.Order
		}
		var batch []open
		for rows.Next() {
			var o open
			if err := rows.Scan(&o.id, &o.taskID, &o.order); err != nil {
				rows.Close()
				return res, fmt.Errorf("reconcile: read line: %w", err)
			}
			batch = append(batch, o)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return res, fmt.Errorf("reconcile: list open lines: %w", err)
		}
		for _, o := range batch {
			last = o.id
			res.Checked++
			state, lastErr, found, err := r.tasks.TaskState(ctx, o.taskID)
			if err != nil {
				return res, err
			}
			switch {
			case !found:
				if _, err := r.tasks.Enqueue(ctx, o.order); err != nil {
					return res, err
				}
				res.Requeued++
			case state == fulfillment.StateEnrolled || state == fulfillment.StateFailed:
				if err := r.ledger.Finished(ctx, o.order, state, lastErr); err != nil {
					return res, err
				}
				res.Synced++
			}
		}
		if len(batch) < reconcileBatch {
			return res, nil
		}
	}
}
