package postgres

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

// listKinds are the kinds the listing summarises lines with: an enrollment
// and its undoing, as lms registers them.
func listKinds() *pipeline.Kinds {
	nop := func(context.Context, pipeline.Job) error { return nil }
	return pipeline.NewKinds(
		pipeline.Kind{Name: "enroll", TaskType: "t:enroll", Done: fulfillment.StateEnrolled, Rank: 1, CanceledBy: "unenroll", Handle: pipeline.NoResult(nop)},
		pipeline.Kind{Name: "unenroll", TaskType: "t:unenroll", Done: fulfillment.StateReturned, Rank: 2, After: "enroll", Handle: pipeline.NoResult(nop)},
	)
}

// seed inserts n lines in one statement (so they share a created_at, and
// only the id orders them): order <prefix><i>, learner i%50; every 7th
// failed, every 10th also returned (an unenroll row, done).
func seed(t *testing.T, l *Ledger, prefix string, n int) { seedB(t, l, prefix, n) }

func seedB(t testing.TB, l *Ledger, prefix string, n int) {
	t.Helper()
	_, err := l.pool.Exec(context.Background(), `
		INSERT INTO fulfillment_lines (site, order_number, course_id, kind, lms_user_id, mode, state, task_id, payload, finished_at)
		SELECT 'default', $1 || i, 'course-v1:a+b+c', 'enroll', i % 50, 'verified',
			CASE WHEN i % 7 = 0 THEN 'failed' ELSE 'done' END, 'enroll_' || $1 || i,
			jsonb_strip_nulls(jsonb_build_object('site', 'default', 'order_number', $1 || i, 'course_id', 'course-v1:a+b+c',
				'course_mode', 'verified', 'edx_lms_user_id', i % 50, 'accepted_at', now(),
				'email', CASE WHEN i % 3 = 0 THEN 'Learner' || i || '@Example.com' END)), now()
		FROM generate_series(1, $2) AS i`, prefix, n)
	if err != nil {
		t.Fatal(err)
	}
	_, err = l.pool.Exec(context.Background(), `
		INSERT INTO fulfillment_lines (site, order_number, course_id, kind, lms_user_id, mode, state, task_id, payload, finished_at)
		SELECT site, order_number, course_id, 'unenroll', lms_user_id, mode, 'done', 'unenroll_' || order_number, payload, now()
		FROM fulfillment_lines WHERE order_number LIKE $1 || '%' AND kind = 'enroll' AND substr(order_number, length($1) + 1)::int % 10 = 0`, prefix)
	if err != nil {
		t.Fatal(err)
	}
}

