package shop

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/wcorders/wcorderstest"
)

// A WooCommerce order paid and then cancelled, failed or refunded returns
// every course line; one never paid (no date_paid_gmt) returns nothing, so
// that a failed order paid later still enrolls.
func TestWooCommerceCancellations(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts})
	modified := time.Date(2017, 3, 21, 19, 54, 51, 0, time.UTC)
	every := []Line{
		{Item: "311", CourseID: demoCourse, Mode: "verified", Email: "joao.silva@example.com"},
		{Item: "313", CourseID: otherCourse, Mode: "professional", Email: "joao.silva@example.com"},
	}
	for _, status := range []string{"cancelled", "failed", "refunded"} {
		t.Run(status+" after payment", func(t *testing.T) {
			body := shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["status"] = status })
			ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
			want := Event{Topic: "order.updated", OrderID: "723", ReturnAll: true, At: modified, Returned: every}
			if diff := cmp.Diff(want, ev); err != nil || diff != "" {
				t.Errorf("%v; event (-want +got):\n%s", err, diff)
			}
		})
		t.Run(status+" never paid", func(t *testing.T) {
			body := shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["status"], m["date_paid_gmt"] = status, nil })
			ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
			if err != nil || ev.Ignored == "" || ev.ReturnAll || len(ev.Returned) != 0 {
				t.Errorf("%+v %v, want ignored, nothing returned", ev, err)
			}
		})
	}
}

// startWooStore serves a fake store that knows order 723 with a refund of
// its line item 313 (the other course), and returns a WooCommerce shop
// calling it with key and secret.
func startWooStore(t *testing.T, key, secret string) (*wcorderstest.Store, *Shop) {
	store := wcorderstest.New("ck_test", "cs_test")
	store.AddRefund("723", wcorderstest.Refund{ID: 726, Amount: "20.00",
		Items: []wcorderstest.RefundItem{{ID: 401, OrderItem: 313, ProductID: 34, SKU: "OTHER-VERIFIED", Quantity: 1}}})
	srv := httptest.NewServer(store)
	t.Cleanup(srv.Close)
	return store, mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts,
		APIURL: srv.URL, ConsumerKey: key, ConsumerSecret: secret})
}

// wooPartlyRefunded is the paid order 723 whose refunds[] names refund 726
// by id and total, as an order body does.
func wooPartlyRefunded(t *testing.T) []byte {
	return shoptest.Patch(t, wooPaid(t), func(m map[string]any) {
		m["refunds"] = []any{map[string]any{"id": 726, "reason": "", "total": "-20.00"}}
	})
}

