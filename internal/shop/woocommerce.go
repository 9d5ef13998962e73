package shop

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// WooCommerce webhooks: an order's whole REST representation, signed with
// X-WC-Webhook-Signature = base64 HMAC-SHA256 of the body; the topic is in
// X-WC-Webhook-Topic (order.created, order.updated, ...).
type wooCommerce struct{ s *Shop }

// WooCommerce's headers.
const (
	HeaderWooSignature = "X-WC-Webhook-Signature"
	HeaderWooTopic     = "X-WC-Webhook-Topic"
)

// wooPing is the form body WooCommerce posts, unsigned, when a webhook is
// saved; the store marks the webhook failed unless it gets a 200.
var wooPing = regexp.MustCompile(`^webhook_id=[0-9]{1,20}$`)

func (w wooCommerce) ping(h http.Header, body []byte) bool {
	return h.Get(HeaderWooSignature) == "" && wooPing.Match(body)
}

func (w wooCommerce) verify(h http.Header, body []byte, _ time.Time) error {
	return verifyBase64HMAC(h.Get(HeaderWooSignature), body, w.s.in.Secrets)
}

type wooOrder struct {
	ID          id     `json:"id"`
	Status      string `json:"status"`
	DatePaidGMT string `json:"date_paid_gmt"`
	DateModGMT  string `json:"date_modified_gmt"`
	Billing     struct {
		Email string `json:"email"`
	} `json:"billing"`
	LineItems []wooItem   `json:"line_items"`
	Refunds   []wooRefund `json:"refunds"`
}

// wooRefund is a refund: in an order's refunds[] only its id and total; in
// its own REST representation (woorefunds.go) its line items too, with
// negative quantities.
type wooRefund struct {
	ID        id        `json:"id"`
	LineItems []wooItem `json:"line_items"`
}

type wooItem struct {
	ID          id     `json:"id"`
	ProductID   id     `json:"product_id"`
	VariationID id     `json:"variation_id"`
	SKU         string `json:"sku"`
	Quantity    int64  `json:"quantity"`
	MetaData    []struct {
		Key   string          `json:"key"`
		Value json.RawMessage `json:"value"`
	} `json:"meta_data"`
}

func (w wooCommerce) event(ctx context.Context, h http.Header, body []byte) (Event, error) {
	topic := h.Get(HeaderWooTopic)
	ev := Event{Topic: fulfillment.Clip(topic, 64)}
	switch topic {
	case "order.created", "order.updated", "order.restored":
	case "order.deleted":
		ev.Ignored = "order deleted"
		return ev, nil
	case "":
		return ev, badEvent("no %s header", HeaderWooTopic)
	default:
		return unused(ev)
	}
	var o wooOrder
	if err := decode(body, &o, topic); err != nil {
		return ev, err
	}
	ev.OrderID = o.ID.String()
	if p := orderIDProblem("id", ev.OrderID, intOrderID); p != "" {
		return ev, badEvent("%s", p)
	}
	switch o.Status {
	case "processing", "completed":
		if o.DatePaidGMT == "" {
			ev.Ignored = "status " + o.Status + " without date_paid_gmt: not paid"
			return ev, nil
		}
		paid, ok := parseShopTime(o.DatePaidGMT)
		if !ok {
			return ev, badEvent("date_paid_gmt is not a date")
		}
		ev.At = paid
		if err := w.paid(ctx, &ev, o); err != nil {
			return ev, err
		}
		if len(ev.Placed) == 0 && len(ev.Returned) == 0 {
			ev.Ignored = "no course lines"
		}
	case "cancelled", "failed", "refunded":
		// Paid, then cancelled, failed or refunded: every seat goes back.
		// An order never paid (a checkout abandoned, a payment declined)
		// enrolled nobody, and a failed one may still be paid later: its
		// lines must not be returned ahead of that.
		if o.DatePaidGMT == "" {
			ev.Ignored = "status " + o.Status + " of an order never paid (no date_paid_gmt): nothing to return"
			return ev, nil
		}
		ev.ReturnAll = true
		ev.At, _ = parseShopTime(o.DateModGMT)
		for _, it := range o.LineItems {
			lines, note, err := w.lines(it, o.Billing.Email, false)
			if err != nil {
				return ev, err
			}
			ev.addNote(note)
			ev.Returned = append(ev.Returned, lines...)
		}
	default:
		ev.Ignored = "status " + fulfillment.Clip(o.Status, 32) + ": not paid"
	}
	if len(ev.Placed)+len(ev.Returned) > maxSeats {
		return ev, badEvent("more than %d course seats in one order", maxSeats)
	}
	return ev, nil
}

