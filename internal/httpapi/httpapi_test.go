package httpapi

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/intake"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
)

const (
	hsIssuer  = "http://lms.test/oauth2"
	rsIssuer  = "https://sso.test"
	audience  = "lms-key"
	hsSecret  = "test-secret"
	validBody = `{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":42,"email_opt_in":true,"order_number":"EDX-1"}`
)

var rsaKey = func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	return k
}()

// jwksServer serves rsaKey's public half as kid "k1".
func jwksServer(t testing.TB) string {
	t.Helper()
	pub := rsaKey.PublicKey
	doc := map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(srv.Close)
	return srv.URL
}

// newTestAPI returns the API over the given Redis and queue.
func newTestAPI(t testing.TB, rdb redis.UniversalClient, q string) http.Handler {
	t.Helper()
	return newTestAPILog(t, rdb, q, slog.New(slog.DiscardHandler))
}

// newTestAPILog is newTestAPI logging to log.
func newTestAPILog(t testing.TB, rdb redis.UniversalClient, q string, log *slog.Logger) http.Handler {
	t.Helper()
	// The production receivers over a Redis-only pipeline; the LMS
	// handlers never run here (no worker).
	flows := flow.NewRegistry()
	seat.Register(flows, nil)
	kinds := flows.Kinds()
	pipe := pipeline.New(pipeline.Options{Kinds: kinds, Logger: slog.New(slog.DiscardHandler),
		Queue: queue.New(rdb, kinds, queue.Options{Name: q, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Minute})})
	flows.Bind(pipe)
	if err := flows.Signals().Wire(nil); err != nil {
		t.Fatal(err)
	}
	auth := NewAuthenticator(AuthOptions{AdminClaim: "administrator", Issuers: []Issuer{
		{Issuer: hsIssuer, Audience: audience, Secret: hsSecret},
		{Issuer: rsIssuer, Audience: audience, JWKSURL: jwksServer(t) + "/jwks"},
	}}, &http.Client{Timeout: 2 * time.Second})
	return NewHandler(Deps{
		Logger:       log,
		Auth:         auth,
		Intake:       intake.New(flows),
		Orders:       pipe,
		KnownSite:    func(_ context.Context, s string) (bool, error) { return s == fulfillment.DefaultSite, nil },
		Checks:       []Check{{Name: "redis", Ping: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }}},
		MaxBodyBytes: 1024,
	})
}

// testIntake is the intake over a registry holding the seat item's signals,
// whose receivers a test registers itself, and the shops' dispute signal.
func testIntake(t testing.TB, placedReceiver string, placed signals.Receiver[fulfillment.Order],
	returnedReceiver string, returned signals.Receiver[fulfillment.Return]) *intake.Service {
	t.Helper()
	reg := flow.NewRegistry()
	p, r := reg.DeclareLine(flow.Item{Field: fulfillment.ItemCourseRun, Placed: fulfillment.SignalOrderPlaced,
		Returned: fulfillment.SignalOrderReturned}, []string{placedReceiver}, []string{returnedReceiver})
	p.Register(placedReceiver, placed)
	r.Register(returnedReceiver, returned)
	shop.Register(reg)
	if err := reg.Signals().Wire(nil); err != nil {
		t.Fatal(err)
	}
	return intake.New(reg)
}

func claims(mod func(jwt.MapClaims)) jwt.MapClaims {
	c := jwt.MapClaims{"iss": hsIssuer, "aud": audience, "exp": time.Now().Add(time.Hour).Unix(), "administrator": true}
	if mod != nil {
		mod(c)
	}
	return c
}

