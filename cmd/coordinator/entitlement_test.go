package main

import (
	"fmt"
	"maps"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/entitlement"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/webhooks/webhookstest"
)

// Catalog course UUIDs the entitlement tests sell.
const (
	courseA = "f3c9b0b6-1a2b-4c3d-8e9f-0a1b2c3d4e5f"
	courseB = "0d6a2b5e-7f18-4c29-9a3b-4c5d6e7f8a9b"
)

// entitlementBody is a fulfill (or, without order_placed, a return) of a
// course: an entitlement line.
func entitlementBody(course, order string, user int64) string {
	return fmt.Sprintf(`{"course_uuid":%q,"course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":%d,"email_opt_in":false,"order_number":%q}`,
		course, user, order)
}

func entitlementReturn(course, order string, user int64) string {
	return fmt.Sprintf(`{"course_uuid":%q,"course_mode":"verified","edx_lms_user_id":%d,"order_number":%q}`, course, user, order)
}

// unexpired lists a learner's unexpired entitlements at the fake LMS.
func unexpired(fake *lmstest.Server, user string) []lmstest.Entitlement {
	return slices.DeleteFunc(fake.Entitlements(user), func(e lmstest.Entitlement) bool { return e.ExpiredAt != nil })
}

// The entitlement flow end to end, in both tiers: a course line makes one
// entitlement however often and concurrently it is repeated, and after an
// answer the LMS gave too late; its uuid is recorded and shown; the return
// revokes exactly that entitlement; a return before the fulfill makes the
// fulfill create nothing; a request naming both or neither item is refused.
func TestEntitlements(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			in := startTier(t, ledger, 90000, 10)
			fake := in.lms

			// 20 concurrent repeats: one task, one entitlement.
			var wg sync.WaitGroup
			ids := make([]string, 20)
			for i := range ids {
				wg.Go(func() {
					status, id := in.send(t, "/orders/fulfill", entitlementBody(courseA, "ENT-1", 90000))
					if status != 200 {
						t.Errorf("fulfill: %d %s", status, id)
					}
					ids[i] = id
				})
			}
			wg.Wait()
			if ids[0] == "" || slices.ContainsFunc(ids, func(id string) bool { return id != ids[0] }) {
				t.Fatalf("task ids %v, want one", ids)
			}
			if !strings.HasPrefix(ids[0], entitlement.KindCreate+"_") {
				t.Errorf("task id %s, want an %s_ task", ids[0], entitlement.KindCreate)
			}
			l := in.waitLine(t, "ENT-1", entitlement.StateEntitled)
			ents := unexpired(fake, "learner90000")
			if len(ents) != 1 || ents[0].CourseUUID != courseA || ents[0].OrderNumber != "ENT-1" || ents[0].Mode != "verified" {
				t.Fatalf("entitlements %+v, want one of course A for ENT-1", ents)
			}
			if l.CourseUUID != courseA || l.CourseID != "" || l.Recorded[entitlement.Recorded] != ents[0].UUID || l.DoneAt["entitled_at"] == nil {
				t.Errorf("line %+v, want course A, its entitlement %s and when", l, ents[0].UUID)
			}

			// The LMS makes the entitlement but answers after lms.timeout (2 s):
			// the retry reads it back instead of making a second one.
			fake.SlowEntitlementAnswers(1, 3*time.Second)
			if status, _ := in.send(t, "/orders/fulfill", entitlementBody(courseB, "ENT-2", 90001)); status != 200 {
				t.Fatalf("fulfill ENT-2: %d", status)
			}
			l = in.waitLine(t, "ENT-2", entitlement.StateEntitled)
			if ents := unexpired(fake, "learner90001"); len(ents) != 1 || l.Recorded[entitlement.Recorded] != ents[0].UUID || l.Attempts < 2 {
				t.Errorf("after a lost answer: entitlements %+v, line %+v; want one, recorded, after a second attempt", ents, l)
			}

			// The return revokes the recorded entitlement, and only it: the
			// learner's other entitlement of the same course stays.
			fake.AddEntitlement(lmstest.Entitlement{User: "learner90000", CourseUUID: courseA, Mode: "verified", OrderNumber: "OTHER-SHOP-1"})
			if status, id := in.send(t, "/orders/return", entitlementReturn(courseA, "ENT-1", 90000)); status != 200 || !strings.HasPrefix(id, entitlement.KindRevoke+"_") {
				t.Fatalf("return: %d %s", status, id)
			}
			l = in.waitLine(t, "ENT-1", entitlement.StateRevoked)
			if ents := unexpired(fake, "learner90000"); len(ents) != 1 || ents[0].OrderNumber != "OTHER-SHOP-1" {
				t.Errorf("after the return: unexpired %+v, want only the other order's", ents)
			}
			if l.DoneAt["revoked_at"] == nil || len(l.Tasks) != 2 {
				t.Errorf("returned line %+v, want revoked with both tasks", l)
			}

			// A return before the fulfill: the fulfill is answered and creates nothing.
			if status, _ := in.send(t, "/orders/return", entitlementReturn(courseA, "ENT-3", 90002)); status != 200 {
				t.Fatalf("early return: %d", status)
			}
			in.waitLine(t, "ENT-3", entitlement.StateRevoked)
			if status, _ := in.send(t, "/orders/fulfill", entitlementBody(courseA, "ENT-3", 90002)); status != 200 {
				t.Fatalf("late fulfill: %d", status)
			}
			time.Sleep(500 * time.Millisecond)
			if ents := fake.Entitlements("learner90002"); len(ents) != 0 {
				t.Errorf("a returned line's fulfill made %+v", ents)
			}
			if _, st := in.order(t, "GET", "ENT-3"); len(st.Lines) != 1 || st.Lines[0].State != entitlement.StateRevoked {
				t.Errorf("ENT-3 %+v, want still revoked", st.Lines)
			}

			// Exactly one item per line.
			for _, body := range []string{
				`{"course_id":"course-v1:edX+DemoX+Demo_Course","course_uuid":"` + courseA + `","course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":3,"email_opt_in":false,"order_number":"X"}`,
				`{"course_uuid":"not-a-uuid","course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":3,"email_opt_in":false,"order_number":"X"}`,
			} {
				status, raw := in.post(t, "/orders/fulfill", body)
				if status != http.StatusBadRequest || !strings.Contains(raw, "course_uuid") {
					t.Errorf("fulfill %s: %d %s, want 400 naming course_uuid", body, status, raw)
				}
			}
		})
	}
}

