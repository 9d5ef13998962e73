package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hibiken/asynq"
	"github.com/pb33f/libopenapi"
	validator "github.com/pb33f/libopenapi-validator"
	vconfig "github.com/pb33f/libopenapi-validator/config"
	verrors "github.com/pb33f/libopenapi-validator/errors"
	vpaths "github.com/pb33f/libopenapi-validator/paths"
	v3 "github.com/pb33f/libopenapi/datamodel/high/v3"
	"golang.org/x/crypto/bcrypt"

	"github.com/openedx/coordinator/docs"
	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/entitlement"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
)

// openAPICheck sends requests to a running Coordinator and checks each
// answer against docs/openapi.yaml, noting which documented responses were
// seen.
type openAPICheck struct {
	t     *testing.T
	v     validator.Validator
	model *v3.Document
	opts  *vconfig.ValidationOptions
	base  string
	seen  map[string]bool // "METHOD /template STATUS"
}

// newOpenAPICheck parses and validates the document the binary serves.
func newOpenAPICheck(t *testing.T, base string) *openAPICheck {
	t.Helper()
	doc, err := libopenapi.NewDocument([]byte(docs.OpenAPI()))
	if err != nil {
		t.Fatalf("docs/openapi.yaml: %v", err)
	}
	if doc.GetVersion() != "3.1.0" {
		t.Errorf("docs/openapi.yaml is OpenAPI %s, want 3.1.0", doc.GetVersion())
	}
	v, errs := validator.NewValidator(doc)
	if len(errs) > 0 {
		t.Fatalf("docs/openapi.yaml: %v", errs)
	}
	if ok, verrs := v.ValidateDocument(); !ok {
		for _, e := range verrs {
			t.Errorf("docs/openapi.yaml is not a valid OpenAPI 3.1 document: %s: %s", e.Message, e.Reason)
			for _, se := range e.SchemaValidationErrors {
				t.Errorf("  %s (%s): %s", se.FieldPath, se.KeywordLocation, se.Reason)
			}
		}
		t.FailNow()
	}
	m, err := doc.BuildV3Model()
	if err != nil {
		t.Fatal(err)
	}
	return &openAPICheck{t: t, v: v, model: &m.Model, opts: vconfig.NewValidationOptions(), base: base, seen: map[string]bool{}}
}

// noRedirects answers a redirect itself, so that a 303 is checked as sent.
var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// call sends one request and checks that the answer has status want and is
// what the document says of that operation and status: media type, body
// schema, required headers. With validRequest, the request itself must be
// one the document describes (a valid request's answer is checked against
// what the document promises for valid input). It returns the body.
func (c *openAPICheck) call(method, path string, h http.Header, body string, want int, validRequest bool) []byte {
	t := c.t
	t.Helper()
	newReq := func() *http.Request {
		req, err := http.NewRequest(method, c.base+path, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, vs := range h {
			req.Header[k] = vs
		}
		return req
	}
	resp, err := noRedirects.Do(newReq())
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	raw, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatalf("%s %s: reading the answer: %v", method, path, err)
	}
	if resp.StatusCode != want {
		t.Errorf("%s %s: %d %s, want %d", method, path, resp.StatusCode, clip(raw), want)
		return raw
	}
	req := newReq()
	item, perrs, template := vpaths.FindPath(req, c.model, c.opts)
	if item == nil {
		t.Errorf("%s %s: not in docs/openapi.yaml: %v", method, path, perrs)
		return raw
	}
	c.seen[fmt.Sprintf("%s %s %d", method, template, want)] = true
	if validRequest {
		if ok, errs := c.v.ValidateHttpRequestSync(req); !ok {
			c.report("request", method, path, want, nil, errs)
		}
	}
	resp.Body = io.NopCloser(bytes.NewReader(raw))
	if ok, errs := c.v.ValidateHttpResponse(newReq(), resp); !ok {
		c.report("answer", method, path, want, raw, errs)
	}
	return raw
}

