package pipeline

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// problemLines accepts n lines, order P<i> accepted i minutes after a base
// time, for learner 100+i%3, and sets some states: P1 failed, P2 retrying,
// P3 returned (its undo done), the others queued.
func problemLines(t *testing.T, s *Service, q *fakeQueue, l *fakeLedger, n int) []string {
	t.Helper()
	base := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)
	var orders []string
	for i := range n {
		r := ref(fmt.Sprintf("P%d", i))
		r.AcceptedAt, r.LMSUserID = base.Add(time.Duration(i)*time.Minute), int64(100+i%3)
		if _, err := s.Accept(context.Background(), "place", r, r); err != nil {
			t.Fatal(err)
		}
		orders = append(orders, r.OrderNumber)
	}
	set := func(kind, order string, st fulfillment.State) {
		r := ref(order)
		id := TaskID(kind, r.Key())
		q.set(id, st)
		if l != nil {
			if err := l.update(Job{Kind: kind, Ref: r}, func(t *fulfillment.Task) { t.State = st }); err != nil {
				t.Fatal(err)
			}
		}
	}
	set("place", "P1", fulfillment.StateFailed)
	set("place", "P2", fulfillment.StateRetrying)
	r := ref("P3")
	r.AcceptedAt = base.Add(3*time.Minute + time.Second)
	if _, err := s.Accept(context.Background(), "undo", r, r); err != nil {
		t.Fatal(err)
	}
	set("undo", "P3", fulfillment.StateDone)
	return orders
}

func orderNumbers(rows []Row) []string {
	var out []string
	for _, r := range rows {
		out = append(out, r.OrderNumber+":"+string(r.State))
	}
	return out
}

func TestListFiltersAndPages(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		t.Run(fmt.Sprintf("ledger=%v", withLedger), func(t *testing.T) {
			s, q, l, _, _ := newService(t, withLedger)
			problemLines(t, s, q, l, 7)
			ctx := context.Background()
			for _, tc := range []struct {
				name string
				f    Filter
				want []string
			}{
				{"failed", Filter{State: fulfillment.StateFailed}, []string{"P1:failed"}},
				{"retrying", Filter{State: fulfillment.StateRetrying}, []string{"P2:retrying"}},
				{"returned (highest-ranked task)", Filter{State: fulfillment.StateReturned}, []string{"P3:returned"}},
				{"enrolled: none", Filter{State: fulfillment.StateEnrolled}, nil},
				{"learner", Filter{LMSUserID: 101}, []string{"P4:queued", "P1:failed"}},
				{"since", Filter{Since: time.Date(2026, 11, 1, 0, 5, 0, 0, time.UTC)}, []string{"P6:queued", "P5:queued"}},
				{"other site", Filter{Site: "other"}, nil},
				{"course", Filter{CourseID: course, State: fulfillment.StateQueued}, []string{"P6:queued", "P5:queued", "P4:queued", "P0:queued"}},
			} {
				p, err := s.List(ctx, tc.f, nil, 100)
				if err != nil {
					t.Fatal(err)
				}
				if diff := cmp.Diff(tc.want, orderNumbers(p.Lines)); diff != "" {
					t.Errorf("%s (-want +got):\n%s", tc.name, diff)
				}
			}
			// Page by two: every line once, newest first.
			var got []string
			var after *Cursor
			for range 10 {
				p, err := s.List(ctx, Filter{}, after, 2)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, orderNumbers(p.Lines)...)
				if p.Next == "" {
					break
				}
				c, err := ParseCursor(p.Next)
				if err != nil {
					t.Fatal(err)
				}
				after = &c
			}
			want := []string{"P6:queued", "P5:queued", "P4:queued", "P3:returned", "P2:retrying", "P1:failed", "P0:queued"}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("pages (-want +got):\n%s", diff)
			}
			counts, capped, err := s.Counts(ctx, Filter{State: fulfillment.StateFailed})
			if err != nil || capped {
				t.Fatal(err, capped)
			}
			if diff := cmp.Diff(map[fulfillment.State]int{"queued": 4, "failed": 1, "retrying": 1, "returned": 1}, counts); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			oldest, ok, err := s.OldestOpen(ctx)
			if err != nil || !ok || !oldest.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) {
				t.Errorf("oldest open: %v %v %v", oldest, ok, err)
			}
		})
	}
}

