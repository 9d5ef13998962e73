package pipeline

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// flakyCompleted is a Completed whose receivers fail while down is set, as
// a receiver does when Redis or PostgreSQL blips.
type flakyCompleted struct {
	mu   sync.Mutex
	down int // calls left that fail; -1: all of them
	// broken: they fail with an error that is no store's outage.
	broken bool
	calls  int
	sent   []fulfillment.Completed
}

func (f *flakyCompleted) completed(_ context.Context, c fulfillment.Completed) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.down != 0 {
		if f.down > 0 {
			f.down--
		}
		if f.broken {
			return errors.New("webhook.crm: payload refused")
		}
		return fmt.Errorf("webhook.crm: enqueue: %w: redis: connection refused", fulfillment.ErrUnavailable)
	}
	f.sent = append(f.sent, c)
	return nil
}

func (f *flakyCompleted) set(down int) {
	f.mu.Lock()
	f.down = down
	f.mu.Unlock()
}

// A fulfillment_completed its receivers could not take is not lost: the
// attempt is held (no attempt counted), the ledger does not record the final
// state yet, and the task's next run sends the same event; a blip is ridden
// out within the attempt, even after the attempt's own deadline.
func TestCompletedFailureHoldsTheAttempt(t *testing.T) {
	defer func(d time.Duration) { steadyFor = d }(steadyFor)
	steadyFor = 500 * time.Millisecond
	for _, withLedger := range []bool{false, true} {
		s, q, l, _, _ := newService(t, withLedger)
		f := &flakyCompleted{down: -1}
		s.o.Completed = f.completed
		id := accept(t, s, "place", "O-1")
		// The attempt's context ends as the receivers run (the task's
		// deadline, a shutdown): the sending still runs to its end.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		e, _, _ := q.Task(ctx, id)
		state, err := s.Process(ctx, Attempt{Job: e.Job, Number: 1, Last: false})
		if state != fulfillment.StateRetrying || !IsHold(err) {
			t.Fatalf("ledger %v: receivers down: %s, %v; want retrying, held", withLedger, state, err)
		}
		if f.calls < 2 {
			t.Errorf("ledger %v: Completed called %d times, want it retried within the attempt", withLedger, f.calls)
		}
		if withLedger {
			if row := l.rows[rowKey("place", ref("O-1").Key())]; row.Task.State != fulfillment.StateRetrying {
				t.Errorf("ledger: row %s before the event was sent, want retrying", row.Task.State)
			}
		}
		// The next run (a held attempt keeps its number) sends the event.
		f.set(0)
		state, err = s.Process(context.Background(), Attempt{Job: e.Job, Number: 1, Last: false})
		if state != fulfillment.StateDone || err != nil {
			t.Fatalf("ledger %v: rerun: %s, %v", withLedger, state, err)
		}
		if len(f.sent) != 1 || f.sent[0].TaskID != id || f.sent[0].State != fulfillment.StateEnrolled || f.sent[0].Attempts != 1 {
			t.Errorf("ledger %v: sent %+v, want one enrolled event of %s at attempt 1", withLedger, f.sent, id)
		}
		if withLedger {
			if row := l.rows[rowKey("place", ref("O-1").Key())]; row.Task.State != fulfillment.StateDone {
				t.Errorf("ledger: row %s after the event was sent, want done", row.Task.State)
			}
		}
		// A blip shorter than steadyFor costs nothing.
		s2, q2, _, _, _ := newService(t, withLedger)
		f2 := &flakyCompleted{down: 2}
		s2.o.Completed = f2.completed
		id2 := accept(t, s2, "place", "O-2")
		if state, err := run(t, s2, q2, id2, false); state != fulfillment.StateDone || err != nil || len(f2.sent) != 1 {
			t.Errorf("ledger %v: blip: %s, %v, sent %d", withLedger, state, err, len(f2.sent))
		}
	}
}

// A receiver that fails for another reason than a store's outage (it would
// fail the same way on every run) costs attempts: the task does not run for
// good, and at its last attempt the line's final state is recorded without
// the event.
func TestCompletedBrokenReceiverCounts(t *testing.T) {
	defer func(d time.Duration) { steadyFor = d }(steadyFor)
	steadyFor = 100 * time.Millisecond
	for _, withLedger := range []bool{false, true} {
		s, q, l, _, _ := newService(t, withLedger)
		f := &flakyCompleted{down: -1, broken: true}
		s.o.Completed = f.completed
		id := accept(t, s, "place", "O-1")
		e, _, _ := q.Task(context.Background(), id)
		state, err := s.Process(context.Background(), Attempt{Job: e.Job, Number: 1})
		if state != fulfillment.StateRetrying || err == nil || IsHold(err) {
			t.Fatalf("ledger %v: broken receiver: %s, %v; want retrying, counted", withLedger, state, err)
		}
		state, err = s.Process(context.Background(), Attempt{Job: e.Job, Number: 2, Last: true})
		if state != fulfillment.StateDone || err != nil {
			t.Fatalf("ledger %v: last attempt: %s, %v; want done without the event", withLedger, state, err)
		}
		if len(f.sent) != 0 {
			t.Errorf("ledger %v: sent %v", withLedger, f.sent)
		}
		if withLedger {
			if row := l.rows[rowKey("place", ref("O-1").Key())]; row.Task.State != fulfillment.StateDone {
				t.Errorf("ledger: row %s, want done", row.Task.State)
			}
		}
	}
}

func TestErrText(t *testing.T) {
	if got := errText(errors.New("lms: \x00\xff gzip")); got != "lms: \uFFFD\uFFFD gzip" {
		t.Errorf("errText = %q", got)
	}
	if errText(nil) != "" {
		t.Error("errText(nil) not empty")
	}
}
