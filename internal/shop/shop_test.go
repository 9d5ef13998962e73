package shop

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/shop/stripetest"
)

const (
	demoCourse  = "course-v1:edX+DemoX+Demo_Course"
	otherCourse = "course-v1:edX+Other+2026"
	secret      = "shop-secret-for-tests-0123456789"
	oldSecret   = "old-shop-secret-for-tests-98765"
	stripeKey   = "sk_test_coordinator"
)

func mustShop(t testing.TB, in Integration) *Shop {
	t.Helper()
	if in.Name == "" {
		in.Name = in.Type
	}
	if in.Secrets == nil {
		in.Secrets = []string{secret}
	}
	in.Site, in.OrderPrefix = fulfillment.DefaultSite, in.Name+"-"
	if in.CourseMode == "" {
		in.CourseMode = "verified"
	}
	s, err := New(in)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func headers(kv ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(kv); i += 2 {
		h.Set(kv[i], kv[i+1])
	}
	return h
}

// wooPaid is the WooCommerce docs' order 723 made paid and given course
// SKUs: line 311 a course run key, line 313 a SKU the products map knows,
// and a T-shirt line added.
func wooPaid(t testing.TB) []byte {
	return shoptest.Patch(t, shoptest.Fixture(t, "woocommerce-order-partially-refunded.wcdocs.json"), func(m map[string]any) {
		m["date_paid_gmt"] = "2017-03-21T19:20:00"
		m["refunds"] = []any{}
		items := m["line_items"].([]any)
		items[0].(map[string]any)["sku"] = demoCourse
		items[1].(map[string]any)["sku"] = "OTHER-VERIFIED"
		m["line_items"] = append(items, map[string]any{"id": 315, "product_id": 99, "sku": "TSHIRT-L", "quantity": 1, "meta_data": []any{}})
	})
}

var wooProducts = map[string]Product{"OTHER-VERIFIED": OneItem(otherCourse, "professional")}

func TestWooCommerce(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts})
	paidAt := time.Date(2017, 3, 21, 19, 20, 0, 0, time.UTC)
	tests := []struct {
		name  string
		topic string
		body  []byte
		want  Event
	}{
		{"paid order: two course lines, the T-shirt ignored", "order.updated", wooPaid(t), Event{
			Topic: "order.updated", OrderID: "723", At: paidAt, Placed: []Line{
				{Item: "311", CourseID: demoCourse, Mode: "verified", Email: "joao.silva@example.com"},
				{Item: "313", CourseID: otherCourse, Mode: "professional", Email: "joao.silva@example.com"},
			}}},
		// The docs' body as it is: completed, but date_paid_gmt null.
		{"completed without date_paid_gmt: not paid", "order.updated",
			shoptest.Fixture(t, "woocommerce-order-partially-refunded.wcdocs.json"),
			Event{Topic: "order.updated", OrderID: "723", Ignored: "status completed without date_paid_gmt: not paid"}},
		{"pending", "order.created", shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["status"] = "pending" }),
			Event{Topic: "order.created", OrderID: "723", Ignored: "status pending: not paid"}},
		{"refunded: every course line", "order.updated", shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["status"] = "refunded" }),
			Event{Topic: "order.updated", OrderID: "723", ReturnAll: true, At: time.Date(2017, 3, 21, 19, 54, 51, 0, time.UTC), Returned: []Line{
				{Item: "311", CourseID: demoCourse, Mode: "verified", Email: "joao.silva@example.com"},
				{Item: "313", CourseID: otherCourse, Mode: "professional", Email: "joao.silva@example.com"},
			}}},
		{"deleted", "order.deleted", []byte(`{"id":723}`), Event{Topic: "order.deleted", Ignored: "order deleted"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := s.Event(t.Context(), headers(HeaderWooTopic, tt.topic), tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

// The docs' partially refunded order, paid: its refunds[] name no items, so
// the lines stay placed and the log is told; a refund object with
// line_items returns those.
func TestWooCommercePartialRefunds(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts})
	body := shoptest.Patch(t, wooPaid(t), func(m map[string]any) {
		m["refunds"] = []any{map[string]any{"id": 726, "refund": "", "total": "-10.00"}}
	})
	ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
	if err != nil || len(ev.Placed) != 2 || len(ev.Returned) != 0 || ev.Note == "" {
		t.Errorf("unitemized refund: %+v %v; want 2 placed, none returned, a note", ev, err)
	}
	body = shoptest.Patch(t, wooPaid(t), func(m map[string]any) {
		m["refunds"] = []any{map[string]any{"id": 726, "total": "-20.00", "line_items": []any{
			// A product no line item of the order has: returned as it is.
			map[string]any{"id": 401, "product_id": 35, "sku": "OTHER-VERIFIED", "quantity": -1}}}}
	})
	ev, err = s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
	want := []Line{{Item: "401", CourseID: otherCourse, Mode: "professional"}}
	if err != nil || ev.ReturnAll || !cmp.Equal(ev.Returned, want) {
		t.Errorf("itemized refund: %+v %v; want returned %+v", ev, err, want)
	}
}

// learner_email_field: the "Product Input Fields" plugin's meta, a list of
// field objects with the email in _value, one per seat; a plain string meta.
func TestWooCommerceLearnerEmailField(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts, LearnerEmailField: "Participant email"})
	body := shoptest.Patch(t, wooPaid(t), func(m map[string]any) {
		items := m["line_items"].([]any)
		items[0].(map[string]any)["quantity"] = 2
		items[0].(map[string]any)["meta_data"] = []any{map[string]any{"id": 1, "key": "Participant email", "value": []any{
			map[string]any{"_name": "participant-email", "_label": "Participant email", "_value": "ana@example.com"},
			map[string]any{"_name": "participant-email", "_label": "Participant email", "_value": " bo@example.com "},
		}}}
		items[1].(map[string]any)["meta_data"] = []any{map[string]any{"id": 2, "key": "Participant email", "value": "cy@example.com"}}
	})
	ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range ev.Placed {
		got = append(got, l.CourseID+" "+l.Email)
	}
	want := []string{demoCourse + " ana@example.com", demoCourse + " bo@example.com", otherCourse + " cy@example.com"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("seats (-want +got):\n%s", diff)
	}
}

