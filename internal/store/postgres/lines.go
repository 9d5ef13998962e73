package postgres

import (
	"context"
	"math"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// linesQuery pages lines newest first. A line is placed by its first task
// (lowest id): its created_at never changes, so a cursor stays valid while
// lines arrive (they sort before it) and while states change. The filters
// on the learner and on states look at every task of the line; a learner's
// email is in the task's payload (indexed lower-cased, migration 0007).
const linesQuery = `
WITH anchors AS (
	SELECT f.id, f.created_at, f.site, f.order_number, f.course_id FROM fulfillment_lines f
	WHERE ($1 = '' OR f.site = $1) AND ($2 = '' OR f.course_id = $2) AND f.created_at >= $3
		AND (f.created_at, f.id) < ($4, $5)
		AND NOT EXISTS (SELECT 1 FROM fulfillment_lines o
			WHERE o.site = f.site AND o.order_number = f.order_number AND o.course_id = f.course_id AND o.id < f.id)
		AND ((cardinality($6::text[]) = 0 AND $7 = 0 AND $8 = '' AND $10 = '') OR EXISTS (SELECT 1 FROM fulfillment_lines s
			WHERE s.site = f.site AND s.order_number = f.order_number AND s.course_id = f.course_id
				AND (cardinality($6::text[]) = 0 OR s.state = ANY($6::text[]))
				AND ($7 = 0 OR s.lms_user_id = $7) AND ($8 = '' OR s.username = $8)
				AND ($10 = '' OR (s.payload ? 'email' AND lower(btrim(s.payload->>'email')) = $10))))
	ORDER BY f.created_at DESC, f.id DESC
	LIMIT $9)
SELECT a.id, a.created_at, t.id, t.kind, t.task_id, t.state, t.attempts, t.last_error, t.created_at, t.updated_at,
	coalesce(t.finished_at, t.enrolled_at), t.payload, t.result
FROM anchors a JOIN fulfillment_lines t
	ON t.site = a.site AND t.order_number = a.order_number AND t.course_id = a.course_id
ORDER BY a.created_at DESC, a.id DESC, t.id`

// Lines reads a page of lines, newest first, with all their tasks.
func (l *Ledger) Lines(ctx context.Context, q pipeline.LedgerQuery) ([]pipeline.LedgerLine, error) {
	before := pipeline.Cursor{At: time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC), Seq: math.MaxInt64}
	if q.Before != nil {
		before = *q.Before
	}
	states := make([]string, len(q.States))
	for i, s := range q.States {
		states[i] = string(s)
	}
	if len(q.States) == 1 && q.States[0] == fulfillment.StateDone {
		states = append(states, "enrolled") // rows an older version finished
	}
	since := q.Filter.Since
	if since.IsZero() {
		since = time.Unix(0, 0)
	}
	rows, err := l.pool.Query(ctx, linesQuery, q.Filter.Site, q.Filter.CourseID, since, before.At, before.Seq,
		states, q.Filter.LMSUserID, q.Filter.Username, q.Limit, pipeline.NormalEmail(q.Filter.Email))
	if err != nil {
		return nil, unavailable("list lines", err)
	}
	var out []pipeline.LedgerLine
	_, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (struct{}, error) {
		var anchor int64
		var at time.Time
		t, err := scanRowAfter(r, &anchor, &at)
		if err != nil {
			return struct{}{}, err
		}
		if n := len(out); n == 0 || out[n-1].At.Seq != anchor {
			out = append(out, pipeline.LedgerLine{At: pipeline.Cursor{At: at.UTC(), Seq: anchor}})
		}
		out[len(out)-1].Entries = append(out[len(out)-1].Entries, t.entry)
		return struct{}{}, nil
	})
	if err != nil {
		return nil, unavailable("list lines", err)
	}
	return out, nil
}

// OldestOpen reports when the oldest task that may still run was accepted,
// leaving out tasks awaiting an account (they wait for a person; see
// pipeline.Service.OldestOpen) and tasks of events (a subscriber's
// deliveries are not lines). Its states match the partial index
// fulfillment_lines_open_created.
func (l *Ledger) OldestOpen(ctx context.Context) (time.Time, bool, error) {
	var at *time.Time
	err := l.pool.QueryRow(ctx, `SELECT min(created_at) FROM fulfillment_lines
		WHERE state IN ('queued', 'running', 'retrying') AND event = ''`).Scan(&at)
	if err != nil {
		return time.Time{}, false, unavailable("oldest open line", err)
	}
	if at == nil {
		return time.Time{}, false, nil
	}
	return at.UTC(), true, nil
}
