package metrics

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"
	"golang.org/x/oauth2"

	"github.com/openedx/coordinator/internal/queue/queuetest"
)

func exposition(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	b, _ := io.ReadAll(rec.Body)
	return string(b)
}

func TestLabels(t *testing.T) {
	m := New()
	m.Build("1.2.3", "worker")
	m.Fulfill(true, "")
	m.Fulfill(false, "unavailable")
	m.LMS("default", "read enrollment", 200, 0)
	m.Task("enroll", "enrolled", 2)
	text := exposition(t, m)
	for _, want := range []string{
		`coordinator_build_info{goversion="go`,
		`mode="worker",version="1.2.3"} 1`,
		`coordinator_fulfill_requests_total{result="accepted"} 1`,
		`coordinator_fulfill_requests_total{result="unavailable"} 1`,
		`coordinator_lms_requests_total{endpoint="read_enrollment",site="default",status="200"} 1`,
		`coordinator_task_attempts_bucket{kind="enroll",outcome="enrolled",le="2"} 1`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("exposition lacks %s", want)
		}
	}
	for _, bad := range []string{`=""`, `read enrollment`, `coordinator_queue_`} {
		if strings.Contains(text, bad) {
			t.Errorf("exposition has %s:\n%s", bad, text)
		}
	}
}

func TestTokenResult(t *testing.T) {
	refused := func(code int) error {
		return fmt.Errorf("fetch: %w", &oauth2.RetrieveError{Response: &http.Response{StatusCode: code}})
	}
	for _, c := range []struct {
		err  error
		want string
	}{
		{nil, "ok"},
		{refused(http.StatusUnauthorized), "rejected"},
		{refused(http.StatusBadRequest), "rejected"},
		{refused(http.StatusTooManyRequests), "error"},
		{refused(http.StatusBadGateway), "error"},
		{errors.New("dial tcp 127.0.0.1:1: connect: connection refused"), "error"},
	} {
		if got := tokenResult(c.err); got != c.want {
			t.Errorf("tokenResult(%v) = %s, want %s", c.err, got, c.want)
		}
	}
}

// A queue nothing was enqueued to yet is empty and reachable; a Redis that
// does not answer is not.
func TestQueueGauges(t *testing.T) {
	rdb, q := queuetest.Redis(t)
	m := New()
	m.WatchQueue(asynq.NewInspectorFromRedisClient(rdb), q)
	text := exposition(t, m)
	for _, want := range []string{
		`coordinator_queue_up{queue="` + q + `"} 1`,
		`coordinator_queue_tasks{queue="` + q + `",state="pending"} 0`,
		`coordinator_queue_oldest_pending_age_seconds{queue="` + q + `"} 0`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("fresh queue: exposition lacks %s", want)
		}
	}

	dead := redis.NewClient(&redis.Options{Addr: fmt.Sprintf("127.0.0.1:%d", queuetest.FreePort(t)), MaxRetries: -1})
	defer dead.Close()
	m = New()
	m.WatchQueue(asynq.NewInspectorFromRedisClient(dead), q)
	text = exposition(t, m)
	if !strings.Contains(text, `coordinator_queue_up{queue="`+q+`"} 0`) || strings.Contains(text, "coordinator_queue_tasks") {
		t.Errorf("Redis down: want coordinator_queue_up 0 and no depth, got:\n%s", text)
	}
}
