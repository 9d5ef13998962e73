package httpapi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stripe/stripe-go/v82/webhook"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/shop/stripetest"
)

const (
	shopSecret   = "shop-secret-for-tests-0123456789"
	stripeSecret = "whsec_test_0123456789abcdef"
	stripeAPIKey = "sk_test_webhooks"
	demoCourse   = "course-v1:edX+DemoX+Demo_Course"
)

// recorder is a receiver that records what it is sent, and fails with err
// when set.
type recorder struct {
	mu      sync.Mutex
	orders  []fulfillment.Order
	returns []fulfillment.Return
	err     error
}

func (r *recorder) Lines(_ context.Context, _, n string) ([]fulfillment.Line, error) {
	return nil, fmt.Errorf("order %s: %w", n, fulfillment.ErrNotFound)
}
func (r *recorder) RetryFailed(_ context.Context, _, n string) ([]fulfillment.Line, error) {
	return r.Lines(context.Background(), "", n)
}

func (r *recorder) count() (int, int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.orders), len(r.returns)
}

// webhookAPI is the API with a WooCommerce, a Shopify and a Stripe
// integration whose lines go to rec.
func webhookAPI(t testing.TB, rec *recorder, edit ...func(*Deps)) (http.Handler, *stripetest.Server) {
	t.Helper()
	fake := stripetest.New(stripeAPIKey)
	fake.AddSession(stripetest.Session{ID: "cs_00000000000000", PaymentIntent: "pi_00000000000000", Items: []stripetest.Item{
		{ID: "li_1", PriceID: "price_demo", ProductID: "prod_demo", ProductMetadata: map[string]string{"course_id": demoCourse}, Quantity: 1}}})
	stripeURL := stripetest.Start(t, fake).URL
	in := testIntake(t, "test.placed", func(_ context.Context, o fulfillment.Order) (string, error) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		if rec.err != nil {
			return "", rec.err
		}
		rec.orders = append(rec.orders, o)
		return "task-" + o.OrderNumber, nil
	}, "test.returned", func(_ context.Context, r fulfillment.Return) (string, error) {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		rec.returns = append(rec.returns, r)
		return "task-" + r.OrderNumber, nil
	})
	shops := map[string]*shop.Shop{}
	for _, in := range []shop.Integration{
		{Name: "woo", Type: shop.TypeWooCommerce, Secrets: []string{shopSecret}},
		{Name: "school", Type: shop.TypeWooCommerce, Secrets: []string{shopSecret}, Site: "school"},
		{Name: "shopify", Type: shop.TypeShopify, Secrets: []string{shopSecret}},
		{Name: "stripe", Type: shop.TypeStripe, Secrets: []string{stripeSecret}, APIKey: stripeAPIKey, APIURL: stripeURL, AcceptTestOrders: true},
	} {
		if in.Site == "" {
			in.Site = fulfillment.DefaultSite
		}
		in.OrderPrefix, in.CourseMode = in.Name+"-", "verified"
		s, err := shop.New(in)
		if err != nil {
			t.Fatal(err)
		}
		shops[in.Name] = s
	}
	d := Deps{
		Logger: slog.New(slog.DiscardHandler), Auth: NewAuthenticator(AuthOptions{AdminClaim: "administrator"}, &http.Client{Timeout: time.Second}),
		Intake: in, Orders: rec, Shops: shops, MaxBodyBytes: 1024,
		KnownSite: func(_ context.Context, site string) (bool, error) { return site == fulfillment.DefaultSite, nil },
	}
	for _, e := range edit {
		e(&d)
	}
	return NewHandler(d), fake
}

