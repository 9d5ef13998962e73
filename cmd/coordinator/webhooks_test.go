package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
	"github.com/openedx/coordinator/internal/wcorders/wcorderstest"
	"github.com/openedx/coordinator/internal/webhooks/webhookstest"
)

// Two Standard Webhooks secrets: the subscriber's new one and its old one,
// both listed while it rotates.
const (
	hookSecretNew   = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	hookSecretOld   = "whsec_dGhpcyBpcyB0aGUgb2xkIHNlY3JldCwgMzIgYnl0ZXM="
	hookSecretOther = "whsec_c29tZWJvZHkgZWxzZSdzIHNlY3JldCwgMzIgYnl0ZXM="
)

// hookReceivers routes every signal of a line to the LMS flows and to the
// subscribers named.
func hookSignals(subs ...string) string {
	list := func(first string) string { return "[" + strings.Join(append([]string{first}, subs...), ", ") + "]" }
	var hooks []string
	hooks = append(hooks, subs...)
	return fmt.Sprintf("signals:\n  fulfill_order_placed: %s\n  fulfill_order_returned: %s\n  fulfillment_completed: [%s]\n",
		list("lms.fulfill_order_placed_send_enroll_in_course"), list("lms.fulfill_order_returned_send_unenroll_in_course"),
		strings.Join(hooks, ", "))
}

// startHooks runs `coordinator all` (with the ledger when asked) against a
// fake LMS with learners from..from+n-1, with the signal map replaced by
// signalsYAML and extra YAML appended.
func startHooks(t *testing.T, ledger bool, from int64, n int, signalsYAML, extra string) *instance {
	t.Helper()
	rdb, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, from, n)
	if ledger {
		extra += databaseYAML(pgtest.Schema(t))
	}
	path := hookConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, signalsYAML, extra)
	if ledger {
		mustRunCmd(t, path, nil, "migrate")
	}
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, "all", path)
	return in
}

