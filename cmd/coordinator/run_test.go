package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
)

const (
	demoCourse    = "course-v1:edX+DemoX+Demo_Course"
	testSecret    = "client-secret-for-tests"
	testJWTSecret = "jwt-secret-for-tests-0123456789abcdef" // HS256 wants 32 bytes or more
	testIssuer    = "http://lms.test/oauth2"
	testAudience  = "lms-key"
)

// instance is a running `coordinator all` against the test Redis and a fake LMS.
type instance struct {
	base  string
	lms   *lmstest.Server
	queue string
	insp  *asynq.Inspector
}

// startAll runs `coordinator all` in-process through run(), as main does,
// with extra YAML appended to the generated config.
func startAll(t *testing.T, extra string) *instance {
	t.Helper()
	rdb, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, "all", testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, extra))
	return in
}

// testConfig writes a config file for the given Redis, LMS and queue, with
// extra YAML appended, and returns its path.
func testConfig(t *testing.T, redisURL, lmsURL, queue, extra string) string {
	t.Helper()
	cfg := fmt.Sprintf(`
http: {addr: %q}
shutdown_timeout: 5s
log: {level: warn}
redis: %s
lms:
  url: %q
  client_secret: "${TEST_LMS_SECRET}"
  timeout: 2s
  max_concurrency: 50
  rate_per_minute: 600000
auth:
  jwt:
    - {issuer: %q, audience: %q, secret: "${TEST_JWT_SECRET}"}
worker:
  queue: %q
  http_addr: %q
  retry: {initial_delay: 100ms, max_delay: 1s, max_attempts: 3}
signals:
  fulfill_order_placed: [lms.fulfill_order_placed_send_enroll_in_course]
%s`, freeAddr(t), redisYAML(redisURL), lmsURL, testIssuer, testAudience, queue, freeAddr(t), extra)
	path := filepath.Join(t.TempDir(), "coordinator.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// redisYAML is the redis section: a URL, or a flow mapping given as is
// (sentinel or cluster settings).
func redisYAML(s string) string {
	if strings.HasPrefix(s, "{") {
		return s
	}
	return fmt.Sprintf("{url: %q}", s)
}

var testEnv = map[string]string{"TEST_LMS_SECRET": testSecret, "TEST_JWT_SECRET": testJWTSecret}

// startRun runs the command in-process until the test ends, waits for
// /health when it serves HTTP, and returns the API's base URL.
func startRun(t *testing.T, command, path string) string {
	t.Helper()
	base, _ := startRunLogs(t, command, path)
	return base
}

// startRunLogs is startRun that also returns the process's log.
func startRunLogs(t *testing.T, command, path string) (string, *logtest.Buffer) {
	t.Helper()
	cfg, err := config.Load(path, func(k string) string { return testEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logs := &logtest.Buffer{}
	go func() {
		done <- run(ctx, []string{"--config", path, command}, func(k string) string { return testEnv[k] }, io.Discard, logs)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("run did not stop within 15s of cancel")
		}
		if t.Failed() {
			t.Logf("coordinator logs:\n%s", logs.String())
		}
	})
	base := "http://" + listenAddr(cfg, command)
	if command != "worker" {
		waitHealthy(t, base, done)
	}
	return base, logs
}

func freeAddr(t *testing.T) string {
	t.Helper()
	return fmt.Sprintf("127.0.0.1:%d", queuetest.FreePort(t))
}

func waitHealthy(t *testing.T, base string, done <-chan error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			t.Fatalf("run exited early: %v", err)
		default:
		}
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("coordinator not healthy within 10s")
}

func adminToken(t testing.TB) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix(), "administrator": true,
	}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (in *instance) fulfill(t *testing.T, body, requestID string) (int, map[string]map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.base+"/orders/fulfill", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+adminToken(t))
	if requestID != "" {
		req.Header.Set("X-Request-ID", requestID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /orders/fulfill: %v", err)
	}
	defer resp.Body.Close()
	var out map[string]map[string]any
	raw, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(raw, &out); err != nil && resp.StatusCode == 200 {
		t.Fatalf("decode %s: %v", raw, err)
	}
	return resp.StatusCode, out
}

// waitCompleted waits for the task to be enrolled; a failure ends the test.
func (in *instance) waitCompleted(t *testing.T, taskID string) {
	t.Helper()
	if info := in.waitFinal(t, taskID); info.State != asynq.TaskStateCompleted {
		t.Fatalf("task %s failed: %s", taskID, info.LastErr)
	}
}