func TestRetryMatching(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		t.Run(fmt.Sprintf("ledger=%v", withLedger), func(t *testing.T) {
			s, q, l, _, _ := newService(t, withLedger)
			problemLines(t, s, q, l, 7)
			ctx := context.Background()
			res, err := s.RetryMatching(ctx, Filter{LMSUserID: 999})
			if err != nil || res.Requeued+res.RunNow != 0 {
				t.Fatalf("another learner's lines: %+v %v", res, err)
			}
			res, err = s.RetryMatching(ctx, Filter{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Requeued != 1 || res.RunNow != 1 {
				t.Errorf("retry: %+v, want 1 requeued, 1 run now", res)
			}
			for _, order := range []string{"P1", "P2"} {
				if st, _ := q.state(TaskID("place", ref(order).Key())); st != fulfillment.StateQueued {
					t.Errorf("%s after retry: %s", order, st)
				}
			}
			if diff := cmp.Diff([]string{TaskID("place", ref("P2").Key())}, q.ranNow); diff != "" {
				t.Errorf("run now (-want +got):\n%s", diff)
			}
			if withLedger {
				if e, _, _ := l.Find(ctx, "place", ref("P1").Key()); e.State != fulfillment.StateQueued {
					t.Errorf("ledger row of P1 after retry: %s", e.State)
				}
			}
			res, err = s.RetryMatching(ctx, Filter{})
			if err != nil || res.Requeued+res.RunNow != 0 {
				t.Errorf("second retry: %+v %v, want nothing to do", res, err)
			}
		})
	}
}

func TestRetryFailedRunsRetryingNow(t *testing.T) {
	s, q, _, _, _ := newService(t, false)
	id := accept(t, s, "place", "R1")
	q.set(id, fulfillment.StateRetrying)
	if _, err := s.RetryFailed(context.Background(), "default", "R1"); err != nil {
		t.Fatal(err)
	}
	if st, _ := q.state(id); st != fulfillment.StateQueued || len(q.ranNow) != 1 {
		t.Errorf("after retry: %s, ran now %v", st, q.ranNow)
	}
}

func TestParseCursor(t *testing.T) {
	c := Cursor{At: time.Date(2026, 11, 1, 0, 0, 0, 5, time.UTC), Seq: 42, Key: "abc123"}
	got, err := ParseCursor(c.String())
	if err != nil || got != c {
		t.Errorf("round trip: %+v %v", got, err)
	}
	for _, bad := range []string{"x", "!!!", Cursor{Key: "ZZ"}.String(), string(make([]byte, 200))} {
		if _, err := ParseCursor(bad); err == nil {
			t.Errorf("ParseCursor(%q) accepted", bad)
		}
	}
}

// A learner's email is found in any case, spaces around it ignored.
func TestListByEmail(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		t.Run(fmt.Sprintf("ledger=%v", withLedger), func(t *testing.T) {
			s, _, _, _, _ := newService(t, withLedger)
			for order, email := range map[string]string{"E1": "Honor@Example.COM", "E2": "other@example.com", "E3": ""} {
				r := ref(order)
				r.Email = email
				if _, err := s.Accept(context.Background(), "place", r, r); err != nil {
					t.Fatal(err)
				}
			}
			p, err := s.List(context.Background(), Filter{Email: NormalEmail(" HONOR@example.com ")}, nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{"E1:queued"}, orderNumbers(p.Lines)); diff != "" || p.Lines[0].Learner.Email != "Honor@Example.COM" {
				t.Errorf("by email (-want +got):\n%s%+v", diff, p.Lines)
			}
		})
	}
}
