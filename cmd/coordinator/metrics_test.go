package main

import (
	"io"
	"net/http"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/seat"
)

func scrape(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("/metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	return string(b)
}

func TestMetrics(t *testing.T) {
	t.Parallel()
	in := startAll(t, "")
	status, out := in.fulfill(t, orderBody("MET-1", 3, ""), "")
	if status != 200 {
		t.Fatalf("fulfill: %d", status)
	}
	in.waitCompleted(t, out[seat.ReceiverEnroll]["response"].(string))
	in.fulfill(t, `{"course_id":"nope"}`, "")
	var text string
	want := []string{
		`coordinator_fulfill_requests_total{result="accepted"} 1`,
		`coordinator_fulfill_requests_total{result="invalid"} 1`,
		`coordinator_http_requests_total{method="POST",route="/orders/fulfill",status="200"} 1`,
		`coordinator_http_requests_total{method="POST",route="/orders/fulfill",status="400"} 1`,
		`coordinator_http_request_duration_seconds_bucket{method="POST",route="/orders/fulfill",le="+Inf"} 2`,
		`coordinator_tasks_total{kind="enroll",outcome="enrolled"} 1`,
		`coordinator_task_attempts_count{kind="enroll",outcome="enrolled"} 1`,
		`coordinator_lms_requests_total{endpoint="enroll",site="default",status="200"} 1`,
		`coordinator_lms_requests_total{endpoint="account",site="default",status="200"} 1`,
		`coordinator_lms_token_fetches_total{result="ok",site="default"} 1`,
		`coordinator_queue_tasks{queue="` + in.queue + `",state="completed"} 1`,
		`coordinator_queue_tasks{queue="` + in.queue + `",state="pending"} 0`,
		`coordinator_queue_up{queue="` + in.queue + `"} 1`,
		`coordinator_queue_oldest_pending_age_seconds{queue="` + in.queue + `"} 0`,
		`process_resident_memory_bytes`,
		`coordinator_build_info{goversion="` + runtime.Version() + `",mode="all",version="dev"} 1`,
	}
	// The worker's counters land just after the task is marked complete.
	deadline := time.Now().Add(5 * time.Second)
	for {
		text = scrape(t, in.base)
		missing := 0
		for _, w := range want {
			if !strings.Contains(text, w) {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, w := range want {
		if !strings.Contains(text, w) {
			t.Errorf("/metrics lacks %s", w)
		}
	}
}
