package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

// startProblems runs `coordinator all` whose retries back off for up to an
// hour (so a retrying line stays retrying unless run now), logging at info
// (operator actions), with the ledger when withLedger.
func startProblems(t *testing.T, withLedger bool, extra string) (*instance, *logtest.Buffer) {
	t.Helper()
	rdb, qname := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	in := &instance{lms: fake, queue: qname, insp: asynq.NewInspectorFromRedisClient(rdb)}
	if withLedger {
		extra = databaseYAML(pgtest.Schema(t)) + extra
	}
	path := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, qname, extra)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	cfg := strings.NewReplacer("max_delay: 1s", "max_delay: 1h", "log: {level: warn}", "log: {level: info}").Replace(string(b))
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	if withLedger {
		mustRunCmd(t, path, nil, "migrate")
	}
	base, logs := startRunLogs(t, "all", path)
	in.base = base
	return in, logs
}

// supportToken is an admin JWT of a named person, whose actions the log
// attributes to them.
func supportToken(t *testing.T) string {
	t.Helper()
	tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
		"iss": testIssuer, "aud": testAudience, "exp": time.Now().Add(time.Hour).Unix(), "administrator": true,
		"sub": "support-anna",
	}).SignedString([]byte(testJWTSecret))
	if err != nil {
		t.Fatal(err)
	}
	return "JWT " + tok
}

// call sends an operator request and decodes its JSON answer.
func (in *instance) call(t *testing.T, method, path, body, auth string, out any) int {
	t.Helper()
	req, _ := http.NewRequest(method, in.base+path, strings.NewReader(body))
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("X-Request-ID", "req-"+strings.ReplaceAll(t.Name(), "/", "-"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, path, resp.StatusCode, raw, err)
		}
	}
	return resp.StatusCode
}

