// Package dismiss closes failed lines that will never succeed (a mistyped
// SKU, a course that no longer exists): an operator dismisses the line with a
// reason, and it reports the state dismissed from then on — kept and listed,
// never run again (an operator's retry leaves it alone; a shop's redelivery
// or the dashboard's "run" ends canceled), not open, not alerted on. A dismissal
// is a task of its own kind on the line, accepted through the pipeline like
// any flow's and ranked above every flow, so the line reports it; its handler
// only records the reason. It is registered once, for the lines of every
// flow.
package dismiss

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// The dismissal's task kind, task type, and the name its reason is shown
// under.
const (
	Kind     = "dismiss"
	TaskType = "coordinator:dismiss_line"
	Recorded = "dismiss_reason"
	// Rank is above every flow's, so that a dismissed line reports it.
	Rank = 1000
	// MaxReason bounds a reason's length, in characters.
	MaxReason = 500
)

// payload is a dismissal task's payload: the line (with the learner its
// failed task names, so that it is still found by learner) and why.
type payload struct {
	fulfillment.Ref
	Reason   string `json:"reason"`
	Operator string `json:"operator,omitempty"`
}

// Register adds the dismissal's kind to the registry.
func Register(r *flow.Registry) {
	r.AddKinds(pipeline.Kind{Name: Kind, TaskType: TaskType, Done: fulfillment.StateDismissed, DoneAt: "dismissed_at",
		Records: Recorded, Rank: Rank, Closes: true, Decode: decode,
		Handle: func(_ context.Context, j pipeline.Job) (string, error) {
			p, err := pipeline.Value[payload](j)
			return p.Reason, err // nothing else: the line is closed as it is
		}})
}

// decode reads a dismissal's payload: the line it closes and why.
func decode(b []byte) (fulfillment.Ref, any, error) {
	var p payload
	if err := json.Unmarshal(b, &p); err != nil {
		return fulfillment.Ref{}, nil, err
	}
	return p.Ref, p, nil
}

// Service dismisses lines.
type Service struct{ lines flow.Lines }

// New returns the service over the registry's pipeline.
func New(flows *flow.Registry) *Service { return &Service{lines: flows.Lines()} }

// Dismiss closes the failed line key as dismissed, for reason, and returns
// the dismissal's task id. fulfillment.ErrNotFound: no such order or line;
// fulfillment.ErrConflict: the line is not failed (a dismissed one neither).
func (s *Service) Dismiss(ctx context.Context, key fulfillment.Key, reason, operator, requestID string) (string, error) {
	lines, err := s.lines.Lines(ctx, key.Site, key.OrderNumber)
	if err != nil {
		return "", err
	}
	for _, l := range lines {
		if l.Item() != key.Item {
			continue
		}
		if l.State != fulfillment.StateFailed {
			return "", fmt.Errorf("line %s of order %s is %s, not failed: %w", key.Item, key.OrderNumber, l.State, fulfillment.ErrConflict)
		}
		ref := fulfillment.Ref{Site: key.Site, OrderNumber: key.OrderNumber, CourseID: l.CourseID, CourseUUID: l.CourseUUID,
			CourseMode: l.CourseMode}
		for _, t := range l.Tasks {
			if t.TaskID == l.TaskID {
				ref = t.Ref
			}
		}
		ref.RequestID, ref.AcceptedAt, ref.ReturnedAt, ref.Event = requestID, time.Now().UTC(), time.Time{}, ""
		return s.lines.Accept(ctx, Kind, ref, payload{Ref: ref, Reason: reason, Operator: operator})
	}
	return "", fmt.Errorf("order %s has no line %s: %w", key.OrderNumber, key.Item, fulfillment.ErrNotFound)
}
