package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Stripe webhooks: an event envelope signed with Stripe-Signature
// (t=<seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">, 300 s tolerance).
// Checkout events carry no line items: they are read through Stripe's API
// with price.product expanded. The order id is the Checkout Session's
// payment_intent, so that charge.refunded, which names the payment intent,
// maps to the same order.
type stripeShop struct {
	s   *Shop
	api *stripe.Client
}

// maxUnix is the last second of year 9999, the LMS's date range.
const maxUnix = 253402300799

// HeaderStripeSignature is Stripe's signature header.
const HeaderStripeSignature = "Stripe-Signature"

// stripeTimeout bounds all of one event's calls to Stripe's API, retries
// included, so that the webhook is answered before Stripe gives up on it.
const stripeTimeout = 15 * time.Second

func newStripe(s *Shop) stripeShop {
	retries := int64(2)
	backends := stripe.NewBackendsWithConfig(&stripe.BackendConfig{
		URL:               stripe.String(strings.TrimRight(s.in.APIURL, "/")),
		HTTPClient:        s.in.HTTPClient,
		MaxNetworkRetries: &retries,
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return stripeShop{s: s, api: stripe.NewClient(s.in.APIKey, stripe.WithBackends(backends))}
}

func (stripeShop) ping(http.Header, []byte) bool { return false }

func (st stripeShop) verify(h http.Header, body []byte, now time.Time) error {
	header := h.Get(HeaderStripeSignature)
	if header == "" {
		return fmt.Errorf("%w: no %s header", ErrSignature, HeaderStripeSignature)
	}
	// Freshness is judged on the timestamp stripe-go verifies, the header's
	// only t= (it verifies the last of several, so several are refused),
	// and in both directions: stripe-go refuses only old ones, and one far
	// ahead would keep a captured delivery replayable for as long.
	t, err := stripeTimestamp(header)
	if err != nil {
		return fmt.Errorf("%w: malformed %s header: %v", ErrSignature, HeaderStripeSignature, err)
	}
	switch tolerance := int64(webhook.DefaultTolerance / time.Second); {
	case t < now.Unix()-tolerance:
		return fmt.Errorf("%w: timestamp older than %s", ErrSignature, webhook.DefaultTolerance)
	case t > now.Unix()+tolerance:
		return fmt.Errorf("%w: timestamp more than %s in the future", ErrSignature, webhook.DefaultTolerance)
	}
	for _, secret := range st.s.in.Secrets {
		err := webhook.ValidatePayloadIgnoringTolerance(body, header, secret)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, webhook.ErrInvalidHeader), errors.Is(err, webhook.ErrNotSigned):
			return fmt.Errorf("%w: malformed %s header", ErrSignature, HeaderStripeSignature)
		}
	}
	return fmt.Errorf("%w: signature does not match any secret", ErrSignature)
}

type stripeEvent struct {
	ID       string `json:"id"`
	Type     string `json:"type"`
	Created  int64  `json:"created"`
	Livemode bool   `json:"livemode"`
	Data     struct {
		Object json.RawMessage `json:"object"`
	} `json:"data"`
}

type stripeSession struct {
	ID              string            `json:"id"`
	PaymentIntent   stripeRef         `json:"payment_intent"`
	PaymentStatus   string            `json:"payment_status"`
	CustomerEmail   string            `json:"customer_email"`
	Metadata        map[string]string `json:"metadata"`
	CustomerDetails struct {
		Email string `json:"email"`
	} `json:"customer_details"`
}

type stripeCharge struct {
	ID             string    `json:"id"`
	Amount         int64     `json:"amount"`
	AmountRefunded int64     `json:"amount_refunded"`
	Refunded       bool      `json:"refunded"`
	PaymentIntent  stripeRef `json:"payment_intent"`
}

// stripeRef is a reference to another object: its id, or the object itself
// when expanded.
type stripeRef string

func (r *stripeRef) UnmarshalJSON(b []byte) error {
	var s string
	if json.Unmarshal(b, &s) == nil {
		*r = stripeRef(s)
		return nil
	}
	var o struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(b, &o); err != nil {
		return err
	}
	*r = stripeRef(o.ID)
	return nil
}