func TestWooCommerceRefusals(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts})
	var bad *BadEvent
	noEmail := shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["billing"].(map[string]any)["email"] = "" })
	for name, body := range map[string][]byte{"not JSON": []byte(`webhook_id=5x`), "array": []byte(`[1]`),
		"wrong types": []byte(`{"id":"x","line_items":{}}`), "no email": noEmail} {
		if _, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body); !errors.As(err, &bad) {
			t.Errorf("%s: %v, want BadEvent", name, err)
		}
	}
	if !s.Ping(http.Header{}, []byte("webhook_id=17")) || s.Ping(http.Header{}, []byte("webhook_id=17&x=1")) {
		t.Error("ping: want only webhook_id=<n> recognised")
	}
}

// Signatures: the right secret, a rotated pair (old and new both verify), a
// tampered body, a wrong secret, none.
func TestHMACSignatures(t *testing.T) {
	body := wooPaid(t)
	for _, typ := range []struct{ name, header string }{{TypeWooCommerce, HeaderWooSignature}, {TypeShopify, HeaderShopifySignature}} {
		rotating := mustShop(t, Integration{Type: typ.name, Secrets: []string{secret, oldSecret}})
		single := mustShop(t, Integration{Type: typ.name})
		tampered := bytes.Replace(body, []byte(`"723"`), []byte(`"724"`), 1)
		cases := []struct {
			name string
			s    *Shop
			sig  string
			body []byte
			ok   bool
		}{
			{"signed", single, SignBase64HMAC(body, secret), body, true},
			{"rotation: new secret", rotating, SignBase64HMAC(body, secret), body, true},
			{"rotation: old secret", rotating, SignBase64HMAC(body, oldSecret), body, true},
			{"old secret after rotation", single, SignBase64HMAC(body, oldSecret), body, false},
			{"tampered body", single, SignBase64HMAC(body, secret), tampered, false},
			{"unsigned", single, "", body, false},
			{"garbage", single, "not base64!", body, false},
		}
		for _, c := range cases {
			err := c.s.Verify(headers(typ.header, c.sig), c.body, time.Now())
			if (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrSignature)) {
				t.Errorf("%s %s: %v, want ok=%v", typ.name, c.name, err, c.ok)
			}
		}
	}
}

// shopifyPaid is Shopify's generic order sample made a real paid order:
// financial_status paid, not a test, not cancelled; two lines sell courses.
func shopifyPaid(t testing.TB) []byte {
	return shoptest.Patch(t, shoptest.Fixture(t, "shopify-orders-paid.json"), func(m map[string]any) {
		m["financial_status"], m["test"], m["cancelled_at"] = "paid", false, nil
		items := m["line_items"].([]any)
		items[0].(map[string]any)["sku"] = demoCourse
		items[1].(map[string]any)["sku"] = "OTHER-VERIFIED"
	})
}