// A subscriber receives an entitlement line's events in order — placed,
// entitled (with the entitlement's uuid), returned, revoked — as for seats,
// in both tiers.
func TestEntitlementEvents(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			sub := webhookstest.New(hookSecretNew)
			signals := fmt.Sprintf("signals:\n  fulfill_entitlement_placed: [%s, webhook.crm]\n  fulfill_entitlement_returned: [%s, webhook.crm]\n  fulfillment_completed: [webhook.crm]\n",
				entitlement.ReceiverCreate, entitlement.ReceiverRevoke)
			in := startHooks(t, ledger, 91000, 5, signals, "webhooks:\n"+webhookYAML("crm", sub.Start(t), hookSecretNew))
			// The create is held 1 s (lms.timeout is 2 s); the return arrives meanwhile.
			in.lms.Script(lmstest.Entitlements, lmstest.Reply{Delay: time.Second})
			if status, _ := in.send(t, "/orders/fulfill", entitlementBody(courseA, "ENT-EV", 91000)); status != 200 {
				t.Fatalf("fulfill: %d", status)
			}
			waitFor(t, "the entitlement call", 20*time.Second, func() bool { return in.lms.Count(lmstest.Entitlements) > 0 })
			if status, _ := in.send(t, "/orders/return", entitlementReturn(courseA, "ENT-EV", 91000)); status != 200 {
				t.Fatalf("return: %d", status)
			}
			in.waitLine(t, "ENT-EV", entitlement.StateRevoked)
			waitFor(t, "four events delivered", 60*time.Second, func() bool { return len(sub.Delivered()) == 4 })
			var got []string
			uuid := ""
			for _, a := range sub.Delivered() {
				got = append(got, event(a))
				if a.Type == fulfillment.SignalLineCompleted && a.Data["state"] == string(entitlement.StateEntitled) {
					uuid, _ = a.Data[entitlement.Recorded].(string)
					if a.Data["kind"] != entitlement.KindCreate || a.Data["course_uuid"] != courseA {
						t.Errorf("completed event %v: want kind %s and the course", a.Data, entitlement.KindCreate)
					}
				}
			}
			want := []string{entitlement.SignalPlaced, "fulfillment_completed:entitled", entitlement.SignalReturned, "fulfillment_completed:revoked"}
			if !slices.Equal(got, want) {
				t.Errorf("events in the order delivered: %v, want %v", got, want)
			}
			if ents := in.lms.Entitlements("learner91000"); len(ents) != 1 || ents[0].UUID != uuid || ents[0].ExpiredAt == nil {
				t.Errorf("entitlements %+v; the event's uuid %q: want the one, revoked", ents, uuid)
			}
			checkSchemas(t, sub.Delivered(), entitlement.SignalPlaced, entitlement.SignalReturned, fulfillment.SignalLineCompleted)
		})
	}
}

