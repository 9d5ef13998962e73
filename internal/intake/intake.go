// Package intake is the application service every request for a line goes
// through, whatever its source (POST /orders/fulfill and /orders/return, a
// shop's webhook): it finds the flow of the line's item in the flow
// registry and sends the line on that flow's signal, so that the HTTP layer
// only decodes, authenticates and encodes.
package intake

import (
	"context"
	"fmt"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
)

// Sent is a line sent on its signal: the signal's name and each receiver's
// answer, in the order they ran.
type Sent struct {
	Signal  string
	Results []signals.Result
}

// Service sends lines on their flows' signals.
type Service struct{ flows *flow.Registry }

// New returns the intake over the registered flows.
func New(flows *flow.Registry) *Service { return &Service{flows: flows} }

// Accepts reports whether a flow handles lines whose item is named by the
// request field field (course_id, course_uuid).
func (s *Service) Accepts(field string) bool {
	_, ok := s.flows.Item(field)
	return ok
}

// Place sends a placed line on its flow's signal.
func (s *Service) Place(ctx context.Context, o fulfillment.Order) (Sent, error) {
	return send(ctx, s.flows, o, func(it flow.Item) string { return it.Placed })
}

// Return sends a returned line on its flow's signal.
func (s *Service) Return(ctx context.Context, r fulfillment.Return) (Sent, error) {
	return send(ctx, s.flows, r, func(it flow.Item) string { return it.Returned })
}

// DisputeOpened sends a shop's report of a disputed payment on
// shop_dispute_opened.
func (s *Service) DisputeOpened(ctx context.Context, d shop.DisputeOpened) (Sent, error) {
	sig, ok := signals.Lookup[shop.DisputeOpened](s.flows.Signals(), shop.SignalDisputeOpened)
	if !ok {
		return Sent{}, fmt.Errorf("signal %q is not declared", shop.SignalDisputeOpened)
	}
	return Sent{Signal: sig.Name(), Results: sig.Send(ctx, d)}, nil
}

func send[T interface{ Ref() fulfillment.Ref }](ctx context.Context, flows *flow.Registry, v T, signal func(flow.Item) string) (Sent, error) {
	field := v.Ref().ItemField()
	it, ok := flows.Item(field)
	if !ok {
		return Sent{}, fmt.Errorf("no flow handles %s lines", field)
	}
	sig, ok := signals.Lookup[T](flows.Signals(), signal(it))
	if !ok {
		return Sent{}, fmt.Errorf("signal %q of %s lines is not declared for %T", signal(it), field, v)
	}
	return Sent{Signal: sig.Name(), Results: sig.Send(ctx, v)}, nil
}
