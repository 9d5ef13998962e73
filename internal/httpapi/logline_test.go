package httpapi

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue/queuetest"
)

// Every request to /orders/* is one wide log line at info, http_request,
// carrying what support looks for: request id, route, status, duration, and
// what the handler learned (order, course, site, each receiver's result).
func TestOneLogLinePerRequest(t *testing.T) {
	t.Parallel()
	rdb, q := queuetest.Redis(t)
	var buf logtest.Buffer
	h := newTestAPILog(t, rdb, q, slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})))
	tok := hs(t, claims(nil))
	post := func(body, ctype string) int {
		req := httptest.NewRequest(http.MethodPost, "/orders/fulfill", strings.NewReader(body))
		req.Header.Set("Authorization", "JWT "+tok)
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("X-Request-ID", "req-42")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Code
	}

	if code := post(validBody, "application/json"); code != http.StatusOK {
		t.Fatalf("fulfill: %d", code)
	}
	lines := buf.Lines(t)
	if len(lines) != 1 {
		t.Fatalf("%d log lines for one accepted order, want 1: %v", len(lines), lines)
	}
	l := lines[0]
	want := map[string]any{"msg": "http_request", "level": "INFO", "request_id": "req-42", "method": "POST",
		"route": "/orders/fulfill", "status": float64(200), "order_number": "EDX-1",
		"course_id": "course-v1:edX+DemoX+Demo_Course", "site": "default", "signal": "fulfill_order_placed"}
	for k, v := range want {
		if l[k] != v {
			t.Errorf("%s = %v, want %v (line %v)", k, l[k], v, l)
		}
	}
	if _, ok := l["duration_us"].(float64); !ok {
		t.Errorf("no duration_us in %v", l)
	}
	recv, _ := l["receivers"].(map[string]any)
	var enroll string
	for _, v := range recv {
		enroll, _ = v.(string)
	}
	wantID := pipeline.TaskID("enroll", fulfillment.Key{Site: "default", OrderNumber: "EDX-1", Item: "course-v1:edX+DemoX+Demo_Course"})
	if len(recv) != 1 || enroll != wantID {
		t.Errorf("receivers = %v, want the enrollment's task id %s", l["receivers"], wantID)
	}

	// A refused request says why, in the same single line.
	if code := post(`{"order_number":""}`, "application/json"); code != http.StatusBadRequest {
		t.Fatalf("invalid: %d", code)
	}
	lines = buf.Lines(t)
	if len(lines) != 1 || lines[0]["refused"] != "invalid" || lines[0]["status"] != float64(400) {
		t.Fatalf("invalid request logged %v, want one line with refused=invalid", lines)
	}
	if f, _ := lines[0]["invalid_fields"].([]any); len(f) == 0 {
		t.Errorf("no invalid_fields in %v", lines[0])
	}
}
