package lms

import (
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
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
)

const demoCourse = "course-v1:edX+DemoX+Demo_Course"

func newClient(t *testing.T, fake *lmstest.Server, mod func(*Options)) *Client {
	t.Helper()
	srv := lmstest.Start(t, fake)
	o := Options{
		Site: "default", BaseURL: srv.URL, TokenURL: srv.URL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: "s", Timeout: 500 * time.Millisecond,
		MaxConcurrency: 4, RatePerMinute: 60000, Cache: cache.NewMemory(100), Logger: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&o)
	}
	return New(o)
}

func order(user int64, mode string) fulfillment.Order {
	return fulfillment.Order{Site: "default", OrderNumber: "EDX-1", CourseID: demoCourse, CourseMode: mode,
		OrderPlaced: time.Date(2024, 5, 1, 12, 35, 2, 0, time.UTC), LMSUserID: user, RequestID: "req-1"}
}

func TestFulfillReusesTokenAndUsername(t *testing.T) {
	fake := lmstest.NewDemo("s")
	c := newClient(t, fake, nil)
	for _, mode := range []string{"audit", "verified", "verified"} {
		if err := c.Fulfill(context.Background(), order(3, mode)); err != nil {
			t.Fatalf("Fulfill %s: %v", mode, err)
		}
	}
	if n := len(fake.Calls(lmstest.Token)); n != 1 {
		t.Errorf("%d token requests, want 1", n)
	}
	if n := len(fake.Calls(lmstest.Account)); n != 1 {
		t.Errorf("%d account look-ups, want 1 (cached)", n)
	}
	tok := fake.Calls(lmstest.Token)[0]
	if !strings.Contains(string(tok.Body), "token_type=jwt") || !strings.Contains(string(tok.Body), "grant_type=client_credentials") {
		t.Errorf("token request body %q", tok.Body)
	}
	enroll := fake.Calls(lmstest.Enroll)[0]
	if got := enroll.Header.Get("Authorization"); !strings.HasPrefix(got, "JWT ") {
		t.Errorf("Authorization %q, want JWT", got)
	}
	if got := enroll.Header.Get("X-Request-ID"); got != "req-1" {
		t.Errorf("X-Request-ID %q", got)
	}
	if e, _ := fake.Enrollment("edx", demoCourse); e.Mode != "verified" || !e.IsActive {
		t.Errorf("enrollment %+v, want active verified (upgraded)", e)
	}
}

