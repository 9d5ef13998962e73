package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/shop/shoptest"
)

// seatOrder is a fulfill of the demo course in mode for learner user.
func seatOrder(order string, user int64, mode string) string {
	return fmt.Sprintf(`{"course_id":%q,"course_mode":%q,"order_placed":1714566902,"edx_lms_user_id":%d,"email_opt_in":false,"order_number":%q}`,
		demoCourse, mode, user, order)
}

func seatReturn(order string, user int64, mode string) string {
	return fmt.Sprintf(`{"course_id":%q,"course_mode":%q,"edx_lms_user_id":%d,"order_number":%q}`, demoCourse, mode, user, order)
}

// A seat held by two orders (a repurchase, a gift to oneself): returning
// one leaves the learner enrolled, the return done with a note naming the
// other order; returning both unenrolls. When the remaining order bought
// another mode, the enrollment moves to it. Both tiers.
func TestSeatHeldByTwoOrders(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			in := startTier(t, ledger, 94000, 5)
			enrollment := func(user int64) lmstest.Enrollment {
				e, _ := in.lms.Enrollment(fmt.Sprintf("learner%d", user), demoCourse)
				return e
			}
			place := func(order string, user int64, mode string) {
				t.Helper()
				if status, _ := in.send(t, "/orders/fulfill", seatOrder(order, user, mode)); status != 200 {
					t.Fatalf("fulfill %s: %d", order, status)
				}
				in.waitLine(t, order, fulfillment.StateEnrolled)
			}
			giveBack := func(order string, user int64, mode string) fulfillment.Line {
				t.Helper()
				if status, _ := in.send(t, "/orders/return", seatReturn(order, user, mode)); status != 200 {
					t.Fatalf("return %s: %d", order, status)
				}
				return in.waitLine(t, order, fulfillment.StateReturned)
			}

			// Same mode twice: one return keeps the seat, the second takes it.
			place("TWO-A", 94000, "verified")
			place("TWO-B", 94000, "verified")
			l := giveBack("TWO-A", 94000, "verified")
			if e := enrollment(94000); !e.IsActive || e.Mode != "verified" {
				t.Errorf("after one of two returns: %+v, want still enrolled in verified", e)
			}
			if note := l.Recorded["note"]; !strings.Contains(note, "seat still held by TWO-B") {
				t.Errorf("returned line %+v: want the note naming TWO-B", l)
			}
			giveBack("TWO-B", 94000, "verified")
			if e := enrollment(94000); e.IsActive {
				t.Errorf("after both returns: %+v, want unenrolled", e)
			}

			// Different modes: returning the professional order leaves the
			// learner in the verified one's mode.
			place("MODE-V", 94001, "verified")
			place("MODE-P", 94001, "professional")
			if e := enrollment(94001); !e.IsActive || e.Mode != "professional" {
				t.Fatalf("after the second order: %+v, want professional", e)
			}
			giveBack("MODE-P", 94001, "professional")
			if e := enrollment(94001); !e.IsActive || e.Mode != "verified" {
				t.Errorf("after returning the professional order: %+v, want enrolled in verified", e)
			}

			// Another learner's line of the same course holds nothing of this one's.
			place("OTHER-1", 94002, "verified")
			place("OTHER-2", 94003, "verified")
			giveBack("OTHER-1", 94002, "verified")
			if e := enrollment(94002); e.IsActive {
				t.Errorf("another learner's line kept this one's seat: %+v", e)
			}
		})
	}
}

// The shop story: a buyer who paid twice for the same course in a
// WooCommerce store (the learner named by email, in two spellings) keeps the
// seat when one order is refunded, and loses it when both are. Both tiers.
func TestShopSeatHeldByTwoOrders(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			fake := lmstest.NewDemo(testSecret)
			fake.Register(95000, "twice95000", "twice@example.com")
			in := startWith(t, "all", fake, ledger, fmt.Sprintf("integrations:\n  - {name: woo, type: woocommerce, secrets: [%q]}\n", wooSecret))
			e := shopEnv{instance: in}
			order := func(id int, email string) []byte {
				return shoptest.Patch(t, wooOrder(t, id, email), func(m map[string]any) {
					m["line_items"] = m["line_items"].([]any)[:1] // the demo course only
				})
			}
			deliver := func(body []byte) {
				t.Helper()
				if a := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret)); a.Status != 200 {
					t.Fatalf("delivery: %d %+v", a.Status, a)
				}
			}
			first, second := order(951, "twice@example.com"), order(952, "Twice@Example.COM")
			deliver(first)
			deliver(second)
			in.waitLine(t, "woo-951", fulfillment.StateEnrolled)
			in.waitLine(t, "woo-952", fulfillment.StateEnrolled)
			deliver(shoptest.Patch(t, first, func(m map[string]any) { m["status"] = "refunded" }))
			l := in.waitLine(t, "woo-951", fulfillment.StateReturned)
			if en, _ := fake.Enrollment("twice95000", demoCourse); !en.IsActive {
				t.Errorf("after one of two refunds: %+v, want still enrolled", en)
			}
			if !strings.Contains(l.Recorded["note"], "seat still held by woo-952") {
				t.Errorf("refunded line %+v: want the note naming woo-952", l)
			}
			deliver(shoptest.Patch(t, second, func(m map[string]any) { m["status"] = "refunded" }))
			in.waitLine(t, "woo-952", fulfillment.StateReturned)
			if en, _ := fake.Enrollment("twice95000", demoCourse); en.IsActive {
				t.Errorf("after both refunds: %+v, want unenrolled", en)
			}
		})
	}
}