// deliver posts body to /webhooks/name, signed for the integration's
// platform unless sign is false.
func deliver(h http.Handler, name, topic string, body []byte, sign bool) *httptest.ResponseRecorder {
	req := httptest.NewRequest(http.MethodPost, "/webhooks/"+name, bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	switch name {
	case "woo", "school":
		req.Header.Set(shop.HeaderWooTopic, topic)
		if sign {
			req.Header.Set(shop.HeaderWooSignature, shop.SignBase64HMAC(body, shopSecret))
		}
	case "shopify":
		req.Header.Set(shop.HeaderShopifyTopic, topic)
		if sign {
			req.Header.Set(shop.HeaderShopifySignature, shop.SignBase64HMAC(body, shopSecret))
		}
	case "stripe":
		if sign {
			p := webhook.GenerateTestSignedPayload(&webhook.UnsignedPayload{Payload: body, Secret: stripeSecret})
			req.Header.Set(shop.HeaderStripeSignature, p.Header)
		}
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w
}

// wooCourseOrder is the WooCommerce docs' order 723, paid, its first line a
// course run key.
func wooCourseOrder(t testing.TB) []byte {
	b := shoptest.Fixture(t, "woocommerce-order-partially-refunded.wcdocs.json")
	b = bytes.Replace(b, []byte(`"date_paid_gmt": null`), []byte(`"date_paid_gmt": "2017-03-21T19:20:00"`), 1)
	return bytes.Replace(b, []byte(`"sku": ""`), []byte(`"sku": "`+demoCourse+`"`), 1)
}

func TestWebhookStatuses(t *testing.T) {
	rec := &recorder{}
	h, fake := webhookAPI(t, rec)
	paid := wooCourseOrder(t)
	tests := []struct {
		name, integration, topic string
		body                     []byte
		unsigned                 bool
		status                   int
		orders                   int
		contains                 string
	}{
		{"unknown integration", "nope", "", paid, false, 404, 0, "Unknown integration"},
		{"unsigned", "woo", "order.updated", paid, true, 401, 0, "signature"},
		{"WooCommerce's creation ping", "woo", "", []byte("webhook_id=42"), true, 200, 0, "reachable"},
		{"paid order", "woo", "order.updated", paid, false, 200, 1, `"order_number":"woo-723"`},
		{"unused topic: 200 ignored", "woo", "coupon.created", []byte(`{}`), false, 200, 0, `"ignored":"topic not used`},
		{"not JSON", "shopify", "orders/paid", []byte(`{"id":`), false, 400, 0, "does not parse"},
		{"unpaid Shopify sample", "shopify", "orders/paid", shoptest.Fixture(t, "shopify-orders-paid.json"), false, 200, 0, `"ignored"`},
		{"Stripe checkout", "stripe", "", shoptest.Fixture(t, "stripe-checkout.session.completed.json"), false, 200, 1, `"order_number":"stripe-pi_00000000000000"`},
		{"too large", "woo", "order.updated", bytes.Repeat([]byte(" "), WebhookMaxBodyBytes+1), false, 413, 0, "larger"},
		// Finding 6: a paid session the API does not know is not lost.
		{"Stripe session not found", "stripe", "", bytes.Replace(shoptest.Fixture(t, "stripe-checkout.session.completed.json"),
			[]byte(`"cs_00000000000000"`), []byte(`"cs_unknown"`), 1), false, 503, 0, "deliver again"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := rec.count()
			w := deliver(h, tt.integration, tt.topic, tt.body, !tt.unsigned)
			after, _ := rec.count()
			if w.Code != tt.status || after-before != tt.orders || !strings.Contains(w.Body.String(), tt.contains) {
				t.Errorf("%d %s, %d lines sent; want %d containing %q, %d lines", w.Code, w.Body, after-before, tt.status, tt.contains, tt.orders)
			}
		})
	}
	t.Run("queue down: 503 for the whole event", func(t *testing.T) {
		rec.mu.Lock()
		rec.err = fmt.Errorf("enqueue: %w", fulfillment.ErrUnavailable)
		rec.mu.Unlock()
		defer func() { rec.mu.Lock(); rec.err = nil; rec.mu.Unlock() }()
		if w := deliver(h, "woo", "order.updated", paid, true); w.Code != 503 || w.Header().Get("Retry-After") == "" {
			t.Errorf("%d %s, want 503 with Retry-After", w.Code, w.Body)
		}
	})
	t.Run("a site not in the sites table: 503, nothing sent", func(t *testing.T) {
		before, _ := rec.count()
		w := deliver(h, "school", "order.updated", paid, true)
		if after, _ := rec.count(); w.Code != 503 || after != before {
			t.Errorf("%d %s, %d lines sent; want 503 and none", w.Code, w.Body, after-before)
		}
	})
	t.Run("Stripe API down: 503", func(t *testing.T) {
		fake.Fail(1)
		if w := deliver(h, "stripe", "", shoptest.Fixture(t, "stripe-checkout.session.completed.json"), true); w.Code != 503 {
			t.Errorf("%d %s, want 503", w.Code, w.Body)
		}
	})
	t.Run("refunded WooCommerce order: a return per course line", func(t *testing.T) {
		body := bytes.Replace(paid, []byte(`"status": "completed"`), []byte(`"status": "refunded"`), 1)
		_, before := rec.count()
		w := deliver(h, "woo", "order.updated", body, true)
		_, after := rec.count()
		var out webhookResult
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		if w.Code != 200 || after-before != 1 || len(out.Lines) != 1 || out.Lines[0].Signal != fulfillment.SignalOrderReturned {
			t.Errorf("%d %s, %d returns; want 200 and one return", w.Code, w.Body, after-before)
		}
	})
}

// FuzzWebhook: whatever a shop (or whoever holds its secret) posts, the
// answer is never a 5xx and nothing panics. Seeds are the shared fixtures.
func FuzzWebhook(f *testing.F) {
	for _, s := range []struct{ integration, topic, file string }{
		{"woo", "order.updated", "woocommerce-order-partially-refunded.wcdocs.json"},
		{"shopify", "orders/paid", "shopify-orders-paid.json"},
		{"shopify", "refunds/create", "shopify-refunds-create.json"},
		{"stripe", "", "stripe-checkout.session.completed.json"},
		{"stripe", "", "stripe-charge.refunded.json"},
	} {
		f.Add(s.integration, s.topic, shoptest.Fixture(f, s.file), true)
	}
	f.Add("woo", "order.created", wooCourseOrder(f), true)
	f.Add("woo", "", []byte("webhook_id=1"), false)
	f.Add("stripe", "", []byte(`{"type":"charge.refunded","livemode":true,"data":{"object":{"payment_intent":{"id":"pi_1"},"refunded":true}}}`), true)
	h, _ := webhookAPI(f, &recorder{})
	f.Fuzz(func(t *testing.T, integration, topic string, body []byte, sign bool) {
		switch integration {
		case "woo", "shopify", "stripe":
		default:
			integration = "woo"
		}
		if len(topic) > 64 {
			topic = topic[:64]
		}
		topic = strings.Map(func(r rune) rune {
			if r < 0x20 || r >= 0x7f {
				return -1
			}
			return r
		}, topic)
		w := deliver(h, integration, topic, body, sign)
		// A Stripe session the (fake) API does not know is 503 by design:
		// the order is paid and Stripe delivers again.
		if w.Code >= 500 && !(integration == "stripe" && w.Code == http.StatusServiceUnavailable) {
			t.Fatalf("%s %q: %d %s", integration, topic, w.Code, w.Body)
		}
	})
}

// firstRead closes started when the handler first reads the body.
type firstRead struct {
	r       io.Reader
	once    sync.Once
	started chan struct{}
	reads   int
}

func (f *firstRead) Read(p []byte) (int, error) {
	f.once.Do(func() { close(f.started) })
	f.reads++
	return f.r.Read(p)
}

// Finding 5: webhook bodies being read are bounded; when every slot is
// taken a delivery gets 503 with Retry-After and its body is not read.
// Deterministic: the first delivery holds the only slot until its body is
// written.
func TestWebhookReadsBounded(t *testing.T) {
	rec := &recorder{}
	h, _ := webhookAPI(t, rec, func(d *Deps) { d.webhookLimits.reads, d.webhookLimits.wait = 1, -1 })
	body := wooCourseOrder(t)
	request := func(r io.Reader) *http.Request {
		req := httptest.NewRequest(http.MethodPost, "/webhooks/woo", r)
		req.ContentLength = int64(len(body))
		req.Header.Set(shop.HeaderWooTopic, "order.updated")
		req.Header.Set(shop.HeaderWooSignature, shop.SignBase64HMAC(body, shopSecret))
		return req
	}
	pr, pw := io.Pipe()
	slow := &firstRead{r: pr, started: make(chan struct{})}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, request(slow))
		first <- w
	}()
	<-slow.started // the first delivery holds the slot

	second := &firstRead{r: bytes.NewReader(body), started: make(chan struct{})}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, request(second))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || second.reads != 0 {
		t.Errorf("second delivery while full: %d Retry-After=%q, %d reads; want 503 with Retry-After, body unread", w.Code, w.Header().Get("Retry-After"), second.reads)
	}
	// M2: another integration's slots are its own.
	if w := deliver(h, "shopify", "orders/paid", shoptest.Fixture(t, "shopify-orders-paid.json"), true); w.Code == http.StatusServiceUnavailable {
		t.Errorf("another integration while woo is full: %d %s, want it read", w.Code, w.Body)
	}
	if _, err := pw.Write(body); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	if w := <-first; w.Code != http.StatusOK {
		t.Errorf("first delivery: %d %s, want 200", w.Code, w.Body)
	}
	if w := deliver(h, "woo", "order.updated", body, true); w.Code != http.StatusOK {
		t.Errorf("after the slot is free: %d %s, want 200", w.Code, w.Body)
	}
	big := httptest.NewRequest(http.MethodPost, "/webhooks/woo", &firstRead{r: bytes.NewReader(nil), started: make(chan struct{})})
	big.ContentLength = WebhookMaxBodyBytes + 1
	if w := httptest.NewRecorder(); func() int { h.ServeHTTP(w, big); return w.Code }() != http.StatusRequestEntityTooLarge {
		t.Errorf("Content-Length over the limit: %d, want 413", w.Code)
	}
}

