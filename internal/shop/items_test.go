package shop

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Stripe product metadata names one run, several (a bundle) or courses (a
// program); what is neither a run key nor a course uuid is left out.
func TestStripeMetadataItems(t *testing.T) {
	const u1, u2 = "f3c9b0b6-1a2b-4c3d-8e9f-0a1b2c3d4e5f", "0d6a2b5e7f184c299a3b4c5d6e7f8a9b"
	tests := []struct {
		name string
		meta map[string]string
		want []Item
	}{
		{"one run", map[string]string{"course_id": demoCourse, "course_mode": "verified"},
			[]Item{{CourseID: demoCourse, Mode: "verified"}}},
		{"a bundle", map[string]string{"course_ids": demoCourse + ", " + otherCourse + ",not a key"},
			[]Item{{CourseID: demoCourse}, {CourseID: otherCourse}}},
		{"a program", map[string]string{"course_uuids": u1 + "," + u2, "course_mode": "professional"},
			[]Item{{CourseUUID: u1, Mode: "professional"}, {CourseUUID: "0d6a2b5e-7f18-4c29-9a3b-4c5d6e7f8a9b", Mode: "professional"}}},
		{"nothing", map[string]string{"course_uuids": "nope", "course_ids": ""}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, ok := metadataProduct(tt.meta)
			if ok != (tt.want != nil) {
				t.Fatalf("ok %v, want %v", ok, tt.want != nil)
			}
			if diff := cmp.Diff(tt.want, p.Items); diff != "" {
				t.Errorf("items (-want +got):\n%s", diff)
			}
		})
	}
}

// A paid line item of a bundle is a line per run; refunding that line item
// (Shopify refund_line_items) returns every one of them.
func TestBundleLineItemRefundReturnsEveryLine(t *testing.T) {
	s, err := New(Integration{Name: "shopify", Type: TypeShopify, Secrets: []string{"x"}, Site: "default", OrderPrefix: "S-",
		CourseMode: "verified", Products: map[string]Product{"BUNDLE": {Items: []Item{{CourseID: demoCourse}, {CourseID: otherCourse, Mode: "audit"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	item := shopifyItem{SKU: "BUNDLE", Quantity: 1}
	lines, _, err := shopify{s}.lines(item, "ann@example.com", true)
	if err != nil || len(lines) != 2 {
		t.Fatalf("lines %+v, %v: want one per run", lines, err)
	}
	now := time.Now()
	orders := s.Orders(Event{OrderID: "9", Placed: lines, At: now}, "req", now)
	if len(orders) != 2 || orders[0].OrderNumber != "S-9" || orders[1].OrderNumber != "S-9" || orders[1].CourseMode != "audit" {
		t.Fatalf("orders %+v: want both runs in order S-9, the second in audit", orders)
	}
	known := lineReader{"S-9": {{CourseID: demoCourse, CourseMode: "verified", State: fulfillment.StateEnrolled},
		{CourseID: otherCourse, CourseMode: "audit", State: fulfillment.StateEnrolled}}}
	refund, _, _ := shopify{s}.lines(item, "", false)
	rets, note, err := s.Returns(context.Background(), Event{OrderID: "9", Returned: refund, At: now}, known, "req", now)
	if err != nil || len(rets) != 2 {
		t.Fatalf("returns %+v (%q, %v): want both runs", rets, note, err)
	}
}

// lineReader serves an order's known lines.
type lineReader map[string][]fulfillment.Line

func (r lineReader) Lines(_ context.Context, _, order string) ([]fulfillment.Line, error) {
	if ls, ok := r[order]; ok {
		return ls, nil
	}
	return nil, fulfillment.ErrNotFound
}