func TestShopify(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts})
	staging := mustShop(t, Integration{Name: "staging", Type: TypeShopify, Products: wooProducts, AcceptTestOrders: true})
	at := time.Date(2022, 1, 1, 0, 0, 0, 0, time.UTC)
	tests := []struct {
		name, topic string
		s           *Shop
		body        []byte
		want        Event
	}{
		// The sample as Shopify sends it: a voided, cancelled test order.
		{"the sample: a test order", "orders/paid", s, shoptest.Fixture(t, "shopify-orders-paid.json"),
			Event{Topic: "orders/paid", OrderID: "820982911946154508", Ignored: "test order (accept_test_orders is false)"}},
		{"the sample, tests accepted: cancelled", "orders/paid", staging, shoptest.Fixture(t, "shopify-orders-paid.json"),
			Event{Topic: "orders/paid", OrderID: "820982911946154508", Ignored: "order cancelled before it was paid: nothing to return"}},
		{"voided", "orders/updated", staging, shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { m["financial_status"] = "voided" }),
			Event{Topic: "orders/updated", OrderID: "820982911946154508", Ignored: "financial_status voided: not paid"}},
		{"pending", "orders/create", s, shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { m["financial_status"] = "pending" }),
			Event{Topic: "orders/create", OrderID: "820982911946154508", Ignored: "financial_status pending: not paid"}},
		{"paid", "orders/paid", s, shopifyPaid(t), Event{Topic: "orders/paid", OrderID: "820982911946154508", At: at, Placed: []Line{
			{Item: "487817672276298554", CourseID: demoCourse, Mode: "verified", Email: "jon@example.com"},
			{Item: "789012345678901234", CourseID: otherCourse, Mode: "professional", Email: "jon@example.com"},
		}}},
		// refunds/create as Shopify's sample has it, its first two items
		// given course SKUs: only those are returned.
		{"refund", "refunds/create", s, shoptest.Patch(t, shoptest.Fixture(t, "shopify-refunds-create.json"), func(m map[string]any) {
			items := m["refund_line_items"].([]any)
			items[0].(map[string]any)["line_item"].(map[string]any)["sku"] = demoCourse
			items[1].(map[string]any)["line_item"].(map[string]any)["sku"] = "OTHER-VERIFIED"
		}), Event{Topic: "refunds/create", OrderID: "820982911946154508", At: at, Returned: []Line{
			{Item: "487817672276298554", CourseID: demoCourse, Mode: "verified"},
			{Item: "789012345678901234", CourseID: otherCourse, Mode: "professional"},
		}}},
		{"the refund sample: no course items", "refunds/create", s, shoptest.Fixture(t, "shopify-refunds-create.json"),
			Event{Topic: "refunds/create", OrderID: "820982911946154508", At: at, Ignored: "no course lines refunded"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.s.Event(t.Context(), headers(HeaderShopifyTopic, tt.topic), tt.body)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

// Shopify line-item properties name the participant.
func TestShopifyLearnerProperty(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeShopify, LearnerEmailField: "Learner email"})
	body := shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
		m["line_items"].([]any)[0].(map[string]any)["properties"] = []any{
			map[string]any{"name": "Gift note", "value": "enjoy"}, map[string]any{"name": "Learner email", "value": "kid@example.com"}}
	})
	ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/paid"), body)
	if err != nil || len(ev.Placed) != 1 || ev.Placed[0].Email != "kid@example.com" {
		t.Errorf("%+v %v: want one seat for kid@example.com", ev, err)
	}
}

// stripeSigned signs body the way Stripe does, with stripe-go's helper.
func stripeSigned(body []byte, secret string, at time.Time) http.Header {
	p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: secret, Timestamp: at})
	return headers(HeaderStripeSignature, p.Header)
}

func startStripe(t testing.TB) (*stripetest.Server, string) {
	fake := stripetest.New(stripeKey)
	fake.AddSession(stripetest.Session{ID: "cs_00000000000000", PaymentIntent: "pi_00000000000000", Items: []stripetest.Item{
		{ID: "li_1", Description: "Demo course", PriceID: "price_demo", ProductID: "prod_demo",
			ProductMetadata: map[string]string{"course_id": demoCourse, "course_mode": "professional"}, Quantity: 1},
		{ID: "li_2", Description: "Other course", PriceID: "price_other", ProductID: "prod_other", Quantity: 1},
		{ID: "li_3", Description: "T-shirt", PriceID: "price_1PgafmB7WZ01zgkW02Hf9z6c", ProductID: "prod_QXg1hqf4jFNsqG", Quantity: 1},
	}})
	return fake, stripetest.Start(t, fake).URL
}

func stripeShopFor(t testing.TB, url string, edit func(*Integration)) *Shop {
	in := Integration{Type: TypeStripe, APIKey: stripeKey, APIURL: url, AcceptTestOrders: true,
		Products: map[string]Product{"price_other": OneItem(otherCourse, "")}}
	if edit != nil {
		edit(&in)
	}
	return mustShop(t, in)
}

