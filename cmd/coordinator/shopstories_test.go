package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/shop/stripetest"
	"github.com/openedx/coordinator/internal/wcorders/wcorderstest"
	"github.com/openedx/coordinator/internal/webhooks"
	"github.com/openedx/coordinator/internal/webhooks/webhookstest"
)

const (
	wooConsumerKey    = "ck_coordinator_tests"
	wooConsumerSecret = "cs_coordinator_tests"
)

// startShopStories runs the API (tasks stay queued where the test reads
// them) with a WooCommerce store whose REST API is the fake store (woo),
// one without credentials (woo_plain), Shopify and Stripe, in either tier.
func startShopStories(t *testing.T, ledger bool) (shopEnv, *wcorderstest.Store) {
	t.Helper()
	fake := lmstest.NewDemo(testSecret)
	fake.AddCourse(otherCourse, lmstest.CourseRun{Name: "Other", Modes: []string{"audit", "verified", "professional"}})
	st := stripetest.New(stripeTestKey)
	st.AddSession(stripetest.Session{ID: stripeSessionID, PaymentIntent: stripeIntent, Items: []stripetest.Item{
		{ID: "li_1", Description: "Demo course", PriceID: "price_demo", ProductID: "prod_demo",
			ProductMetadata: map[string]string{"course_id": demoCourse, "course_mode": "verified"}, Quantity: 1},
	}})
	store := wcorderstest.New(wooConsumerKey, wooConsumerSecret)
	storeSrv := httptest.NewServer(store)
	t.Cleanup(storeSrv.Close)
	extra := fmt.Sprintf(`integrations:
  - name: woo
    type: woocommerce
    secrets: [%[1]q]
    api_url: %[2]q
    consumer_key: %[3]q
    consumer_secret: %[4]q
    products:
      "OTHER-VERIFIED": {course_id: %[5]q, mode: professional}
  - name: woo_plain
    type: woocommerce
    secrets: [%[1]q]
    products:
      "OTHER-VERIFIED": {course_id: %[5]q, mode: professional}
  - name: shopify
    type: shopify
    secrets: [%[6]q]
    learner_email_field: "Learner email"
  - name: stripe
    type: stripe
    secrets: [%[7]q]
    api_key: %[8]q
    api_url: %[9]q
    accept_test_orders: true
`, wooSecret, storeSrv.URL, wooConsumerKey, wooConsumerSecret, otherCourse, shopifySecret, stripeWHSecret, stripeTestKey, stripetest.Start(t, st).URL)
	return shopEnv{instance: startWith(t, "api", fake, ledger, extra), stripe: st}, store
}

// The shop stories around the happy paths, end to end in both tiers:
// cancellations and a lost dispute return every seat, an opened dispute is
// a signal and returns nothing, a WooCommerce partial refund returns
// exactly its line (through the store's REST API; without it, noted only),
// a Shopify order body's refunds enroll none of the refunded items, and a
// signed delivery of a topic Coordinator does not use is answered 200.
func TestShopStories(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			e, store := startShopStories(t, ledger)
			shopStories(t, e, store)
		})
	}
}

