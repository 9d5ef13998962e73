package postgres

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// A kind with a task per event has a row per event of the line (migration
// 0005): each is accepted, recorded and read back on its own, with its event,
// and none of them counts as the line's oldest open flow.
func TestLedgerEvents(t *testing.T) {
	t.Parallel()
	l := NewLedger(connect(t, true), "q")
	ctx := context.Background()
	job := func(event string) pipeline.Job {
		r := fulfillment.Ref{Site: "default", OrderNumber: "EV-1", CourseID: "course-v1:a+b+c", CourseMode: "audit", LMSUserID: 7, Event: event}
		b, _ := json.Marshal(r)
		return pipeline.Job{Kind: "webhook.crm", ID: pipeline.JobID("webhook.crm", r), Ref: r, Payload: b}
	}
	a, b := job("fulfill_order_placed"), job("fulfillment_completed:enroll:enrolled")
	for _, j := range []pipeline.Job{a, b, a} {
		if _, _, err := l.Accept(ctx, j); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Started(ctx, a); err != nil {
		t.Fatal(err)
	}
	if err := l.Finished(ctx, a, fulfillment.StateDone, ""); err != nil {
		t.Fatal(err)
	}
	es, err := l.Order(ctx, "default", "EV-1")
	if err != nil || len(es) != 2 {
		t.Fatalf("order: %d rows %v, want one per event", len(es), err)
	}
	got := map[string]fulfillment.State{}
	for _, e := range es {
		got[e.Job.Ref.Event] = e.Task.State
		if e.Job.ID != pipeline.JobID("webhook.crm", e.Job.Ref) {
			t.Errorf("row %s read back with event %q", e.Job.ID, e.Job.Ref.Event)
		}
	}
	if got[a.Ref.Event] != fulfillment.StateDone || got[b.Ref.Event] != fulfillment.StateQueued {
		t.Errorf("states %v: want the first event done, the second queued", got)
	}
	if _, found, _ := l.Find(ctx, "webhook.crm", a.Ref.Key()); found {
		t.Error("Find (tasks of no event) found an event's row")
	}
	if _, ok, err := l.OldestOpen(ctx); ok || err != nil {
		t.Errorf("an open delivery counted as an open line (%v)", err)
	}
}