// waitTaskState waits for a task to reach an asynq state.
func (in *instance) waitTaskState(t *testing.T, id string, want asynq.TaskState) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for info, _ := in.insp.GetTaskInfo(in.queue, id); info == nil || info.State != want; info, _ = in.insp.GetTaskInfo(in.queue, id) {
		if time.Now().After(deadline) {
			t.Fatalf("task %s never reached %v", id, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A support person finds stuck lines without their order number, in both
// tiers: failed and retrying lines by state and learner, bad filters
// refused by field, a bulk retry that re-queues the failed ones and runs
// the retrying ones now (not after their hour of backoff), and the order
// retry running a retrying line now; every action logged with its author.
func TestProblemOrders(t *testing.T) {
	t.Parallel()
	for _, tier := range []struct {
		name   string
		ledger bool
	}{{"redis", false}, {"ledger", true}} {
		t.Run(tier.name, func(t *testing.T) {
			t.Parallel()
			in, logs := startProblems(t, tier.ledger, "")
			auth := supportToken(t)
			submit := func(order string, user int64) string {
				t.Helper()
				status, out := in.fulfill(t, orderBody(order, user, ""), "")
				if status != http.StatusOK {
					t.Fatalf("fulfill %s: %d", order, status)
				}
				return out[seat.ReceiverEnroll]["response"].(string)
			}
			okID := submit("PB-OK", 3)
			in.waitCompleted(t, okID)
			failed1, failed2 := submit("PB-F1", 981), submit("PB-F2", 982) // unknown learners: fail for good
			in.waitFinal(t, failed1)
			in.waitFinal(t, failed2)
			// Two lines the LMS throttles for an hour: retrying.
			in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 429, Header: map[string]string{"Retry-After": "3600"}})
			retry1 := submit("PB-R1", 3)
			in.waitTaskState(t, retry1, asynq.TaskStateRetry)
			in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 429, Header: map[string]string{"Retry-After": "3600"}})
			retry2 := submit("PB-R2", 4)
			in.waitTaskState(t, retry2, asynq.TaskStateRetry)

			list := func(query string) []string {
				t.Helper()
				var p pipeline.Page
				if status := in.call(t, "GET", "/orders?"+query, "", auth, &p); status != http.StatusOK {
					t.Fatalf("GET /orders?%s: %d", query, status)
				}
				var got []string
				for _, r := range p.Lines {
					got = append(got, r.OrderNumber+":"+string(r.State))
				}
				return got
			}
			for query, want := range map[string]string{
				"state=failed":               "PB-F2:failed PB-F1:failed",
				"state=retrying":             "PB-R2:retrying PB-R1:retrying",
				"state=enrolled":             "PB-OK:enrolled",
				"learner=981":                "PB-F1:failed",
				"state=retrying&learner=3":   "PB-R1:retrying",
				"since=2999-01-01T00:00:00Z": "",
				"course_id=" + url.QueryEscape(demoCourse) + "&state=failed&site=default": "PB-F2:failed PB-F1:failed",
			} {
				if got := strings.Join(list(query), " "); got != want {
					t.Errorf("GET /orders?%s: %q, want %q", query, got, want)
				}
			}
			// Page by two through the five lines, with a cursor.
			var p1, p2, p3 pipeline.Page
			in.call(t, "GET", "/orders?limit=2", "", auth, &p1)
			in.call(t, "GET", "/orders?limit=2&cursor="+p1.Next, "", auth, &p2)
			in.call(t, "GET", "/orders?limit=2&cursor="+p2.Next, "", auth, &p3)
			seen := map[string]int{}
			for _, p := range []pipeline.Page{p1, p2, p3} {
				for _, r := range p.Lines {
					seen[r.OrderNumber]++
				}
			}
			if len(seen) != 5 || p3.Next != "" || len(p3.Lines) != 1 {
				t.Errorf("pages: %v, last next %q", seen, p3.Next)
			}

			// Bad input: 400 naming the field, never 500; no credentials: 401.
			for query, field := range map[string]string{
				"state=stuck": "state", "since=yesterday": "since", "limit=0": "limit", "limit=501": "limit",
				"cursor=not-a-cursor": "cursor", "learner=a%20b": "learner", "site=nowhere": "site", "course_id=nope": "course_id",
			} {
				var errs map[string][]string
				if status := in.call(t, "GET", "/orders?"+query, "", auth, &errs); status != http.StatusBadRequest || len(errs[field]) == 0 {
					t.Errorf("GET /orders?%s: %d %v, want 400 on %s", query, status, errs, field)
				}
			}
			var errs map[string][]string
			if status := in.call(t, "POST", "/orders/retry", `{"state":"x","bogus":1}`, auth, &errs); status != http.StatusBadRequest {
				t.Errorf("POST /orders/retry with an unknown field: %d %v", status, errs)
			}
			if status := in.call(t, "GET", "/orders", "", "", nil); status != http.StatusUnauthorized {
				t.Errorf("GET /orders without credentials: %d", status)
			}
			if status := in.call(t, "POST", "/orders/retry", `{}`, "", nil); status != http.StatusUnauthorized {
				t.Errorf("POST /orders/retry without credentials: %d", status)
			}

			// The order retry runs its retrying line now.
			var st orderStatus
			if status := in.call(t, "POST", "/orders/PB-R1/retry", "", auth, &st); status != http.StatusOK {
				t.Fatalf("POST /orders/PB-R1/retry: %d", status)
			}
			in.waitCompleted(t, retry1)

			// Bulk: the failed lines of learners that now exist are queued
			// again, the retrying one runs now.
			in.lms.AddUser(981, "late-981")
			in.lms.AddUser(982, "late-982")
			var res pipeline.RetryResult
			if status := in.call(t, "POST", "/orders/retry", `{"state":"failed"}`, auth, &res); status != http.StatusOK {
				t.Fatalf("bulk retry failed: %d", status)
			}
			if res.Requeued != 2 || res.RunNow != 0 {
				t.Errorf("bulk retry of failed lines: %+v, want 2 requeued", res)
			}
			if status := in.call(t, "POST", "/orders/retry", `{}`, auth, &res); status != http.StatusOK {
				t.Fatalf("bulk retry: %d", status)
			}
			if res.RunNow != 1 {
				t.Errorf("bulk retry of the rest: %+v, want 1 run now", res)
			}
			for _, id := range []string{failed1, failed2, retry2} {
				in.waitCompleted(t, id)
			}
			deadline := time.Now().Add(20 * time.Second)
			for got := list("state=enrolled"); len(got) != 5; got = list("state=enrolled") {
				if time.Now().After(deadline) {
					t.Fatalf("enrolled lines after the retries: %v", got)
				}
				time.Sleep(50 * time.Millisecond)
			}

			// Every action is in the log, with its author and request id.
			text := logs.String()
			for _, want := range []string{
				`"msg":"operator_action","request_id":"req-TestProblemOrders-` + tier.name + `","operator":"jwt:support-anna","action":"retry_order","site":"default","order_number":"PB-R1"`,
				`"action":"retry_lines","filter":{"state":"failed"},"requeued":2,"run_now":0`,
			} {
				if !strings.Contains(text, want) {
					t.Errorf("log lacks %s", want)
				}
			}
			// With the ledger, the reconciler may copy a re-queued task's old
			// "failed" back into its row before the queue has replaced the
			// task (a window every retry has, the order retry's too): the
			// second bulk retry may then count it again, harmlessly.
			if !regexp.MustCompile(`"action":"retry_lines","requeued":\d+,"run_now":1`).MatchString(text) {
				t.Error("log lacks the second bulk retry with run_now 1")
			}
		})
	}
}
