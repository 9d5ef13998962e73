// Package shop turns shops' webhook deliveries (WooCommerce, Shopify, Stripe)
// into fulfillment lines: it verifies each platform's signature over the raw
// body, reads the platform's event into a platform-neutral Event, maps line
// items to course runs and learners, and plans the orders and returns the
// event asks for (docs/integrations.md). One file per platform.
package shop

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
)

// The platforms a shop can be: integrations[].type.
const (
	TypeWooCommerce = "woocommerce"
	TypeShopify     = "shopify"
	TypeStripe      = "stripe"
)

// DefaultStripeAPIURL is integrations[].api_url's default for type stripe.
const DefaultStripeAPIURL = "https://api.stripe.com"

// apiKeys are the keys each type uses to call its platform's API.
var apiKeys = map[string][]string{
	TypeWooCommerce: {"api_url", "consumer_key", "consumer_secret"},
	TypeShopify:     nil,
	TypeStripe:      {"api_key", "api_url"},
}

// CheckIntegration validates what of integrations[i] only the adapters
// know: its type, and the API keys that type uses (k is the entry's key,
// "integrations[i]"). The config package checks the rest.
func CheckIntegration(k string, in config.Integration) error {
	used, ok := apiKeys[in.Type]
	if !ok {
		return config.ValueErr(k+".type", in.Type, "is not woocommerce, shopify or stripe")
	}
	for _, f := range []struct{ key, value string }{
		{"api_key", in.APIKey}, {"api_url", in.APIURL}, {"consumer_key", in.ConsumerKey}, {"consumer_secret", in.ConsumerSecret},
	} {
		if f.value != "" && !slices.Contains(used, f.key) {
			return config.KeyErr(k+"."+f.key, "is not used by type %s", in.Type)
		}
	}
	if in.Type == TypeStripe && in.APIKey == "" {
		return config.KeyErr(k+".api_key", "required for type stripe: a secret or restricted key that may read Checkout Sessions")
	}
	return nil
}

// Integration is one configured shop.
type Integration struct {
	Name        string
	Type        string
	Secrets     []string // any of them may sign a delivery (rotation)
	Site        string
	OrderPrefix string
	CourseMode  string // a course line's mode when its product names none
	Products    map[string]Product
	// LearnerEmailField names the line meta (WooCommerce), line property
	// (Shopify) or session metadata key (Stripe) holding the participant's
	// email; empty: the buyer's email.
	LearnerEmailField  string
	EnrollUnregistered bool
	AcceptTestOrders   bool
	// Stripe: the key that reads Checkout line items, the API's base URL,
	// and the client for it (nil: one with a 10 s timeout).
	APIKey     string
	APIURL     string
	HTTPClient *http.Client
	// WooCommerce: the REST API's consumer key and secret, with APIURL the
	// store's root; when set, a partial refund's line items are read from
	// the store (woorefunds.go).
	ConsumerKey    string
	ConsumerSecret string
}

// Product is what a shop product sells: one item, or several (a bundle of
// course runs, a program of courses, or a mix). One line item of it becomes
// one line per item.
type Product struct {
	Items []Item
}

// Item is one thing a product sells: a course run (a seat) or a course (an
// entitlement), in a mode.
type Item struct {
	CourseID   string
	CourseUUID string
	Mode       string // empty: the integration's CourseMode
}

// key is the item's line key: its course run, or its course.
func (it Item) key() string {
	if it.CourseID != "" {
		return it.CourseID
	}
	return it.CourseUUID
}

// OneItem is a product selling one course run in mode (empty: the
// integration's course_mode).
func OneItem(courseID, mode string) Product {
	return Product{Items: []Item{{CourseID: courseID, Mode: mode}}}
}

// Event is what one delivery asks for, whatever the platform.
type Event struct {
	// Topic is the platform's name for the event (orders/paid,
	// checkout.session.completed, order.updated), for logs.
	Topic string
	// OrderID is the shop's order id; the lines' order_number is the
	// integration's prefix + OrderID.
	OrderID string
	// Ignored, when set, says why the event enrolls and returns nobody.
	Ignored string
	// Note is something about the event an operator should read in the
	// log, such as a partial refund that cannot be mapped to lines.
	Note string
	// Placed are the course lines of a paid order, one per participant.
	Placed []Line
	// Returned are refunded course lines; ReturnAll refunds the whole
	// order: every line Coordinator knows for it, and the Returned ones.
	Returned  []Line
	ReturnAll bool
	// At is when the shop says the order was paid, or the refund made.
	At time.Time
	// Dispute is a payment dispute just opened (Stripe): it returns
	// nothing, and is sent as shop_dispute_opened (dispute.go).
	Dispute *Dispute
}

