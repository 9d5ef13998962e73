package shop

import (
	"errors"
	"net/http"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/shop/shoptest"
)

// fuzzEvent reads any body as the shop's event: it may be refused, but only
// with the errors the HTTP layer turns into 400 or 503, and never panics.
func fuzzEvent(t *testing.T, s *Shop, h http.Header, body []byte) {
	ev, err := s.Event(t.Context(), h, body)
	var bad *BadEvent
	switch {
	case err == nil:
		if len(ev.Placed)+len(ev.Returned) > maxSeats {
			t.Fatalf("%d seats from one event", len(ev.Placed)+len(ev.Returned))
		}
		for _, l := range append(ev.Placed, ev.Returned...) {
			if !fulfillment.ValidCourseKey(l.CourseID) || l.Mode == "" {
				t.Fatalf("line %+v: not a course seat", l)
			}
		}
	case errors.As(err, &bad), errors.Is(err, fulfillment.ErrUnavailable):
	default:
		t.Fatalf("unclassified error %T: %v", err, err)
	}
}

func FuzzWooCommerce(f *testing.F) {
	f.Add("order.updated", shoptest.Fixture(f, "woocommerce-order-partially-refunded.wcdocs.json"))
	f.Add("order.created", wooPaid(f))
	f.Add("order.updated", []byte(`{"id":1,"status":"refunded","line_items":[{"id":2,"sku":"a/b/c","meta_data":[{"key":"e","value":[{"_value":"x@y"}]}]}]}`))
	s := mustShop(f, Integration{Type: TypeWooCommerce, Products: wooProducts, LearnerEmailField: "e"})
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		fuzzEvent(t, s, headers(HeaderWooTopic, topic), body)
	})
}

func FuzzShopify(f *testing.F) {
	f.Add("orders/paid", shoptest.Fixture(f, "shopify-orders-paid.json"))
	f.Add("orders/paid", shopifyPaid(f))
	f.Add("refunds/create", shoptest.Fixture(f, "shopify-refunds-create.json"))
	s := mustShop(f, Integration{Type: TypeShopify, Products: wooProducts, LearnerEmailField: "Learner email", AcceptTestOrders: true})
	f.Fuzz(func(t *testing.T, topic string, body []byte) {
		fuzzEvent(t, s, headers(HeaderShopifyTopic, topic), body)
	})
}

func FuzzStripe(f *testing.F) {
	f.Add(shoptest.Fixture(f, "stripe-checkout.session.completed.json"))
	f.Add(shoptest.Fixture(f, "stripe-charge.refunded.json"))
	f.Add([]byte(`{"type":"charge.dispute.closed","livemode":true,"data":{"object":{"id":"dp_1","status":"lost","payment_intent":"pi_00000000000000"}}}`))
	f.Add([]byte(`{"type":"charge.refunded","livemode":true,"data":{"object":{"payment_intent":{"id":"pi_00000000000000"},"refunded":true}}}`))
	_, url := startStripe(f)
	s := stripeShopFor(f, url, nil)
	f.Fuzz(func(t *testing.T, body []byte) {
		fuzzEvent(t, s, nil, body)
	})
}
