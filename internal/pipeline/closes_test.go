package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// A task of a kind that Closes its line (an operator's dismissal of a failed
// line) makes the line report it, leaves it out of the order's retry, and
// cancels every later attempt of the line's other flows, however they were
// queued; in both tiers.
func TestClosedLineRunsNoFlow(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		f := &flows{err: map[string]error{"place": Permanent(errors.New("no such course"))}}
		kinds := NewKinds(
			Kind{Name: "place", TaskType: "t:place", Done: fulfillment.StateEnrolled, Rank: 1, CanceledBy: "undo", Handle: NoResult(f.handle("place"))},
			Kind{Name: "undo", TaskType: "t:undo", Done: fulfillment.StateReturned, Rank: 2, After: "place", Handle: NoResult(f.handle("undo"))},
			Kind{Name: "close", TaskType: "t:close", Done: fulfillment.StateDismissed, Rank: 1000, Closes: true, Handle: NoResult(f.handle("close"))},
		)
		q := newFakeQueue()
		o := Options{Kinds: kinds, Queue: q, Logger: slog.New(slog.DiscardHandler), WaitPoll: time.Millisecond, WaitMax: time.Second}
		if withLedger {
			o.Ledger = newFakeLedger()
		}
		s := New(o)
		ctx := context.Background()

		place := accept(t, s, "place", "C-1")
		if state, _ := run(t, s, q, place, true); state != fulfillment.StateFailed {
			t.Fatalf("ledger %v: place %q, want failed", withLedger, state)
		}
		if state, _ := run(t, s, q, accept(t, s, "close", "C-1"), false); state != fulfillment.StateDone {
			t.Fatalf("ledger %v: close %q, want done", withLedger, state)
		}
		lines, err := s.RetryFailed(ctx, "default", "C-1")
		if err != nil || len(lines) != 1 || lines[0].State != fulfillment.StateDismissed {
			t.Fatalf("ledger %v: retry %+v %v, want the line dismissed", withLedger, lines, err)
		}
		if st, _ := q.state(place); st != fulfillment.StateFailed {
			t.Errorf("ledger %v: the order's retry queued the dismissed line's flow (%q)", withLedger, st)
		}
		delete(f.err, "place") // it would succeed now: it must not run at all
		if state, _ := run(t, s, q, accept(t, s, "place", "C-1"), false); state != fulfillment.StateCanceled {
			t.Errorf("ledger %v: a repeat of the placement ended %q, want canceled", withLedger, state)
		}
		if state, _ := run(t, s, q, accept(t, s, "undo", "C-1"), false); state != fulfillment.StateCanceled {
			t.Errorf("ledger %v: a return ended %q, want canceled", withLedger, state)
		}
		if diff := cmp.Diff([]string{"place C-1", "close C-1"}, f.called()); diff != "" {
			t.Errorf("ledger %v: handlers called (-want +got):\n%s", withLedger, diff)
		}
		if lines, err := s.Lines(ctx, "default", "C-1"); err != nil || lines[0].State != fulfillment.StateDismissed {
			t.Errorf("ledger %v: lines %+v %v, want dismissed", withLedger, lines, err)
		}
	}
}
