package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/seat"
)

// waitState waits for a task to reach a final state and returns its info.
func (in *instance) waitFinal(t *testing.T, taskID string) *asynq.TaskInfo {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		info, err := in.insp.GetTaskInfo(in.queue, taskID)
		if err == nil && (info.State == asynq.TaskStateCompleted || info.State == asynq.TaskStateArchived) {
			return info
		}
		time.Sleep(25 * time.Millisecond)
	}
	t.Fatalf("task %s not finished within 20s", taskID)
	return nil
}

func TestWorkerOutcomes(t *testing.T) {
	t.Parallel()
	in := startAll(t, "")
	submit := func(t *testing.T, order string, user int) string {
		t.Helper()
		status, out := in.fulfill(t, orderBody(order, int64(user), ""), "req-"+order)
		if status != http.StatusOK {
			t.Fatalf("status %d %v", status, out)
		}
		return out[seat.ReceiverEnroll]["response"].(string)
	}
	enrollCalls := func(order string) int {
		n := 0
		for _, c := range in.lms.Calls(lmstest.Enroll) {
			if c.Header.Get("X-Request-ID") == "req-"+order {
				n++
			}
		}
		return n
	}

	t.Run("503 twice then success", func(t *testing.T) {
		in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 503}, lmstest.Reply{Status: 503})
		id := submit(t, "OUT-1", 3)
		info := in.waitFinal(t, id)
		if info.State != asynq.TaskStateCompleted || info.Retried != 2 {
			t.Errorf("state %v after %d retries, want completed after 2", info.State, info.Retried)
		}
		if n := enrollCalls("OUT-1"); n != 3 {
			t.Errorf("%d enrollment calls, want 3", n)
		}
	})
	t.Run("unknown user fails at once and can be re-requested", func(t *testing.T) {
		id := submit(t, "OUT-2", 999)
		info := in.waitFinal(t, id)
		if info.State != asynq.TaskStateArchived || info.Retried != 0 {
			t.Fatalf("state %v after %d retries, want archived after none", info.State, info.Retried)
		}
		if info.LastErr == "" {
			t.Error("the failure's message was not kept")
		}
		in.lms.AddUser(999, "late")
		if id2 := submit(t, "OUT-2", 999); id2 != id {
			t.Fatalf("re-request got task %s, want %s", id2, id)
		}
		if info := in.waitFinal(t, id); info.State != asynq.TaskStateCompleted {
			t.Errorf("after re-request: %v %s", info.State, info.LastErr)
		}
	})
	t.Run("transient failures stop at max_attempts", func(t *testing.T) {
		in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 500}, lmstest.Reply{Status: 502}, lmstest.Reply{Status: 504})
		id := submit(t, "OUT-3", 4)
		info := in.waitFinal(t, id)
		if info.State != asynq.TaskStateArchived {
			t.Errorf("state %v, want archived after max_attempts", info.State)
		}
		if n := enrollCalls("OUT-3"); n != 3 {
			t.Errorf("%d enrollment calls, want max_attempts = 3", n)
		}
	})
}

func (in *instance) order(t *testing.T, method, number string) (int, orderStatus) {
	t.Helper()
	req, _ := http.NewRequest(method, in.base+"/orders/"+url.PathEscape(number)+map[string]string{"GET": "", "POST": "/retry"}[method], nil)
	req.Header.Set("Authorization", "JWT "+adminToken(t))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out orderStatus
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

type orderStatus struct {
	OrderNumber string             `json:"order_number"`
	Lines       []fulfillment.Line `json:"lines"`
}

func TestOrderStatusAndRetry(t *testing.T) {
	t.Parallel()
	in := startAll(t, "")
	if status, _ := in.order(t, "GET", "NO-SUCH-ORDER"); status != http.StatusNotFound {
		t.Errorf("unknown order: %d, want 404", status)
	}

	// One order, three lines: enrolled after retries, failed, and retrying.
	const order = "ST/1 #2" // slashes and spaces survive the URL
	in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 503}, lmstest.Reply{Status: 503})
	in.lms.AddCourse("course-v1:edX+Other+2025", lmstest.CourseRun{Modes: []string{"audit"}})
	in.lms.AddCourse("course-v1:edX+Third+2025", lmstest.CourseRun{Modes: []string{"audit"}})
	_, out := in.fulfill(t, courseOrderBody(demoCourse, order, 3, ""), "")
	enrolledID := out[seat.ReceiverEnroll]["response"].(string)
	in.waitFinal(t, enrolledID)
	_, out = in.fulfill(t, courseOrderBody("course-v1:edX+Other+2025", order, 998, ""), "")
	failedID := out[seat.ReceiverEnroll]["response"].(string)
	in.waitFinal(t, failedID)
	in.lms.Script(lmstest.Enroll, lmstest.Reply{Status: 429, Header: map[string]string{"Retry-After": "60"}})
	_, out = in.fulfill(t, courseOrderBody("course-v1:edX+Third+2025", order, 4, ""), "")
	retryingID := out[seat.ReceiverEnroll]["response"].(string)
	deadline := time.Now().Add(10 * time.Second)
	for info, _ := in.insp.GetTaskInfo(in.queue, retryingID); info == nil || info.State != asynq.TaskStateRetry; info, _ = in.insp.GetTaskInfo(in.queue, retryingID) {
		if time.Now().After(deadline) {
			t.Fatal("third line never reached retry")
		}
		time.Sleep(20 * time.Millisecond)
	}

	status, st := in.order(t, "GET", order)
	if status != http.StatusOK || st.OrderNumber != order || len(st.Lines) != 3 {
		t.Fatalf("GET order: %d %+v", status, st)
	}
	byID := map[string]fulfillment.Line{}
	for _, l := range st.Lines {
		byID[l.TaskID] = l
	}
	if l := byID[enrolledID]; l.State != fulfillment.StateEnrolled || l.Attempts != 3 || l.DoneAt["enrolled_at"] == nil || l.CourseID != demoCourse || l.CourseMode != "audit" || l.AcceptedAt.IsZero() {
		t.Errorf("enrolled line: %+v", l)
	}
	if l := byID[failedID]; l.State != fulfillment.StateFailed || l.Attempts != 1 || l.LastError != "lms account: 404: no LMS user with lms_user_id 998" {
		t.Errorf("failed line: %+v", l)
	}
	// Retry-After 60 is capped at this config's max_delay of 1s.
	if l := byID[retryingID]; l.State != fulfillment.StateRetrying || l.Attempts != 1 || l.NextAttemptAt == nil || l.LastError != "lms enroll: 429" {
		t.Errorf("retrying line: %+v", l)
	}

	// Retry re-queues only the failed line.
	in.lms.AddUser(998, "late")
	status, st = in.order(t, "POST", order)
	if status != http.StatusOK {
		t.Fatalf("retry: %d", status)
	}
	for _, l := range st.Lines {
		if l.TaskID == failedID && l.State == fulfillment.StateFailed {
			t.Errorf("failed line still failed after retry: %+v", l)
		}
	}
	if info := in.waitFinal(t, failedID); info.State != asynq.TaskStateCompleted {
		t.Errorf("retried line: %v %s", info.State, info.LastErr)
	}
	if _, ok := in.lms.Enrollment("late", "course-v1:edX+Other+2025"); !ok {
		t.Error("retried line did not enroll the learner")
	}
}
