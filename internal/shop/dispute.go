package shop

import (
	"context"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/signals"
)

// SignalDisputeOpened is sent when a shop reports that a buyer disputed a
// payment (Stripe's charge.dispute.created). It changes no seat: the seats
// go back only if the dispute is lost (charge.dispute.closed, status lost).
// No receiver by default.
const SignalDisputeOpened = "shop_dispute_opened"

// Dispute is a payment dispute as the shop reports it.
type Dispute struct {
	ID       string
	Amount   int64 // in the currency's smallest unit (cents)
	Currency string
	Reason   string // the platform's reason code: fraudulent, product_not_received, ...
}

// DisputeOpened is the payload of shop_dispute_opened
// (docs/schemas/shop_dispute_opened.json).
type DisputeOpened struct {
	Integration string `json:"integration"`
	Site        string `json:"site"`
	// OrderNumber is the order's number in Coordinator (the integration's
	// prefix and the shop's order id), as its lines have it.
	OrderNumber string    `json:"order_number"`
	DisputeID   string    `json:"dispute_id"`
	Amount      int64     `json:"amount"`
	Currency    string    `json:"currency"`
	Reason      string    `json:"reason"`
	OpenedAt    time.Time `json:"opened_at"`
	RequestID   string    `json:"request_id"`
}

// Register declares the shops' own signals in the flow registry, so that
// the signal map and `config check` know them.
func Register(r *flow.Registry) {
	signals.Declare[DisputeOpened](r.Signals(), SignalDisputeOpened)
}

// DisputeOpened is the shop_dispute_opened payload of an event with a
// Dispute, stamped with the request id.
func (s *Shop) DisputeOpened(ev Event, requestID string) DisputeOpened {
	d := ev.Dispute
	return DisputeOpened{
		Integration: s.in.Name, Site: s.in.Site, OrderNumber: s.OrderNumber(ev.OrderID),
		DisputeID: d.ID, Amount: d.Amount, Currency: d.Currency, Reason: d.Reason,
		OpenedAt: ev.At.UTC().Truncate(time.Second), RequestID: requestID,
	}
}

// stripeDispute is a Stripe Dispute object.
type stripeDispute struct {
	ID            string    `json:"id"`
	Amount        int64     `json:"amount"`
	Currency      string    `json:"currency"`
	Reason        string    `json:"reason"`
	Status        string    `json:"status"`
	PaymentIntent stripeRef `json:"payment_intent"`
}

// dispute maps charge.dispute.created (a Dispute to send on, nothing
// returned) and charge.dispute.closed (a lost dispute returns the whole
// order, as a full refund does; won or closed with a warning, nothing).
func (st stripeShop) dispute(ctx context.Context, ev Event, e stripeEvent) (Event, error) {
	var d stripeDispute
	if err := decode(e.Data.Object, &d, "data.object"); err != nil {
		return ev, err
	}
	ev.OrderID = string(d.PaymentIntent)
	switch {
	case !e.Livemode && !st.s.in.AcceptTestOrders:
		ev.Ignored = "test-mode event (accept_test_orders is false)"
		return ev, nil
	case ev.OrderID == "":
		ev.Ignored = "the dispute has no payment_intent: not from a Checkout Session"
		return ev, nil
	case d.ID == "":
		return ev, badEvent("data.object has no id")
	}
	if p := orderIDProblem("data.object.payment_intent", ev.OrderID, stripeOrderID); p != "" {
		return ev, badEvent("%s", p)
	}
	if e.Type == "charge.dispute.created" {
		ev.Dispute = &Dispute{ID: fulfillment.Clip(d.ID, 100), Amount: d.Amount,
			Currency: fulfillment.Clip(d.Currency, 10), Reason: fulfillment.Clip(d.Reason, 64)}
		return ev, nil
	}
	if d.Status != "lost" {
		ev.Ignored = "dispute closed " + fulfillment.Clip(d.Status, 32) + ": the seats stay"
		return ev, nil
	}
	return st.returnAll(ctx, ev)
}