func TestEnrollmentBody(t *testing.T) {
	o := order(3, "credit")
	o.Provider, o.EmailOptIn = "asu", true
	got, _ := json.Marshal(NewEnrollmentData(o, "edx"))
	want := `{"user":"edx","mode":"credit","is_active":true,"course_details":{"course_id":"course-v1:edX+DemoX+Demo_Course"},"email_opt_in":true,"enrollment_attributes":[` +
		`{"namespace":"order","name":"order_number","value":"EDX-1"},{"namespace":"order","name":"order_placed","value":"2024-05-01T12:35:02Z"},` +
		`{"namespace":"order","name":"date_placed","value":"2024-05-01T12:35:02Z"},{"namespace":"credit","name":"provider_id","value":"asu"}]}`
	if diff := cmp.Diff(want, string(got)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestRevokedTokenIsReplaced(t *testing.T) {
	fake := lmstest.NewDemo("s")
	c := newClient(t, fake, nil)
	if err := c.Fulfill(context.Background(), order(3, "audit")); err != nil {
		t.Fatal(err)
	}
	fake.RevokeTokens()
	if err := c.Fulfill(context.Background(), order(4, "audit")); err != nil {
		t.Fatalf("after revocation: %v", err)
	}
	if n := len(fake.Calls(lmstest.Token)); n != 2 {
		t.Errorf("%d token requests, want 2", n)
	}
}

func TestOutcomeClasses(t *testing.T) {
	tests := []struct {
		name       string
		setup      func(*lmstest.Server)
		order      fulfillment.Order
		wantErr    bool
		permanent  bool
		retryAfter time.Duration
		wantMsg    string
		enrollN    int // enrollment calls expected
	}{
		{name: "503 is transient", setup: func(s *lmstest.Server) { s.Script(lmstest.Enroll, lmstest.Reply{Status: 503}) },
			order: order(3, "audit"), wantErr: true, enrollN: 1},
		{name: "429 keeps Retry-After", setup: func(s *lmstest.Server) {
			s.Script(lmstest.Enroll, lmstest.Reply{Status: 429, Body: `{"detail":"Request was throttled. Expected available in 7 seconds."}`, Header: map[string]string{"Retry-After": "7"}})
		}, order: order(3, "audit"), wantErr: true, retryAfter: 7 * time.Second, wantMsg: "throttled", enrollN: 1},
		{name: "slower than timeout is transient", setup: func(s *lmstest.Server) { s.Script(lmstest.Enroll, lmstest.Reply{Status: 200, Delay: 2 * time.Second}) },
			order: order(3, "audit"), wantErr: true, enrollN: 1},
		{name: "connection reset is transient", setup: func(s *lmstest.Server) { s.Script(lmstest.Enroll, lmstest.Reply{Hangup: true}) },
			order: order(3, "audit"), wantErr: true, enrollN: 1},
		{name: "406 unknown username is permanent", order: func() fulfillment.Order { o := order(3, "audit"); o.Username = "ghost"; return o }(),
			wantErr: true, permanent: true, wantMsg: "The user ghost does not exist.", enrollN: 1},
		{name: "unknown lms_user_id is permanent", order: order(999, "audit"), wantErr: true, permanent: true, wantMsg: "no LMS user with lms_user_id 999", enrollN: 0},
		{name: "unknown course is permanent", order: func() fulfillment.Order { o := order(3, "audit"); o.CourseID = "course-v1:X+Y+Z"; return o }(),
			wantErr: true, permanent: true, wantMsg: "No course 'course-v1:X+Y+Z' found", enrollN: 1},
		{name: "403 is permanent", setup: func(s *lmstest.Server) {
			s.Script(lmstest.Enroll, lmstest.Reply{Status: 403, Body: `{"message":"User does not have permission to create enrollment with mode [verified]."}`})
		}, order: order(3, "verified"), wantErr: true, permanent: true, wantMsg: "does not have permission", enrollN: 1},
		{name: "400 after close, already enrolled, is enrolled", setup: func(s *lmstest.Server) {
			s.Enroll(lmstest.Enrollment{User: "edx", CourseID: demoCourse, Mode: "verified", IsActive: true})
			s.CloseEnrollment(demoCourse, true)
		}, order: order(3, "verified"), enrollN: 1},
		{name: "400 after close, not enrolled, is permanent", setup: func(s *lmstest.Server) { s.CloseEnrollment(demoCourse, true) },
			order: order(3, "verified"), wantErr: true, permanent: true, wantMsg: "An error occurred while creating", enrollN: 1},
		{name: "400 after close, enrolled in another mode, is permanent", setup: func(s *lmstest.Server) {
			s.Enroll(lmstest.Enrollment{User: "edx", CourseID: demoCourse, Mode: "audit", IsActive: true})
			s.CloseEnrollment(demoCourse, true)
		}, order: order(3, "verified"), wantErr: true, permanent: true, enrollN: 1},
		{name: "non-staff caller gets 404", setup: func(s *lmstest.Server) { s.AddClient("coordinator-worker", lmstest.Client{Secret: "s"}) },
			order: func() fulfillment.Order { o := order(3, "audit"); o.Username = "edx"; return o }(), wantErr: true, permanent: true, wantMsg: "is the OAuth application's user staff", enrollN: 1},
		{name: "bad client secret is transient", setup: func(s *lmstest.Server) {
			s.AddClient("coordinator-worker", lmstest.Client{Secret: "other", Staff: true})
		},
			order: order(3, "audit"), wantErr: true, wantMsg: "invalid_client", enrollN: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := lmstest.NewDemo("s")
			if tt.setup != nil {
				tt.setup(fake)
			}
			c := newClient(t, fake, nil)
			err := c.Fulfill(context.Background(), tt.order)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				if got := pipeline.IsPermanent(err); got != tt.permanent {
					t.Errorf("IsPermanent(%v) = %v, want %v", err, got, tt.permanent)
				}
				if d, _ := pipeline.RetryIn(err); d != tt.retryAfter {
					t.Errorf("RetryAfter = %v, want %v", d, tt.retryAfter)
				}
				if !strings.Contains(err.Error(), tt.wantMsg) {
					t.Errorf("error %q does not keep %q", err, tt.wantMsg)
				}
			}
			if n := len(fake.Calls(lmstest.Enroll)); n != tt.enrollN {
				t.Errorf("%d enrollment calls, want %d", n, tt.enrollN)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"": 0, "7": 7 * time.Second, "abc": 0, "-3": 0,
		"Thu, 01 Jan 2026 00:00:30 GMT": 30 * time.Second,
	} {
		if got := parseRetryAfter(in, now); got != want {
			t.Errorf("parseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
}

func BenchmarkEnrollmentBody(b *testing.B) {
	o := order(3, "verified")
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(NewEnrollmentData(o, "edx")); err != nil {
			b.Fatal(err)
		}
	}
}

func TestTokenReplacedBeforeExpiry(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.SetTokenTTL(tokenMargin + 3*time.Second) // usable for three seconds
	c := newClient(t, fake, nil)
	if err := c.Fulfill(context.Background(), order(3, "audit")); err != nil {
		t.Fatal(err)
	}
	if err := c.Fulfill(context.Background(), order(4, "audit")); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Calls(lmstest.Token)); n != 1 {
		t.Fatalf("%d token requests within the token's life, want 1", n)
	}
	time.Sleep(3100 * time.Millisecond)
	if err := c.Fulfill(context.Background(), order(5, "audit")); err != nil {
		t.Fatal(err)
	}
	if n := len(fake.Calls(lmstest.Token)); n != 2 {
		t.Errorf("%d token requests after the token neared expiry, want 2", n)
	}
	for _, call := range fake.Calls(lmstest.Enroll, lmstest.Account) {
		if call.Status == 401 {
			t.Errorf("a call was refused with 401: the token was used too close to expiry")
		}
	}
}

// At most max_concurrency enrollment calls reach the LMS at once.
func TestEnrollConcurrencyLimit(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.SetLatency(50 * time.Millisecond)
	var inflight, peak atomic.Int32
	srv := lmstest.Start(t, lmsWithGauge(fake, &inflight, &peak))
	c := New(Options{Site: "default", BaseURL: srv.URL, TokenURL: srv.URL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: "s", Timeout: 5 * time.Second, MaxConcurrency: 3,
		RatePerMinute: 600000, Cache: cache.NewMemory(100), Logger: slog.New(slog.DiscardHandler)})
	var wg sync.WaitGroup
	for range 12 {
		wg.Go(func() {
			o := order(3, "audit")
			o.Username = "edx"
			if err := c.Fulfill(context.Background(), o); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if p := peak.Load(); p != 3 {
		t.Errorf("peak concurrent enrollment calls %d, want 3", p)
	}
}

// Account look-ups are not bounded by MaxConcurrency, only by the callers
// (the worker's concurrency): every connection they use is kept for the
// next call, so a steady load dials no more than its callers do at once.
func TestConnectionsKeptForEveryCaller(t *testing.T) {
	const callers, rounds = 30, 10
	fake := lmstest.NewDemo("s")
	fake.SetLatency(5 * time.Millisecond)
	for i := range int64(callers) {
		fake.AddUser(100+i, fmt.Sprintf("learner%d", i))
	}
	var dials atomic.Int32
	srv := httptest.NewUnstartedServer(fake)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			dials.Add(1)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	c := New(Options{Site: "default", BaseURL: srv.URL, TokenURL: srv.URL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: "s", Timeout: 5 * time.Second, MaxConcurrency: 2,
		Callers: callers, RatePerMinute: 600000, Cache: cache.NewMemory(1), Logger: slog.New(slog.DiscardHandler)})
	// Rounds of callers at once, each round after the last has ended (a
	// burst of attempts, as a batched fetch starts them): between rounds
	// every connection is idle.
	for range rounds {
		var wg sync.WaitGroup
		for i := range int64(callers) {
			wg.Go(func() {
				// A cache of one entry: every call looks the learner up.
				if _, err := c.Username(context.Background(), 100+i, "req-1"); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
	}
	// The first round's, plus the token request's; with the pool sized for
	// MaxConcurrency (2 + 4 idle), every round dials 24 again.
	if d := dials.Load(); d > callers+1 {
		t.Errorf("%d connections dialed for %d callers making %d calls each, want at most %d", d, callers, rounds, callers+1)
	}
}

func lmsWithGauge(next http.Handler, inflight, peak *atomic.Int32) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/api/enrollment/v1/enrollment" {
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for p := peak.Load(); n > p && !peak.CompareAndSwap(p, n); p = peak.Load() {
			}
		}
		next.ServeHTTP(w, r)
	})
}

// The token bucket spaces enrollment calls at rate_per_minute.
func TestEnrollRateLimit(t *testing.T) {
	fake := lmstest.NewDemo("s")
	c := newClient(t, fake, func(o *Options) { o.RatePerMinute = 1200 }) // 20/s, burst 20
	start := time.Now()
	for range 30 {
		o := order(3, "audit")
		o.Username = "edx"
		if err := c.Fulfill(context.Background(), o); err != nil {
			t.Fatal(err)
		}
	}
	// 30 calls at 20/s with a burst of 20 need at least 0.5s.
	if el := time.Since(start); el < 450*time.Millisecond {
		t.Errorf("30 calls took %v; the rate limit did not hold them back", el)
	}
}

func TestReadAnswer(t *testing.T) {
	answer := func(length int64, body string) *http.Response {
		return &http.Response{ContentLength: length, Body: io.NopCloser(strings.NewReader(body))}
	}
	if b, err := readAnswer(answer(13, `{"ok": true}`+"\n")); err != nil || string(b) != `{"ok": true}`+"\n" || cap(b) != 13 {
		t.Errorf("known length: %q (cap %d), %v; want the body in a buffer of its size", b, cap(b), err)
	}
	if b, err := readAnswer(answer(-1, `[{"username":"x"}]`)); err != nil || string(b) != `[{"username":"x"}]` {
		t.Errorf("unknown length (chunked): %q, %v", b, err)
	}
	big := strings.Repeat("x", maxAnswer+10)
	for _, length := range []int64{-1, int64(len(big))} {
		if b, err := readAnswer(answer(length, big)); err != nil || len(b) != maxAnswer {
			t.Errorf("length %d: read %d bytes, %v; want the first %d", length, len(b), err, maxAnswer)
		}
	}
	if _, err := readAnswer(answer(10, "short")); err == nil {
		t.Error("an answer shorter than its Content-Length: no error")
	}
}