// Line is one item (a course seat, an entitlement) for one participant.
type Line struct {
	Item       string // the shop's line item id, for logs
	CourseID   string
	CourseUUID string
	Mode       string
	Email      string // the learner's; may be empty on a refund
	// Refunded marks a line of a paid order that a refund in the same body
	// took back: it is numbered with the order's other lines, so that
	// theirs do not change, but never placed (it is in Returned).
	Refunded bool
}

// key is the line's item: its course run, or its course.
func (l Line) key() string { return Item{CourseID: l.CourseID, CourseUUID: l.CourseUUID}.key() }

// ErrSignature is a delivery whose signature is missing or does not verify.
var ErrSignature = errors.New("missing or invalid signature")

// BadEvent is a verified delivery that cannot be read: the shop is told why
// with a 400.
type BadEvent struct{ Reason string }

func (e *BadEvent) Error() string { return e.Reason }

func badEvent(format string, args ...any) error {
	return &BadEvent{Reason: fulfillment.Clip(fmt.Sprintf(format, args...), 300)}
}

// unused is the answer to a verified delivery of a topic (or event type)
// Coordinator does not use: 200 ignored, not an error, since shops disable
// an endpoint that keeps failing (WooCommerce after 5 failures in a row,
// Shopify removes the subscription). The topic is in the log line.
func unused(ev Event) (Event, error) {
	ev.Ignored = "topic not used by Coordinator (docs/integrations.md lists the ones to subscribe to)"
	return ev, nil
}

// ErrUnavailable wraps a failure of the shop's API (Stripe): the shop
// should deliver again later.
var ErrUnavailable = fulfillment.ErrUnavailable

// adapter is one platform.
type adapter interface {
	// ping reports whether the delivery is the platform's unsigned hello
	// when a webhook is created, answered 200 and otherwise ignored.
	ping(h http.Header, body []byte) bool
	// verify checks the delivery's signature over the raw body against
	// every secret.
	verify(h http.Header, body []byte, now time.Time) error
	// event reads a verified delivery.
	event(ctx context.Context, h http.Header, body []byte) (Event, error)
}

// Shop is one integration with its platform's adapter.
type Shop struct {
	in Integration
	a  adapter
}

// New returns the shop for an integration.
func New(in Integration) (*Shop, error) {
	if in.HTTPClient == nil {
		in.HTTPClient = &http.Client{Timeout: 10 * time.Second}
	}
	if in.Type == TypeStripe && in.APIURL == "" {
		in.APIURL = DefaultStripeAPIURL
	}
	s := &Shop{in: in}
	switch in.Type {
	case TypeWooCommerce:
		s.a = wooCommerce{s}
	case TypeShopify:
		s.a = shopify{s}
	case TypeStripe:
		s.a = newStripe(s)
	default:
		return nil, fmt.Errorf("integration %s: unknown type %q", in.Name, in.Type)
	}
	return s, nil
}

// Name is the integration's name, the {name} of /webhooks/{name}.
func (s *Shop) Name() string { return s.in.Name }

// Site is the LMS site the integration's orders go to.
func (s *Shop) Site() string { return s.in.Site }

// Ping reports whether the delivery is the platform's unsigned creation ping
// (WooCommerce's "webhook_id=<n>").
func (s *Shop) Ping(h http.Header, body []byte) bool { return s.a.ping(h, body) }

// Verify checks the delivery's signature; ErrSignature (possibly wrapped
// with the reason) when it does not verify.
func (s *Shop) Verify(h http.Header, body []byte, now time.Time) error {
	return s.a.verify(h, body, now)
}

// Event reads a verified delivery: *BadEvent for what the shop must be
// told about (400), an error wrapping ErrUnavailable when the shop's API
// failed. A topic Coordinator does not use is an Event that is Ignored.
func (s *Shop) Event(ctx context.Context, h http.Header, body []byte) (Event, error) {
	return s.a.event(ctx, h, body)
}

// OrderNumber is the order_number of the shop's order id.
func (s *Shop) OrderNumber(orderID string) string { return s.in.OrderPrefix + orderID }

// product maps a line item to its course: the products map by each of keys
// (SKU first, then ids), else a SKU that is a course run key, or a run key
// and a mode as "<run key>@<mode>".
func (s *Shop) product(sku string, ids ...string) (Product, bool) {
	for _, k := range append([]string{sku}, ids...) {
		if k == "" {
			continue
		}
		if p, ok := s.in.Products[k]; ok {
			return s.withMode(p), true
		}
	}
	if fulfillment.ValidCourseKey(sku) {
		return s.withMode(OneItem(sku, "")), true
	}
	// "<run key>@<mode>", as `coordinator catalog` writes for a mode other
	// than course_mode; neither a run key nor a mode holds an '@'.
	if run, mode, ok := strings.Cut(sku, "@"); ok && fulfillment.ValidCourseKey(run) && fulfillment.ValidMode(mode) {
		return OneItem(run, mode), true
	}
	return Product{}, false
}

