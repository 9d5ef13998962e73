package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/shop/stripetest"
)

const (
	otherCourse     = "course-v1:edX+Other+2026"
	wooSecret       = "woo-secret-for-tests-0123456789"
	wooOldSecret    = "woo-old-secret-for-tests-98765"
	shopifySecret   = "shopify-secret-for-tests-01234"
	stripeWHSecret  = "whsec_coordinator_tests_0123456789"
	stripeTestKey   = "sk_test_coordinator_e2e"
	stripeSessionID = "cs_00000000000000"
	stripeIntent    = "pi_00000000000000"
)

// integrationsYAML configures a WooCommerce store (rotating its secret), a
// Shopify store and a Stripe account whose API is the fake at stripeURL.
func integrationsYAML(stripeURL string) string {
	return fmt.Sprintf(`integrations:
  - name: woo
    type: woocommerce
    secrets: [%q, %q]
    products:
      "OTHER-VERIFIED": {course_id: %q, mode: professional}
  - name: shopify
    type: shopify
    secrets: [%q]
    learner_email_field: "Learner email"
  - name: stripe
    type: stripe
    secrets: [%q]
    api_key: %q
    api_url: %q
    accept_test_orders: true
`, wooSecret, wooOldSecret, otherCourse, shopifySecret, stripeWHSecret, stripeTestKey, stripeURL)
}

// shopEnv is a running Coordinator with the three integrations, the fake
// LMS and the fake Stripe API.
type shopEnv struct {
	*instance
	stripe *stripetest.Server
}

// startShops runs Coordinator (api only, so tasks stay queued where the test
// can read them; or all) with the integrations, on its own Redis DB and
// queue, with the ledger when asked.
func startShops(t *testing.T, command string, ledger bool, from int64, n int) shopEnv {
	t.Helper()
	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, from, n)
	fake.AddCourse(otherCourse, lmstest.CourseRun{Name: "Other", Modes: []string{"audit", "verified", "professional"}})
	st := stripetest.New(stripeTestKey)
	st.AddSession(stripetest.Session{ID: stripeSessionID, PaymentIntent: stripeIntent, Items: []stripetest.Item{
		{ID: "li_1", Description: "Demo course", PriceID: "price_demo", ProductID: "prod_demo",
			ProductMetadata: map[string]string{"course_id": demoCourse, "course_mode": "verified"}, Quantity: 1},
		{ID: "li_2", Description: "T-shirt", PriceID: "price_tshirt", ProductID: "prod_tshirt", Quantity: 1},
	}})
	return shopEnv{instance: startWith(t, command, fake, ledger, integrationsYAML(stripetest.Start(t, st).URL)), stripe: st}
}

// webhookAnswer is what POST /webhooks/{name} answers.
type webhookAnswer struct {
	Status      int
	OrderNumber string `json:"order_number"`
	Ignored     string `json:"ignored"`
	Detail      string `json:"detail"`
	Lines       []struct {
		OrderNumber string `json:"order_number"`
		CourseID    string `json:"course_id"`
		Signal      string `json:"signal"`
		Receivers   map[string]struct {
			Response string `json:"response"`
			Error    bool   `json:"error"`
		} `json:"receivers"`
	} `json:"lines"`
	Signals []struct {
		Signal    string         `json:"signal"`
		Receivers map[string]any `json:"receivers"`
	} `json:"signals"`
}

// taskIDs lists the answer's task ids, in order.
func (a webhookAnswer) taskIDs() []string {
	var ids []string
	for _, l := range a.Lines {
		for _, r := range l.Receivers {
			ids = append(ids, r.Response)
		}
	}
	return ids
}

// post delivers a body to /webhooks/{name} with the given headers.
func (e shopEnv) post(t *testing.T, name string, body []byte, h http.Header) webhookAnswer {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, e.base+"/webhooks/"+url.PathEscape(name), bytes.NewReader(body))
	for k, vs := range h {
		req.Header[k] = vs
	}
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST /webhooks/%s: %v", name, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var a webhookAnswer
	_ = json.Unmarshal(raw, &a)
	a.Status = resp.StatusCode
	return a
}