// A shop delivery is one http_request log line, like every request: its
// integration, event, order and result, each line's receivers, and the
// level an operator needs (warn for a refused signature).
func TestWebhookOneLogLine(t *testing.T) {
	var buf logtest.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	h, _ := webhookAPI(t, &recorder{}, func(d *Deps) { d.Logger = log })
	tests := []struct {
		name        string
		sign        bool
		status      int
		level       string
		result      string
		wantOrder   bool
		wantReceive bool
	}{
		// The fixture's order has two refunds the body cannot place: a
		// note the shop owner should see, so a warning.
		{"accepted with a note", true, http.StatusOK, "WARN", "accepted", true, true},
		{"bad signature", false, http.StatusUnauthorized, "WARN", "refused", false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if w := deliver(h, "woo", "order.updated", wooCourseOrder(t), tt.sign); w.Code != tt.status {
				t.Fatalf("status %d, want %d: %s", w.Code, tt.status, w.Body)
			}
			lines := buf.Lines(t)
			if len(lines) != 1 {
				t.Fatalf("%d log lines, want 1: %v", len(lines), lines)
			}
			l := lines[0]
			if l["msg"] != "http_request" || l["level"] != tt.level || l["webhook_result"] != tt.result || l["integration"] != "woo" {
				t.Errorf("log line %v: want http_request at %s with webhook_result %s for woo", l, tt.level, tt.result)
			}
			if _, ok := l["order_number"]; ok != tt.wantOrder {
				t.Errorf("order_number logged %v, want %v: %v", ok, tt.wantOrder, l)
			}
			rs, _ := l["receivers"].([]any)
			if (len(rs) == 1) != tt.wantReceive {
				t.Errorf("receivers %v, want one line's: %v", l["receivers"], tt.wantReceive)
			}
			if tt.wantReceive && rs[0].(map[string]any)["test.placed"] != "task-woo-723" {
				t.Errorf("receivers %v: want test.placed's task id", rs)
			}
			if notes, _ := l["webhook_note"].([]any); tt.wantReceive && len(notes) != 1 {
				t.Errorf("webhook_note %v, want the refunds' note", l["webhook_note"])
			}
		})
	}
}

