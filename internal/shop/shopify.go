package shop

import (
	"cmp"
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Shopify webhooks: an order (orders/paid, orders/create, orders/updated,
// orders/cancelled) or a refund (refunds/create), signed with X-Shopify-Hmac-Sha256 = base64
// HMAC-SHA256 of the body with the app's client secret; the topic is in
// X-Shopify-Topic.
type shopify struct{ s *Shop }

// Shopify's headers.
const (
	HeaderShopifySignature = "X-Shopify-Hmac-Sha256"
	HeaderShopifyTopic     = "X-Shopify-Topic"
)

func (shopify) ping(http.Header, []byte) bool { return false }

func (sh shopify) verify(h http.Header, body []byte, _ time.Time) error {
	return verifyBase64HMAC(h.Get(HeaderShopifySignature), body, sh.s.in.Secrets)
}

type shopifyItem struct {
	ID         id     `json:"id"`
	SKU        string `json:"sku"`
	ProductID  id     `json:"product_id"`
	VariantID  id     `json:"variant_id"`
	Quantity   int64  `json:"quantity"`
	Properties []struct {
		Name  string `json:"name"`
		Value any    `json:"value"`
	} `json:"properties"`
}

// The pointer and any fields are nil when absent or null: they are the
// fields only the topic's own object has (an order, a refund).
type shopifyOrder struct {
	ID              id      `json:"id"`
	FinancialStatus *string `json:"financial_status"`
	OrderNumber     any     `json:"order_number"`
	CancelledAt     string  `json:"cancelled_at"`
	Test            bool    `json:"test"`
	ProcessedAt     string  `json:"processed_at"`
	CreatedAt       string  `json:"created_at"`
	Email           string  `json:"email"`
	ContactEmail    string  `json:"contact_email"`
	Customer        struct {
		Email string `json:"email"`
	} `json:"customer"`
	LineItems []shopifyItem   `json:"line_items"`
	Refunds   []shopifyRefund `json:"refunds"`
}

type shopifyRefund struct {
	ID              id     `json:"id"`
	OrderID         *id    `json:"order_id"`
	ProcessedAt     string `json:"processed_at"`
	CreatedAt       string `json:"created_at"`
	RefundLineItems []struct {
		LineItemID id          `json:"line_item_id"`
		Quantity   int64       `json:"quantity"`
		LineItem   shopifyItem `json:"line_item"`
	} `json:"refund_line_items"`
}

func (sh shopify) event(_ context.Context, h http.Header, body []byte) (Event, error) {
	topic := h.Get(HeaderShopifyTopic)
	ev := Event{Topic: fulfillment.Clip(topic, 64)}
	switch topic {
	case "orders/paid", "orders/create", "orders/updated", "orders/cancelled":
		return sh.order(ev, body)
	case "refunds/create":
		return sh.refund(ev, body)
	case "":
		return ev, badEvent("no %s header", HeaderShopifyTopic)
	}
	return unused(ev)
}

// paidStatuses are the financial_status values of an order that was paid
// (in full or in part), whatever happened since.
var paidStatuses = map[string]bool{"paid": true, "partially_paid": true, "partially_refunded": true, "refunded": true}

func (sh shopify) order(ev Event, body []byte) (Event, error) {
	var o shopifyOrder
	if err := decode(body, &o, ev.Topic); err != nil {
		return ev, err
	}
	// The topic header is not signed: a store-signed draft order or
	// checkout replayed as orders/paid must not pass for an order.
	if err := requireFields(ev.Topic, field{"financial_status", o.FinancialStatus != nil},
		field{"order_number", o.OrderNumber != nil}); err != nil {
		return ev, err
	}
	status := *o.FinancialStatus
	ev.OrderID = o.ID.String()
	if p := orderIDProblem("id", ev.OrderID, intOrderID); p != "" {
		return ev, badEvent("%s", p)
	}
	// Paid on every topic only when financial_status says so, and
	// cancelled when cancelled_at says so: the topic header is not
	// signed. partially_refunded orders keep their still-paid lines.
	switch {
	case o.Test && !sh.s.in.AcceptTestOrders:
		ev.Ignored = "test order (accept_test_orders is false)"
	case o.CancelledAt != "" && !paidStatuses[status]:
		ev.Ignored = "order cancelled before it was paid: nothing to return"
	case o.CancelledAt != "":
		return sh.returnAll(ev, o, o.CancelledAt)
	case status == "refunded":
		// Every payment given back: the whole order returned, whether or
		// not its refunds name line items (an amount-only refund).
		at := ""
		if n := len(o.Refunds); n > 0 {
			at = cmp.Or(o.Refunds[n-1].ProcessedAt, o.Refunds[n-1].CreatedAt)
		}
		return sh.returnAll(ev, o, at)
	case status == "paid", status == "partially_refunded":
	default:
		ev.Ignored = "financial_status " + fulfillment.Clip(status, 32) + ": not paid"
	}
	if ev.Ignored != "" {
		return ev, nil
	}
	at, ok := parseShopTime(o.ProcessedAt)
	if !ok {
		if at, ok = parseShopTime(o.CreatedAt); !ok {
			return ev, badEvent("processed_at is not a date")
		}
	}
	ev.At = at
	// The units of each line item the order's refunds took back: every
	// topic's order body carries them, so a later orders/updated of a
	// refunded line enrolls nobody, whatever became of refunds/create.
	refunded := map[id]int{}
	for _, r := range o.Refunds {
		for _, rl := range r.RefundLineItems {
			refunded[rl.LineItemID] += int(min(max(rl.Quantity, 0), maxSeats+1))
		}
	}
	buyer := cmp.Or(o.Email, o.ContactEmail, o.Customer.Email)
	for _, it := range o.LineItems {
		lines, note, err := sh.lines(it, buyer, true)
		if err != nil {
			return ev, err
		}
		ev.addNote(note)
		switch n := refunded[it.ID]; {
		case len(lines) == 0 || n == 0:
		case n >= seatCount(it.Quantity):
			// Refunded in full: numbered with the others, not placed,
			// returned (a repeat of refunds/create's return is the same
			// task).
			for i := range lines {
				lines[i].Refunded = true
			}
			ev.Returned = append(ev.Returned, lines...)
		default:
			ev.addNote(fmt.Sprintf("line item %s (%s): %d of %d units refunded: unclear which seats, all kept; return them with POST /orders/return",
				fulfillment.Clip(it.ID.String(), 40), lines[0].key(), n, seatCount(it.Quantity)))
		}
		ev.Placed = append(ev.Placed, lines...)
	}
	if len(ev.Placed) > maxSeats {
		return ev, badEvent("more than %d course seats in one order", maxSeats)
	}
	if len(ev.Placed) == 0 {
		ev.Ignored = "no course lines"
	}
	return ev, nil
}

// returnAll maps a paid order that was cancelled (orders/cancelled, and the
// orders/updated that follows) or refunded in full: every line returned, at
// the time given (the cancellation, the last refund).
func (sh shopify) returnAll(ev Event, o shopifyOrder, at string) (Event, error) {
	ev.ReturnAll = true
	ev.At, _ = parseShopTime(at)
	buyer := cmp.Or(o.Email, o.ContactEmail, o.Customer.Email)
	for _, it := range o.LineItems {
		lines, note, err := sh.lines(it, buyer, false)
		if err != nil {
			return ev, err
		}
		ev.addNote(note)
		ev.Returned = append(ev.Returned, lines...)
	}
	if len(ev.Returned) > maxSeats {
		return ev, badEvent("more than %d course seats in one order", maxSeats)
	}
	return ev, nil
}

// refund maps refunds/create: only its refund_line_items are returned. The
// body names no customer: the learners are those of the known lines.
func (sh shopify) refund(ev Event, body []byte) (Event, error) {
	var r shopifyRefund
	if err := decode(body, &r, ev.Topic); err != nil {
		return ev, err
	}
	if err := requireFields(ev.Topic, field{"order_id", r.OrderID != nil},
		field{"refund_line_items", r.RefundLineItems != nil}); err != nil {
		return ev, err
	}
	ev.OrderID = r.OrderID.String()
	if p := orderIDProblem("order_id", ev.OrderID, intOrderID); p != "" {
		return ev, badEvent("%s", p)
	}
	ev.At, _ = parseShopTime(cmp.Or(r.ProcessedAt, r.CreatedAt))
	for _, rl := range r.RefundLineItems {
		lines, note, err := sh.lines(rl.LineItem, "", false)
		if err != nil {
			return ev, err
		}
		ev.addNote(note)
		// Part of a line refunded: which of its seats is not said.
		if len(lines) > 0 && seatCount(rl.Quantity) < seatCount(rl.LineItem.Quantity) {
			ev.addNote(fmt.Sprintf("line item %s (%s): %d of %d units refunded: unclear which seats, none returned; return them with POST /orders/return",
				fulfillment.Clip(rl.LineItem.ID.String(), 40), lines[0].key(), seatCount(rl.Quantity), seatCount(rl.LineItem.Quantity)))
			continue
		}
		ev.Returned = append(ev.Returned, lines...)
	}
	switch {
	case len(ev.Returned) > maxSeats:
		return ev, badEvent("more than %d course seats in one refund", maxSeats)
	case len(r.RefundLineItems) == 0:
		ev.Ignored = "refund without line items (an amount-only refund): nothing returned"
	case len(ev.Returned) == 0 && ev.Note != "":
		ev.Ignored = "no course seats returned (see the note)"
	case len(ev.Returned) == 0:
		ev.Ignored = "no course lines refunded"
	}
	return ev, nil
}

func (sh shopify) lines(it shopifyItem, buyer string, needEmail bool) ([]Line, string, error) {
	p, ok := sh.s.product(it.SKU, it.VariantID.String(), it.ProductID.String())
	if !ok {
		return nil, "", nil
	}
	var participants []string
	if f := sh.s.in.LearnerEmailField; f != "" {
		for _, prop := range it.Properties {
			if v, ok := prop.Value.(string); ok && prop.Name == f {
				participants = append(participants, splitEmails(v)...)
			}
		}
	}
	return seats(it.ID.String(), p, participants, buyer, needEmail, it.Quantity)
}

// field is whether a body has one of the fields only the topic's own object
// has (absent and null are the same).
type field struct {
	name    string
	present bool
}

// requireFields refuses a body that lacks one of fields.
func requireFields(topic string, fields ...field) error {
	for _, f := range fields {
		if !f.present {
			return badEvent("the body of %s has no %s: not a %s object", topic, f.name, topic)
		}
	}
	return nil
}