func wooHeaders(topic string, body []byte, secret string) http.Header {
	return http.Header{"Content-Type": {"application/json"}, shop.HeaderWooTopic: {topic},
		shop.HeaderWooSignature: {shop.SignBase64HMAC(body, secret)}}
}

func shopifyHeaders(topic string, body []byte) http.Header {
	return http.Header{"Content-Type": {"application/json"}, shop.HeaderShopifyTopic: {topic},
		shop.HeaderShopifySignature: {shop.SignBase64HMAC(body, shopifySecret)}}
}

func stripeHeaders(body []byte, at time.Time) http.Header {
	p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: stripeWHSecret, Timestamp: at})
	return http.Header{"Content-Type": {"application/json"}, shop.HeaderStripeSignature: {p.Header}}
}

// wooOrder is the WooCommerce docs' order 723 (re-numbered id), made paid:
// line 311 sells the demo course by its run key as SKU, line 313 the other
// course through the products map, and a T-shirt line is added. email is
// the billing email.
func wooOrder(t *testing.T, id int, email string) []byte {
	return shoptest.Patch(t, shoptest.Fixture(t, "woocommerce-order-partially-refunded.wcdocs.json"), func(m map[string]any) {
		m["id"], m["date_paid_gmt"], m["refunds"] = id, "2017-03-21T19:20:00", []any{}
		m["billing"].(map[string]any)["email"] = email
		items := m["line_items"].([]any)
		items[0].(map[string]any)["sku"] = demoCourse
		items[1].(map[string]any)["sku"] = "OTHER-VERIFIED"
		m["line_items"] = append(items, map[string]any{"id": 315, "product_id": 99, "sku": "TSHIRT-L", "quantity": 1, "meta_data": []any{}})
	})
}

// shopifyOrder is Shopify's order sample made a real paid order (it is a
// voided test order as published), its first two lines selling courses,
// the first to a participant named in a line property.
func shopifyOrder(t *testing.T, participant string) []byte {
	return shoptest.Patch(t, shoptest.Fixture(t, "shopify-orders-paid.json"), func(m map[string]any) {
		m["financial_status"], m["test"], m["cancelled_at"] = "paid", false, nil
		items := m["line_items"].([]any)
		items[0].(map[string]any)["sku"] = demoCourse
		items[0].(map[string]any)["properties"] = []any{map[string]any{"name": "Learner email", "value": participant}}
		items[1].(map[string]any)["sku"] = otherCourse
	})
}

// queuedRef reads a queued task's payload: what the worker will be given.
func (e shopEnv) queuedRef(t *testing.T, taskID string) fulfillment.Ref {
	t.Helper()
	info, err := e.insp.GetTaskInfo(e.queue, taskID)
	if err != nil {
		t.Fatalf("task %s: %v", taskID, err)
	}
	var ref fulfillment.Ref
	if err := json.Unmarshal(info.Payload, &ref); err != nil {
		t.Fatal(err)
	}
	return ref
}

// kinds is "<course> <kind>" for every task of the order, sorted.
func (e shopEnv) kinds(t *testing.T, order string) []string {
	t.Helper()
	status, st := e.order(t, "GET", order)
	if status != http.StatusOK {
		return nil
	}
	var out []string
	for _, l := range st.Lines {
		for _, task := range l.Tasks {
			out = append(out, l.CourseID+" "+task.Kind)
		}
	}
	slices.Sort(out)
	return out
}

// Shop deliveries through the real HTTP server into the real queue (and
// ledger): which lines each event records, with which learner, and every
// refusal of docs/integrations.md. The API runs alone, so tasks stay queued as recorded.
func TestShopWebhooks(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			e := startShops(t, "api", ledger, 61000, 10)
			shopWebhooks(t, e)
			webhookMetrics(t, e)
		})
	}
}