func TestStripe(t *testing.T) {
	fake, url := startStripe(t)
	s := stripeShopFor(t, url, nil)
	completed := shoptest.Fixture(t, "stripe-checkout.session.completed.json")
	created := time.Unix(1326853478, 0).UTC()
	t.Run("paid checkout: line items through the API", func(t *testing.T) {
		ev, err := s.Event(t.Context(), nil, completed)
		want := Event{Topic: "checkout.session.completed", OrderID: "pi_00000000000000", At: created, Placed: []Line{
			{Item: "li_1", CourseID: demoCourse, Mode: "professional", Email: "example@example.com"},
			{Item: "li_2", CourseID: otherCourse, Mode: "verified", Email: "example@example.com"},
		}}
		if diff := cmp.Diff(want, ev); err != nil || diff != "" {
			t.Errorf("%v; event (-want +got):\n%s", err, diff)
		}
	})
	t.Run("async payment, product id in the map, learner from session metadata", func(t *testing.T) {
		byProduct := stripeShopFor(t, url, func(in *Integration) {
			in.Products = map[string]Product{"prod_other": OneItem(otherCourse, "audit")}
			in.LearnerEmailField = "learner_email"
		})
		body := shoptest.Patch(t, completed, func(m map[string]any) {
			m["type"] = "checkout.session.async_payment_succeeded"
			m["data"].(map[string]any)["object"].(map[string]any)["metadata"] = map[string]any{"learner_email": "kid@example.com"}
		})
		ev, err := byProduct.Event(t.Context(), nil, body)
		want := []Line{{Item: "li_1", CourseID: demoCourse, Mode: "professional", Email: "kid@example.com"},
			{Item: "li_2", CourseID: otherCourse, Mode: "audit", Email: "kid@example.com"}}
		if diff := cmp.Diff(want, ev.Placed); err != nil || diff != "" {
			t.Errorf("%v; seats (-want +got):\n%s", err, diff)
		}
	})
	t.Run("test mode refused unless accepted", func(t *testing.T) {
		live := stripeShopFor(t, url, func(in *Integration) { in.AcceptTestOrders = false })
		if ev, err := live.Event(t.Context(), nil, completed); err != nil || ev.Ignored == "" {
			t.Errorf("%+v %v, want ignored", ev, err)
		}
	})
	t.Run("unpaid", func(t *testing.T) {
		body := shoptest.Patch(t, completed, func(m map[string]any) {
			m["data"].(map[string]any)["object"].(map[string]any)["payment_status"] = "unpaid"
		})
		if ev, err := s.Event(t.Context(), nil, body); err != nil || ev.Ignored != "payment_status unpaid: not paid (yet)" || len(ev.Placed) != 0 {
			t.Errorf("%+v %v, want ignored", ev, err)
		}
	})
	// Finding 6: the order is paid; ignoring it would lose it. Stripe
	// delivers again for 3 days while the key is fixed.
	t.Run("unknown session: unavailable", func(t *testing.T) {
		body := shoptest.Patch(t, completed, func(m map[string]any) { m["data"].(map[string]any)["object"].(map[string]any)["id"] = "cs_unknown" })
		if ev, err := s.Event(t.Context(), nil, body); !errors.Is(err, fulfillment.ErrUnavailable) || ev.Ignored != "" {
			t.Errorf("%+v %v, want ErrUnavailable", ev, err)
		}
	})
	t.Run("Stripe API failing: unavailable", func(t *testing.T) {
		fake.Fail(1) // stripe-go retries network errors only; Stripe redelivers
		if _, err := s.Event(t.Context(), nil, completed); !errors.Is(err, fulfillment.ErrUnavailable) {
			t.Errorf("%v, want ErrUnavailable", err)
		}
	})
	t.Run("API key refused: unavailable", func(t *testing.T) {
		bad := stripeShopFor(t, url, func(in *Integration) { in.APIKey = "sk_test_wrong" })
		if _, err := bad.Event(t.Context(), nil, completed); !errors.Is(err, fulfillment.ErrUnavailable) {
			t.Errorf("%v, want ErrUnavailable", err)
		}
	})
	t.Run("refund without payment_intent (the CLI sample): ignored", func(t *testing.T) {
		if ev, err := s.Event(t.Context(), nil, shoptest.Fixture(t, "stripe-charge.refunded.json")); err != nil || ev.Ignored == "" {
			t.Errorf("%+v %v, want ignored", ev, err)
		}
	})
	t.Run("full refund of a Checkout payment: the whole order", func(t *testing.T) {
		body := shoptest.Patch(t, shoptest.Fixture(t, "stripe-charge.refunded.json"), func(m map[string]any) {
			m["data"].(map[string]any)["object"].(map[string]any)["payment_intent"] = "pi_00000000000000"
		})
		ev, err := s.Event(t.Context(), nil, body)
		if err != nil || !ev.ReturnAll || ev.OrderID != "pi_00000000000000" || len(ev.Returned) != 2 {
			t.Errorf("%+v %v, want every course line of pi_00000000000000 returned", ev, err)
		}
	})
	t.Run("partial refund: ignored", func(t *testing.T) {
		body := shoptest.Patch(t, shoptest.Fixture(t, "stripe-charge.refunded.json"), func(m map[string]any) {
			o := m["data"].(map[string]any)["object"].(map[string]any)
			o["payment_intent"], o["amount_refunded"], o["refunded"] = "pi_00000000000000", 40, false
		})
		if ev, err := s.Event(t.Context(), nil, body); err != nil || ev.Ignored == "" || ev.ReturnAll {
			t.Errorf("%+v %v, want ignored", ev, err)
		}
	})
	t.Run("other event types: ignored", func(t *testing.T) {
		if ev, err := s.Event(t.Context(), nil, []byte(`{"type":"customer.created","data":{"object":{}}}`)); err != nil || ev.Ignored == "" {
			t.Errorf("%+v %v, want ignored", ev, err)
		}
	})
}

func TestStripeSignature(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeStripe, APIKey: stripeKey, APIURL: "http://127.0.0.1:1", Secrets: []string{"whsec_new_0123456789abcdef", "whsec_old_0123456789abcdef"}})
	body := shoptest.Fixture(t, "stripe-checkout.session.completed.json")
	now := time.Now()
	cases := []struct {
		name string
		h    http.Header
		body []byte
		ok   bool
	}{
		{"new secret", stripeSigned(body, "whsec_new_0123456789abcdef", now), body, true},
		{"old secret while rotating", stripeSigned(body, "whsec_old_0123456789abcdef", now), body, true},
		{"another secret", stripeSigned(body, "whsec_other_0123456789abc", now), body, false},
		{"stale timestamp", stripeSigned(body, "whsec_new_0123456789abcdef", now.Add(-6*time.Minute)), body, false},
		// Finding 8: a timestamp far ahead is refused too; a skewed clock is not.
		{"timestamp 6 min ahead", stripeSigned(body, "whsec_new_0123456789abcdef", now.Add(6*time.Minute)), body, false},
		{"timestamp 1 min ahead", stripeSigned(body, "whsec_new_0123456789abcdef", now.Add(time.Minute)), body, true},
		{"tampered body", stripeSigned(body, "whsec_new_0123456789abcdef", now), bytes.Replace(body, []byte("paid"), []byte("PAID"), 1), false},
		{"unsigned", http.Header{}, body, false},
		{"malformed header", headers(HeaderStripeSignature, "t=x,v1=zz"), body, false},
	}
	for _, c := range cases {
		if err := s.Verify(c.h, c.body, now); (err == nil) != c.ok || (err != nil && !errors.Is(err, ErrSignature)) {
			t.Errorf("%s: %v, want ok=%v", c.name, err, c.ok)
		}
	}
}

