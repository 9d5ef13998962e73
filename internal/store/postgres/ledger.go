package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// Ledger is the fulfillment ledger: one row per task of a line, that is per
// (site, order number, course, kind, event). It implements pipeline.Ledger.
type Ledger struct {
	pool    *pgxpool.Pool
	lockKey int64
}

// NewLedger returns the ledger in pool's database. Processes serving the same
// queue share the reconciler's lock.
func NewLedger(pool *pgxpool.Pool, queue string) *Ledger {
	h := fnv.New64a()
	h.Write([]byte("coordinator-reconcile:" + queue))
	return &Ledger{pool: pool, lockKey: int64(h.Sum64() >> 1)}
}

func unavailable(op string, err error) error {
	return fmt.Errorf("ledger %s: %w: %v", op, fulfillment.ErrUnavailable, err)
}

// Accept records a task before the API answers. It returns the id of the
// line's task of that kind (an earlier version's id for rows it wrote) and
// whether it must be queued: true for a new task and for one that had failed
// (a repeat is the shop's way to say "try again"), false while it is open,
// done or canceled. An error means the task was not recorded.
func (l *Ledger) Accept(ctx context.Context, j pipeline.Job) (string, bool, error) {
	var id string
	err := l.pool.QueryRow(ctx, `
		INSERT INTO fulfillment_lines
			(site, order_number, course_id, kind, lms_user_id, username, mode, state, request_id, task_id, payload, event)
		VALUES ($1, $2, $3, $4, $5, $6, $7, 'queued', $8, $9, $10, $11)
		ON CONFLICT (site, order_number, course_id, kind, event) DO UPDATE SET
			state = 'queued', last_error = '', lms_user_id = EXCLUDED.lms_user_id, username = EXCLUDED.username,
			mode = EXCLUDED.mode, request_id = EXCLUDED.request_id, payload = EXCLUDED.payload, updated_at = now(),
			finished_at = NULL
		WHERE fulfillment_lines.state = 'failed'
		RETURNING task_id`,
		j.Ref.Site, j.Ref.OrderNumber, j.Ref.Item(), j.Kind, j.Ref.LMSUserID, j.Ref.Username, j.Ref.CourseMode,
		j.Ref.RequestID, j.ID, j.Payload, j.Ref.Event,
	).Scan(&id)
	switch {
	case err == nil:
		return id, true, nil
	case !errors.Is(err, pgx.ErrNoRows):
		return "", false, unavailable("accept "+j.ID, err)
	}
	// It exists and is not failed: answer with its id.
	err = l.pool.QueryRow(ctx, `SELECT task_id FROM fulfillment_lines
		WHERE site = $1 AND order_number = $2 AND course_id = $3 AND kind = $4 AND event = $5`,
		j.Ref.Site, j.Ref.OrderNumber, j.Ref.Item(), j.Kind, j.Ref.Event).Scan(&id)
	if err != nil {
		return "", false, unavailable("accept "+j.ID, err)
	}
	return id, false, nil
}

// Started records the beginning of an attempt.
func (l *Ledger) Started(ctx context.Context, j pipeline.Job) error {
	k := j.Ref.Key()
	_, err := l.pool.Exec(ctx, `
		UPDATE fulfillment_lines SET state = 'running', attempts = attempts + 1, updated_at = now()
		WHERE site = $1 AND order_number = $2 AND course_id = $3 AND kind = $4 AND event = $5`,
		k.Site, k.OrderNumber, k.Item, j.Kind, j.Ref.Event)
	if err != nil {
		return fmt.Errorf("ledger start %s: %w", k.OrderNumber, err)
	}
	return nil
}

// Finished records a task's new state: done, canceled, retrying,
// awaiting_account (whose attempt, counted by Started, is taken back: a look
// for an account uses none) or failed.
// A task already final is left alone: only a reopen (a retry) makes it open.
// lastError is stored cleaned (pipeline.CleanText): one NUL byte, refused by
// PostgreSQL, would otherwise fail the write at every reconcile pass.
func (l *Ledger) Finished(ctx context.Context, j pipeline.Job, state fulfillment.State, lastError string) error {
	k := j.Ref.Key()
	lastError = pipeline.CleanText(lastError)
	_, err := l.pool.Exec(ctx, `
		UPDATE fulfillment_lines SET state = $5, last_error = $6, updated_at = now(),
			result = CASE WHEN $8 <> '' THEN $8 ELSE result END,
			finished_at = CASE WHEN $5 IN ('done', 'canceled', 'failed') THEN now() ELSE finished_at END,
			-- a look for a learner's account is not an attempt (as in the queue)
			attempts = CASE WHEN $5 = 'awaiting_account' THEN greatest(attempts - 1, 0) ELSE attempts END
		WHERE site = $1 AND order_number = $2 AND course_id = $3 AND kind = $4 AND event = $7
			AND state IN ('queued', 'running', 'retrying', 'awaiting_account')`,
		k.Site, k.OrderNumber, k.Item, j.Kind, string(state), lastError, j.Ref.Event, j.Result)
	if err != nil {
		return fmt.Errorf("ledger finish %s: %w", k.OrderNumber, err)
	}
	return nil
}

const entryColumns = `id, kind, task_id, state, attempts, last_error, created_at, updated_at,
	coalesce(finished_at, enrolled_at), payload, result`

type row struct {
	id    int64
	entry pipeline.Entry
}