// A WooCommerce store selling a bundle (two course runs under one SKU) and a
// program (two courses): a paid order makes a line per item — two seats
// enrolled, two entitlements created — and its refund returns every one of
// them. Both tiers.
func TestShopBundlesAndPrograms(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			fake := lmstest.NewDemo(testSecret)
			fake.Register(92000, "buyer92000", "buyer@example.com")
			fake.AddCourse(otherCourse, lmstest.CourseRun{Name: "Other", Modes: []string{"audit", "verified"}})
			extra := fmt.Sprintf(`integrations:
  - name: woo
    type: woocommerce
    secrets: [%q]
    products:
      "BUNDLE": [{course_id: %q}, {course_id: %q}]
      "PROGRAM": [{course_uuid: %q}, {course_uuid: %q, mode: professional}]
`, wooSecret, demoCourse, otherCourse, courseA, strings.ToUpper(courseB))
			in := startWith(t, "all", fake, ledger, extra)
			e := shopEnv{instance: in}

			paid := shoptest.Patch(t, wooOrder(t, 801, "buyer@example.com"), func(m map[string]any) {
				items := m["line_items"].([]any)
				items[0].(map[string]any)["sku"] = "BUNDLE"
				items[1].(map[string]any)["sku"] = "PROGRAM"
			})
			if a := e.post(t, "woo", paid, wooHeaders("order.updated", paid, wooSecret)); a.Status != 200 || len(a.Lines) != 4 {
				t.Fatalf("paid order: %d, %d lines (%+v), want 200 and 4", a.Status, len(a.Lines), a)
			}
			want := map[string]fulfillment.State{demoCourse: fulfillment.StateEnrolled, otherCourse: fulfillment.StateEnrolled,
				courseA: entitlement.StateEntitled, courseB: entitlement.StateEntitled}
			in.waitLines(t, "woo-801", want)
			ents := unexpired(fake, "buyer92000")
			modes := map[string]string{}
			for _, e := range ents {
				modes[e.CourseUUID] = e.Mode
			}
			if len(ents) != 2 || modes[courseA] != "verified" || modes[courseB] != "professional" {
				t.Errorf("entitlements %+v, want courses A (verified) and B (professional)", ents)
			}

			refunded := shoptest.Patch(t, paid, func(m map[string]any) { m["status"] = "refunded" })
			if a := e.post(t, "woo", refunded, wooHeaders("order.updated", refunded, wooSecret)); a.Status != 200 || len(a.Lines) != 4 {
				t.Fatalf("refund: %d, %d lines, want 200 and 4", a.Status, len(a.Lines))
			}
			in.waitLines(t, "woo-801", map[string]fulfillment.State{demoCourse: fulfillment.StateReturned,
				otherCourse: fulfillment.StateReturned, courseA: entitlement.StateRevoked, courseB: entitlement.StateRevoked})
			if ents := unexpired(fake, "buyer92000"); len(ents) != 0 {
				t.Errorf("after the refund: %+v unexpired, want none", ents)
			}
			if en, ok := fake.Enrollment("buyer92000", otherCourse); !ok || en.IsActive {
				t.Errorf("the bundle's second run after the refund: %+v, want inactive", en)
			}
		})
	}
}