// hookConfig is testConfig with its signal map replaced by signalsYAML.
func hookConfig(t *testing.T, redisURL, lmsURL, queue, signalsYAML, extra string) string {
	t.Helper()
	path := testConfig(t, redisURL, lmsURL, queue, extra)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.Replace(string(raw), "signals:\n  fulfill_order_placed: [lms.fulfill_order_placed_send_enroll_in_course]\n", signalsYAML, 1)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// webhookYAML is one subscriber's entry.
func webhookYAML(name, url string, secrets ...string) string {
	return fmt.Sprintf("  - {name: %s, url: %q, secrets: [%s], timeout: 2s}\n", name, url, `"`+strings.Join(secrets, `", "`)+`"`)
}

// event names a delivery as the subscriber reads it: the type, and for a
// completion the state it reports.
func event(a webhookstest.Attempt) string {
	if a.Type == fulfillment.SignalLineCompleted {
		return fmt.Sprintf("%s:%v", a.Type, a.Data["state"])
	}
	return a.Type
}

// The life of a line, seen by a subscriber that verifies every signature
// with its own implementation: its events arrive in order (placed, enrolled,
// returned, returned) although the placed event fails twice first and the
// return is sent while the enrollment is on its way; the failed event is one
// delivery with the same webhook-id three times; every delivery verifies
// with the old secret and with the new one (rotation), not with another;
// the line's state is never a delivery's, and GET /orders/{n} lists each
// delivery under its line.
func TestWebhookDeliveries(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			sub := webhookstest.New(hookSecretOld)
			sub.Reply(func(a webhookstest.Attempt) int {
				if a.Type == fulfillment.SignalOrderPlaced && a.N <= 2 {
					return 500
				}
				return 200
			})
			in := startHooks(t, ledger, 70000, 10, hookSignals("webhook.crm"),
				"webhooks:\n"+webhookYAML("crm", sub.Start(t), hookSecretNew, hookSecretOld))

			// The LMS holds the enrollment 1 s (lms.timeout is 2 s); the return
			// arrives meanwhile.
			in.lms.Script(lmstest.Enroll, lmstest.Reply{Delay: time.Second})
			if status, _ := in.send(t, "/orders/fulfill", orderBody("HOOK-1", 70000, "")); status != 200 {
				t.Fatalf("fulfill: %d", status)
			}
			waitFor(t, "the enrollment call", 20*time.Second, func() bool { return in.lms.Count(lmstest.Enroll) > 0 })
			if status, _ := in.send(t, "/orders/return", returnBody("HOOK-1", 70000)); status != 200 {
				t.Fatalf("return: %d", status)
			}
			// The line is enrolled, then returned, without waiting for the
			// subscriber, which has not taken the first event yet.
			if l := in.lineState(t, "HOOK-1"); l.State != fulfillment.StateReturned || l.DoneAt["enrolled_at"] == nil {
				t.Fatalf("line %+v, want enrolled then returned", l)
			}
			waitFor(t, "four events delivered", 60*time.Second, func() bool { return len(sub.Delivered()) == 4 })

			var got []string
			for _, a := range sub.Delivered() {
				got = append(got, event(a))
			}
			want := []string{"fulfill_order_placed", "fulfillment_completed:enrolled", "fulfill_order_returned", "fulfillment_completed:returned"}
			if !slices.Equal(got, want) {
				t.Errorf("events in the order delivered: %v, want %v", got, want)
			}
			attempts := sub.Attempts()
			ids := map[string]int{}
			for _, a := range attempts {
				ids[a.ID]++
				if a.Verified != nil {
					t.Errorf("attempt %s does not verify: %v", a.ID, a.Verified)
				}
				now := time.Now()
				if err := webhookstest.Verify(hookSecretNew, a.Header, a.Body, now); err != nil {
					t.Errorf("attempt %s with the new secret: %v", a.ID, err)
				}
				if err := webhookstest.Verify(hookSecretOther, a.Header, a.Body, now); err == nil {
					t.Errorf("attempt %s verifies with a secret it was not signed with", a.ID)
				}
				if !strings.HasPrefix(a.ID, "msg_") {
					t.Errorf("webhook-id %q, want msg_...", a.ID)
				}
			}
			if placed := attempts[0]; placed.Type != fulfillment.SignalOrderPlaced || ids[placed.ID] != 3 {
				t.Errorf("first attempt %s %s: %d attempts with its webhook-id, want the placed event 3 times", placed.Type, placed.ID, ids[placed.ID])
			}
			if len(ids) != 4 || len(attempts) != 6 {
				t.Errorf("%d webhook-ids in %d attempts, want 4 in 6", len(ids), len(attempts))
			}
			checkSchemas(t, sub.Delivered(), "fulfill_order_placed", "fulfill_order_returned", "fulfillment_completed")
			if page := adminPage(t, in, "/admin/orders/default/HOOK-1"); !strings.Contains(page, "webhook.crm") ||
				!strings.Contains(page, "fulfillment_completed:enroll:enrolled") {
				t.Errorf("the order's admin page does not list the deliveries with their events")
			}

			waitFor(t, "the deliveries listed as delivered", 10*time.Second, func() bool {
				_, st := in.order(t, "GET", "HOOK-1")
				n := 0
				for _, task := range st.Lines[0].Tasks {
					if task.Kind == "webhook.crm" && task.State == fulfillment.StateDone {
						n++
					}
				}
				return n == 4
			})
			_, st := in.order(t, "GET", "HOOK-1")
			l := st.Lines[0]
			if l.State != fulfillment.StateReturned || len(l.Tasks) != 6 {
				t.Errorf("line %s with %d tasks, want returned with 2 flows and 4 deliveries", l.State, len(l.Tasks))
			}
			for _, task := range l.Tasks {
				if task.Kind == "webhook.crm" && (task.Event == "" || !strings.HasPrefix(task.TaskID, "webhook.crm_")) {
					t.Errorf("delivery %+v: want its event and a webhook.crm_ task id", task)
				}
				if task.Event == "fulfill_order_placed" && task.Attempts < 3 {
					t.Errorf("placed delivery %+v: want 3 attempts or more", task)
				}
			}
		})
	}
}

