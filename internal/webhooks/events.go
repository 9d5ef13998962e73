package webhooks

import (
	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
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

// sequence is the order of the events of a line of item it: placed, the end
// of the flow that fulfills it, returned, the end of the flow that returns
// it (for a seat: the enrollment's end, then the unenrollment's). A
// subscriber receives them in this order; the end of any other flow comes
// last.
func sequence(flows *flow.Registry, it flow.Item) []step {
	end := func(kind string) step {
		s := step{flow: kind}
		if k, ok := flows.Kind(kind); ok {
			s.events = []string{CompletedEvent(kind, k.Done), CompletedEvent(kind, fulfillment.StateFailed)}
		}
		return s
	}
	return []step{{"", []string{it.Placed}}, end(it.PlacedKind), {"", []string{it.Returned}}, end(it.ReturnedKind)}
}

// place is an event's index in seq.
func place(seq []step, event string) int {
	for i, s := range seq {
		for _, e := range s.events {
			if e == event {
				return i
			}
		}
	}
	return len(seq)
}

// behind names what a delivery of a line's event waits for: the subscriber's
// deliveries of the line's earlier events while they may still run, and the
// flows whose end is an earlier event while they run (a return that arrives
// while the enrollment runs is delivered after the enrollment's end).
func behind(flows *flow.Registry, kind string, ref fulfillment.Ref) (open, running []string) {
	it, ok := flows.Item(ref.ItemField())
	if !ok {
		return nil, nil
	}
	seq := sequence(flows, it)
	for _, s := range seq[:place(seq, ref.Event)] {
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