// waitLines waits until each of the order's lines, by item, is in its state.
func (in *instance) waitLines(t *testing.T, order string, want map[string]fulfillment.State) {
	t.Helper()
	var last orderStatus
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		_, st := in.order(t, "GET", order)
		last = st
		got := map[string]fulfillment.State{}
		for _, l := range st.Lines {
			got[l.Item()] = l.State
		}
		if maps.Equal(got, want) {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("order %s: lines %+v, want %v", order, last.Lines, want)
}

// Returned stays returned in the Redis tier after worker.retention: the
// line's return is kept for worker.return_retention, so a redelivery of the
// order long after enrolls nobody — a seat and an entitlement line alike.
func TestReturnOutlivesRetention(t *testing.T) {
	t.Parallel()
	rdb, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, 93000, 2)
	cfg := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, "")
	raw, _ := os.ReadFile(cfg)
	withRetention := strings.Replace(string(raw), "worker:\n", "worker:\n  retention: 2s\n  return_retention: 1h\n", 1)
	if err := os.WriteFile(cfg, []byte(withRetention), 0o600); err != nil {
		t.Fatal(err)
	}
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, "all", cfg)

	for _, l := range []struct{ order, place, ret string }{
		{"RET-SEAT", orderBody("RET-SEAT", 93000, ""), returnBody("RET-SEAT", 93000)},
		{"RET-ENT", entitlementBody(courseA, "RET-ENT", 93001), entitlementReturn(courseA, "RET-ENT", 93001)},
	} {
		if status, _ := in.send(t, "/orders/fulfill", l.place); status != 200 {
			t.Fatalf("%s fulfill: %d", l.order, status)
		}
		if status, _ := in.send(t, "/orders/return", l.ret); status != 200 {
			t.Fatalf("%s return: %d", l.order, status)
		}
	}
	in.waitLine(t, "RET-SEAT", fulfillment.StateReturned)
	in.waitLine(t, "RET-ENT", entitlement.StateRevoked)
	// Past worker.retention, asynq's janitor deletes the fulfillments (it
	// runs every few seconds); the returns stay.
	for _, order := range []string{"RET-SEAT", "RET-ENT"} {
		waitFor(t, order+"'s fulfillment forgotten", 30*time.Second, func() bool {
			status, st := in.order(t, "GET", order)
			return status == 200 && len(st.Lines) == 1 && len(st.Lines[0].Tasks) == 1
		})
	}
	for _, body := range []string{orderBody("RET-SEAT", 93000, ""), entitlementBody(courseA, "RET-ENT", 93001)} {
		if status, _ := in.send(t, "/orders/fulfill", body); status != 200 {
			t.Fatalf("redelivery: %d", status)
		}
	}
	enrolls, creates := fake.Count(lmstest.Enroll), fake.Count(lmstest.Entitlements)
	// The redeliveries are refused at the queue (their line's return
	// exists); a worker given one would run it within a second.
	time.Sleep(3 * time.Second)
	for _, order := range []string{"RET-SEAT", "RET-ENT"} {
		if _, st := in.order(t, "GET", order); len(st.Lines) != 1 || (st.Lines[0].State != fulfillment.StateReturned && st.Lines[0].State != entitlement.StateRevoked) {
			t.Errorf("%s after the redelivery: %+v, want still returned", order, st.Lines)
		}
	}
	if fake.Count(lmstest.Enroll) != enrolls || fake.Count(lmstest.Entitlements) != creates {
		t.Errorf("the redeliveries called the LMS")
	}
	if e, ok := fake.Enrollment("learner93000", demoCourse); ok && e.IsActive {
		t.Errorf("the returned seat was enrolled again after worker.retention: %+v", e)
	}
	if ents := unexpired(fake, "learner93001"); len(ents) != 0 {
		t.Errorf("the revoked entitlement was made again after worker.retention: %+v", ents)
	}
}