// A subscriber that answers 410 is attempted once per event and its
// deliveries fail; one that is down never turns a fulfill into a 503, and
// neither changes the line's state.
func TestWebhookGoneAndDown(t *testing.T) {
	t.Parallel()
	gone := webhookstest.New(hookSecretNew)
	gone.Reply(func(webhookstest.Attempt) int { return 410 })
	in := startHooks(t, false, 71000, 10, hookSignals("webhook.gone", "webhook.down"),
		"webhooks:\n"+webhookYAML("gone", gone.Start(t), hookSecretNew)+webhookYAML("down", "http://127.0.0.1:1/hooks", hookSecretNew))
	if status, _ := in.send(t, "/orders/fulfill", orderBody("GONE-1", 71000, "")); status != 200 {
		t.Fatalf("fulfill with a subscriber down: %d, want 200", status)
	}
	if l := in.lineState(t, "GONE-1"); l.State != fulfillment.StateEnrolled {
		t.Fatalf("line %+v, want enrolled", l)
	}
	var tasks map[string]fulfillment.Task
	waitFor(t, "both deliveries to the gone subscriber to fail", 30*time.Second, func() bool {
		_, st := in.order(t, "GET", "GONE-1")
		tasks = map[string]fulfillment.Task{}
		for _, task := range st.Lines[0].Tasks {
			tasks[task.Kind+" "+task.Event] = task
		}
		return tasks["webhook.gone fulfill_order_placed"].State == fulfillment.StateFailed &&
			tasks["webhook.gone fulfillment_completed:enroll:enrolled"].State == fulfillment.StateFailed
	})
	for _, a := range gone.Attempts() {
		if a.N != 1 {
			t.Errorf("webhook-id %s attempted %d times after a 410, want once", a.ID, a.N)
		}
	}
	if task := tasks["webhook.gone fulfill_order_placed"]; !strings.Contains(task.LastError, "410") {
		t.Errorf("gone delivery %+v: want the 410 in last_error", task)
	}
	waitFor(t, "the down subscriber's delivery to fail for good", 30*time.Second, func() bool {
		_, st := in.order(t, "GET", "GONE-1")
		for _, task := range st.Lines[0].Tasks {
			if task.Kind == "webhook.down" && task.Event == "fulfill_order_placed" {
				tasks["down"] = task
				return task.State == fulfillment.StateFailed
			}
		}
		return false
	})
	if e := tasks["down"].LastError; !strings.Contains(e, "webhook.down") && !strings.Contains(e, "down") {
		t.Errorf("down delivery's last_error %q: want the subscriber named", e)
	}
	if _, st := in.order(t, "GET", "GONE-1"); st.Lines[0].State != fulfillment.StateEnrolled {
		t.Errorf("line %s, want enrolled whatever its deliveries did", st.Lines[0].State)
	}
}

// 1,000 events to a subscriber that takes 200 ms each, two at a time, do not
// hold up enrollments: every one of 500 orders is enrolled while most of
// their events still wait for the subscriber, which never holds more than
// its max_concurrency. The figures are logged, not asserted.
func TestSlowSubscriber(t *testing.T) {
	t.Parallel()
	const n = 500
	sub := webhookstest.New(hookSecretNew)
	sub.SetLatency(200 * time.Millisecond)
	in := startHooks(t, false, 73000, n, hookSignals("webhook.slow"), "webhooks:\n"+
		fmt.Sprintf("  - {name: slow, url: %q, secrets: [%q], max_concurrency: 2}\n", sub.Start(t), hookSecretNew))
	start := time.Now()
	var wg sync.WaitGroup
	users := learners(73000, n)
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < n; i += 8 {
				if status, _ := in.send(t, "/orders/fulfill", orderBody(fmt.Sprintf("SLOW-%d", users[i]), users[i], "")); status != 200 {
					t.Errorf("fulfill %d: %d", users[i], status)
				}
			}
		})
	}
	wg.Wait()
	accepted := time.Since(start)
	if missing := waitAllEnrolled(in.lms, users, 3*time.Minute); len(missing) > 0 {
		t.Fatalf("%d learners not enrolled, e.g. %d", len(missing), missing[0])
	}
	enrolled := time.Since(start)
	delivered := len(sub.Delivered())
	t.Logf("%d orders accepted in %v, all enrolled after %v; by then %d of %d events delivered", n, accepted, enrolled, delivered, 2*n)
	if delivered >= 2*n {
		t.Errorf("all %d events were delivered before the last enrollment: nothing shows enrollments did not wait", delivered)
	}
	if m := sub.MaxInFlight(); m > 2 {
		t.Errorf("subscriber held %d deliveries at once, want at most max_concurrency 2", m)
	}
	waitFor(t, "more events delivered after the enrollments", 30*time.Second, func() bool { return len(sub.Delivered()) > delivered })
}