// paid maps a paid order: every course line placed, less what its refunds
// took back. A line item refunded in full is returned, with its learners,
// and not placed; part of one returns the seats its remaining units no
// longer pay for, unnamed (Returns decides which, if it can). A refund's line items are only in its
// own REST representation: the order's refunds[] has id and total only, so
// they are read from the store when the integration has its REST API
// (woorefunds.go), else the refund is noted and returns nothing.
func (w wooCommerce) paid(ctx context.Context, ev *Event, o wooOrder) error {
	placed := make([][]Line, len(o.LineItems))
	for i, it := range o.LineItems {
		lines, note, err := w.lines(it, o.Billing.Email, true)
		if err != nil {
			return err
		}
		ev.addNote(note)
		placed[i] = lines
	}
	refunds := o.Refunds
	if unitemized := countUnitemized(refunds); unitemized > 0 {
		if !w.hasAPI() {
			ev.addNote(fmt.Sprintf("%d partial refunds without line items: nothing returned for them (with the store's REST API configured they are read from it)", unitemized))
		} else if got, err := w.readRefunds(ctx, ev.OrderID); err != nil {
			ev.addNote(fmt.Sprintf("%d partial refunds without line items, and reading them from the store failed (%v): nothing returned for them", unitemized, err))
		} else {
			refunds = got
		}
	}
	// Units refunded per line item of the order; refund lines that match
	// none (a product no longer in the order) are returned as they are.
	taken := make([]int, len(o.LineItems))
	for _, r := range refunds {
		for _, ri := range r.LineItems {
			if ri.Quantity == 0 {
				continue // an amount taken off the line, not a unit of it
			}
			if i := matchItem(o.LineItems, ri); i >= 0 {
				taken[i] += seatCount(ri.Quantity)
				continue
			}
			lines, note, err := w.lines(ri, "", false)
			if err != nil {
				return err
			}
			ev.addNote(note)
			ev.Returned = append(ev.Returned, lines...)
		}
	}
	for i, it := range o.LineItems {
		lines := placed[i]
		if len(lines) == 0 || taken[i] == 0 {
			ev.Placed = append(ev.Placed, lines...)
			continue
		}
		// The seats no longer paid for: a line of 2 units with one seat
		// (the buyer's) keeps it when 1 unit is refunded.
		seatsOf := participants(lines)
		back := seatsOf - max(0, seatCount(it.Quantity)-taken[i])
		switch {
		case back <= 0:
			ev.addNote(fmt.Sprintf("line item %s (%s): %d of %d units refunded; its %d seats are still paid for: kept",
				fulfillment.Clip(it.ID.String(), 40), lines[0].key(), taken[i], seatCount(it.Quantity), seatsOf))
		case back >= seatsOf:
			for j := range lines {
				lines[j].Refunded = true
			}
			ev.Returned = append(ev.Returned, lines...)
		default:
			part := it
			part.Quantity, part.MetaData = int64(back), nil
			unnamed, _, err := w.lines(part, "", false)
			if err != nil {
				return err
			}
			ev.Returned = append(ev.Returned, unnamed...)
		}
		ev.Placed = append(ev.Placed, lines...)
	}
	return nil
}

// participants counts the learners of a line item's seats.
func participants(lines []Line) int {
	seen := map[string]bool{}
	for _, l := range lines {
		seen[strings.ToLower(l.Email)] = true
	}
	return len(seen)
}

// countUnitemized counts the refunds that carry no line items.
func countUnitemized(refunds []wooRefund) int {
	n := 0
	for _, r := range refunds {
		if len(r.LineItems) == 0 {
			n++
		}
	}
	return n
}

// matchItem finds the order's line item a refund line refunds: the one its
// _refunded_item_id meta names, else the first of the same product and
// variation; -1 when none.
func matchItem(items []wooItem, ri wooItem) int {
	for _, m := range ri.MetaData {
		var ref id
		if m.Key == "_refunded_item_id" && json.Unmarshal(m.Value, &ref) == nil && ref.String() != "" {
			for i, it := range items {
				if it.ID == ref {
					return i
				}
			}
		}
	}
	for i, it := range items {
		if ri.ProductID.String() != "" && it.ProductID.String() == ri.ProductID.String() && it.VariationID.String() == ri.VariationID.String() {
			return i
		}
	}
	return -1
}

// lines maps one line item to its seats; an item that is no course yields
// none.
func (w wooCommerce) lines(it wooItem, buyer string, needEmail bool) ([]Line, string, error) {
	p, ok := w.s.product(it.SKU, it.VariationID.String(), it.ProductID.String())
	if !ok {
		return nil, "", nil
	}
	var participants []string
	if f := w.s.in.LearnerEmailField; f != "" {
		for _, m := range it.MetaData {
			if m.Key == f {
				participants = append(participants, metaEmails(m.Value)...)
			}
		}
	}
	return seats(fmt.Sprint(it.ID), p, participants, buyer, needEmail, it.Quantity)
}

// metaEmails reads a line meta value: a plain string (one email, or several
// separated by commas), or the "Product Input Fields" plugin's list of field
// objects (or one such object) with the value in "_value".
func metaEmails(raw json.RawMessage) []string {
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return splitEmails(s)
	}
	var fields []map[string]any
	if json.Unmarshal(raw, &fields) != nil {
		var one map[string]any
		if json.Unmarshal(raw, &one) != nil {
			return nil
		}
		fields = []map[string]any{one}
	}
	var out []string
	for _, f := range fields {
		if v, ok := f["_value"].(string); ok {
			out = append(out, splitEmails(v)...)
		}
	}
	return out
}

// splitEmails splits a field holding one or more emails.
func splitEmails(s string) []string {
	return strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ';' || r == '\n' })
}