// A Stripe-Signature header carries one timestamp. Signed for a day ahead,
// with a fresh t= put first, a captured delivery used to pass: the first t=
// was checked for freshness, the last one verified.
func TestStripeSignatureOneTimestamp(t *testing.T) {
	const whsec = "whsec_new_0123456789abcdef"
	s := mustShop(t, Integration{Type: TypeStripe, APIKey: stripeKey, APIURL: "http://127.0.0.1:1", Secrets: []string{whsec}})
	body := shoptest.Fixture(t, "stripe-checkout.session.completed.json")
	now := time.Now()
	ahead := now.Add(24 * time.Hour)
	sig := func(at time.Time) string { return hex.EncodeToString(webhook.ComputeSignature(at, body, whsec)) }
	for name, header := range map[string]string{
		"fresh t= first, signed a day ahead":  fmt.Sprintf("t=%d,t=%d,v1=%s", now.Unix(), ahead.Unix(), sig(ahead)),
		"signed a day ahead, fresh t= last":   fmt.Sprintf("t=%d,v1=%s,t=%d", ahead.Unix(), sig(ahead), now.Unix()),
		"the same t= twice":                   fmt.Sprintf("t=%d,t=%d,v1=%s", now.Unix(), now.Unix(), sig(now)),
		"no t=":                               "v1=" + sig(now),
		"t= far in the past (integer bounds)": fmt.Sprintf("t=%d,v1=%s", math.MinInt64, sig(time.Unix(math.MinInt64, 0))),
		"signed a day ahead":                  fmt.Sprintf("t=%d,v1=%s", ahead.Unix(), sig(ahead)),
	} {
		if err := s.Verify(headers(HeaderStripeSignature, header), body, now); !errors.Is(err, ErrSignature) {
			t.Errorf("%s: %v, want refused", name, err)
		}
	}
	// Both checks read the same clock and timestamp: signed 10 minutes ago
	// and checked as of then, it passes.
	then := now.Add(-10 * time.Minute)
	if err := s.Verify(headers(HeaderStripeSignature, fmt.Sprintf("t=%d,v1=%s", then.Unix(), sig(then))), body, then); err != nil {
		t.Errorf("signed and checked at the same time: %v", err)
	}
}

// fakeLines is what Coordinator knows of orders, for Returns.
type fakeLines map[string][]fulfillment.Line

func (f fakeLines) Lines(_ context.Context, _, n string) ([]fulfillment.Line, error) {
	if ls, ok := f[n]; ok {
		return ls, nil
	}
	return nil, fmt.Errorf("order %s: %w", n, fulfillment.ErrNotFound)
}

func knownLine(course, mode, email string) fulfillment.Line {
	return fulfillment.Line{CourseID: course, CourseMode: mode, Tasks: []fulfillment.Task{{Kind: "enroll", Ref: fulfillment.Ref{Email: email}}}}
}

