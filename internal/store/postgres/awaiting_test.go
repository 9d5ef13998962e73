package postgres

import (
	"context"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// An enrollment awaiting its learner's account is stored as such, is open
// for the reconciler, is left out of the oldest open line, and ends like
// any open task.
func TestLedgerAwaitingAccount(t *testing.T) {
	t.Parallel()
	l := NewLedger(connect(t, true), "q")
	ctx := context.Background()
	o := fulfillment.Order{Site: "default", OrderNumber: "AW-1", CourseID: "course-v1:a+b+c", CourseMode: "verified",
		Email: "new@example.com", EnrollUnregistered: true, OrderPlaced: time.Unix(1714566902, 0).UTC()}
	key := o.Ref().Key()
	if _, _, err := l.Accept(ctx, ledgerJob(t, "enroll", o)); err != nil {
		t.Fatal(err)
	}
	if err := l.Started(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}); err != nil {
		t.Fatal(err)
	}
	const waiting = "awaiting_account: no LMS account for new@example.com yet"
	if err := l.Finished(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}, fulfillment.StateAwaitingAccount, waiting); err != nil {
		t.Fatalf("finished awaiting_account: %v (is migration 0004 applied?)", err)
	}
	got, _, err := l.Find(ctx, "enroll", key)
	if err != nil || got.State != fulfillment.StateAwaitingAccount || got.LastError != waiting || got.FinishedAt != nil ||
		got.Ref.Email != "new@example.com" || got.Attempts != 0 {
		t.Fatalf("awaiting task: %+v %v", got, err)
	}
	var open []string
	if err := l.Open(ctx, 0, func(e pipeline.Entry) error { open = append(open, e.Job.ID); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 {
		t.Errorf("open tasks %v, want the awaiting one (the reconciler re-queues it if Redis lost it)", open)
	}
	if _, ok, err := l.OldestOpen(ctx); err != nil || ok {
		t.Errorf("oldest open line: %v %v, want none (awaiting a person is not stuck)", ok, err)
	}
	// A repeat of the line while it waits queues nothing.
	if _, fresh, err := l.Accept(ctx, ledgerJob(t, "enroll", o)); err != nil || fresh {
		t.Errorf("repeat while awaiting: fresh %v %v, want not fresh", fresh, err)
	}
	// The look that finds the account ends it.
	if err := l.Started(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}); err != nil {
		t.Fatal(err)
	}
	if err := l.Finished(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}, fulfillment.StateDone, ""); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := l.Find(ctx, "enroll", key); got.State != fulfillment.StateDone || got.FinishedAt == nil || got.Attempts != 1 {
		t.Errorf("after the account appeared: %+v", got)
	}
}
