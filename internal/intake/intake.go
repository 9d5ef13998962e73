// Package intake is the application service every request for a line goes
// through, whatever its source (POST /orders/fulfill and /orders/return, a
// shop's webhook): it finds the flow of the line's item in the flow
// registry and sends the line on that flow's signal, so that the HTTP layer
// only decodes, authenticates and encodes.
package intake

import (
	"context"
	"fmt"
	"time"

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

// ShopLine is one line a shop's delivery made, and what its signal's
// receivers answered; Err is set when no flow takes its item.
type ShopLine struct {
	Ref  fulfillment.Ref
	Sent Sent
	Err  error
}

// ShopSent is what one verified shop delivery became: its lines, each sent
// on its flow's signal, and a disputed payment's report, if any.
type ShopSent struct {
	Lines []ShopLine
	// Dispute is the report of a disputed payment (nil: none), DisputeSent
	// what shop_dispute_opened's receivers answered.
	Dispute     *shop.DisputeOpened
	DisputeSent Sent
	DisputeErr  error
	// Note says what of a refund could not be mapped to lines.
	Note string
}

// Shop turns a shop's event into lines — one order per seat of a paid
// order, the returns a refund or a cancellation makes (reading the lines
// Coordinator knows for the order through lines) — and a dispute's report,
// and sends each on its signal. The error is the returns' planning failing
// (a store Coordinator reads is down): the shop delivers again.
func (s *Service) Shop(ctx context.Context, sh *shop.Shop, ev shop.Event, lines shop.LineReader, requestID string, now time.Time) (ShopSent, error) {
	var out ShopSent
	if ev.Dispute != nil {
		d := sh.DisputeOpened(ev, requestID)
		out.Dispute = &d
		out.DisputeSent, out.DisputeErr = s.disputeOpened(ctx, d)
	}
	for _, o := range sh.Orders(ev, requestID, now) {
		sent, err := s.Place(ctx, o)
		out.Lines = append(out.Lines, ShopLine{Ref: o.Ref(), Sent: sent, Err: err})
	}
	if !ev.ReturnAll && len(ev.Returned) == 0 {
		return out, nil
	}
	rets, note, err := sh.Returns(ctx, ev, lines, requestID, now)
	if err != nil {
		return out, err
	}
	out.Note = note
	for _, r := range rets {
		sent, err := s.Return(ctx, r)
		out.Lines = append(out.Lines, ShopLine{Ref: r.Ref(), Sent: sent, Err: err})
	}
	return out, nil
}

// disputeOpened sends a shop's report of a disputed payment on
// shop_dispute_opened.
func (s *Service) disputeOpened(ctx context.Context, d shop.DisputeOpened) (Sent, error) {
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