func (st stripeShop) event(ctx context.Context, _ http.Header, body []byte) (Event, error) {
	ctx, cancel := context.WithTimeout(ctx, stripeTimeout)
	defer cancel()
	var e stripeEvent
	if err := decode(body, &e, "a Stripe event"); err != nil {
		return Event{}, err
	}
	ev := Event{Topic: fulfillment.Clip(e.Type, 64), At: time.Unix(e.Created, 0).UTC()}
	if e.Created <= 0 || e.Created > maxUnix {
		ev.At = time.Now().UTC() // Stripe always sets it; a forged-looking one is not kept
	}
	switch e.Type {
	case "checkout.session.completed", "checkout.session.async_payment_succeeded":
	case "checkout.session.async_payment_failed", "checkout.session.expired":
		ev.Ignored = "checkout not paid"
		return ev, nil
	case "charge.refunded":
		return st.refund(ctx, ev, e)
	case "charge.dispute.created", "charge.dispute.closed":
		return st.dispute(ctx, ev, e)
	case "":
		return ev, badEvent("the event has no type")
	default:
		return unused(ev)
	}
	var cs stripeSession
	if err := decode(e.Data.Object, &cs, "data.object"); err != nil {
		return ev, err
	}
	ev.OrderID = string(cs.PaymentIntent)
	switch {
	case !e.Livemode && !st.s.in.AcceptTestOrders:
		ev.Ignored = "test-mode event (accept_test_orders is false)"
		return ev, nil
	case e.Type == "checkout.session.completed" && cs.PaymentStatus != "paid":
		ev.Ignored = "payment_status " + fulfillment.Clip(cs.PaymentStatus, 32) + ": not paid (yet)"
		return ev, nil
	case ev.OrderID == "":
		ev.Ignored = "the session has no payment_intent (not a one-time payment)"
		return ev, nil
	case cs.ID == "":
		return ev, badEvent("data.object has no id")
	}
	if p := orderIDProblem("data.object.payment_intent", ev.OrderID, stripeOrderID); p != "" {
		return ev, badEvent("%s", p)
	}
	emails := cs.CustomerDetails.Email
	if emails == "" {
		emails = cs.CustomerEmail
	}
	var participants []string
	if f := st.s.in.LearnerEmailField; f != "" {
		participants = splitEmails(cs.Metadata[f])
	}
	lines, note, err := st.sessionLines(ctx, cs.ID, participants, emails, true)
	ev.addNote(note)
	if err != nil {
		return ev, err
	}
	ev.Placed = lines
	if len(ev.Placed) > maxSeats {
		return ev, badEvent("more than %d course seats in one order", maxSeats)
	}
	if len(ev.Placed) == 0 {
		ev.Ignored = "no course lines"
	}
	return ev, nil
}

// refund maps charge.refunded: a full refund returns the whole order (the
// known lines, and the lines of the Checkout Session of its payment
// intent); a partial refund names no items and returns nothing.
func (st stripeShop) refund(ctx context.Context, ev Event, e stripeEvent) (Event, error) {
	var ch stripeCharge
	if err := decode(e.Data.Object, &ch, "data.object"); err != nil {
		return ev, err
	}
	ev.OrderID = string(ch.PaymentIntent)
	switch {
	case !e.Livemode && !st.s.in.AcceptTestOrders:
		ev.Ignored = "test-mode event (accept_test_orders is false)"
		return ev, nil
	case ev.OrderID == "":
		ev.Ignored = "the charge has no payment_intent: not from a Checkout Session"
		return ev, nil
	case !ch.Refunded && ch.AmountRefunded < ch.Amount:
		ev.Ignored = "partial refund: Stripe does not say which items; return them with POST /orders/return"
		return ev, nil
	}
	if p := orderIDProblem("data.object.payment_intent", ev.OrderID, stripeOrderID); p != "" {
		return ev, badEvent("%s", p)
	}
	return st.returnAll(ctx, ev)
}

// returnAll returns the whole order of ev.OrderID, a payment intent: the
// known lines, and the lines of its Checkout Session, read through the API.
func (st stripeShop) returnAll(ctx context.Context, ev Event) (Event, error) {
	ev.ReturnAll = true
	id, found, err := st.sessionOf(ctx, ev.OrderID)
	if err != nil || !found {
		return ev, err
	}
	var note string
	ev.Returned, note, err = st.sessionLines(ctx, id, nil, "", false)
	ev.addNote(note)
	if err == nil && len(ev.Returned) > maxSeats {
		return ev, badEvent("more than %d course seats in one refund", maxSeats)
	}
	return ev, err
}

// sessionOf finds the Checkout Session of a payment intent.
func (st stripeShop) sessionOf(ctx context.Context, paymentIntent string) (string, bool, error) {
	params := &stripe.CheckoutSessionListParams{PaymentIntent: stripe.String(paymentIntent)}
	params.Limit = stripe.Int64(1)
	for cs, err := range st.api.V1CheckoutSessions.List(ctx, params) {
		if err != nil {
			return "", false, stripeErr("list checkout sessions", err)
		}
		return cs.ID, true, nil
	}
	return "", false, nil
}