// adminPage reads an admin page with the admin JWT.
func adminPage(t *testing.T, in *instance, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, in.base+path, nil)
	req.Header.Set("Authorization", "JWT "+adminToken(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", path, resp.StatusCode)
	}
	return string(b)
}

// config check lists the subscribers without their secrets, a URL's
// credentials or query, or a header's value; a webhook.<name> receiver
// without its webhooks: entry is refused.
func TestConfigCheckWebhooks(t *testing.T) {
	t.Parallel()
	path := testConfig(t, queuetest.URL(), "http://127.0.0.1:1", queuetest.Name(),
		"  fulfillment_completed: [webhook.crm]\nwebhooks:\n"+
			`  - {name: crm, url: "https://user:pw@127.0.0.1:9/h?token=tok123", secrets: ["${CRM}", "`+hookSecretOld+`"], headers: {Authorization: "Bearer hdr456"}}`+"\n")
	env := map[string]string{"CRM": hookSecretNew}
	out, err := runCmd(t, path, env, "config", "check")
	if err != nil {
		t.Fatalf("config check: %v", err)
	}
	if !strings.Contains(out, "fulfillment_completed:\n    - webhook.crm") || !strings.Contains(out, "webhook.crm: url https://127.0.0.1:9/h, 2 secret(s)") ||
		!strings.Contains(out, "headers [Authorization]") {
		t.Errorf("config check printed:\n%s\nwant the subscriber listed and connected", out)
	}
	for _, secret := range []string{hookSecretNew, hookSecretOld, "tok123", "hdr456", "pw@"} {
		if strings.Contains(out, secret) {
			t.Errorf("config check shows %q:\n%s", secret, out)
		}
	}
	bad := testConfig(t, queuetest.URL(), "http://127.0.0.1:1", queuetest.Name(), "  fulfillment_completed: [webhook.nope]\n")
	if _, err := runCmd(t, bad, nil, "config", "check"); err == nil || !strings.Contains(err.Error(), `signals.fulfillment_completed: unknown receiver "webhook.nope"`) {
		t.Errorf("webhook.nope without a webhooks: entry: %v, want it refused", err)
	}
}

// With the ledger, a delivery Redis lost (flushed before any worker ran) is
// queued again by the reconciler, like any task, and delivered once.
func TestReconcilerRequeuesDelivery(t *testing.T) {
	t.Parallel()
	srv := queuetest.StartServer(t)
	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, 75000, 1)
	sub := webhookstest.New(hookSecretNew)
	path := hookConfig(t, srv.URL(), lmstest.Start(t, fake).URL, queuetest.Name(), hookSignals("webhook.crm"),
		"webhooks:\n"+webhookYAML("crm", sub.Start(t), hookSecretNew)+databaseYAML(pgtest.Schema(t)))
	mustRunCmd(t, path, nil, "migrate")
	in := &instance{base: startRun(t, "api", path)} // no worker yet: the tasks stay queued
	if status, _ := in.send(t, "/orders/fulfill", orderBody("LOST-1", 75000, "")); status != 200 {
		t.Fatalf("fulfill: %d", status)
	}
	opt, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil { // a private server: nobody else's data
		t.Fatal(err)
	}
	startRun(t, "worker", path)
	waitFor(t, "the placed and completed events delivered", 60*time.Second, func() bool { return len(sub.Delivered()) == 2 })
	if got := []string{event(sub.Delivered()[0]), event(sub.Delivered()[1])}; got[0] != "fulfill_order_placed" || got[1] != "fulfillment_completed:enrolled" {
		t.Errorf("events %v, want placed then enrolled", got)
	}
	for _, a := range sub.Attempts() {
		if a.N != 1 {
			t.Errorf("event %s attempted %d times, want once", a.Type, a.N)
		}
	}
}