// Two participants of one course get two order numbers; a repeat of the
// same seat is one; returns find the known lines and their learners.
func TestPlan(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce, EnrollUnregistered: true})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := Event{OrderID: "9", At: now.Add(-time.Hour), Placed: []Line{
		{CourseID: demoCourse, Mode: "verified", Email: "a@example.com"},
		{CourseID: demoCourse, Mode: "verified", Email: "b@example.com"},
		{CourseID: demoCourse, Mode: "verified", Email: "A@example.com"},
		{CourseID: otherCourse, Mode: "audit", Email: "a@example.com"},
	}}
	var got []string
	for _, o := range s.Orders(ev, "req-1", now) {
		if !o.EnrollUnregistered || o.Integration != "woocommerce" || o.RequestID != "req-1" || !o.OrderPlaced.Equal(ev.At) {
			t.Errorf("order %+v: integration fields not set", o)
		}
		got = append(got, o.OrderNumber+" "+o.CourseID+" "+o.Email)
	}
	want := []string{"woocommerce-9 " + demoCourse + " a@example.com", "woocommerce-9-p2 " + demoCourse + " b@example.com",
		"woocommerce-9 " + otherCourse + " a@example.com"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("orders (-want +got):\n%s", diff)
	}

	known := fakeLines{
		"woocommerce-9":    {knownLine(demoCourse, "verified", "a@example.com"), knownLine(otherCourse, "audit", "a@example.com")},
		"woocommerce-9-p2": {knownLine(demoCourse, "verified", "b@example.com")},
	}
	returns := func(ev Event) []string {
		t.Helper()
		rets, _, err := s.Returns(t.Context(), ev, known, "req-2", now)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range rets {
			out = append(out, r.OrderNumber+" "+r.CourseID+" "+r.CourseMode+" "+r.Email)
		}
		return out
	}
	all := returns(Event{OrderID: "9", ReturnAll: true, Returned: []Line{{CourseID: "course-v1:X+New+1", Mode: "verified", Email: "c@example.com"},
		{CourseID: demoCourse, Mode: "verified"}, {CourseID: demoCourse, Mode: "verified"}, {CourseID: demoCourse, Mode: "verified"}}})
	if diff := cmp.Diff([]string{"woocommerce-9 " + demoCourse + " verified a@example.com", "woocommerce-9 " + otherCourse + " audit a@example.com",
		"woocommerce-9-p2 " + demoCourse + " verified b@example.com", "woocommerce-9 course-v1:X+New+1 verified c@example.com"}, all); diff != "" {
		t.Errorf("whole-order refund (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"woocommerce-9-p2 " + demoCourse + " verified b@example.com"},
		returns(Event{OrderID: "9", Returned: []Line{{CourseID: demoCourse, Email: "b@example.com"}}})); diff != "" {
		t.Errorf("one participant refunded (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"woocommerce-9 " + demoCourse + " verified a@example.com", "woocommerce-9-p2 " + demoCourse + " verified b@example.com"},
		returns(Event{OrderID: "9", Returned: []Line{{CourseID: demoCourse}, {CourseID: demoCourse}}})); diff != "" {
		t.Errorf("both seats of a course refunded without learner (-want +got):\n%s", diff)
	}
	if got := returns(Event{OrderID: "10", Returned: []Line{{CourseID: demoCourse, Mode: "verified"}}}); len(got) != 0 {
		t.Errorf("partial refund of an unknown line: %q, want none (which participant is unknown)", got)
	}
}

// Finding 1: a line item's quantity is the number of seats it pays for;
// learner emails beyond it get no seat and are noted (masked).
func TestSeatsBoundedByQuantity(t *testing.T) {
	check := func(t *testing.T, ev Event, err error, want []string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range ev.Placed {
			got = append(got, l.CourseID+" "+l.Email)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("seats (-want +got):\n%s", diff)
		}
		if !strings.Contains(ev.Note, "no seat") || strings.Contains(ev.Note, "z@example.com") || !strings.Contains(ev.Note, "z***@example.com") {
			t.Errorf("note %q: want the extra emails masked", ev.Note)
		}
	}
	t.Run("woocommerce", func(t *testing.T) {
		s := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts, LearnerEmailField: "Participant email"})
		body := shoptest.Patch(t, wooPaid(t), func(m map[string]any) {
			items := m["line_items"].([]any)
			items[0].(map[string]any)["quantity"] = 1
			items[0].(map[string]any)["meta_data"] = []any{map[string]any{"id": 1, "key": "Participant email", "value": "ana@example.com, z@example.com; y@example.com"}}
			delete(items[1].(map[string]any), "quantity")
			items[1].(map[string]any)["meta_data"] = []any{map[string]any{"id": 2, "key": "Participant email", "value": []any{
				map[string]any{"_value": "cy@example.com"}, map[string]any{"_value": "z@example.com"}}}}
		})
		ev, err := s.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), body)
		check(t, ev, err, []string{demoCourse + " ana@example.com", otherCourse + " cy@example.com"})
	})
	t.Run("shopify", func(t *testing.T) {
		s := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts, LearnerEmailField: "Learner email"})
		body := shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
			it := m["line_items"].([]any)[0].(map[string]any)
			it["quantity"] = 2
			it["properties"] = []any{map[string]any{"name": "Learner email", "value": "a@example.com,b@example.com,z@example.com"}}
		})
		ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/paid"), body)
		check(t, ev, err, []string{demoCourse + " a@example.com", demoCourse + " b@example.com", otherCourse + " jon@example.com"})
	})
	t.Run("stripe", func(t *testing.T) {
		_, url := startStripe(t)
		s := stripeShopFor(t, url, func(in *Integration) { in.LearnerEmailField = "learner_email" })
		body := shoptest.Patch(t, shoptest.Fixture(t, "stripe-checkout.session.completed.json"), func(m map[string]any) {
			m["data"].(map[string]any)["object"].(map[string]any)["metadata"] = map[string]any{"learner_email": "kid@example.com,z@example.com"}
		})
		ev, err := s.Event(t.Context(), nil, body)
		check(t, ev, err, []string{demoCourse + " kid@example.com", otherCourse + " kid@example.com"})
	})
}

// Finding 2: X-Shopify-Topic is not signed. A signed body that is not an
// order (a draft order, a checkout) replayed as orders/paid is refused, and
// an order without financial_status is not paid on any topic.
func TestShopifyTopicNotTrusted(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts})
	var bad *BadEvent
	for name, body := range map[string][]byte{
		"draft order (no financial_status, no order_number)": shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
			delete(m, "financial_status")
			delete(m, "order_number")
			m["status"] = "completed"
		}),
		"checkout (no order_number)": shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { delete(m, "order_number") }),
		"financial_status null":      shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { m["financial_status"] = nil }),
	} {
		for _, topic := range []string{"orders/paid", "orders/updated"} {
			if ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, topic), body); !errors.As(err, &bad) || len(ev.Placed) != 0 {
				t.Errorf("%s as %s: %+v %v, want BadEvent", name, topic, ev, err)
			}
		}
	}
	empty := shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { m["financial_status"] = "" })
	if ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/paid"), empty); err != nil || ev.Ignored == "" || len(ev.Placed) != 0 {
		t.Errorf("orders/paid with empty financial_status: %+v %v, want ignored", ev, err)
	}
	partly := shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { m["financial_status"] = "partially_refunded" })
	if ev, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "orders/updated"), partly); err != nil || len(ev.Placed) != 2 {
		t.Errorf("partially_refunded: %+v %v, want its lines placed", ev, err)
	}
	order := shopifyPaid(t)
	noItems := shoptest.Patch(t, shoptest.Fixture(t, "shopify-refunds-create.json"), func(m map[string]any) { delete(m, "refund_line_items") })
	for name, body := range map[string][]byte{"an order as a refund": order, "refund without refund_line_items": noItems} {
		if _, err := s.Event(t.Context(), headers(HeaderShopifyTopic, "refunds/create"), body); !errors.As(err, &bad) {
			t.Errorf("%s: %v, want BadEvent", name, err)
		}
	}
}