// sessionLines reads a Checkout Session's line items with price.product
// expanded and maps them to seats. A session the API does not know (404:
// api_key of another Stripe account, or of the other mode) is unavailable,
// not ignored: the order is paid, and Stripe delivers again for 3 days
// while the operator fixes the key.
func (st stripeShop) sessionLines(ctx context.Context, session string, participants []string, buyer string, needEmail bool) (_ []Line, note string, _ error) {
	params := &stripe.CheckoutSessionListLineItemsParams{Session: stripe.String(session)}
	params.Limit = stripe.Int64(100)
	params.AddExpand("data.price.product")
	var lines []Line
	n := 0
	for li, err := range st.api.V1CheckoutSessions.ListLineItems(ctx, params) {
		var se *stripe.Error
		if errors.As(err, &se) && se.HTTPStatusCode == http.StatusNotFound {
			return nil, "", fmt.Errorf("stripe api: checkout session %s not found (api_key of another account, or test and live mode mixed): %w",
				fulfillment.Clip(session, 80), ErrUnavailable)
		}
		if err != nil {
			return nil, "", stripeErr("list line items of "+fulfillment.Clip(session, 80), err)
		}
		if n++; n > maxSeats {
			return nil, "", badEvent("more than %d line items in one session", maxSeats)
		}
		p, ok := st.product(li)
		if !ok {
			continue
		}
		ls, n, err := seats(li.ID, p, participants, buyer, needEmail, li.Quantity)
		if err != nil {
			return nil, "", err
		}
		if n != "" {
			note = joinNotes(note, n)
		}
		lines = append(lines, ls...)
	}
	return lines, note, nil
}

// product maps a line item: the products map by price id, then product id;
// else the product's metadata course_id (and course_mode).
func (st stripeShop) product(li *stripe.LineItem) (Product, bool) {
	if li == nil || li.Price == nil {
		return Product{}, false
	}
	var productID string
	var meta map[string]string
	if li.Price.Product != nil {
		productID, meta = li.Price.Product.ID, li.Price.Product.Metadata
	}
	for _, k := range []string{li.Price.ID, productID} {
		if p, ok := st.s.in.Products[k]; k != "" && ok {
			return st.s.withMode(p), true
		}
	}
	if p, ok := metadataProduct(meta); ok {
		return st.s.withMode(p), true
	}
	return Product{}, false
}

// maxMetadataItems bounds the items one product's metadata may name.
const maxMetadataItems = 100

// metadataProduct reads a Stripe product's metadata: course_id (one course
// run), course_ids (several, comma-separated: a bundle) and course_uuids
// (courses: a program), in course_mode; entries that are not a course run
// key or a course uuid are left out.
func metadataProduct(meta map[string]string) (Product, bool) {
	mode := slugOrEmpty(meta["course_mode"])
	var p Product
	add := func(it Item) {
		if len(p.Items) < maxMetadataItems {
			p.Items = append(p.Items, it)
		}
	}
	runs := append([]string{meta["course_id"]}, strings.Split(meta["course_ids"], ",")...)
	for _, c := range runs {
		if c = strings.TrimSpace(c); fulfillment.ValidCourseKey(c) {
			add(Item{CourseID: c, Mode: mode})
		}
	}
	for _, u := range strings.Split(meta["course_uuids"], ",") {
		if u, ok := fulfillment.CourseUUID(strings.TrimSpace(u)); ok {
			add(Item{CourseUUID: u, Mode: mode})
		}
	}
	return p, len(p.Items) > 0
}

// slugOrEmpty keeps a mode from shop metadata only when it is a mode slug;
// else the integration's course_mode applies.
func slugOrEmpty(m string) string {
	if !fulfillment.ValidMode(m) {
		return ""
	}
	return m
}

// stripeErr classifies a failed API call: Stripe would deliver the event
// again, so every failure is "unavailable" (503); a refused key shows in the
// log as such.
func stripeErr(what string, err error) error {
	var se *stripe.Error
	if errors.As(err, &se) {
		return fmt.Errorf("stripe api: %s: status %d (%s): %w", what, se.HTTPStatusCode, se.Type, ErrUnavailable)
	}
	return fmt.Errorf("stripe api: %s: %v: %w", what, err, ErrUnavailable)
}

// stripeTimestamp reads the t=<seconds> of a Stripe-Signature header, split
// as stripe-go splits it (key=value pairs separated by commas). Stripe sends
// one; a header with none or several is refused.
func stripeTimestamp(header string) (int64, error) {
	var t int64
	found := false
	for _, pair := range strings.Split(header, ",") {
		if k, v, _ := strings.Cut(pair, "="); k == "t" {
			if found {
				return 0, errors.New("more than one t=")
			}
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, errors.New("t= is not a number of seconds")
			}
			t, found = n, true
		}
	}
	if !found {
		return 0, errors.New("no t=")
	}
	return t, nil
}
