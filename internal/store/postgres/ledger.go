package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Ledger is the fulfillment ledger: one row per (site, order number, course).
type Ledger struct {
	pool *pgxpool.Pool
}

// NewLedger returns the ledger in pool's database.
func NewLedger(pool *pgxpool.Pool) *Ledger { return &Ledger{pool: pool} }

// Accept records a line before the API answers. It reports whether the line
// must be queued: true for a new line and for one that had failed (a repeat
// is the shop's way to say "try again"), false while it is queued, running,
// retrying or enrolled. An error means the line was not recorded.
func (l *Ledger) Accept(ctx context.Context, o fulfillment.Order, taskID string) (bool, error) {
	payload, err := json.Marshal(o)
	if err != nil {
		return false, fmt.Errorf("encode line: %w", err)
	}
	var inserted bool
	err = l.pool.QueryRow(ctx, `
		INSERT INTO fulfillment_lines
			(site, order_number, course_id, lms_user_id, username, mode, state, request_id, task_id, payload)
		VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7, $8, $9)
		ON CONFLICT (site, order_number, course_id) DO UPDATE SET
			state = 'queued', last_error = '', lms_user_id = EXCLUDED.lms_user_id, username = EXCLUDED.username,
			mode = EXCLUDED.mode, request_id = EXCLUDED.request_id, payload = EXCLUDED.payload, updated_at = now()
		WHERE fulfillment_lines.state = 'failed'
		RETURNING true`,
		o.Site, o.OrderNumber, o.CourseID, o.LMSUserID, o.Username, o.CourseMode, o.RequestID, taskID, payload,
	).Scan(&inserted)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return false, nil // exists and is not failed
	case err != nil:
		return false, fmt.Errorf("ledger accept %s: %w: %v", taskID, fulfillment.ErrUnavailable, err)
	}
	return true, nil
}

// Started records the beginning of an attempt.
func (l *Ledger) Started(ctx context.Context, o fulfillment.Order) error {
	_, err := l.pool.Exec(ctx, `
		UPDATE fulfillment_lines SET state = 'running', attempts = attempts + 1, updated_at = now()
		WHERE site = $1 AND order_number = $2 AND course_id = $3`, o.Site, o.OrderNumber, o.CourseID)
	if err != nil {
		return fmt.Errorf("ledger start %s: %w", o.OrderNumber, err)
	}
	return nil
}

// Finished records an attempt's outcome: enrolled, retrying or failed.
func (l *Ledger) Finished(ctx context.Context, o fulfillment.Order, state fulfillment.State, lastError string) error {
	_, err := l.pool.Exec(ctx, `
		UPDATE fulfillment_lines SET state = $4, last_error = $5, updated_at = now(),
			enrolled_at = CASE WHEN $4 = 'enrolled' THEN now() ELSE enrolled_at END
		WHERE site = $1 AND order_number = $2 AND course_id = $3`,
		o.Site, o.OrderNumber, o.CourseID, string(state), lastError)
	if err != nil {
		return fmt.Errorf("ledger finish %s: %w", o.OrderNumber, err)
	}
	return nil
}

// Lines reports every line of an order; fulfillment.ErrNotFound when none.
func (l *Ledger) Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	rows, err := l.pool.Query(ctx, `
		SELECT course_id, mode, state, attempts, last_error, task_id, created_at, updated_at, enrolled_at
		FROM fulfillment_lines WHERE site = $1 AND order_number = $2 ORDER BY course_id`, site, orderNumber)
	if err != nil {
		return nil, fmt.Errorf("ledger lines %s: %w: %v", orderNumber, fulfillment.ErrUnavailable, err)
	}
	lines, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fulfillment.Line, error) {
		var ln fulfillment.Line
		var state string
		var enrolled *time.Time
		err := r.Scan(&ln.CourseID, &ln.CourseMode, &state, &ln.Attempts, &ln.LastError, &ln.TaskID,
			&ln.AcceptedAt, &ln.UpdatedAt, &enrolled)
		ln.State, ln.EnrolledAt = fulfillment.State(state), enrolled
		ln.AcceptedAt, ln.UpdatedAt = ln.AcceptedAt.UTC(), ln.UpdatedAt.UTC()
		return ln, err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger lines %s: %w: %v", orderNumber, fulfillment.ErrUnavailable, err)
	}
	if len(lines) == 0 {
		return nil, fmt.Errorf("order %s: %w", orderNumber, fulfillment.ErrNotFound)
	}
	return lines, nil
}

// reopenFailed marks an order's failed lines queued again and returns them.
func (l *Ledger) reopenFailed(ctx context.Context, site, orderNumber string) ([]fulfillment.Order, error) {
	rows, err := l.pool.Query(ctx, `
		UPDATE fulfillment_lines SET state = 'queued', last_error = '', updated_at = now()
		WHERE site = $1 AND order_number = $2 AND state = 'failed' RETURNING payload`, site, orderNumber)
	if err != nil {
		return nil, fmt.Errorf("ledger retry %s: %w: %v", orderNumber, fulfillment.ErrUnavailable, err)
	}
	orders, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (fulfillment.Order, error) {
		var o fulfillment.Order
		err := r.Scan(&o)
		return o, err
	})
	if err != nil {
		return nil, fmt.Errorf("ledger retry %s: %w: %v", orderNumber, fulfillment.ErrUnavailable, err)
	}
	return orders, nil
}

// Enqueuer puts a line's task on the queue, idempotently.
type Enqueuer interface {
	Enqueue(ctx context.Context, o fulfillment.Order) (string, error)
}

// Orders answers the order-status endpoints from the ledger, which keeps
// every line with no retention limit.
type Orders struct {
	Ledger *Ledger
	Queue  Enqueuer
}

// Lines reports every line of an order.
func (o Orders) Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	return o.Ledger.Lines(ctx, site, orderNumber) // fulfillment.ErrNotFound for an unknown order
}

// RetryFailed queues the order's failed lines again. A line the queue cannot
// take now stays queued in the ledger, and the reconciler queues it later.
func (o Orders) RetryFailed(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	reopened, err := o.Ledger.reopenFailed(ctx, site, orderNumber)
	if err != nil {
		return nil, err
	}
	for _, line := range reopened {
		_, _ = o.Queue.Enqueue(ctx, line) // on failure the reconciler queues it
	}
	return o.Ledger.Lines(ctx, site, orderNumber) // fulfillment.ErrNotFound for an unknown order
}
