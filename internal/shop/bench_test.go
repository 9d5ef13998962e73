package shop

import (
	"testing"
	"time"
)

// BenchmarkShopifyOrder is the API's cost of one Shopify orders/paid
// delivery (15 KB): verify the signature, read the order, plan its lines.
func BenchmarkShopifyOrder(b *testing.B) {
	s := mustShop(b, Integration{Type: TypeShopify, Products: wooProducts})
	body := shopifyPaid(b)
	h := headers(HeaderShopifyTopic, "orders/paid", HeaderShopifySignature, SignBase64HMAC(body, secret))
	now := time.Now()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if err := s.Verify(h, body, now); err != nil {
			b.Fatal(err)
		}
		ev, err := s.Event(b.Context(), h, body)
		if err != nil || len(s.Orders(ev, "req", now)) != 2 {
			b.Fatal(err)
		}
	}
}

// BenchmarkRefusedDelivery is what an unauthenticated 1 MiB body costs
// before it is refused: one HMAC per secret.
func BenchmarkRefusedDelivery(b *testing.B) {
	s := mustShop(b, Integration{Type: TypeWooCommerce, Secrets: []string{secret, oldSecret}})
	body := make([]byte, 1<<20)
	h := headers(HeaderWooSignature, SignBase64HMAC([]byte("other"), secret))
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if s.Verify(h, body, time.Now()) == nil {
			b.Fatal("verified")
		}
	}
}