func (c *openAPICheck) report(what, method, path string, status int, raw []byte, errs []*verrors.ValidationError) {
	c.t.Helper()
	for _, e := range errs {
		msg := e.Message + ": " + e.Reason
		for _, se := range e.SchemaValidationErrors {
			msg += "; " + se.FieldPath + ": " + se.Reason
		}
		c.t.Errorf("%s %s (%d): the %s does not match docs/openapi.yaml: %s %s", method, path, status, what, msg, clip(raw))
	}
}

// unseen lists the documented responses no call produced, except those
// excused (by "METHOD /template STATUS", with the reason).
func (c *openAPICheck) unseen(excused map[string]string) []string {
	var out []string
	for path, item := range c.model.Paths.PathItems.FromOldest() {
		for method, op := range item.GetOperations().FromOldest() {
			for code := range op.Responses.Codes.FromOldest() {
				k := strings.ToUpper(method) + " " + path + " " + code
				if !c.seen[k] && excused[k] == "" {
					out = append(out, k)
				}
			}
		}
	}
	for k := range excused {
		if c.seen[k] {
			out = append(out, k+" (excused as not exercised, but it was: remove the excuse)")
		}
	}
	slices.Sort(out)
	return out
}

func clip(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}

// TestOpenAPI holds docs/openapi.yaml to the running server: the document is
// valid OpenAPI 3.1 and served at /openapi.yaml as it is in the repository,
// and every answer of `coordinator all` — each success, and each error shape
// (400 by field and non_field_errors, 401 with its challenge, 403, 404, 413,
// 415, 503 with Retry-After while Redis is down) — is what the document
// describes. Every response the document lists must be produced here, so a
// documented answer the server no longer gives fails too.
func TestOpenAPI(t *testing.T) {
	t.Parallel()
	srv := queuetest.StartServer(t) // killed below, for the 503s
	qname := queuetest.Name()
	fake := lmstest.NewDemo(testSecret)
	hash, err := bcrypt.GenerateFromPassword([]byte("support-password-1"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	extra := fmt.Sprintf(`admin:
  basic_auth:
    - {user: support, password_bcrypt: %q}
integrations:
  - {name: woo, type: woocommerce, secrets: [%q], enroll_unregistered: true}
`, hash, wooSecret)
	path := testConfig(t, srv.URL(), lmstest.Start(t, fake).URL, qname, extra)
	rewrite(t, path, 0o600, "http: {addr: ", "http: {pprof: true, addr: ")
	base := startRun(t, "all", path)
	c := newOpenAPICheck(t, base)

	rdb, err := newRedisClient(config.Redis{URL: srv.URL()})
	if err != nil {
		t.Fatal(err)
	}
	defer rdb.Close()
	in := &instance{base: base, lms: fake, queue: qname, insp: asynq.NewInspectorFromRedisClient(rdb)}

	admin := http.Header{"Authorization": {"JWT " + adminToken(t)}}
	withJSON := func(h http.Header) http.Header {
		h = h.Clone()
		h.Set("Content-Type", "application/json")
		return h
	}
	learnerToken, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix(), "administrator": false,
	}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	notAdmin := http.Header{"Authorization": {"JWT " + learnerToken}}
	badToken := http.Header{"Authorization": {"JWT not.a.token"}}
	none := http.Header{}
	basic := http.Header{"Authorization": {"Basic c3VwcG9ydDpzdXBwb3J0LXBhc3N3b3JkLTE="}} // support:support-password-1
	sameOrigin := func(h http.Header) http.Header {
		h = h.Clone()
		h.Set("Sec-Fetch-Site", "same-origin")
		h.Set("Content-Type", "application/x-www-form-urlencoded")
		return h
	}
	tooLarge := `{"order_number":"` + strings.Repeat("x", 70_000) + `"}`

	// The document itself, as it is in the repository.
	if got := c.call("GET", "/openapi.yaml", none, "", 200, true); string(got) != docs.OpenAPI() {
		t.Error("GET /openapi.yaml is not docs/openapi.yaml")
	}
	for _, p := range []string{"/health", "/health/live", "/health/ready", "/metrics"} {
		c.call("GET", p, none, "", 200, true)
	}

	// Orders: accepted (with either way of sending the token), and every
	// refusal.
	enrolled := orderBody("OA-1", 3, "")
	c.call("POST", "/orders/fulfill", withJSON(admin), enrolled, 200, true)
	c.call("POST", "/orders/fulfill", withJSON(http.Header{"Authorization": {"Bearer " + adminToken(t)}}),
		orderBody("OA-2", 4, `,"username":"honor","provider":null,"site":"default"`), 200, true)
	failed := c.call("POST", "/orders/fulfill", withJSON(admin), orderBody("OA-FAIL", 998, ""), 200, true)
	for _, p := range []string{"/orders/fulfill", "/orders/return"} {
		c.call("POST", p, withJSON(admin), `{"course_id":"not a course","order_number":""}`, 400, false)
		c.call("POST", p, withJSON(admin), `[1]`, 400, false)
		c.call("POST", p, withJSON(none), enrolled, 401, false)
		c.call("POST", p, withJSON(badToken), enrolled, 401, false)
		c.call("POST", p, withJSON(notAdmin), enrolled, 403, false)
		c.call("POST", p, withJSON(admin), tooLarge, 413, false)
		c.call("POST", p, http.Header{"Authorization": admin["Authorization"], "Content-Type": {"text/plain"}}, enrolled, 415, false)
	}
	c.call("POST", "/orders/return", withJSON(admin), returnBody("OA-2", 4), 200, true)
	// An entitlement line (course_uuid), placed and returned.
	c.call("POST", "/orders/fulfill", withJSON(admin), entitlementBody(courseA, "OA-ENT", 5), 200, true)
	c.call("POST", "/orders/return", withJSON(admin), entitlementReturn(courseA, "OA-ENT", 5), 200, true)

	// The failed line, for the listing and the retries.
	failedID := jsonString(t, failed, seat.ReceiverEnroll, "response")
	in.waitTaskState(t, failedID, asynq.TaskStateArchived)

	in.waitLine(t, "OA-ENT", entitlement.StateRevoked)
	for _, p := range []string{"/orders/OA-1", "/orders/OA-2?site=default", "/orders/OA-ENT", "/orders/OA%2FSLASH-1"} {
		want := 200
		if strings.Contains(p, "SLASH") {
			want = 404
		}
		c.call("GET", p, admin, "", want, true)
	}
	c.call("GET", "/orders/OA-1?site=nowhere", admin, "", 400, false)
	c.call("GET", "/orders/OA-1", none, "", 401, false)
	c.call("GET", "/orders/OA-1", notAdmin, "", 403, false)
	// Dismissing a failed line, and every refusal.
	dismissed := c.call("POST", "/orders/fulfill", withJSON(admin), orderBody("OA-DIS", 997, ""), 200, true)
	in.waitTaskState(t, jsonString(t, dismissed, seat.ReceiverEnroll, "response"), asynq.TaskStateArchived)
	dismiss := fmt.Sprintf(`{"course_id":%q,"reason":"refunded by hand in the shop"}`, demoCourse)
	c.call("POST", "/orders/OA-DIS/dismiss", withJSON(admin), `{"course_id":"not a course"}`, 400, false)
	c.call("POST", "/orders/NO-SUCH-ORDER/dismiss", withJSON(admin), dismiss, 404, true)
	c.call("POST", "/orders/OA-1/dismiss", withJSON(admin), dismiss, 409, true)
	c.call("POST", "/orders/OA-DIS/dismiss", withJSON(none), dismiss, 401, false)
	c.call("POST", "/orders/OA-DIS/dismiss", withJSON(notAdmin), dismiss, 403, false)
	c.call("POST", "/orders/OA-DIS/dismiss", http.Header{"Authorization": admin["Authorization"], "Content-Type": {"text/plain"}}, dismiss, 415, false)
	c.call("POST", "/orders/OA-DIS/dismiss", withJSON(admin), dismiss, 200, true)
	c.call("POST", "/orders/OA-FAIL/retry", admin, "", 200, true)
	c.call("POST", "/orders/NO-SUCH-ORDER/retry", admin, "", 404, true)
	c.call("POST", "/orders/OA-FAIL/retry?site=nowhere", admin, "", 400, false)
	c.call("POST", "/orders/OA-FAIL/retry", none, "", 401, false)
	c.call("POST", "/orders/OA-FAIL/retry", notAdmin, "", 403, false)

	in.waitTaskState(t, failedID, asynq.TaskStateArchived)
	if page := c.call("GET", "/orders?state=failed&limit=10", admin, "", 200, true); !bytes.Contains(page, []byte("OA-FAIL")) {
		t.Errorf("GET /orders?state=failed lacks the failed line: %s", clip(page))
	}
	c.call("GET", "/orders?state=stuck&limit=0", admin, "", 400, false)
	c.call("GET", "/orders", none, "", 401, false)
	c.call("GET", "/orders", notAdmin, "", 403, false)
	c.call("POST", "/orders/retry", withJSON(admin), `{"state":"failed"}`, 200, true)
	c.call("POST", "/orders/retry", withJSON(admin), `{"colour":"red"}`, 400, false)
	c.call("POST", "/orders/retry", withJSON(none), `{}`, 401, false)
	c.call("POST", "/orders/retry", withJSON(notAdmin), `{}`, 403, false)

	// A shop's webhooks: signed by the platform, not by a token.
	woo := func(topic string, body []byte) http.Header { return wooHeaders(topic, body, wooSecret) }
	order := wooOrder(t, 9101, "nobody-yet@example.com")
	c.call("POST", "/webhooks/woo", woo("order.created", order), string(order), 200, true)
	c.call("POST", "/webhooks/woo", http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, "webhook_id=7", 200, true)
	c.call("POST", "/webhooks/woo", woo("order.created", []byte("{}")), string(order), 401, false)
	c.call("POST", "/webhooks/magento", woo("order.created", order), string(order), 404, false)
	c.call("POST", "/webhooks/woo", woo("product.created", order), string(order), 200, true)
	c.call("POST", "/webhooks/woo", woo("order.created", []byte(`{"id":`)), `{"id":`, 400, false)
	c.call("POST", "/webhooks/woo", woo("order.created", order), strings.Repeat(" ", 600<<10), 413, false)
	c.call("GET", "/orders/woo-9101", admin, "", 200, true)

	// The operators' pages: HTML for people, JSON refusals.
	c.call("GET", "/admin/orders", basic, "", 200, true)
	c.call("GET", "/admin/orders?state=stuck", basic, "", 400, false)
	c.call("GET", "/admin/orders", none, "", 401, false)
	c.call("GET", "/admin/orders", notAdmin, "", 403, false)
	c.call("POST", "/admin/orders/retry", sameOrigin(basic), "state=failed", 303, true)
	c.call("POST", "/admin/orders/retry", sameOrigin(basic), "state=stuck", 400, false)
	c.call("POST", "/admin/orders/retry", sameOrigin(none), "state=failed", 401, false)
	c.call("POST", "/admin/orders/retry", http.Header{"Authorization": basic["Authorization"],
		"Origin": {"http://evil.example"}}, "state=failed", 403, false)
	c.call("GET", "/admin/orders/default/OA-1", basic, "", 200, true)
	c.call("GET", "/admin/orders/default/NO-SUCH-ORDER", basic, "", 404, true)
	c.call("GET", "/admin/orders/bad%20site/OA-1", basic, "", 400, false)
	c.call("GET", "/admin/orders/default/OA-1", none, "", 401, false)
	c.call("GET", "/admin/orders/default/OA-1", notAdmin, "", 403, false)
	c.call("POST", "/admin/orders/default/OA-FAIL/retry", sameOrigin(basic), "", 303, true)
	c.call("POST", "/admin/orders/bad%20site/OA-FAIL/retry", sameOrigin(basic), "", 400, false)
	c.call("POST", "/admin/orders/default/OA-FAIL/retry", sameOrigin(none), "", 401, false)
	c.call("POST", "/admin/orders/default/OA-FAIL/retry", http.Header{"Authorization": basic["Authorization"],
		"Origin": {"http://evil.example"}}, "", 403, false)
	c.call("GET", "/admin/queues/", basic, "", 200, true)
	c.call("GET", "/admin/queues/", none, "", 401, false)
	c.call("GET", "/admin/queues/", notAdmin, "", 403, false)
	c.call("GET", "/debug/pprof/", admin, "", 200, true)
	c.call("GET", "/debug/pprof/", none, "", 401, false)
	c.call("GET", "/debug/pprof/", notAdmin, "", 403, false)

	// Redis down: what could not be recorded or read is 503 with
	// Retry-After, never 500.
	srv.Kill()
	c.call("GET", "/health", none, "", 503, true)
	c.call("GET", "/health/ready", none, "", 503, true)
	c.call("POST", "/orders/fulfill", withJSON(admin), orderBody("OA-DOWN", 5, ""), 503, true)
	c.call("POST", "/orders/return", withJSON(admin), returnBody("OA-DOWN", 5), 503, true)
	c.call("GET", "/orders/OA-1", admin, "", 503, true)
	c.call("POST", "/orders/OA-1/retry", admin, "", 503, true)
	c.call("GET", "/orders", admin, "", 503, true)
	c.call("POST", "/orders/retry", withJSON(admin), `{}`, 503, true)
	c.call("POST", "/orders/OA-1/dismiss", withJSON(admin), fmt.Sprintf(`{"course_id":%q,"reason":"x"}`, demoCourse), 503, true)
	down := wooOrder(t, 9102, "nobody-yet@example.com")
	c.call("POST", "/webhooks/woo", woo("order.created", down), string(down), 503, true)
	c.call("GET", "/admin/orders", basic, "", 503, true)
	c.call("GET", "/admin/orders/default/OA-1", basic, "", 503, true)
	srv.Start()

	excused := map[string]string{
		"GET /admin/orders 429":                              "basic-auth throttling: TestBasicAuthGuessesLimitedPerClient (internal/httpapi)",
		"POST /admin/orders/retry 429":                       "basic-auth throttling, as above",
		"GET /admin/orders/{site}/{order_number} 429":        "basic-auth throttling, as above",
		"POST /admin/orders/{site}/{order_number}/retry 429": "basic-auth throttling, as above",
		"GET /admin/queues/ 429":                             "basic-auth throttling, as above",
		"POST /admin/orders/{site}/{order_number}/retry 503": "a form post while Redis is down: as the order page's 503",
		"POST /admin/orders/retry 503":                       "a form post while Redis is down: as the list page's 503",
	}
	for _, code := range []string{"303", "400", "401", "403", "429"} {
		excused["POST /admin/orders/{site}/{order_number}/dismiss "+code] = "the order page's Dismiss form: TestSupportByEmail posts it, with its cross-site refusal"
	}
	if missing := c.unseen(excused); len(missing) > 0 {
		t.Errorf("documented answers no request here produced (exercise them, or drop them from docs/openapi.yaml):\n%s",
			strings.Join(missing, "\n"))
	}
}

// jsonString digs a string out of a JSON object by keys.
func jsonString(t *testing.T, raw []byte, keys ...string) string {
	t.Helper()
	var v any
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", clip(raw), err)
	}
	for _, k := range keys {
		m, _ := v.(map[string]any)
		v = m[k]
	}
	s, _ := v.(string)
	if s == "" {
		t.Fatalf("%s has no %s", clip(raw), strings.Join(keys, "."))
	}
	return s
}
