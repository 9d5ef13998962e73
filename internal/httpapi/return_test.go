package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/golang-jwt/jwt/v5"

	"github.com/openedx/coordinator/internal/queue/queuetest"
)

const returnBody = `{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","edx_lms_user_id":42,"order_number":"EDX-1"}`

func TestReturnStatuses(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	h := newTestAPI(t, rdb, q)
	admin := "JWT " + hs(t, claims(nil))
	tests := []struct {
		name, path, auth, ctype, body string
		status                        int
		want                          string // in the body
	}{
		{"accepted", "/orders/return", admin, "application/json", returnBody, 200, `"lms.fulfill_order_returned_send_unenroll_in_course":{"response":"unenroll_`},
		{"trailing slash", "/orders/return/", admin, "application/json", returnBody, 200, `"error":false`},
		{"username instead of id", "/orders/return", admin, "application/json",
			`{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","username":"edx","order_number":"EDX-2","returned_at":"2026-11-27T10:00:00Z"}`, 200, `unenroll_`},
		{"neither learner field", "/orders/return", admin, "application/json",
			`{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","order_number":"EDX-3"}`, 400, `"edx_lms_user_id":["One of edx_lms_user_id, username or email is required."]`},
		{"every bad field at once", "/orders/return", admin, "application/json",
			`{"course_id":"x","course_mode":"Verified!","order_number":"","edx_lms_user_id":-1,"returned_at":"soon"}`, 400, `"returned_at":["Must be POSIX seconds or an RFC 3339 timestamp."]`},
		{"unknown site", "/orders/return", admin, "application/json", strings.Replace(returnBody, `"order_number"`, `"site":"north","order_number"`, 1), 400, `"site"`},
		{"malformed JSON", "/orders/return", admin, "application/json", `{"course_id":`, 400, "non_field_errors"},
		{"not JSON", "/orders/return", admin, "text/plain", returnBody, 415, "Unsupported media type"},
		{"too large", "/orders/return", admin, "application/json", `{"x":"` + strings.Repeat("a", 2000) + `"}`, 413, "larger than"},
		{"no token", "/orders/return", "", "application/json", returnBody, 401, ""},
		{"not admin", "/orders/return", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["administrator"] = false })), "application/json", returnBody, 403, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := do(h, "POST", tt.path, tt.auth, tt.ctype, tt.body)
			if rec.Code != tt.status || !strings.Contains(rec.Body.String(), tt.want) {
				t.Errorf("%d %s, want %d containing %s", rec.Code, rec.Body, tt.status, tt.want)
			}
		})
	}
	// Both field errors of the bad body are there, keyed by field.
	rec := do(h, "POST", "/orders/return", admin, "application/json",
		`{"course_id":"x","course_mode":"Verified!","order_number":"","edx_lms_user_id":-1}`)
	var fields map[string][]string
	if err := json.Unmarshal(rec.Body.Bytes(), &fields); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"course_id", "course_mode", "order_number", "edx_lms_user_id"} {
		if len(fields[f]) == 0 {
			t.Errorf("no error for %s in %s", f, rec.Body)
		}
	}
	// Repeats answer the same task id.
	first, again := do(h, "POST", "/orders/return", admin, "application/json", returnBody), do(h, "POST", "/orders/return", admin, "application/json", returnBody)
	if first.Body.String() != again.Body.String() {
		t.Errorf("repeat answered %s, first %s", again.Body, first.Body)
	}
	// The order shows the return's line.
	rec = do(h, "GET", "/orders/EDX-1", admin, "", "")
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), `"kind":"unenroll"`) {
		t.Errorf("order after a return: %d %s", rec.Code, rec.Body)
	}
}

// Probes and scrapes are logged at debug, other requests at info.
func TestProbesLoggedAtDebug(t *testing.T) {
	var buf bytes.Buffer
	h := NewHandler(Deps{
		Logger:    slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})),
		Auth:      NewAuthenticator(AuthOptions{AdminClaim: "administrator"}, http.DefaultClient),
		KnownSite: func(context.Context, string) (bool, error) { return true, nil },
		Checks:    []Check{{Name: "x", Ping: func(context.Context) error { return nil }, Ready: true}},
	})
	for _, path := range []string{"/health", "/health/live", "/health/ready"} {
		if rec := do(h, "GET", path, "", "", ""); rec.Code != 200 {
			t.Fatalf("%s: %d", path, rec.Code)
		}
	}
	if buf.Len() != 0 {
		t.Errorf("probes logged at info: %s", buf.String())
	}
	do(h, "GET", "/orders/EDX-1", "", "", "")
	if !strings.Contains(buf.String(), `"route":"/orders/{order_number}"`) {
		t.Errorf("an API request was not logged at info: %q", buf.String())
	}
}