// M2: a delivery that finds its integration's slots taken waits for one
// (here as long as it takes) instead of a 503 at once.
func TestWebhookWaitsForASlot(t *testing.T) {
	waiting := make(chan struct{}, 1)
	h, _ := webhookAPI(t, &recorder{}, func(d *Deps) {
		d.webhookLimits.reads, d.webhookLimits.wait = 1, time.Hour
		d.webhookLimits.waiting = func() { waiting <- struct{}{} }
	})
	body := wooCourseOrder(t)
	pr, pw := io.Pipe()
	slow := &firstRead{r: pr, started: make(chan struct{})}
	first := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		w := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/webhooks/woo", slow)
		req.Header.Set(shop.HeaderWooTopic, "order.updated")
		req.Header.Set(shop.HeaderWooSignature, shop.SignBase64HMAC(body, shopSecret))
		h.ServeHTTP(w, req)
		first <- w
	}()
	<-slow.started
	second := make(chan *httptest.ResponseRecorder, 1)
	go func() { second <- deliver(h, "woo", "order.updated", body, true) }()
	<-waiting // the second delivery waits for the slot the first holds
	if _, err := pw.Write(body); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	for name, c := range map[string]chan *httptest.ResponseRecorder{"first": first, "second": second} {
		if w := <-c; w.Code != http.StatusOK {
			t.Errorf("%s delivery: %d %s, want 200", name, w.Code, w.Body)
		}
	}
}