func shopStories(t *testing.T, e shopEnv, store *wcorderstest.Store) {
	enroll := func(course string) string { return course + " " + seat.KindEnroll }
	unenroll := func(course string) string { return course + " " + seat.KindUnenroll }
	kinds := func(t *testing.T, order string, want ...string) {
		t.Helper()
		slices.Sort(want)
		if got := e.kinds(t, order); !slices.Equal(got, want) {
			t.Errorf("order %s: tasks %v, want %v", order, got, want)
		}
	}
	both := []string{enroll(demoCourse), enroll(otherCourse), unenroll(demoCourse), unenroll(otherCourse)}

	for i, status := range []string{"cancelled", "failed", "refunded"} {
		t.Run("WooCommerce paid, then "+status+": every line returned", func(t *testing.T) {
			id := 801 + i
			paid := wooOrder(t, id, "ana@example.com")
			if a := e.post(t, "woo", paid, wooHeaders("order.created", paid, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
				t.Fatalf("paid: %+v", a)
			}
			gone := shoptest.Patch(t, paid, func(m map[string]any) { m["status"] = status })
			a := e.post(t, "woo", gone, wooHeaders("order.updated", gone, wooSecret))
			if a.Status != 200 || len(a.Lines) != 2 || a.Lines[0].Signal != "fulfill_order_returned" {
				t.Fatalf("%s: %+v, want two returns", status, a)
			}
			kinds(t, fmt.Sprint("woo-", id), both...)
		})
	}

	t.Run("WooCommerce cancelled, never paid: nothing", func(t *testing.T) {
		body := shoptest.Patch(t, wooOrder(t, 810, "bo@example.com"), func(m map[string]any) { m["status"], m["date_paid_gmt"] = "cancelled", nil })
		if a := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret)); a.Status != 200 || a.Ignored == "" || len(a.Lines) != 0 {
			t.Errorf("%+v, want 200 ignored", a)
		}
		if status, _ := e.order(t, "GET", "woo-810"); status != 404 {
			t.Errorf("order woo-810: %d, want 404 (nothing recorded)", status)
		}
	})

	t.Run("WooCommerce partial refund of one of two course lines, through the store's REST API", func(t *testing.T) {
		paid := wooOrder(t, 820, "cy@example.com")
		if a := e.post(t, "woo", paid, wooHeaders("order.created", paid, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("paid: %+v", a)
		}
		store.AddRefund("820", wcorderstest.Refund{ID: 900, Amount: "20.00",
			Items: []wcorderstest.RefundItem{{ID: 901, OrderItem: 313, ProductID: 34, SKU: "OTHER-VERIFIED", Quantity: 1}}})
		refunded := shoptest.Patch(t, paid, func(m map[string]any) {
			m["refunds"] = []any{map[string]any{"id": 900, "reason": "", "total": "-20.00"}}
		})
		a := e.post(t, "woo", refunded, wooHeaders("order.updated", refunded, wooSecret))
		var returned []string
		for _, l := range a.Lines {
			if l.Signal == "fulfill_order_returned" {
				returned = append(returned, l.CourseID)
			}
		}
		if a.Status != 200 || !slices.Equal(returned, []string{otherCourse}) {
			t.Fatalf("%+v, want the other course returned", a)
		}
		kinds(t, "woo-820", enroll(demoCourse), enroll(otherCourse), unenroll(otherCourse))
		if store.Refused() != 0 {
			t.Errorf("the store refused %d calls", store.Refused())
		}
	})

	t.Run("the same without the store's credentials: noted, nothing returned", func(t *testing.T) {
		paid := wooOrder(t, 821, "dee@example.com")
		refunded := shoptest.Patch(t, paid, func(m map[string]any) {
			m["refunds"] = []any{map[string]any{"id": 902, "reason": "", "total": "-20.00"}}
		})
		a := e.post(t, "woo_plain", refunded, wooHeaders("order.updated", refunded, wooSecret))
		if a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("%+v, want both lines placed", a)
		}
		kinds(t, "woo_plain-821", enroll(demoCourse), enroll(otherCourse))
	})

	t.Run("Shopify orders/cancelled of a paid order: every line returned", func(t *testing.T) {
		paid := shoptest.Patch(t, shopifyOrder(t, "eve@example.com"), func(m map[string]any) { m["id"] = int64(820982911946154701) })
		if a := e.post(t, "shopify", paid, shopifyHeaders("orders/paid", paid)); a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("paid: %+v", a)
		}
		cancelled := shoptest.Patch(t, paid, func(m map[string]any) { m["cancelled_at"] = "2022-01-02T10:00:00-05:00" })
		a := e.post(t, "shopify", cancelled, shopifyHeaders("orders/cancelled", cancelled))
		if a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("%+v, want two returns", a)
		}
		kinds(t, "shopify-820982911946154701", both...)
		if ref := e.queuedRef(t, a.Lines[0].Receivers[seat.ReceiverUnenroll].Response); ref.Email == "" {
			t.Errorf("queued return %+v: want the line's learner", ref)
		}
	})

	t.Run("Shopify orders/updated of a partially refunded order: the refunded item not enrolled", func(t *testing.T) {
		body := shoptest.Patch(t, shopifyOrder(t, "fay@example.com"), func(m map[string]any) {
			m["id"], m["financial_status"] = int64(820982911946154702), "partially_refunded"
			first := m["line_items"].([]any)[0].(map[string]any)
			m["refunds"] = []any{map[string]any{"id": 509562969, "order_id": m["id"], "refund_line_items": []any{
				map[string]any{"id": 104689539, "line_item_id": first["id"], "quantity": 1, "line_item": first}}}}
		})
		for range 2 { // a later update changes nothing
			if a := e.post(t, "shopify", body, shopifyHeaders("orders/updated", body)); a.Status != 200 || len(a.Lines) != 2 {
				t.Fatalf("%+v, want the other course placed and the demo course returned", a)
			}
		}
		kinds(t, "shopify-820982911946154702", unenroll(demoCourse), enroll(otherCourse))
	})

	t.Run("Stripe: a dispute opened is a signal and returns nothing; lost, the seat goes back", func(t *testing.T) {
		order := "stripe-" + stripeIntent
		paid := shoptest.Fixture(t, "stripe-checkout.session.completed.json")
		if a := e.post(t, "stripe", paid, stripeHeaders(paid, time.Now())); a.Status != 200 || len(a.Lines) != 1 {
			t.Fatalf("paid: %+v", a)
		}
		dispute := func(typ, status string) []byte {
			return fmt.Appendf(nil, `{"id":"evt_dp","object":"event","type":%q,"created":%d,"livemode":false,"data":{"object":`+
				`{"id":"du_1","object":"dispute","amount":1000,"currency":"usd","reason":"fraudulent","status":%q,"charge":"ch_1","payment_intent":%q}}}`,
				typ, time.Now().Unix(), status, stripeIntent)
		}
		opened := dispute("charge.dispute.created", "needs_response")
		a := e.post(t, "stripe", opened, stripeHeaders(opened, time.Now()))
		if a.Status != 200 || len(a.Lines) != 0 || len(a.Signals) != 1 || a.Signals[0].Signal != shop.SignalDisputeOpened {
			t.Fatalf("opened: %+v, want shop_dispute_opened sent and no line", a)
		}
		kinds(t, order, enroll(demoCourse))
		won := dispute("charge.dispute.closed", "won")
		if a := e.post(t, "stripe", won, stripeHeaders(won, time.Now())); a.Status != 200 || a.Ignored == "" || len(a.Lines) != 0 {
			t.Errorf("won: %+v, want ignored", a)
		}
		lost := dispute("charge.dispute.closed", "lost")
		if a := e.post(t, "stripe", lost, stripeHeaders(lost, time.Now())); a.Status != 200 || len(a.Lines) != 1 {
			t.Fatalf("lost: %+v, want the line returned", a)
		}
		kinds(t, order, enroll(demoCourse), unenroll(demoCourse))
	})

	t.Run("a signed topic Coordinator does not use: 200 ignored on every platform", func(t *testing.T) {
		woo := []byte(`{"id":5,"name":"T-shirt"}`)
		shopify := []byte(`{"id":706405506930370084,"email":"bob@example.com"}`)
		stripeBody := fmt.Appendf(nil, `{"id":"evt_c","object":"event","type":"customer.created","created":%d,"livemode":false,"data":{"object":{"id":"cus_1"}}}`, time.Now().Unix())
		for name, a := range map[string]webhookAnswer{
			"WooCommerce product.created": e.post(t, "woo", woo, wooHeaders("product.created", woo, wooSecret)),
			"Shopify customers/create":    e.post(t, "shopify", shopify, shopifyHeaders("customers/create", shopify)),
			"Stripe customer.created":     e.post(t, "stripe", stripeBody, stripeHeaders(stripeBody, time.Now())),
		} {
			if a.Status != 200 || !strings.Contains(a.Ignored, "not used") || len(a.Lines) != 0 {
				t.Errorf("%s: %+v, want 200 ignored", name, a)
			}
		}
		unsigned := e.post(t, "shopify", shopify, http.Header{shop.HeaderShopifyTopic: {"customers/create"}})
		if unsigned.Status != 401 {
			t.Errorf("unsigned: %+v, want 401", unsigned)
		}
		text := scrape(t, e.base)
		for _, want := range []string{`coordinator_webhooks_total{integration="stripe",result="ignored"}`,
			`coordinator_webhooks_total{integration="woo",result="ignored"}`} {
			if !strings.Contains(text, want) {
				t.Errorf("metrics lack %s", want)
			}
		}
	})
}

// docs/schemas/shop_dispute_opened.json describes the signal's payload as a
// delivery would carry it: the envelope of type, timestamp and data.
func TestDisputeOpenedSchema(t *testing.T) {
	d := shop.DisputeOpened{Integration: "stripe", Site: "default", OrderNumber: "stripe-" + stripeIntent, DisputeID: "du_1",
		Amount: 1000, Currency: "usd", Reason: "fraudulent", OpenedAt: time.Unix(1700000000, 0).UTC(), RequestID: "req-1"}
	body, err := json.Marshal(webhooks.Envelope{Type: shop.SignalDisputeOpened, Timestamp: d.OpenedAt, Data: d})
	if err != nil {
		t.Fatal(err)
	}
	checkSchemas(t, []webhookstest.Attempt{{Type: shop.SignalDisputeOpened, Body: body}}, shop.SignalDisputeOpened)
}