func hs(t testing.TB, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(hsSecret))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rs(t testing.TB, m jwt.SigningMethod, kid string, c jwt.MapClaims) string {
	t.Helper()
	c["iss"] = rsIssuer
	tok := jwt.NewWithClaims(m, c)
	tok.Header["kid"] = kid
	s, err := tok.SignedString(rsaKey)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func do(h http.Handler, method, path, auth, contentType, body string) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	h := newTestAPI(t, rdb, q)
	pubDER := rsaKey.PublicKey.N.Bytes()
	tests := []struct {
		name string
		auth string
		want int
	}{
		{"JWT prefix", "JWT " + hs(t, claims(nil)), 200},
		{"Bearer prefix", "Bearer " + hs(t, claims(nil)), 200},
		{"RS256 from JWKS", "JWT " + rs(t, jwt.SigningMethodRS256, "k1", claims(nil)), 200},
		{"RS512 from JWKS", "Bearer " + rs(t, jwt.SigningMethodRS512, "k1", claims(nil)), 200},
		{"no header", "", 401},
		{"basic auth", "Basic dXNlcjpwYXNz", 401},
		{"no token", "JWT ", 401},
		{"garbage token", "JWT not.a.token", 401},
		{"expired", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })), 401},
		{"no exp", "JWT " + hs(t, claims(func(c jwt.MapClaims) { delete(c, "exp") })), 401},
		{"unknown issuer", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["iss"] = "http://evil" })), 401},
		{"wrong audience", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["aud"] = "other" })), 401},
		{"wrong secret", "JWT " + func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(nil)).SignedString([]byte("nope"))
			return s
		}(), 401},
		{"alg none", "JWT " + func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodNone, claims(nil)).SignedString(jwt.UnsafeAllowNoneSignatureType)
			return s
		}(), 401},
		{"HS256 claiming the RSA issuer (alg confusion)", "JWT " + func() string {
			s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, claims(func(c jwt.MapClaims) { c["iss"] = rsIssuer })).SignedString(pubDER)
			return s
		}(), 401},
		{"RS256 with unknown kid", "JWT " + rs(t, jwt.SigningMethodRS256, "k2", claims(nil)), 401},
		{"not admin", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["administrator"] = false })), 403},
		{"admin claim missing", "JWT " + hs(t, claims(func(c jwt.MapClaims) { delete(c, "administrator") })), 403},
		{"admin claim as string", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["administrator"] = "true" })), 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(h, "POST", "/orders/fulfill", tt.auth, "application/json", validBody)
			if rec.Code != tt.want {
				t.Fatalf("status %d, want %d; body %s", rec.Code, tt.want, rec.Body)
			}
			if tt.want == 401 && rec.Header().Get("WWW-Authenticate") != `JWT realm="api"` {
				t.Errorf("WWW-Authenticate = %q", rec.Header().Get("WWW-Authenticate"))
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
		})
	}
}