// A partial refund of one of two course lines: with the store's REST API,
// its line items are read and exactly that line is returned, and not
// placed; without credentials it is noted and nothing is returned.
func TestWooCommerceRefundsFromTheStore(t *testing.T) {
	paidAt := time.Date(2017, 3, 21, 19, 20, 0, 0, time.UTC)
	demo := Line{Item: "311", CourseID: demoCourse, Mode: "verified", Email: "joao.silva@example.com"}
	other := Line{Item: "313", CourseID: otherCourse, Mode: "professional", Email: "joao.silva@example.com"}
	t.Run("with credentials: the refunded line returned", func(t *testing.T) {
		store, s := startWooStore(t, "ck_test", "cs_test")
		ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), wooPartlyRefunded(t))
		refunded := other
		refunded.Refunded = true
		want := Event{Topic: "order.updated", OrderID: "723", At: paidAt, Placed: []Line{demo, refunded}, Returned: []Line{refunded}}
		if diff := cmp.Diff(want, ev); err != nil || diff != "" || store.Refused() != 0 {
			t.Fatalf("%v; event (-want +got):\n%s", err, diff)
		}
		var placed []string
		for _, o := range s.Orders(ev, "req", paidAt) {
			placed = append(placed, o.CourseID)
		}
		if !cmp.Equal(placed, []string{demoCourse}) {
			t.Errorf("placed %v, want only the demo course", placed)
		}
		rets, note, err := s.Returns(t.Context(), ev, fakeLines{"woocommerce-723": {knownLine(otherCourse, "professional", "joao.silva@example.com")}}, "req", paidAt)
		if err != nil || note != "" || len(rets) != 1 || rets[0].CourseID != otherCourse || rets[0].OrderNumber != "woocommerce-723" ||
			rets[0].Email != "joao.silva@example.com" {
			t.Errorf("returns %+v %q %v, want the other course's line", rets, note, err)
		}
	})
	t.Run("part of a line's units: the seats no longer paid for, unnamed", func(t *testing.T) {
		store := wcorderstest.New("ck_test", "cs_test")
		store.AddRefund("723", wcorderstest.Refund{ID: 726, Items: []wcorderstest.RefundItem{{ID: 401, OrderItem: 311, ProductID: 87, Quantity: 1}}})
		srv := httptest.NewServer(store)
		t.Cleanup(srv.Close)
		in := Integration{Type: TypeWooCommerce, Products: wooProducts, APIURL: srv.URL, ConsumerKey: "ck_test", ConsumerSecret: "cs_test"}
		twoUnits := func(meta []any) []byte {
			return shoptest.Patch(t, wooPartlyRefunded(t), func(m map[string]any) {
				item := m["line_items"].([]any)[0].(map[string]any)
				item["quantity"], item["meta_data"] = 2, meta
			})
		}
		// Two participants, one unit refunded: one seat back, which one
		// Returns decides (or notes).
		in.LearnerEmailField = "Participant email"
		two := twoUnits([]any{map[string]any{"key": "Participant email", "value": "ana@example.com, bo@example.com"}})
		ev, err := mustShop(t, in).Event(t.Context(), headers(HeaderWooTopic, "order.updated"), two)
		if err != nil || len(ev.Returned) != 1 || ev.Returned[0].CourseID != demoCourse || ev.Returned[0].Email != "" || ev.Returned[0].Refunded || len(ev.Placed) != 3 {
			t.Errorf("%+v %v, want one unnamed seat of the demo course returned", ev, err)
		}
		// The buyer's one seat bought as 2 units, one refunded: still paid.
		in.LearnerEmailField = ""
		ev, err = mustShop(t, in).Event(t.Context(), headers(HeaderWooTopic, "order.updated"), twoUnits([]any{}))
		if err != nil || len(ev.Returned) != 0 || !strings.Contains(ev.Note, "still paid for: kept") {
			t.Errorf("%+v %v, want the seat kept, noted", ev, err)
		}
	})
	t.Run("without credentials: noted, nothing returned", func(t *testing.T) {
		s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts})
		ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), wooPartlyRefunded(t))
		if err != nil || len(ev.Placed) != 2 || len(ev.Returned) != 0 || !strings.Contains(ev.Note, "nothing returned") {
			t.Errorf("%+v %v, want both placed, none returned, a note", ev, err)
		}
	})
	for name, c := range map[string]struct{ key, secret, order, note string }{
		"wrong secret":  {"ck_test", "cs_wrong", "723", "refused consumer_key/consumer_secret (401)"},
		"unknown order": {"ck_test", "cs_test", "724", "does not know the order (404)"},
	} {
		t.Run(name+": noted, nothing returned, the paid lines placed", func(t *testing.T) {
			_, s := startWooStore(t, c.key, c.secret)
			body := shoptest.Patch(t, wooPartlyRefunded(t), func(m map[string]any) { m["id"] = c.order })
			ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
			if err != nil || len(ev.Placed) != 2 || len(ev.Returned) != 0 || !strings.Contains(ev.Note, c.note) {
				t.Errorf("%+v %v, want both placed, none returned, a note saying %q", ev, err, c.note)
			}
			if strings.Contains(ev.Note, "cs_test") || strings.Contains(ev.Note, "127.0.0.1") {
				t.Errorf("note %q names the secret or the store's URL", ev.Note)
			}
		})
	}
	t.Run("plain http to another host: the credentials are not sent", func(t *testing.T) {
		s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts,
			APIURL: "http://shop.invalid", ConsumerKey: "ck_test", ConsumerSecret: "cs_test"})
		ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), wooPartlyRefunded(t))
		if err != nil || len(ev.Returned) != 0 || !strings.Contains(ev.Note, "REST API configured") {
			t.Errorf("%+v %v, want the refund noted as without credentials", ev, err)
		}
	})
}

// shopifyCancelled is the paid order cancelled: orders/cancelled's body.
func shopifyCancelled(t *testing.T, status string) []byte {
	return shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
		m["cancelled_at"], m["financial_status"] = "2022-01-02T10:00:00-05:00", status
	})
}