// Paging 10,000 lines in the ledger, with new lines arriving between
// pages, lists every line that was there once, and none twice; a state
// filter pages through exactly the lines in that state.
func TestLedgerLinesPagination(t *testing.T) {
	t.Parallel()
	l := NewLedger(connect(t, true), "q")
	ctx := context.Background()
	for i := range 4 { // four statements: four created_at values, 2,500 rows each
		seed(t, l, fmt.Sprintf("B%d-", i), 2500)
	}
	s := pipeline.New(pipeline.Options{Kinds: listKinds(), Ledger: l})

	page := func(f pipeline.Filter, limit int, between func(n int)) (map[string]int, []pipeline.Row) {
		t.Helper()
		seen := map[string]int{}
		var all []pipeline.Row
		var after *pipeline.Cursor
		for n := 0; ; n++ {
			p, err := s.List(ctx, f, after, limit)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Lines {
				seen[r.OrderNumber]++
			}
			all = append(all, p.Lines...)
			if p.Next == "" {
				return seen, all
			}
			c, err := pipeline.ParseCursor(p.Next)
			if err != nil {
				t.Fatal(err)
			}
			after = &c
			between(n)
		}
	}

	arrived := 0
	seen, all := page(pipeline.Filter{}, 333, func(n int) {
		// New lines arrive while the operator pages.
		for range 3 {
			arrived++
			o := fulfillment.Order{Site: "default", OrderNumber: fmt.Sprintf("NEW-%d", arrived), CourseID: "course-v1:a+b+c",
				CourseMode: "verified", LMSUserID: 1, AcceptedAt: time.Now().UTC()}
			if _, _, err := l.Accept(ctx, ledgerJob(t, "enroll", o)); err != nil {
				t.Fatal(err)
			}
		}
	})
	if len(all) != 10_000 {
		t.Errorf("listed %d lines, want the 10,000 there when paging began", len(all))
	}
	for i := range 4 {
		for j := 1; j <= 2500; j++ {
			if n := seen[fmt.Sprintf("B%d-%d", i, j)]; n != 1 {
				t.Fatalf("line B%d-%d listed %d times", i, j, n)
			}
		}
	}
	if arrived == 0 || seen["NEW-1"] != 0 {
		t.Errorf("lines that arrived after the first page (%d) were listed: %d", arrived, seen["NEW-1"])
	}
	for i := 1; i < len(all); i++ {
		if all[i].AcceptedAt.After(all[i-1].AcceptedAt) {
			t.Fatalf("row %d (%s) is newer than row %d (%s)", i, all[i].OrderNumber, i-1, all[i-1].OrderNumber)
		}
	}
	for _, r := range all {
		want := fulfillment.StateEnrolled
		var n int
		fmt.Sscanf(r.OrderNumber[3:], "%d", &n)
		switch {
		case n%10 == 0:
			want = fulfillment.StateReturned
		case n%7 == 0:
			want = fulfillment.StateFailed
		}
		if r.State != want {
			t.Fatalf("%s: state %s, want %s", r.OrderNumber, r.State, want)
		}
	}

	// Failed lines: every 7th not also returned, 4 × (357 − 35) = 1,288.
	seen, all = page(pipeline.Filter{State: fulfillment.StateFailed}, 100, func(int) {})
	if len(all) != 1288 || len(seen) != 1288 {
		t.Errorf("failed lines: %d listed, %d distinct, want 1288", len(all), len(seen))
	}
	// A learner: every 50th line, in any state.
	_, all = page(pipeline.Filter{LMSUserID: 7}, 500, func(int) {})
	if len(all) != 200 {
		t.Errorf("learner 7: %d lines, want 200", len(all))
	}
	at, ok, err := l.OldestOpen(ctx)
	if err != nil || !ok || at.IsZero() {
		t.Errorf("oldest open: %v %v %v", at, ok, err)
	}
}

// BenchmarkLedgerLines measures one page of 50 lines from a ledger of
// 100,000 lines (110,000 task rows: every 10th line was also returned):
// the newest page, a page halfway down, failed lines only, one learner, one
// email (a third of the lines name one) and an email no line names.
//
//	go test -run '^$' -bench LedgerLines -benchtime 200x ./internal/store/postgres/
func BenchmarkLedgerLines(b *testing.B) {
	pool, err := Connect(context.Background(), pgtest.Schema(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(pool.Close)
	if _, err := Migrate(context.Background(), pool); err != nil {
		b.Fatal(err)
	}
	l := NewLedger(pool, "q")
	for i := range 10 {
		seedB(b, l, fmt.Sprintf("B%d-", i), 10_000)
	}
	if _, err := pool.Exec(context.Background(), "ANALYZE fulfillment_lines"); err != nil {
		b.Fatal(err)
	}
	s := pipeline.New(pipeline.Options{Kinds: listKinds(), Ledger: l})
	ctx := context.Background()
	p, err := s.List(ctx, pipeline.Filter{}, nil, 500)
	if err != nil {
		b.Fatal(err)
	}
	var mid *pipeline.Cursor
	for range 100 { // 50,000 lines down
		c, err := pipeline.ParseCursor(p.Next)
		if err != nil {
			b.Fatal(err)
		}
		mid = &c
		if p, err = s.List(ctx, pipeline.Filter{}, mid, 500); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name  string
		f     pipeline.Filter
		after *pipeline.Cursor
	}{
		{"newest", pipeline.Filter{}, nil},
		{"halfway", pipeline.Filter{}, mid},
		{"failed", pipeline.Filter{State: fulfillment.StateFailed}, nil},
		{"learner", pipeline.Filter{LMSUserID: 7}, nil},
		{"email", pipeline.Filter{Email: "learner300@example.com"}, nil}, // one line per prefix
		{"unknown email", pipeline.Filter{Email: "nobody@example.com"}, nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := s.List(ctx, bc.f, bc.after, 50); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
