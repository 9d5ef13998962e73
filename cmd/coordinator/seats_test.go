package main

import (
	"fmt"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
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
				in.waitLineState(t, order, fulfillment.StateEnrolled)
			}
			giveBack := func(order string, user int64, mode string) fulfillment.Line {
				t.Helper()
				if status, _ := in.send(t, "/orders/return", seatReturn(order, user, mode)); status != 200 {
					t.Fatalf("return %s: %d", order, status)
				}
				return in.waitLineState(t, order, fulfillment.StateReturned)
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