func shopWebhooks(t *testing.T, e shopEnv) {
	enrolls := []string{demoCourse + " " + seat.KindEnroll, otherCourse + " " + seat.KindEnroll}

	t.Run("WooCommerce paid order: a line per course, redelivered 3 times", func(t *testing.T) {
		body := wooOrder(t, 723, "joao.silva@example.com")
		first := e.post(t, "woo", body, wooHeaders("order.created", body, wooSecret))
		if first.Status != 200 || first.OrderNumber != "woo-723" || len(first.Lines) != 2 {
			t.Fatalf("%+v, want 200 with two lines of woo-723", first)
		}
		for i := range 3 {
			again := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret))
			if again.Status != 200 || !slices.Equal(again.taskIDs(), first.taskIDs()) {
				t.Errorf("redelivery %d: %+v, want the same task ids %v", i+1, again, first.taskIDs())
			}
		}
		if got := e.kinds(t, "woo-723"); !slices.Equal(got, enrolls) {
			t.Errorf("tasks %v, want one enrollment per course %v", got, enrolls)
		}
		ref := e.queuedRef(t, first.taskIDs()[0])
		if ref.Email != "joao.silva@example.com" || ref.Integration != "woo" || ref.Site != "default" || ref.LMSUserID != 0 {
			t.Errorf("queued %+v: want the billing email and integration woo", ref)
		}
	})

	t.Run("signed with the secret being rotated out: accepted", func(t *testing.T) {
		body := wooOrder(t, 724, "ana@example.com")
		if a := e.post(t, "woo", body, wooHeaders("order.created", body, wooOldSecret)); a.Status != 200 || len(a.Lines) != 2 {
			t.Errorf("%+v, want 200 with two lines", a)
		}
	})

	t.Run("refusals record nothing", func(t *testing.T) {
		body := wooOrder(t, 725, "bo@example.com")
		tampered := bytes.Replace(body, []byte(`"total":"39.00"`), []byte(`"total":"0.00"`), 1)
		if bytes.Equal(tampered, body) {
			t.Fatal("tampering changed nothing")
		}
		stripeBody := shoptest.Fixture(t, "stripe-checkout.session.completed.json")
		cases := []struct {
			name, integration string
			body              []byte
			h                 http.Header
			status            int
		}{
			{"tampered body", "woo", tampered, wooHeaders("order.created", body, wooSecret), 401},
			{"unsigned", "woo", body, http.Header{shop.HeaderWooTopic: {"order.created"}}, 401},
			{"another secret", "woo", body, wooHeaders("order.created", body, shopifySecret), 401},
			{"unknown integration", "magento", body, wooHeaders("order.created", body, wooSecret), 404},
			{"stale Stripe timestamp", "stripe", stripeBody, stripeHeaders(stripeBody, time.Now().Add(-10*time.Minute)), 401},
			{"a known topic's body unreadable", "woo", []byte(`{"id":`), wooHeaders("order.created", []byte(`{"id":`), wooSecret), 400},
		}
		for _, c := range cases {
			if a := e.post(t, c.integration, c.body, c.h); a.Status != c.status || a.Detail == "" {
				t.Errorf("%s: %+v, want %d with a reason", c.name, a, c.status)
			}
		}
		if status, _ := e.order(t, "GET", "woo-725"); status != 404 {
			t.Errorf("order woo-725: %d, want 404 (nothing recorded)", status)
		}
		if status, _ := e.order(t, "GET", "stripe-"+stripeIntent); status != 404 {
			t.Errorf("stripe order: %d, want 404 (nothing recorded)", status)
		}
	})

	t.Run("WooCommerce creation ping", func(t *testing.T) {
		a := e.post(t, "woo", []byte("webhook_id=12"), http.Header{"Content-Type": {"application/x-www-form-urlencoded"}})
		if a.Status != 200 {
			t.Errorf("%+v, want 200", a)
		}
	})

	t.Run("unpaid, test or no course: nobody", func(t *testing.T) {
		sample := shoptest.Fixture(t, "shopify-orders-paid.json") // a voided, cancelled test order
		noCourse := shoptest.Patch(t, sample, func(m map[string]any) { m["financial_status"], m["test"], m["cancelled_at"] = "paid", false, nil })
		pending := shoptest.Patch(t, wooOrder(t, 726, "cy@example.com"), func(m map[string]any) { m["status"], m["date_paid_gmt"] = "pending", nil })
		for name, a := range map[string]webhookAnswer{
			"Shopify's sample":    e.post(t, "shopify", sample, shopifyHeaders("orders/paid", sample)),
			"no course SKU":       e.post(t, "shopify", noCourse, shopifyHeaders("orders/paid", noCourse)),
			"WooCommerce pending": e.post(t, "woo", pending, wooHeaders("order.created", pending, wooSecret)),
		} {
			if a.Status != 200 || a.Ignored == "" || len(a.Lines) != 0 {
				t.Errorf("%s: %+v, want 200 ignored", name, a)
			}
		}
		for _, n := range []string{"shopify-820982911946154508", "woo-726"} {
			if status, _ := e.order(t, "GET", n); status != 404 {
				t.Errorf("order %s: %d, want 404", n, status)
			}
		}
	})

	t.Run("Stripe checkout: line items through the API; full refund returns them", func(t *testing.T) {
		body := shoptest.Fixture(t, "stripe-checkout.session.completed.json")
		a := e.post(t, "stripe", body, stripeHeaders(body, time.Now()))
		order := "stripe-" + stripeIntent
		if a.Status != 200 || a.OrderNumber != order || len(a.Lines) != 1 || a.Lines[0].CourseID != demoCourse {
			t.Fatalf("%+v, want the demo course only (the T-shirt ignored)", a)
		}
		if ref := e.queuedRef(t, a.taskIDs()[0]); ref.Email != "example@example.com" || ref.CourseMode != "verified" {
			t.Errorf("queued %+v", ref)
		}
		refund := shoptest.Patch(t, shoptest.Fixture(t, "stripe-charge.refunded.json"), func(m map[string]any) {
			m["data"].(map[string]any)["object"].(map[string]any)["payment_intent"] = stripeIntent
		})
		r := e.post(t, "stripe", refund, stripeHeaders(refund, time.Now()))
		if r.Status != 200 || len(r.Lines) != 1 || r.Lines[0].Signal != fulfillment.SignalOrderReturned {
			t.Fatalf("refund: %+v, want one return", r)
		}
		if ref := e.queuedRef(t, r.taskIDs()[0]); ref.Email != "example@example.com" {
			t.Errorf("queued return %+v: want the learner of the enrollment", ref)
		}
		if got := e.kinds(t, order); !slices.Equal(got, []string{demoCourse + " " + seat.KindEnroll, demoCourse + " " + seat.KindUnenroll}) {
			t.Errorf("tasks %v", got)
		}
	})

	t.Run("Shopify: participant from a line property; a refund returns only its items", func(t *testing.T) {
		body := shopifyOrder(t, "kid@example.com")
		a := e.post(t, "shopify", body, shopifyHeaders("orders/paid", body))
		if a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("%+v, want two lines", a)
		}
		order := "shopify-820982911946154508"
		for _, id := range a.taskIDs() {
			ref := e.queuedRef(t, id)
			want := map[string]string{demoCourse: "kid@example.com", otherCourse: "jon@example.com"}[ref.CourseID]
			if ref.Email != want || ref.OrderNumber != order {
				t.Errorf("queued %+v, want learner %s", ref, want)
			}
		}
		refund := shoptest.Patch(t, shoptest.Fixture(t, "shopify-refunds-create.json"), func(m map[string]any) {
			m["refund_line_items"].([]any)[0].(map[string]any)["line_item"].(map[string]any)["sku"] = demoCourse
		})
		r := e.post(t, "shopify", refund, shopifyHeaders("refunds/create", refund))
		if r.Status != 200 || len(r.Lines) != 1 || r.Lines[0].CourseID != demoCourse {
			t.Fatalf("refund: %+v, want the demo course returned", r)
		}
		if ref := e.queuedRef(t, r.taskIDs()[0]); ref.Email != "kid@example.com" {
			t.Errorf("queued return %+v: want the participant", ref)
		}
		want := []string{demoCourse + " " + seat.KindEnroll, demoCourse + " " + seat.KindUnenroll, otherCourse + " " + seat.KindEnroll}
		if got := e.kinds(t, order); !slices.Equal(got, want) {
			t.Errorf("tasks %v, want %v", got, want)
		}
	})

	t.Run("WooCommerce refunded: every course line returned", func(t *testing.T) {
		body := shoptest.Patch(t, wooOrder(t, 723, "joao.silva@example.com"), func(m map[string]any) { m["status"] = "refunded" })
		a := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret))
		if a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("%+v, want two returns", a)
		}
		want := append(slices.Clone(enrolls), demoCourse+" "+seat.KindUnenroll, otherCourse+" "+seat.KindUnenroll)
		slices.Sort(want)
		if got := e.kinds(t, "woo-723"); !slices.Equal(got, want) {
			t.Errorf("tasks %v, want %v", got, want)
		}
	})

	t.Run("a refund before the order: recorded, the later order enrolls nobody", func(t *testing.T) {
		body := shoptest.Patch(t, wooOrder(t, 727, "dee@example.com"), func(m map[string]any) { m["status"] = "refunded" })
		if a := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("%+v, want two returns", a)
		}
		paid := wooOrder(t, 727, "dee@example.com")
		if a := e.post(t, "woo", paid, wooHeaders("order.created", paid, wooSecret)); a.Status != 200 {
			t.Fatalf("%+v, want 200", a)
		}
		// The enrollment is refused (Redis tier) or queued to end canceled
		// (ledger; TestReturns): either way the return is there.
		got := strings.Join(e.kinds(t, "woo-727"), ",")
		for _, c := range []string{demoCourse, otherCourse} {
			if !strings.Contains(got, c+" "+seat.KindUnenroll) {
				t.Errorf("tasks %s: no return of %s", got, c)
			}
		}
	})

	// Findings 1 and 2 of the issue-12 review, end to end.
	t.Run("Shopify: a line gives at most its quantity of seats; a draft order replayed as orders/paid enrolls nobody", func(t *testing.T) {
		body := shoptest.Patch(t, shopifyOrder(t, "a1@example.com, b1@example.com, c1@example.com"), func(m map[string]any) {
			m["id"] = int64(820982911946154601)
		})
		a := e.post(t, "shopify", body, shopifyHeaders("orders/paid", body))
		if a.Status != 200 || len(a.Lines) != 2 {
			t.Fatalf("%+v, want two lines (quantity 1 each)", a)
		}
		for _, n := range []string{"shopify-820982911946154601-p2", "shopify-820982911946154601-p3"} {
			if status, _ := e.order(t, "GET", n); status != 404 {
				t.Errorf("order %s: %d, want 404 (no unpaid seat)", n, status)
			}
		}
		draft := shoptest.Patch(t, shopifyOrder(t, "d1@example.com"), func(m map[string]any) {
			m["id"] = int64(820982911946154602)
			delete(m, "financial_status")
			delete(m, "order_number")
		})
		if a := e.post(t, "shopify", draft, shopifyHeaders("orders/paid", draft)); a.Status != 400 {
			t.Errorf("draft as orders/paid: %+v, want 400", a)
		}
		if status, _ := e.order(t, "GET", "shopify-820982911946154602"); status != 404 {
			t.Errorf("draft order: %d, want 404", status)
		}
	})

	// Finding 3, M3: a Shopify refund before the payment does not carry the
	// order's other lines of the course, so which participant number each
	// refunded seat will have is unknown: nothing is returned (a
	// webhook_note says so; support uses POST /orders/return once the order
	// is in), rather than a return on another participant's line.
	t.Run("Shopify refund before the order with two participants: nothing returned, noted", func(t *testing.T) {
		const id = 820982911946154603
		refund := shoptest.Patch(t, shoptest.Fixture(t, "shopify-refunds-create.json"), func(m map[string]any) {
			m["order_id"] = int64(id)
			rl := m["refund_line_items"].([]any)[0].(map[string]any)
			rl["quantity"] = 2
			it := rl["line_item"].(map[string]any)
			it["sku"], it["quantity"] = demoCourse, 2
			it["properties"] = []any{map[string]any{"name": "Learner email", "value": "p1@example.com,q1@example.com"}}
		})
		if r := e.post(t, "shopify", refund, shopifyHeaders("refunds/create", refund)); r.Status != 200 || len(r.Lines) != 0 {
			t.Fatalf("refund: %+v, want 200 and no returns", r)
		}
		for _, n := range []string{"shopify-820982911946154603", "shopify-820982911946154603-p2"} {
			if status, _ := e.order(t, "GET", n); status != 404 {
				t.Errorf("order %s: %d, want 404 (nothing recorded)", n, status)
			}
		}
	})
}

