package main

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/lms/lmstest"
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
		body := `{"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"audit","order_placed":1714566902,"edx_lms_user_id":` +
			strconv.Itoa(user) + `,"email_opt_in":false,"order_number":"` + order + `"}`
		status, out := in.fulfill(t, body, "req-"+order)
		if status != http.StatusOK {
			t.Fatalf("status %d %v", status, out)
		}
		return out[receiverEnroll]["response"].(string)
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