func TestFulfillEndToEnd(t *testing.T) {
	t.Parallel()
	in := startAll(t, "")
	tests := []struct {
		name      string
		body      string
		user      string
		course    string
		wantAttrs []any
		wantMode  string
		optIn     bool
	}{
		{
			name:   "new-style key, POSIX seconds",
			body:   `{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":3,"email_opt_in":true,"order_number":"EDX-100001"}`,
			user:   "edx",
			course: "course-v1:edX+DemoX+Demo_Course", wantMode: "verified", optIn: true,
			wantAttrs: []any{
				attr("order", "order_number", "EDX-100001"),
				attr("order", "order_placed", "2024-05-01T12:35:02Z"),
				attr("order", "date_placed", "2024-05-01T12:35:02Z"),
			},
		},
		{
			name:   "legacy key, RFC 3339 with offset, username given",
			body:   `{"course_id":"edX/DemoX/2014","course_mode":"honor","order_placed":"2024-05-01T14:35:02.75+02:00","edx_lms_user_id":"5","email_opt_in":"false","order_number":"EDX-100002","username":"honor"}`,
			user:   "honor",
			course: "edX/DemoX/2014", wantMode: "honor",
			wantAttrs: []any{
				attr("order", "order_number", "EDX-100002"),
				attr("order", "order_placed", "2024-05-01T12:35:02Z"),
				attr("order", "date_placed", "2024-05-01T12:35:02Z"),
			},
		},
		{
			name:   "credit mode, fractional POSIX string",
			body:   `{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"credit","order_placed":"1714566902.9","edx_lms_user_id":6,"email_opt_in":1,"order_number":"EDX-100003","provider":"asu"}`,
			user:   "verified",
			course: "course-v1:edX+DemoX+Demo_Course", wantMode: "credit", optIn: true,
			wantAttrs: []any{
				attr("order", "order_number", "EDX-100003"),
				attr("order", "order_placed", "2024-05-01T12:35:02Z"),
				attr("order", "date_placed", "2024-05-01T12:35:02Z"),
				attr("credit", "provider_id", "asu"),
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reqID := "req-" + strings.ReplaceAll(tt.name[:8], " ", "-")
			status, out := in.fulfill(t, tt.body, reqID)
			if status != http.StatusOK {
				t.Fatalf("status %d, body %v", status, out)
			}
			res := out[seat.ReceiverEnroll]
			taskID, _ := res["response"].(string)
			if res["error"] != false || taskID == "" {
				t.Fatalf("receiver result %v", res)
			}
			in.waitCompleted(t, taskID)

			var calls []lmstest.Call
			for _, c := range in.lms.Calls(lmstest.Enroll) {
				if c.Header.Get("X-Request-ID") == reqID {
					calls = append(calls, c)
				}
			}
			if len(calls) != 1 {
				t.Fatalf("%d enrollment calls with X-Request-ID %s, want 1", len(calls), reqID)
			}
			if got := calls[0].Header.Get("Authorization"); !strings.HasPrefix(got, "JWT ") {
				t.Errorf("Authorization = %q, want JWT <token>", got)
			}
			var got map[string]any
			if err := json.Unmarshal(calls[0].Body, &got); err != nil {
				t.Fatal(err)
			}
			want := map[string]any{
				"user": tt.user, "mode": tt.wantMode, "is_active": true,
				"course_details":        map[string]any{"course_id": tt.course},
				"email_opt_in":          tt.optIn,
				"enrollment_attributes": tt.wantAttrs,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("enrollment body (-want +got):\n%s", diff)
			}
			if e, ok := in.lms.Enrollment(tt.user, tt.course); !ok || !e.IsActive || e.Mode != tt.wantMode {
				t.Errorf("LMS enrollment = %+v, %v", e, ok)
			}
		})
	}
	if n := len(in.lms.Calls(lmstest.Token)); n != 1 {
		t.Errorf("%d token requests for 3 enrollments, want 1 (token reused)", n)
	}
}

func attr(ns, name, value string) any {
	return map[string]any{"namespace": ns, "name": name, "value": value}
}

func TestFulfillConcurrentRepeatsEnqueueOnce(t *testing.T) {
	t.Parallel()
	in := startAll(t, "")
	body := `{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"audit","order_placed":1714566902,"edx_lms_user_id":4,"email_opt_in":false,"order_number":"EDX-200001"}`
	const n = 50
	ids := make([]string, n)
	statuses := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			status, out := in.fulfill(t, body, "")
			statuses[i] = status
			ids[i], _ = out[seat.ReceiverEnroll]["response"].(string)
		})
	}
	wg.Wait()
	for i := range n {
		if statuses[i] != http.StatusOK || ids[i] != ids[0] || ids[i] == "" {
			t.Fatalf("request %d: status %d id %q, want 200 and %q", i, statuses[i], ids[i], ids[0])
		}
	}
	in.waitCompleted(t, ids[0])
	// Repeats after completion are recognised too.
	if status, out := in.fulfill(t, body, ""); status != 200 || out[seat.ReceiverEnroll]["response"] != ids[0] {
		t.Fatalf("repeat after completion: %d %v", status, out)
	}
	time.Sleep(300 * time.Millisecond) // room for a wrongly enqueued duplicate to run
	if calls := in.lms.Calls(lmstest.Enroll); len(calls) != 1 {
		t.Errorf("%d enrollment calls, want 1", len(calls))
	}
	info, err := in.insp.GetQueueInfo(in.queue)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != 1 || info.Completed != 1 {
		t.Errorf("queue holds %d tasks (%d completed), want exactly 1 completed", info.Size, info.Completed)
	}
}

func TestConfigCheck(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	env := map[string]string{"LMS_CLIENT_SECRET": "s", "JWT_SECRET_KEY": testJWTSecret}
	err := run(context.Background(), []string{"config", "check", "--config", "../../configs/coordinator.yaml"},
		func(k string) string { return env[k] }, &out, io.Discard)
	if err != nil {
		t.Fatalf("config check of the shipped config: %v", err)
	}
	// The shipped config names only part one's signal: the others get
	// their defaults, and every signal is printed.
	want := "signals:\n" +
		"  fulfill_entitlement_placed:\n    - lms.fulfill_entitlement_placed_create_entitlement\n" +
		"  fulfill_entitlement_returned:\n    - lms.fulfill_entitlement_returned_revoke_entitlement\n" +
		"  fulfill_order_placed:\n    - lms.fulfill_order_placed_send_enroll_in_course\n" +
		"  fulfill_order_returned:\n    - lms.fulfill_order_returned_send_unenroll_in_course\n" +
		"  fulfillment_completed: []\n" +
		"  shop_dispute_opened: []\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("config check printed:\n%s\nwant the whole signal map:\n%s", out.String(), want)
	}
}