// Finding 3: a whole-order refund before the payment (the event lists the
// order's lines), of a course with several participants, records each
// participant's line under the number the paid order will give it, so that
// none of them is enrolled later.
func TestReturnsUnknownParticipants(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	placed := []Line{{CourseID: demoCourse, Mode: "verified", Email: "c@example.com"}, {CourseID: demoCourse, Mode: "verified", Email: "d@example.com"}}
	rets, _, err := s.Returns(t.Context(), Event{OrderID: "10", ReturnAll: true, Returned: placed}, fakeLines{}, "req", now)
	if err != nil {
		t.Fatal(err)
	}
	var got, want []string
	for _, r := range rets {
		got = append(got, r.OrderNumber+" "+r.CourseID+" "+r.Email)
	}
	for _, o := range s.Orders(Event{OrderID: "10", Placed: placed}, "req", now) {
		want = append(want, o.OrderNumber+" "+o.CourseID+" "+o.Email)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("returns before payment (-paid order's lines +returns):\n%s", diff)
	}
}

// Finding 4: refunding part of a course's seats returns at most that many,
// and none when which ones is unclear (with a note).
func TestReturnsPartOfALine(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeWooCommerce})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	known := fakeLines{
		"woocommerce-9":    {knownLine(demoCourse, "verified", "a@example.com")},
		"woocommerce-9-p2": {knownLine(demoCourse, "verified", "b@example.com")},
		"woocommerce-9-p3": {knownLine(demoCourse, "verified", "c@example.com")},
	}
	rets, note, err := s.Returns(t.Context(), Event{OrderID: "9", Returned: []Line{{CourseID: demoCourse}}}, known, "req", now)
	if err != nil || len(rets) != 0 || !strings.Contains(note, "unclear") {
		t.Errorf("one of three seats refunded, no learner named: %+v %q %v; want none returned and a note", rets, note, err)
	}
	rets, _, err = s.Returns(t.Context(), Event{OrderID: "9", Returned: []Line{{CourseID: demoCourse, Email: "c@example.com"}, {CourseID: demoCourse, Email: "x@example.com"}}}, known, "req", now)
	if err != nil || len(rets) != 1 || rets[0].OrderNumber != "woocommerce-9-p3" {
		t.Errorf("c named, one seat unnamed of two left: %+v %v; want only woocommerce-9-p3", rets, err)
	}

	// Shopify: refund_line_items[].quantity 1 of a line of 3.
	sh := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts, LearnerEmailField: "Learner email"})
	body := shoptest.Patch(t, shoptest.Fixture(t, "shopify-refunds-create.json"), func(m map[string]any) {
		rl := m["refund_line_items"].([]any)[0].(map[string]any)
		rl["quantity"] = 1
		it := rl["line_item"].(map[string]any)
		it["sku"], it["quantity"] = demoCourse, 3
		it["properties"] = []any{map[string]any{"name": "Learner email", "value": "a@example.com,b@example.com,c@example.com"}}
	})
	ev, err := sh.Event(t.Context(), headers(HeaderShopifyTopic, "refunds/create"), body)
	if err != nil || len(ev.Returned) != 0 || !strings.Contains(ev.Note, "1 of 3 units") {
		t.Errorf("Shopify refund of 1 of 3 units: %+v %v; want nothing returned and a note", ev, err)
	}
	whole := shoptest.Patch(t, body, func(m map[string]any) { m["refund_line_items"].([]any)[0].(map[string]any)["quantity"] = 3 })
	ev, err = sh.Event(t.Context(), headers(HeaderShopifyTopic, "refunds/create"), whole)
	if err != nil || len(ev.Returned) != 3 {
		t.Errorf("Shopify refund of the whole line: %+v %v; want its 3 seats", ev, err)
	}
}

