package pipeline

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// A task waiting for its learner's account is in state awaiting_account in
// both tiers: held (no attempt used), looked at again after the delay it
// asked for, not final, not counted as the oldest stuck line, listed and
// counted under its state, and run now by an operator's retry.
func TestAwaitingAccount(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[withLedger], func(t *testing.T) {
			s, q, l, f, completed := newService(t, withLedger)
			ctx := context.Background()
			f.err["place"] = AwaitAccount(errors.New("no LMS account for jane@example.com yet"), 5*time.Minute)
			id := accept(t, s, "place", "AW-1")
			state, err := run(t, s, q, id, false)
			if state != fulfillment.StateAwaitingAccount || !IsHold(err) || IsPermanent(err) {
				t.Fatalf("state %q err %v, want awaiting_account, held", state, err)
			}
			if d, ok := RetryIn(err); !ok || d != 5*time.Minute {
				t.Errorf("next look in %v, want 5m", d)
			}
			if !AwaitsAccount(err.Error()) || err.Error() != "awaiting_account: no LMS account for jane@example.com yet" {
				t.Errorf("stored error %q: the queue could not read the state back", err)
			}
			if len(*completed) != 0 {
				t.Errorf("completed sent while waiting: %+v", *completed)
			}
			if withLedger {
				if row, _, _ := l.Find(ctx, "place", ref("AW-1").Key()); row.State != fulfillment.StateAwaitingAccount {
					t.Errorf("ledger row %+v", row)
				}
			}
			lines, err := s.Lines(ctx, "default", "AW-1")
			if err != nil || lines[0].State != fulfillment.StateAwaitingAccount {
				t.Fatalf("lines %+v %v", lines, err)
			}
			if _, ok, err := s.OldestOpen(ctx); err != nil || (ok && !withLedger) {
				// the ledger's own query leaves awaiting rows out (store/postgres)
				t.Errorf("oldest open: %v %v, want none", ok, err)
			}
			page, err := s.List(ctx, Filter{State: fulfillment.StateAwaitingAccount}, nil, 10)
			if err != nil || len(page.Lines) != 1 {
				t.Errorf("list awaiting_account: %+v %v", page, err)
			}
			counts, _, err := s.Counts(ctx, Filter{})
			if err != nil || counts[fulfillment.StateAwaitingAccount] != 1 {
				t.Errorf("counts %v %v", counts, err)
			}
			if _, err := s.RetryFailed(ctx, "default", "AW-1"); err != nil {
				t.Fatal(err)
			}
			if len(q.ranNow) != 1 || q.ranNow[0] != id {
				t.Errorf("ran now %v, want the awaiting task", q.ranNow)
			}
			// The account appeared: the look enrolls.
			f.err["place"] = nil
			if state, err := run(t, s, q, id, false); state != fulfillment.StateDone || err != nil {
				t.Errorf("after the account appeared: %q %v", state, err)
			}
			if len(*completed) != 1 || (*completed)[0].State != fulfillment.StateEnrolled {
				t.Errorf("completed %+v", *completed)
			}
		})
	}
}

// A wait for an account at the last counted attempt is no failure: the
// queue runs a held attempt again (its bound has a spare retry), so that
// worker.retry.max_attempts: 1 still waits. Only when the queue ends the
// task whatever it is told (Final) does the pipeline say failed rather than
// leave it awaiting.
func TestAwaitingOnLastAttemptWaits(t *testing.T) {
	s, q, _, f, completed := newService(t, true)
	f.err["place"] = AwaitAccount(errors.New("no LMS account for jane@example.com yet"), time.Minute)
	id := accept(t, s, "place", "AW-2")
	if state, err := run(t, s, q, id, true); state != fulfillment.StateAwaitingAccount || !IsHold(err) || len(*completed) != 0 {
		t.Errorf("last attempt: state %q (%v), completed %+v; want awaiting_account, held, not told", state, err, *completed)
	}
	e, _, _ := q.Task(context.Background(), id)
	if state, _ := s.Process(context.Background(), Attempt{Job: e.Job, Number: 1, Last: true, Final: true}); state != fulfillment.StateFailed || len(*completed) != 1 {
		t.Errorf("final attempt: state %q, completed %+v; want failed and told", state, *completed)
	}
}

func TestRetryMatchingRunsAwaitingNow(t *testing.T) {
	s, q, _, f, _ := newService(t, false)
	f.err["place"] = AwaitAccount(errors.New("no account yet"), time.Minute)
	id := accept(t, s, "place", "AW-3")
	run(t, s, q, id, false)
	res, err := s.RetryMatching(context.Background(), Filter{State: fulfillment.StateAwaitingAccount})
	if err != nil || res.RunNow != 1 || len(q.ranNow) != 1 {
		t.Errorf("retry matching awaiting_account: %+v %v, ran now %v", res, err, q.ranNow)
	}
}

// task_attempt names the learner's email masked, in its own attribute and
// in the error; fulfillment_completed carries it whole.
func TestEmailMaskedInLogs(t *testing.T) {
	var buf bytes.Buffer
	s, q, _, f, completed := newService(t, false)
	s.o.Logger = slog.New(slog.NewJSONHandler(&buf, nil))
	f.err["place"] = Permanent(errors.New("no LMS account for jane.doe@example.com"))
	r := ref("EM-1")
	r.LMSUserID, r.Email = 0, "jane.doe@example.com"
	id, err := s.Accept(context.Background(), "place", r, r)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s, q, id, false)
	logs := buf.String()
	if strings.Contains(logs, "jane.doe@") || !strings.Contains(logs, `"learner_email":"j***@example.com"`) ||
		!strings.Contains(logs, `"err":"no LMS account for j***@example.com"`) {
		t.Errorf("logs %s: want the email masked everywhere", logs)
	}
	if len(*completed) != 1 || (*completed)[0].Learner.Email != "jane.doe@example.com" {
		t.Errorf("completed %+v, want the learner's email", *completed)
	}
}

// Find reads a line's task from the ledger, else from the queue (under its
// legacy id too).
func TestFind(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, _, _, _, _ := newService(t, withLedger)
		accept(t, s, "place", "F-1")
		task, found, err := s.Find(context.Background(), "place", ref("F-1").Key())
		if err != nil || !found || task.Ref.LMSUserID != 7 {
			t.Errorf("ledger %v: %+v %v %v", withLedger, task, found, err)
		}
		if _, found, err := s.Find(context.Background(), "undo", ref("F-1").Key()); err != nil || found {
			t.Errorf("ledger %v: undo found %v %v, want none", withLedger, found, err)
		}
	}
}
