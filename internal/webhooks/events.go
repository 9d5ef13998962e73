package webhooks

import (
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/pipeline"
)

// The events of a line a subscriber receives: the signal's name, and for
// fulfillment_completed the flow and the state it ended in.
const (
	EventPlaced   = fulfillment.SignalOrderPlaced
	EventReturned = fulfillment.SignalOrderReturned
)

// CompletedEvent names the end of a flow of a line: one event per flow and
// final state (a line that failed, was retried and then enrolled has two).
func CompletedEvent(kind string, state fulfillment.State) string {
	return fulfillment.SignalLineCompleted + ":" + kind + ":" + string(state)
}

// step is one place in the order a line's events happen in: its events, and
// the flow whose end they are (none for the shop's own events).
type step struct {
	flow   string
	events []string
}

// sequence is the order of a line's events: placed, the enrollment's end,
// returned, the unenrollment's end. A subscriber receives them in this
// order; the end of any other flow comes last.
var sequence = []step{
	{"", []string{EventPlaced}},
	{lms.KindEnroll, []string{CompletedEvent(lms.KindEnroll, fulfillment.StateEnrolled), CompletedEvent(lms.KindEnroll, fulfillment.StateFailed)}},
	{"", []string{EventReturned}},
	{lms.KindUnenroll, []string{CompletedEvent(lms.KindUnenroll, fulfillment.StateReturned), CompletedEvent(lms.KindUnenroll, fulfillment.StateFailed)}},
}

// place is an event's index in sequence.
func place(event string) int {
	for i, s := range sequence {
		for _, e := range s.events {
			if e == event {
				return i
			}
		}
	}
	return len(sequence)
}

// behind names what a delivery of a line's event waits for: the subscriber's
// deliveries of the line's earlier events while they may still run, and the
// flows whose end is an earlier event while they run (a return that arrives
// while the enrollment runs is delivered after the enrollment's end).
func behind(kind string, ref fulfillment.Ref) (open, running []string) {
	for _, s := range sequence[:place(ref.Event)] {
		for _, e := range s.events {
			r := ref
			r.Event = e
			open = append(open, pipeline.JobID(kind, r))
		}
		if s.flow != "" {
			running = append(running, pipeline.TaskID(s.flow, ref.Key()))
		}
	}
	return open, running
}