// Finding 9: order ids have the platform's shape, or the event is refused
// naming the field: "9002-p2" would land on a participant's line.
func TestOrderIDShapes(t *testing.T) {
	woo := mustShop(t, Integration{Type: TypeWooCommerce, Products: wooProducts})
	sh := mustShop(t, Integration{Type: TypeShopify, Products: wooProducts})
	_, url := startStripe(t)
	st := stripeShopFor(t, url, nil)
	var bad *BadEvent
	for _, c := range []struct {
		name  string
		s     *Shop
		topic string
		h     http.Header
		body  []byte
		field string
	}{
		{"woo participant suffix", woo, "order.updated", nil, shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["id"] = "9002-p2" }), "id"},
		{"woo negative", woo, "order.updated", nil, shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["id"] = -3 }), "id"},
		{"woo leading zero", woo, "order.updated", nil, shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["id"] = "0723" }), "id"},
		{"shopify path", sh, "orders/paid", nil, shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) { m["id"] = "12/../../x?y#z" }), "id"},
		{"shopify refund order_id", sh, "refunds/create", nil, shoptest.Patch(t, shoptest.Fixture(t, "shopify-refunds-create.json"), func(m map[string]any) { m["order_id"] = "12 x" }), "order_id"},
		{"stripe payment intent", st, "", nil, shoptest.Patch(t, shoptest.Fixture(t, "stripe-checkout.session.completed.json"), func(m map[string]any) {
			m["data"].(map[string]any)["object"].(map[string]any)["payment_intent"] = "pi_1/../x"
		}), "payment_intent"},
	} {
		h := c.h
		if c.topic != "" {
			h = headers(HeaderWooTopic, c.topic, HeaderShopifyTopic, c.topic)
		}
		ev, err := c.s.Event(t.Context(), h, c.body)
		if !errors.As(err, &bad) || !strings.Contains(err.Error(), c.field) || len(ev.Placed)+len(ev.Returned) != 0 {
			t.Errorf("%s: %+v %v, want BadEvent naming %s", c.name, ev, err, c.field)
		}
	}
	if ev, err := woo.Event(t.Context(), headers(HeaderWooTopic, "order.updated"), shoptest.Patch(t, wooPaid(t), func(m map[string]any) { m["id"] = "723" })); err != nil || ev.OrderID != "723" {
		t.Errorf("digit string id: %+v %v, want order 723", ev, err)
	}
}

// Finding 10: Stripe has the same bound on seats per event as the others.
func TestStripeMaxSeats(t *testing.T) {
	fake := stripetest.New(stripeKey)
	fake.AddSession(stripetest.Session{ID: "cs_00000000000000", PaymentIntent: "pi_00000000000000", Items: []stripetest.Item{
		{ID: "li_1", PriceID: "price_demo", ProductID: "prod_demo", ProductMetadata: map[string]string{"course_id": demoCourse}, Quantity: 600},
		{ID: "li_2", PriceID: "price_other", ProductID: "prod_other", ProductMetadata: map[string]string{"course_id": otherCourse}, Quantity: 600},
	}})
	s := stripeShopFor(t, stripetest.Start(t, fake).URL, func(in *Integration) { in.LearnerEmailField = "learners" })
	var emails []string
	for i := range 600 {
		emails = append(emails, fmt.Sprintf("l%d@example.com", i))
	}
	body := shoptest.Patch(t, shoptest.Fixture(t, "stripe-checkout.session.completed.json"), func(m map[string]any) {
		m["data"].(map[string]any)["object"].(map[string]any)["metadata"] = map[string]any{"learners": strings.Join(emails, ",")}
	})
	var bad *BadEvent
	if ev, err := s.Event(t.Context(), nil, body); !errors.As(err, &bad) || !strings.Contains(err.Error(), "more than 1000") {
		t.Errorf("1200 seats: %d placed, %v; want BadEvent", len(ev.Placed), err)
	}
}

// H3: a refund that names no learner, of a line no known line gives one for
// (a Shopify refund after the Redis-only tier forgot the order), is noted.
func TestReturnsNamingNobodyNoted(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeStripe})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	rets, note, err := s.Returns(t.Context(), Event{OrderID: "11", ReturnAll: true, Returned: []Line{{CourseID: demoCourse, Mode: "verified"}}}, fakeLines{}, "req", now)
	if err != nil || len(rets) != 1 || !strings.Contains(note, "names no learner") || !strings.Contains(note, "POST /orders/return") {
		t.Errorf("returns %+v, note %q, err %v; want one return and a note that it names no learner", rets, note, err)
	}
	known := fakeLines{s.OrderNumber("11"): {knownLine(demoCourse, "verified", "a@example.com")}}
	if _, note, err := s.Returns(t.Context(), Event{OrderID: "11", ReturnAll: true}, known, "req", now); err != nil || note != "" {
		t.Errorf("note %q, err %v; want none: the known line names the learner", note, err)
	}
}

// M3: course X paid by two line items, alice (the base number) and bob
// (-p2); bob's item is refunded before orders/paid arrives. Numbering the
// refund alone would record it on the base number: alice canceled, bob
// enrolled. Without the order's lines nothing is returned (with a note);
// with them (the event is also the paid order) bob's line is.
func TestRefundBeforeTheOrderNamesWhichParticipant(t *testing.T) {
	s := mustShop(t, Integration{Type: TypeShopify})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	placed := []Line{{Item: "1", CourseID: demoCourse, Mode: "verified", Email: "alice@example.com"},
		{Item: "2", CourseID: demoCourse, Mode: "verified", Email: "bob@example.com"}}
	for name, bob := range map[string]Line{"named": placed[1], "unnamed": {Item: "2", CourseID: demoCourse, Mode: "verified"}} {
		rets, note, err := s.Returns(t.Context(), Event{OrderID: "12", Returned: []Line{bob}}, fakeLines{}, "req", now)
		if err != nil || len(rets) != 0 || !strings.Contains(note, "which participant is unknown") || !strings.Contains(note, "POST /orders/return") {
			t.Errorf("%s: returns %+v, note %q, err %v; want none and a note", name, rets, note, err)
		}
	}
	rets, _, err := s.Returns(t.Context(), Event{OrderID: "12", Placed: placed, Returned: []Line{placed[1]}}, fakeLines{}, "req", now)
	if err != nil || len(rets) != 1 || rets[0].OrderNumber != s.OrderNumber("12")+"-p2" || rets[0].Email != "bob@example.com" {
		t.Errorf("with the order's lines: %+v %v; want bob's line (-p2) only", rets, err)
	}
}