func TestShopifyCancellations(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts})
	for _, topic := range []string{"orders/cancelled", "orders/updated"} {
		t.Run(topic+" of a paid order: every line returned", func(t *testing.T) {
			ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, topic), shopifyCancelled(t, "refunded"))
			want := Event{Topic: topic, OrderID: "820982911946154508", ReturnAll: true, At: time.Date(2022, 1, 2, 15, 0, 0, 0, time.UTC), Returned: []Line{
				{Item: "487817672276298554", CourseID: demoCourse, Mode: "verified", Email: "jon@example.com"},
				{Item: "789012345678901234", CourseID: otherCourse, Mode: "professional", Email: "jon@example.com"},
			}}
			if diff := cmp.Diff(want, ev); err != nil || diff != "" {
				t.Errorf("%v; event (-want +got):\n%s", err, diff)
			}
		})
	}
	t.Run("orders/updated of an order refunded in full: every line returned", func(t *testing.T) {
		body := shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
			m["financial_status"] = "refunded"
			m["refunds"] = []any{map[string]any{"id": 1, "created_at": "2022-01-03T10:00:00-05:00", "refund_line_items": []any{}}}
		})
		ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/updated"), body)
		if err != nil || !ev.ReturnAll || len(ev.Returned) != 2 || len(ev.Placed) != 0 || !ev.At.Equal(time.Date(2022, 1, 3, 15, 0, 0, 0, time.UTC)) {
			t.Errorf("%+v %v, want every line returned at the refund's time", ev, err)
		}
	})
	for _, status := range []string{"pending", "authorized", "voided"} {
		t.Run("cancelled "+status+": nothing returned", func(t *testing.T) {
			ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/cancelled"), shopifyCancelled(t, status))
			if err != nil || ev.Ignored == "" || ev.ReturnAll || len(ev.Returned) != 0 {
				t.Errorf("%+v %v, want ignored", ev, err)
			}
		})
	}
}

// An order body's refunds[].refund_line_items: a line item refunded in full
// is returned and never placed, on every order topic; the other lines keep
// their numbers; part of a line's units is noted and its seats kept.
func TestShopifyRefundsInTheOrderBody(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts, LearnerEmailField: "Learner email"})
	refunded := func(qty int, lineQty int) []byte {
		return shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
			m["financial_status"] = "partially_refunded"
			items := m["line_items"].([]any)
			first := items[0].(map[string]any)
			first["quantity"] = lineQty
			first["properties"] = []any{map[string]any{"name": "Learner email", "value": "ana@example.com, bo@example.com"}}
			m["refunds"] = []any{map[string]any{"id": 509562969, "order_id": m["id"], "refund_line_items": []any{
				map[string]any{"id": 104689539, "line_item_id": first["id"], "quantity": qty, "line_item": first}}}}
		})
	}
	for _, topic := range []string{"orders/updated", "orders/paid"} {
		t.Run(topic+": the refunded line item returned, not placed", func(t *testing.T) {
			ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, topic), refunded(2, 2))
			if err != nil {
				t.Fatal(err)
			}
			var placed, returned []string
			for _, o := range s.Orders(ev, "req", time.Now()) {
				placed = append(placed, o.OrderNumber+" "+o.CourseID+" "+o.Email)
			}
			for _, l := range ev.Returned {
				returned = append(returned, l.CourseID+" "+l.Email)
			}
			if diff := cmp.Diff([]string{"shopify-820982911946154508 " + otherCourse + " jon@example.com"}, placed); diff != "" {
				t.Errorf("placed (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{demoCourse + " ana@example.com", demoCourse + " bo@example.com"}, returned); diff != "" || ev.ReturnAll {
				t.Errorf("returned (-want +got):\n%s", diff)
			}
			rets, _, err := s.Returns(t.Context(), ev, fakeLines{}, "req", time.Now())
			var got []string
			for _, r := range rets {
				got = append(got, r.OrderNumber+" "+r.Email)
			}
			want := []string{"shopify-820982911946154508 ana@example.com", "shopify-820982911946154508-p2 bo@example.com"}
			if diff := cmp.Diff(want, got); err != nil || diff != "" {
				t.Errorf("%v; returns numbered as the order numbers them (-want +got):\n%s", err, diff)
			}
		})
	}
	t.Run("one of two units: noted, both seats kept", func(t *testing.T) {
		ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/updated"), refunded(1, 2))
		if err != nil || len(ev.Returned) != 0 || len(s.Orders(ev, "req", time.Now())) != 3 || !strings.Contains(ev.Note, "1 of 2 units refunded") {
			t.Errorf("%+v %v, want 3 seats placed, none returned, a note", ev, err)
		}
	})
}