// webhookMetrics checks that the deliveries of shopWebhooks were counted per
// integration and result.
func webhookMetrics(t *testing.T, e shopEnv) {
	text := scrape(t, e.base)
	for _, want := range []string{
		`coordinator_webhooks_total{integration="woo",result="accepted"}`,
		`coordinator_webhooks_total{integration="woo",result="refused"} 3`,
		`coordinator_webhooks_total{integration="woo",result="ping"} 1`,
		`coordinator_webhooks_total{integration="woo",result="invalid"} 1`,
		`coordinator_webhooks_total{integration="shopify",result="ignored"} 2`,
		`coordinator_webhooks_total{integration="stripe",result="refused"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(text, `integration="magento"`) {
		t.Error("an unknown integration's name became a label")
	}
}

// hasAccountsByEmail asks the fake LMS for an account by email
// (GET /api/user/v1/accounts?email=, docs/lms.md#accounts), which part B of issue 12
// adds to lmstest.
func hasAccountsByEmail(t *testing.T, fake *lmstest.Server, email string) bool {
	t.Helper()
	srv := httptest.NewServer(fake)
	defer srv.Close()
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"coordinator-worker"}, "client_secret": {testSecret}, "token_type": {"jwt"}}
	resp, err := http.PostForm(srv.URL+"/oauth2/access_token", form)
	if err != nil {
		t.Fatal(err)
	}
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	_ = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL+"/api/user/v1/accounts?email="+url.QueryEscape(email), nil)
	req.Header.Set("Authorization", "JWT "+tok.AccessToken)
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode == 200 && strings.Contains(string(body), email)
}

// TestShopWebhooksEnrollByEmail is the whole path: shop deliveries enroll
// learners found by email, and a refund unenrolls them. It needs the worker
// side of email learners (issue 12 part B: the accounts-by-email look-up and
// lmstest's GET /api/user/v1/accounts?email=); until then it skips.
func TestShopWebhooksEnrollByEmail(t *testing.T) {
	t.Parallel()
	e := startShops(t, "all", false, 62000, 5)
	if !hasAccountsByEmail(t, e.lms, "learner62000@example.com") {
		t.Skip("lmstest does not resolve accounts by email yet (issue 12 part B)")
	}
	body := wooOrder(t, 900, "learner62000@example.com")
	if a := e.post(t, "woo", body, wooHeaders("order.created", body, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
		t.Fatalf("%+v", a)
	}
	waitFor(t, "both courses enrolled", 30*time.Second, func() bool {
		d, ok1 := e.lms.Enrollment("learner62000", demoCourse)
		o, ok2 := e.lms.Enrollment("learner62000", otherCourse)
		return ok1 && ok2 && d.IsActive && o.IsActive && d.Mode == "verified" && o.Mode == "professional"
	})
	refund := shoptest.Patch(t, body, func(m map[string]any) { m["status"] = "refunded" })
	if a := e.post(t, "woo", refund, wooHeaders("order.updated", refund, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
		t.Fatalf("%+v", a)
	}
	waitFor(t, "both seats taken back", 30*time.Second, func() bool {
		d, _ := e.lms.Enrollment("learner62000", demoCourse)
		o, _ := e.lms.Enrollment("learner62000", otherCourse)
		return !d.IsActive && !o.IsActive
	})
}

// config check lists the integrations, their routes and products, never
// their secrets or keys.
func TestConfigCheckListsIntegrations(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, queuetest.URL(), "http://127.0.0.1:18000", "unused", integrationsYAML("http://127.0.0.1:12111"))
	out, err := runCmd(t, cfg, nil, "config", "check")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"  - name: woo\n    type: woocommerce\n    route: POST /webhooks/woo\n", "secrets: 2 (not shown)",
		`"OTHER-VERIFIED": ` + otherCourse + " (professional)", "api_url: http://127.0.0.1:12111"} {
		if !strings.Contains(out, want) {
			t.Errorf("config check printed:\n%s\nwant %q", out, want)
		}
	}
	for _, secret := range []string{wooSecret, wooOldSecret, shopifySecret, stripeWHSecret, stripeTestKey} {
		if strings.Contains(out, secret) {
			t.Errorf("config check printed the secret %q", secret)
		}
	}
}