// withMode gives every item of p without a mode the integration's.
func (s *Shop) withMode(p Product) Product {
	items := make([]Item, len(p.Items))
	for i, it := range p.Items {
		if it.Mode == "" {
			it.Mode = s.in.CourseMode
		}
		items[i] = it
	}
	return Product{Items: items}
}

// seats turns a course line item of quantity qty into one Line per
// participant and item of its product: the emails found under
// learner_email_field, else the buyer's, at most qty of them (a missing or
// zero quantity is 1). Emails beyond the
// quantity are buyer input that was not paid for: they get no seat, and note
// names them (masked) for the log. A paid line with no email at all is a
// BadEvent: nobody could be enrolled.
func seats(item string, p Product, participants []string, buyer string, needEmail bool, qty int64) (_ []Line, note string, _ error) {
	n := seatCount(qty)
	var emails, extra []string
	seen := map[string]bool{}
	for _, e := range participants {
		if e = strings.TrimSpace(e); !validEmail(e) || seen[strings.ToLower(e)] {
			continue
		}
		seen[strings.ToLower(e)] = true
		if len(emails) < n {
			emails = append(emails, e)
		} else {
			extra = append(extra, fulfillment.MaskEmail(e))
		}
	}
	if len(extra) > 0 {
		if len(extra) > 10 {
			extra = append(extra[:10], "...")
		}
		note = fmt.Sprintf("line item %s (%s): quantity %d but %d more learner emails (%s): they get no seat",
			fulfillment.Clip(item, 40), p.describe(), n, len(seen)-len(emails), strings.Join(extra, ", "))
	}
	if len(emails) == 0 {
		if b := strings.TrimSpace(buyer); validEmail(b) {
			emails = []string{b}
		}
	}
	if len(emails) == 0 {
		if needEmail {
			return nil, note, badEvent("line item %s (%s): no learner email in the order", fulfillment.Clip(item, 40), p.describe())
		}
		// A refund that names no learner: one anonymous seat per unit.
		emails = make([]string, min(n, maxSeats+1))
	}
	lines := make([]Line, 0, len(emails)*len(p.Items))
	for _, e := range emails {
		for _, it := range p.Items {
			lines = append(lines, Line{Item: item, CourseID: it.CourseID, CourseUUID: it.CourseUUID, Mode: it.Mode, Email: e})
		}
	}
	return lines, note, nil
}

// describe names the product's items for a note.
func (p Product) describe() string {
	keys := make([]string, len(p.Items))
	for i, it := range p.Items {
		keys[i] = it.key()
	}
	return strings.Join(keys, ", ")
}

// seatCount is how many seats a line item's quantity pays for: its absolute
// value (WooCommerce refunds count negative), 1 when missing or zero, and at
// most maxSeats+1 (more is refused anyway).
func seatCount(qty int64) int {
	switch {
	case qty == 0:
		return 1
	case qty < -maxSeats || qty > maxSeats:
		return maxSeats + 1
	case qty < 0:
		return int(-qty)
	}
	return int(qty)
}

// maxNote bounds an event's note, a log attribute.
const maxNote = 4000

// addNote adds a line to the event's note; past maxNote the rest is cut.
func (ev *Event) addNote(note string) {
	switch {
	case note == "", strings.HasSuffix(ev.Note, "..."):
	case len(ev.Note)+len(note) > maxNote:
		ev.Note = fulfillment.Clip(ev.Note+"; "+note, maxNote)
		if !strings.HasSuffix(ev.Note, "...") {
			ev.Note += "; ..."
		}
	case ev.Note == "":
		ev.Note = note
	default:
		ev.Note += "; " + note
	}
}

// maxEmail is RFC 5321's limit on a path, which bounds an address.
const maxEmail = 254

// validEmail is a loose check: something@something, with no spaces or
// control characters. The LMS decides whether an account has it.
func validEmail(s string) bool {
	if len(s) < 3 || len(s) > maxEmail || !utf8.ValidString(s) {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) })
}

// maxSeats bounds the course lines one event may carry: every one is a task.
const maxSeats = 1000

// joinNotes joins two notes for the log.
func joinNotes(a, b string) string {
	ev := Event{Note: a}
	ev.addNote(b)
	return ev.Note
}