// scanEntry reads a row of entryColumns.
func scanEntry(r pgx.CollectableRow) (pipeline.Entry, error) {
	row, err := scanRow(r)
	return row.entry, err
}

// scanRow reads a row of entryColumns with its id.
func scanRow(r pgx.CollectableRow) (row, error) { return scanRowAfter(r) }

// scanRowAfter reads a row of entryColumns, after the columns dest names.
func scanRowAfter(r pgx.CollectableRow, dest ...any) (row, error) {
	var e pipeline.Entry
	var id int64
	var state string
	var payload []byte
	t := &e.Task
	if err := r.Scan(append(dest, &id, &t.Kind, &t.TaskID, &state, &t.Attempts, &t.LastError, &t.AcceptedAt, &t.UpdatedAt,
		&t.FinishedAt, &payload, &t.Result)...); err != nil {
		return row{}, err
	}
	if err := json.Unmarshal(payload, &t.Ref); err != nil {
		return row{}, fmt.Errorf("decode line %d: %w", id, err)
	}
	t.State = fulfillment.State(state)
	if t.State == "enrolled" { // written by a version before task kinds
		t.State = fulfillment.StateDone
	}
	t.AcceptedAt, t.UpdatedAt = t.AcceptedAt.UTC(), t.UpdatedAt.UTC()
	if t.FinishedAt != nil {
		f := t.FinishedAt.UTC()
		t.FinishedAt = &f
	}
	e.Job = pipeline.Job{Kind: t.Kind, ID: t.TaskID, Ref: t.Ref, Payload: payload, Result: t.Result}
	return row{id, e}, nil
}

// Find reads a line's task of a kind (of no event).
func (l *Ledger) Find(ctx context.Context, kind string, k fulfillment.Key) (fulfillment.Task, bool, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+entryColumns+` FROM fulfillment_lines
		WHERE site = $1 AND order_number = $2 AND course_id = $3 AND kind = $4 AND event = ''`, k.Site, k.OrderNumber, k.Item, kind)
	if err != nil {
		return fulfillment.Task{}, false, unavailable("find "+k.OrderNumber, err)
	}
	es, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return fulfillment.Task{}, false, unavailable("find "+k.OrderNumber, err)
	}
	if len(es) == 0 {
		return fulfillment.Task{}, false, nil
	}
	return es[0].Task, true, nil
}

// Order reads every task of an order.
func (l *Ledger) Order(ctx context.Context, site, orderNumber string) ([]pipeline.Entry, error) {
	rows, err := l.pool.Query(ctx, `SELECT `+entryColumns+` FROM fulfillment_lines
		WHERE site = $1 AND order_number = $2 ORDER BY course_id, kind, id`, site, orderNumber)
	if err != nil {
		return nil, unavailable("order "+orderNumber, err)
	}
	es, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, unavailable("order "+orderNumber, err)
	}
	return es, nil
}

// ReopenFailed marks an order's failed tasks queued again and returns them.
func (l *Ledger) ReopenFailed(ctx context.Context, site, orderNumber string) ([]pipeline.Job, error) {
	rows, err := l.pool.Query(ctx, `
		UPDATE fulfillment_lines SET state = 'queued', last_error = '', updated_at = now(), finished_at = NULL
		WHERE site = $1 AND order_number = $2 AND state = 'failed' RETURNING `+entryColumns, site, orderNumber)
	if err != nil {
		return nil, unavailable("retry "+orderNumber, err)
	}
	es, err := pgx.CollectRows(rows, scanEntry)
	if err != nil {
		return nil, unavailable("retry "+orderNumber, err)
	}
	jobs := make([]pipeline.Job, len(es))
	for i, e := range es {
		jobs[i] = e.Job
	}
	return jobs, nil
}

const openBatch = 1000

// Open calls fn for every task that may still run and was not updated for
// quiet, a batch at a time.
func (l *Ledger) Open(ctx context.Context, quiet time.Duration, fn func(pipeline.Entry) error) error {
	var last int64
	for {
		rows, err := l.pool.Query(ctx, `SELECT `+entryColumns+` FROM fulfillment_lines
			WHERE state IN ('queued', 'running', 'retrying', 'awaiting_account') AND updated_at < now() - $3::interval
			AND id > $1 ORDER BY id LIMIT $2`, last, openBatch, quiet)
		if err != nil {
			return fmt.Errorf("list open tasks: %w", err)
		}
		batch, err := pgx.CollectRows(rows, scanRow)
		if err != nil {
			return fmt.Errorf("list open tasks: %w", err)
		}
		for _, r := range batch {
			last = r.id
			if err := fn(r.entry); err != nil {
				return err
			}
		}
		if len(batch) < openBatch {
			return nil
		}
	}
}

// TryLock takes the reconciler's advisory lock if no other process holds it.
// The lock lives on one connection, held until release.
func (l *Ledger) TryLock(ctx context.Context) (func(), bool, error) {
	conn, err := l.pool.Acquire(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("reconcile lock: connect: %w", err)
	}
	var ok bool
	if err := conn.QueryRow(ctx, "SELECT pg_try_advisory_lock($1)", l.lockKey).Scan(&ok); err != nil || !ok {
		conn.Release()
		if err != nil {
			return nil, false, fmt.Errorf("reconcile lock: %w", err)
		}
		return nil, false, nil
	}
	return func() {
		unlock(context.WithoutCancel(ctx), conn.Conn(), l.lockKey)
		conn.Release()
	}, true, nil
}