// M2: a sender trickling its body loses the connection's read within the
// webhook body timeout, not the server's ReadTimeout (none here), and gives
// its slot back.
func TestWebhookBodyReadDeadline(t *testing.T) {
	h, _ := webhookAPI(t, &recorder{}, func(d *Deps) {
		d.webhookLimits.reads, d.webhookLimits.wait, d.webhookLimits.bodyRead = 1, -1, 50*time.Millisecond
	})
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// Headers and part of the body, then nothing: the server must not wait
	// for the rest forever. (The client's deadline only keeps a failing
	// test from hanging.)
	fmt.Fprintf(conn, "POST /webhooks/woo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\nX-WC-Webhook-Topic: order.updated\r\n\r\n{\"id\":")
	_ = conn.SetReadDeadline(time.Now().Add(time.Minute))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a stalled body: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("stalled body: %d, want 400", resp.StatusCode)
	}
	// And the connection is closed, not kept waiting for the rest of the
	// body (the server drains an unread body after answering).
	if n, err := io.Copy(io.Discard, conn); err != nil {
		t.Errorf("connection of a stalled body still open after the answer (%d bytes, %v)", n, err)
	}
	// The slot is free again: the next delivery is read.
	body := wooCourseOrder(t)
	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/webhooks/woo", bytes.NewReader(body))
	req.Header.Set(shop.HeaderWooTopic, "order.updated")
	req.Header.Set(shop.HeaderWooSignature, shop.SignBase64HMAC(body, shopSecret))
	r2, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	r2.Body.Close()
	if r2.StatusCode != http.StatusOK {
		t.Errorf("after the stalled delivery: %d, want 200", r2.StatusCode)
	}
}
