package pipeline

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// The open tasks of a subscriber removed from the configuration are failed
// by the reconciler, with the reason, once left alone for OrphanAfter (a
// rollout may still run them before that); a kind of a newer version is
// left alone.
func TestReconcileFailsRemovedSubscribersTasks(t *testing.T) {
	ctx := context.Background()
	s, _, l, _, _ := newService(t, true)
	s.o.Orphaned = func(kind string) string {
		if strings.HasPrefix(kind, "webhook.") {
			return "subscriber removed from the configuration"
		}
		return ""
	}
	row := func(kind, order string, idle time.Duration) string {
		r := ref(order)
		r.Event = "fulfill_order_placed"
		j := Job{Kind: kind, ID: JobID(kind, r), Ref: r, Payload: []byte(`{}`)}
		l.rows[rowKey(kind, r.Key(), r.Event)] = Entry{Job: j, Task: fulfillment.Task{Kind: kind, TaskID: j.ID,
			State: fulfillment.StateQueued, Ref: r, UpdatedAt: time.Now().Add(-idle)}}
		return rowKey(kind, r.Key(), r.Event)
	}
	gone := row("webhook.crm", "OR-1", 2*OrphanAfter)
	recent := row("webhook.crm", "OR-2", time.Minute)
	newer := row("newer_kind", "OR-3", 2*OrphanAfter)
	res, err := s.Reconcile(ctx)
	if err != nil || res.Synced != 1 || res.Requeued != 0 {
		t.Fatalf("reconcile %+v %v, want one synced", res, err)
	}
	if e := l.rows[gone]; e.Task.State != fulfillment.StateFailed || e.Task.LastError != "subscriber removed from the configuration" {
		t.Errorf("removed subscriber's old delivery: %s %q, want failed with the reason", e.Task.State, e.Task.LastError)
	}
	for _, k := range []string{recent, newer} {
		if e := l.rows[k]; e.Task.State != fulfillment.StateQueued {
			t.Errorf("%s: %s, want left queued", k, e.Task.State)
		}
	}
}