// stripeDispute is a charge.dispute.* event of the fake's payment intent,
// with Stripe's Dispute object fields.
func stripeDisputeEvent(typ, status string) []byte {
	return fmt.Appendf(nil, `{"id":"evt_1","object":"event","type":%q,"created":1700000000,"livemode":false,"data":{"object":`+
		`{"id":"du_1","object":"dispute","amount":1000,"currency":"usd","reason":"fraudulent","status":%q,`+
		`"charge":"ch_1","payment_intent":"pi_00000000000000","is_charge_refundable":false}}}`, typ, status)
}

func TestStripeDisputes(t *testing.T) {
	_, url := startStripe(t)
	s := stripeShopFor(t, url, nil)
	at := time.Unix(1700000000, 0).UTC()
	t.Run("opened: a Dispute, nothing returned", func(t *testing.T) {
		ev, err := s.Event(t.Context(), nil, stripeDisputeEvent("charge.dispute.created", "needs_response"))
		want := Event{Topic: "charge.dispute.created", OrderID: "pi_00000000000000", At: at,
			Dispute: &Dispute{ID: "du_1", Amount: 1000, Currency: "usd", Reason: "fraudulent"}}
		if diff := cmp.Diff(want, ev); err != nil || diff != "" {
			t.Errorf("%v; event (-want +got):\n%s", err, diff)
		}
		d := s.DisputeOpened(ev, "req-1")
		if d.OrderNumber != "stripe-pi_00000000000000" || d.Integration != "stripe" || d.DisputeID != "du_1" || !d.OpenedAt.Equal(at) || d.RequestID != "req-1" {
			t.Errorf("payload %+v", d)
		}
	})
	t.Run("closed lost: the session's lines returned", func(t *testing.T) {
		ev, err := s.Event(t.Context(), nil, stripeDisputeEvent("charge.dispute.closed", "lost"))
		want := Event{Topic: "charge.dispute.closed", OrderID: "pi_00000000000000", At: at, ReturnAll: true, Returned: []Line{
			{Item: "li_1", CourseID: demoCourse, Mode: "professional"},
			{Item: "li_2", CourseID: otherCourse, Mode: "verified"},
		}}
		if diff := cmp.Diff(want, ev); err != nil || diff != "" {
			t.Errorf("%v; event (-want +got):\n%s", err, diff)
		}
	})
	for _, status := range []string{"won", "warning_closed"} {
		t.Run("closed "+status+": nothing", func(t *testing.T) {
			ev, err := s.Event(t.Context(), nil, stripeDisputeEvent("charge.dispute.closed", status))
			if err != nil || ev.Ignored == "" || ev.ReturnAll || ev.Dispute != nil {
				t.Errorf("%+v %v, want ignored", ev, err)
			}
		})
	}
}

// A verified delivery of a topic Coordinator does not use is ignored (200),
// on every platform; a known topic whose body cannot be read stays a
// BadEvent (400).
func TestUnusedTopicsIgnored(t *testing.T) {
	_, url := startStripe(t)
	cases := []struct {
		name   string
		s      *Shop
		topic  string
		header string
		body   []byte
	}{
		{"WooCommerce product.updated", mustShop(t, Integration{Type: TypeWooCommerce}), "product.updated", HeaderWooTopic, []byte(`{"id":5}`)},
		{"WooCommerce coupon.created, not JSON", mustShop(t, Integration{Type: TypeWooCommerce}), "coupon.created", HeaderWooTopic, []byte(`x`)},
		{"Shopify customers/create", mustShop(t, Integration{Type: TypeShopify}), "customers/create", HeaderShopifyTopic, []byte(`{"id":1}`)},
		{"Stripe charge.dispute.funds_withdrawn", stripeShopFor(t, url, nil), "", "", stripeDisputeEvent("charge.dispute.funds_withdrawn", "lost")},
	}
	for _, c := range cases {
		ev, err := c.s.Event(t.Context(), headers(c.header, c.topic), c.body)
		if err != nil || !strings.Contains(ev.Ignored, "not used") || ev.ReturnAll || len(ev.Placed)+len(ev.Returned) != 0 {
			t.Errorf("%s: %+v %v, want ignored", c.name, ev, err)
		}
	}
	var bad *BadEvent
	if _, err := mustShop(t, Integration{Type: TypeShopify}).Event(t.Context(), headers(HeaderShopifyTopic, "orders/cancelled"), []byte(`{"id":`)); !errors.As(err, &bad) {
		t.Errorf("a known topic's unreadable body: %v, want BadEvent", err)
	}
}
