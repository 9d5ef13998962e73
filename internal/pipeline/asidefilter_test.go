package pipeline

import (
	"context"
	"errors"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// A state filter matches the state a line reports, which asides never make:
// a line enrolled whose subscriber's delivery failed is not "failed", and a
// bulk retry of failed lines leaves it alone; the order's own retry
// (RetryFailed, POST /orders/{n}/retry) queues its failed delivery again.
func TestStateFilterIgnoresAsides(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, q, f, _ := newEventService(t, withLedger)
		ctx := context.Background()
		place := accept(t, s, "place", "AS-1")
		if st, err := run(t, s, q, place, false); st != fulfillment.StateDone {
			t.Fatalf("place: %s %v", st, err)
		}
		f.err["note"] = Permanent(errors.New("subscriber answered 410"))
		note := acceptEvent(t, s, "AS-1", "a")
		if st, _ := run(t, s, q, note, false); st != fulfillment.StateFailed {
			t.Fatalf("ledger %v: delivery: %s, want failed", withLedger, st)
		}
		for st, want := range map[fulfillment.State]int{fulfillment.StateFailed: 0, fulfillment.StateEnrolled: 1} {
			p, err := s.List(ctx, Filter{State: st}, nil, 10)
			if err != nil || len(p.Lines) != want {
				t.Errorf("ledger %v: state=%s lists %d lines (%v), want %d", withLedger, st, len(p.Lines), err, want)
			}
		}
		res, err := s.RetryMatching(ctx, Filter{State: fulfillment.StateFailed})
		if err != nil || res.Requeued != 0 {
			t.Errorf("ledger %v: bulk retry of failed lines: %+v %v, want none", withLedger, res, err)
		}
		f.err["note"] = nil
		if _, err := s.RetryFailed(ctx, "default", "AS-1"); err != nil {
			t.Fatal(err)
		}
		if st, _ := q.state(note); st != fulfillment.StateQueued {
			t.Errorf("ledger %v: the order's retry left the failed delivery %s, want queued", withLedger, st)
		}
	}
}