func TestFulfillStatuses(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	h := newTestAPI(t, rdb, q)
	auth := "JWT " + hs(t, claims(nil))
	tests := []struct {
		name, path, contentType, body string
		want                          int
		wantBody                      string
	}{
		{"accepted", "/orders/fulfill", "application/json", validBody, 200, `"error":false`},
		{"trailing slash", "/orders/fulfill/", "application/json; charset=utf-8", validBody, 200, `"error":false`},
		{"form body", "/orders/fulfill", "application/x-www-form-urlencoded", "a=b", 415, "Unsupported media type"},
		{"no content type", "/orders/fulfill", "", validBody, 415, "Unsupported media type"},
		{"too large", "/orders/fulfill", "application/json", `{"x":"` + strings.Repeat("a", 2000) + `"}`, 413, "larger than 1024 bytes"},
		{"malformed", "/orders/fulfill", "application/json", `{"course_id":`, 400, `"non_field_errors":["JSON parse error`},
		{"invalid fields", "/orders/fulfill", "application/json", `{"course_id":"x"}`, 400, `"course_mode":["This field is required."]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(h, "POST", tt.path, auth, tt.contentType, tt.body)
			if rec.Code != tt.want || !strings.Contains(rec.Body.String(), tt.wantBody) {
				t.Fatalf("got %d %s, want %d containing %s", rec.Code, rec.Body, tt.want, tt.wantBody)
			}
			if rec.Header().Get("X-Request-ID") == "" {
				t.Error("no X-Request-ID on the response")
			}
		})
	}
}

func TestRequestIDEchoed(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	h := newTestAPI(t, rdb, q)
	req := httptest.NewRequest("GET", "/health", nil)
	req.Header.Set("X-Request-ID", "shop-abc-123")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Request-ID"); got != "shop-abc-123" {
		t.Errorf("X-Request-ID = %q, want the caller's", got)
	}
	req.Header.Set("X-Request-ID", "bad id\nwith newline")
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Header().Get("X-Request-ID"); got == "" || strings.ContainsAny(got, " \n") {
		t.Errorf("X-Request-ID = %q, want a generated id", got)
	}
}

// With Redis unreachable, fulfill answers 503 with Retry-After and /health
// answers 503: never 200, never 500.
func TestRedisDown(t *testing.T) {
	t.Parallel()
	dead := redis.NewClient(&redis.Options{Addr: "127.0.0.1:1", DialTimeout: time.Second})
	defer dead.Close()
	h := newTestAPI(t, dead, queuetest.Name())
	rec := do(h, "POST", "/orders/fulfill", "JWT "+hs(t, claims(nil)), "application/json", validBody)
	if rec.Code != http.StatusServiceUnavailable || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("fulfill with Redis down: %d (Retry-After %q) %s", rec.Code, rec.Header().Get("Retry-After"), rec.Body)
	}
	var out map[string]receiverResult
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || !out["lms.fulfill_order_placed_send_enroll_in_course"].Error {
		t.Errorf("body %s: want the receiver marked error", rec.Body)
	}
	rec = do(h, "GET", "/health", "", "", "")
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), `"redis":"UNAVAILABLE"`) {
		t.Errorf("health with Redis down: %d %s", rec.Code, rec.Body)
	}
}

func TestHealthOK(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	rec := do(newTestAPI(t, rdb, q), "GET", "/health", "", "", "")
	want := `{"detailed_status":{"redis":"OK"},"overall_status":"OK"}`
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != want {
		t.Errorf("health: %d %s, want 200 %s", rec.Code, rec.Body, want)
	}
}

// FuzzFulfill sends arbitrary bodies to /orders/fulfill and /orders/return
// through the whole API, real Redis included: no body may produce a 5xx.
func FuzzFulfill(f *testing.F) {
	for _, s := range []string{validBody, `{}`, `[]`, `null`, `{"course_id":"edX/DemoX/2014","course_mode":"credit","order_placed":"2024-05-01T12:35:02Z","edx_lms_user_id":"7","email_opt_in":"1","order_number":7,"provider":null}`,
		`{"order_placed":1e309}`, `{"edx_lms_user_id":-0.0}`, "{\"order_number\":\"\u0000\"}", `{"site":"x"}`, `{"a":` + strings.Repeat("[", 100)} {
		f.Add(s, false)
		f.Add(s, true)
	}
	f.Add(returnBody, true)
	rdb, q := queuetest.Redis(f)
	h := newTestAPI(f, rdb, q)
	auth := "JWT " + hs(f, claims(func(c jwt.MapClaims) { c["exp"] = time.Now().Add(24 * time.Hour).Unix() }))
	// Both line endpoints: the fulfill and the return.
	f.Fuzz(func(t *testing.T, body string, ret bool) {
		path := "/orders/fulfill"
		if ret {
			path = "/orders/return"
		}
		rec := do(h, "POST", path, auth, "application/json", body)
		if rec.Code >= 500 {
			t.Fatalf("body %q: status %d %s", body, rec.Code, rec.Body)
		}
		if rec.Code != 200 && rec.Code != 400 && rec.Code != 413 {
			t.Fatalf("body %q: unexpected status %d", body, rec.Code)
		}
		if !json.Valid(rec.Body.Bytes()) {
			t.Fatalf("body %q: response is not JSON", body)
		}
	})
}

func BenchmarkVerifyHS256(b *testing.B) {
	a := NewAuthenticator(AuthOptions{AdminClaim: "administrator", Issuers: []Issuer{{Issuer: hsIssuer, Audience: audience, Secret: hsSecret}}}, http.DefaultClient)
	header := "JWT " + hs(b, claims(nil))
	for _, cached := range []bool{false, true} {
		b.Run(map[bool]string{false: "parsed", true: "cached"}[cached], func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !cached {
					a.verified.m = nil
				}
				if _, err := a.Verify(context.Background(), header); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkFulfill measures the whole fulfill path, real Redis included.
func BenchmarkFulfill(b *testing.B) {
	rdb, q := queuetest.Redis(b)
	h := newTestAPI(b, rdb, q)
	auth := "JWT " + hs(b, claims(nil))
	var n atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			body := strings.Replace(validBody, `"EDX-1"`, `"B-`+strconv.FormatInt(n.Add(1), 10)+`"`, 1)
			if rec := do(h, "POST", "/orders/fulfill", auth, "application/json", body); rec.Code != 200 {
				b.Fatalf("status %d %s", rec.Code, rec.Body)
			}
		}
	})
}

func TestOrderPathValidation(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	h := newTestAPI(t, rdb, q)
	auth := "JWT " + hs(t, claims(nil))
	for path, want := range map[string]int{
		"/orders/%20%20":                      400,
		"/orders/%FF%FE":                      400,
		"/orders/a%00b":                       400,
		"/orders/" + strings.Repeat("x", 300): 400,
		"/orders/never-placed":                404,
		"/orders/never-placed?site=elsewhere": 400,
		"/orders/never-placed/retry":          405, // retry is POST
	} {
		if rec := do(h, "GET", path, auth, "", ""); rec.Code != want {
			t.Errorf("GET %s: %d %s, want %d", path, rec.Code, rec.Body, want)
		}
	}
}