// `coordinator webhooks ping NAME` sends one signed test event now and says
// how the subscriber answered.
func TestWebhookPing(t *testing.T) {
	t.Parallel()
	sub := webhookstest.New(hookSecretNew)
	path := testConfig(t, queuetest.URL(), "http://127.0.0.1:1", queuetest.Name(),
		"  fulfillment_completed: [webhook.crm, webhook.gone]\nwebhooks:\n"+webhookYAML("crm", sub.Start(t), hookSecretNew)+
			webhookYAML("gone", "http://127.0.0.1:1/hooks", hookSecretNew))
	out, err := runCmd(t, path, nil, "webhooks", "ping", "crm")
	if err != nil || !strings.Contains(out, "webhook.crm: delivered (webhook-id msg_") {
		t.Fatalf("ping: %q %v", out, err)
	}
	if got := sub.Delivered(); len(got) != 1 || got[0].Type != "ping" || got[0].Verified != nil || got[0].Data["subscriber"] != "crm" {
		t.Errorf("subscriber got %+v, want one verified ping", got)
	}
	if _, err := runCmd(t, path, nil, "webhooks", "ping", "gone"); err == nil || !strings.Contains(err.Error(), "deliver to gone") {
		t.Errorf("ping of a subscriber that is down: %v, want its failure", err)
	}
	if _, err := runCmd(t, path, nil, "webhooks", "ping", "nope"); err == nil || !strings.Contains(err.Error(), "no such subscriber") {
		t.Errorf("ping of an unknown subscriber: %v", err)
	}
}

// The whole path of a WooCommerce order: the shop's signed webhook places
// its two course lines, both are enrolled, and woocommerce.complete_order
// marks the order completed in the store exactly once — also after the shop
// redelivers the order; a subscriber sees the lines' events meanwhile.
func TestWooCommerceOrderCompleted(t *testing.T) {
	t.Parallel()
	rdb, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, 76000, 1)
	fake.AddCourse(otherCourse, lmstest.CourseRun{Name: "Other", Modes: []string{"audit", "verified", "professional"}})
	fake.SetLatency(20 * time.Millisecond) // the two enrollments overlap
	store := wcorderstest.New("ck_e2e", "cs_e2e_secret")
	storeURL := httptest.NewServer(store)
	t.Cleanup(storeURL.Close)
	sub := webhookstest.New(hookSecretNew)
	path := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, fmt.Sprintf(`  fulfillment_completed: [woocommerce.complete_order, webhook.crm]
integrations:
  - name: woo
    type: woocommerce
    secrets: [%q]
    api_url: %q
    consumer_key: ck_e2e
    consumer_secret: cs_e2e_secret
    products:
      "OTHER-VERIFIED": {course_id: %q, mode: professional}
webhooks:
%s`, wooSecret, storeURL.URL, otherCourse, webhookYAML("crm", sub.Start(t), hookSecretNew)))
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, "all", path)
	e := shopEnv{instance: in}

	body := wooOrder(t, 7001, "learner76000@example.com")
	if a := e.post(t, "woo", body, wooHeaders("order.created", body, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
		t.Fatalf("shop webhook: %+v", a)
	}
	waitFor(t, "the order completed in the store", 60*time.Second, func() bool { return store.Completions("7001") > 0 })
	waitFor(t, "both enrollments' events delivered", 60*time.Second, func() bool { return len(sub.Delivered()) == 2 })
	checkSchemas(t, sub.Delivered(), "fulfillment_completed") // a shop's line: the learner by email, the integration
	if d := sub.Delivered()[0].Data; d["integration"] != "woo" {
		t.Errorf("completion %v: want the integration named", d)
	}
	if a := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret)); a.Status != 200 {
		t.Fatalf("redelivery: %+v", a)
	}
	_, st := in.order(t, "GET", "woo-7001")
	var completion []fulfillment.Task
	for _, l := range st.Lines {
		if l.State != fulfillment.StateEnrolled {
			t.Errorf("line %s: %s, want enrolled", l.CourseID, l.State)
		}
		for _, task := range l.Tasks {
			if task.Kind == "woocommerce.complete_order" {
				completion = append(completion, task)
			}
		}
	}
	if len(completion) != 1 || completion[0].State != fulfillment.StateDone {
		t.Errorf("completion tasks %+v, want one, done", completion)
	}
	if n, refused := store.Completions("7001"), store.Refused(); n != 1 || refused != 0 {
		t.Errorf("store saw %d completions of order 7001 (%d refused calls), want exactly 1", n, refused)
	}
}
