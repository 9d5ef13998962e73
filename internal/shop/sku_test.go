package shop

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/shop/shoptest"
)

// A SKU "<run key>@<mode>" (what `coordinator catalog` writes for a mode
// other than course_mode) sells that run in that mode, in WooCommerce and
// Shopify; a bare run key keeps course_mode, and what only looks like the
// form is no course.
func TestSKUWithMode(t *testing.T) {
	tests := []struct {
		sku      string
		want     []string // course, mode; nil: not a course line
		products map[string]Product
	}{
		{sku: demoCourse + "@professional", want: []string{demoCourse, "professional"}},
		{sku: "edX/DemoX/2014@no-id-professional", want: []string{"edX/DemoX/2014", "no-id-professional"}},
		{sku: demoCourse, want: []string{demoCourse, "verified"}},
		{sku: demoCourse + "@Pro fessional"},
		{sku: demoCourse + "@"},
		{sku: "course-v1:edX+DemoX@verified"},
		{sku: demoCourse + "@professional@x"},
		// The products map comes first.
		{sku: demoCourse + "@professional", want: []string{otherCourse, "honor"},
			products: map[string]Product{demoCourse + "@professional": OneItem(otherCourse, "honor")}},
	}
	woo := func(sku string) []byte {
		return shoptest.Patch(t, wooPaid(t), func(m map[string]any) {
			m["line_items"] = []any{map[string]any{"id": 311, "product_id": 7, "sku": sku, "quantity": 1, "meta_data": []any{}}}
		})
	}
	shopify := func(sku string) []byte {
		return shoptest.Patch(t, shopifyPaid(t), func(m map[string]any) {
			items := m["line_items"].([]any)
			items[0].(map[string]any)["sku"] = sku
			m["line_items"] = items[:1]
		})
	}
	for _, tt := range tests {
		t.Run(tt.sku, func(t *testing.T) {
			for _, p := range []struct {
				typ, header, topic string
				body               []byte
			}{
				{TypeWooCommerce, HeaderWooTopic, "order.updated", woo(tt.sku)},
				{TypeShopify, HeaderShopifyTopic, "orders/paid", shopify(tt.sku)},
			} {
				s := mustShop(t, Integration{Type: p.typ, Products: tt.products})
				ev, err := s.Event(t.Context(), headers(p.header, p.topic), p.body)
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, l := range ev.Placed {
					got = append(got, l.CourseID, l.Mode)
				}
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("%s: course and mode (-want +got):\n%s", p.typ, diff)
				}
			}
		})
	}
}
