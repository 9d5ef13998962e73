package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

// returnBody is a return of the audit seat orderBody buys.
func returnBody(order string, user int64) string {
	return fmt.Sprintf(`{"course_id":%q,"course_mode":"audit","edx_lms_user_id":%d,"order_number":%q}`, demoCourse, user, order)
}

// post sends a line request with an admin token and returns the status and
// the raw answer (0 and "" when none came; the test is failed, and may go
// on: it is safe from other goroutines).
func (in *instance) post(t *testing.T, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+adminToken(t))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Errorf("POST %s: %v", path, err)
		return 0, ""
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(raw)
}

// send posts a line request to path and returns the status and the one
// receiver's task id.
func (in *instance) send(t *testing.T, path, body string) (int, string) {
	t.Helper()
	status, raw := in.post(t, path, body)
	var out map[string]struct {
		Response string `json:"response"`
	}
	_ = json.Unmarshal([]byte(raw), &out)
	for _, r := range out {
		return status, r.Response
	}
	return status, raw
}

// startTier runs `coordinator all` on the test Redis, with the ledger when
// asked, against a fake LMS with learners from..from+n-1.
func startTier(t *testing.T, ledger bool, from int64, n int) *instance {
	t.Helper()
	fake := lmstest.NewDemo(testSecret)
	addLearners(fake, from, n)
	return startWith(t, "all", fake, ledger, "")
}

// startWith runs command (all, api) on the test Redis and a queue of its
// own against fake, with extra YAML appended to the config and, when asked,
// the ledger in a schema of its own, migrated.
func startWith(t *testing.T, command string, fake *lmstest.Server, ledger bool, extra string) *instance {
	t.Helper()
	rdb, queue := queuetest.Redis(t)
	if ledger {
		extra += databaseYAML(pgtest.Schema(t))
	}
	cfg := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, extra)
	if ledger {
		mustRunCmd(t, cfg, nil, "migrate")
	}
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, command, cfg)
	return in
}

// lineState waits until the order's only line reaches a final state and
// returns it.
func (in *instance) lineState(t *testing.T, order string) fulfillment.Line {
	t.Helper()
	var last orderStatus
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		status, st := in.order(t, "GET", order)
		if status == 200 && len(st.Lines) == 1 {
			last = st
			if s := st.Lines[0].State; s == fulfillment.StateEnrolled || s == fulfillment.StateReturned || s == fulfillment.StateFailed {
				return st.Lines[0]
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("order %s: no final state within 30s: %+v", order, last)
	return fulfillment.Line{}
}

// Every path of a return (README, POST /orders/return) against the fake LMS, in both tiers.
func TestReturns(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			returns(t, startTier(t, ledger, 50000, 100))
		})
	}
}

func returns(t *testing.T, in *instance) {
	fake := in.lms
	enrollment := func(user int64) (lmstest.Enrollment, bool) {
		return fake.Enrollment(fmt.Sprintf("learner%d", user), demoCourse)
	}

	t.Run("enrolled, then returned", func(t *testing.T) {
		if status, _ := in.send(t, "/orders/fulfill", orderBody("RET-1", 50000, "")); status != 200 {
			t.Fatalf("fulfill: %d", status)
		}
		if l := in.lineState(t, "RET-1"); l.State != fulfillment.StateEnrolled {
			t.Fatalf("line %+v, want enrolled", l)
		}
		status, id := in.send(t, "/orders/return", returnBody("RET-1", 50000))
		if status != 200 || !strings.HasPrefix(id, "unenroll_") {
			t.Fatalf("return: %d %q", status, id)
		}
		l := in.lineState(t, "RET-1")
		if l.State != fulfillment.StateReturned || l.DoneAt["returned_at"] == nil || l.DoneAt["enrolled_at"] == nil || len(l.Tasks) != 2 {
			t.Errorf("line %+v, want returned with both tasks and times", l)
		}
		if e, ok := enrollment(50000); !ok || e.IsActive || e.Mode != "audit" {
			t.Errorf("enrollment %+v %v, want inactive audit", e, ok)
		}
	})

	t.Run("returned 1 ms after its fulfill: never left enrolled", func(t *testing.T) {
		var wg sync.WaitGroup
		for u := int64(50010); u < 50030; u++ {
			wg.Go(func() {
				order := fmt.Sprintf("RACE-%d", u)
				if status, _ := in.send(t, "/orders/fulfill", orderBody(order, u, "")); status != 200 {
					t.Errorf("fulfill %s: %d", order, status)
				}
				time.Sleep(time.Millisecond)
				if status, _ := in.send(t, "/orders/return", returnBody(order, u)); status != 200 {
					t.Errorf("return %s: %d", order, status)
				}
			})
		}
		wg.Wait()
		for u := int64(50010); u < 50030; u++ {
			order := fmt.Sprintf("RACE-%d", u)
			if l := in.lineState(t, order); l.State != fulfillment.StateReturned {
				t.Errorf("%s: %+v, want returned", order, l)
			}
			if e, ok := enrollment(u); ok && e.IsActive {
				t.Errorf("%s: learner left enrolled: %+v", order, e)
			}
		}
	})

	t.Run("returned while the LMS holds the enrollment for 2 s", func(t *testing.T) {
		fake.Script(lmstest.Enroll, lmstest.Reply{Delay: 2 * time.Second})
		before := fake.Count(lmstest.Enroll)
		if status, _ := in.send(t, "/orders/fulfill", orderBody("HELD-1", 50040, "")); status != 200 {
			t.Fatal("fulfill")
		}
		waitFor(t, "the enrollment call to arrive", 10*time.Second, func() bool { return fake.Count(lmstest.Enroll) > before })
		if status, _ := in.send(t, "/orders/return", returnBody("HELD-1", 50040)); status != 200 {
			t.Fatal("return")
		}
		if l := in.lineState(t, "HELD-1"); l.State != fulfillment.StateReturned {
			t.Errorf("line %+v, want returned", l)
		}
		if e, ok := enrollment(50040); !ok || e.IsActive {
			t.Errorf("enrollment %+v %v: want enrolled, then deactivated", e, ok)
		}
	})

	t.Run("20 concurrent repeats of a return: at most one deactivation", func(t *testing.T) {
		fake.Enroll(lmstest.Enrollment{User: "learner50050", CourseID: demoCourse, Mode: "audit", IsActive: true})
		before := fake.Count(lmstest.Deactivate)
		ids := make([]string, 20)
		var wg sync.WaitGroup
		for i := range ids {
			wg.Go(func() {
				status, id := in.send(t, "/orders/return", returnBody("REP-1", 50050))
				if status != 200 {
					t.Errorf("repeat %d: %d", i, status)
				}
				ids[i] = id
			})
		}
		wg.Wait()
		for _, id := range ids {
			if id != ids[0] {
				t.Fatalf("repeats answered different ids: %v", ids)
			}
		}
		if l := in.lineState(t, "REP-1"); l.State != fulfillment.StateReturned {
			t.Errorf("line %+v", l)
		}
		if n := fake.Count(lmstest.Deactivate) - before; n != 1 {
			t.Errorf("%d deactivating POSTs, want 1", n)
		}
		// Repeated after it is done: still nothing new.
		in.send(t, "/orders/return", returnBody("REP-1", 50050))
		time.Sleep(300 * time.Millisecond)
		if n := fake.Count(lmstest.Deactivate) - before; n != 1 {
			t.Errorf("%d deactivating POSTs after a late repeat, want 1", n)
		}
	})

	t.Run("failed enrollment, returned, then retried by an operator: nobody enrolled", func(t *testing.T) {
		fake.CloseEnrollment(demoCourse, true)
		if status, _ := in.send(t, "/orders/fulfill", orderBody("RETRY-1", 50070, "")); status != 200 {
			t.Fatal("fulfill")
		}
		if l := in.lineState(t, "RETRY-1"); l.State != fulfillment.StateFailed {
			t.Fatalf("line %+v, want failed (enrollment closed)", l)
		}
		fake.CloseEnrollment(demoCourse, false)
		if status, _ := in.send(t, "/orders/return", returnBody("RETRY-1", 50070)); status != 200 {
			t.Fatal("return")
		}
		if l := in.lineState(t, "RETRY-1"); l.State != fulfillment.StateReturned {
			t.Fatalf("line %+v, want returned", l)
		}
		if status, _ := in.order(t, "POST", "RETRY-1"); status != 200 {
			t.Fatalf("retry: %d", status)
		}
		waitFor(t, "the retried enrollment to end", 10*time.Second, func() bool {
			_, st := in.order(t, "GET", "RETRY-1")
			for _, task := range st.Lines[0].Tasks {
				if task.Kind == seat.KindEnroll {
					return task.State == fulfillment.StateCanceled
				}
			}
			return false
		})
		if e, ok := enrollment(50070); ok && e.IsActive {
			t.Errorf("the retry enrolled the returned learner: %+v", e)
		}
	})

	t.Run("return before any fulfill, then the fulfill: nobody enrolled", func(t *testing.T) {
		if status, _ := in.send(t, "/orders/return", returnBody("EARLY-1", 50060)); status != 200 {
			t.Fatal("return")
		}
		if l := in.lineState(t, "EARLY-1"); l.State != fulfillment.StateReturned {
			t.Fatalf("line %+v, want returned", l)
		}
		status, id := in.send(t, "/orders/fulfill", orderBody("EARLY-1", 50060, ""))
		if status != 200 || id == "" {
			t.Fatalf("fulfill after the return: %d %q, want 200 with a task id", status, id)
		}
		// Without the ledger the enrollment is not even queued; with it, it
		// is, and ends canceled. Either way nobody is enrolled.
		waitFor(t, "no open enrollment task", 10*time.Second, func() bool {
			_, st := in.order(t, "GET", "EARLY-1")
			for _, task := range st.Lines[0].Tasks {
				if task.Kind == seat.KindEnroll && task.State.Open() {
					return false
				}
			}
			return true
		})
		_, st := in.order(t, "GET", "EARLY-1")
		if l := st.Lines[0]; l.State != fulfillment.StateReturned || l.DoneAt["enrolled_at"] != nil {
			t.Errorf("line %+v, want returned and never enrolled", l)
		}
		for _, task := range st.Lines[0].Tasks {
			if task.Kind == seat.KindEnroll && task.State != fulfillment.StateCanceled {
				t.Errorf("enrollment task %+v, want canceled", task)
			}
		}
		if _, ok := enrollment(50060); ok {
			t.Error("the learner was enrolled (or an inactive enrollment created)")
		}
	})
}

// Redis flushed while returns wait in the queue: the reconciler queues them
// again as returns, and each seat is taken back once.
func TestReconcilerRequeuesReturns(t *testing.T) {
	t.Parallel()
	e := newLedgerEnv(t, 52000, 20)
	for u := int64(52000); u < 52020; u++ {
		e.fake.Enroll(lmstest.Enrollment{User: fmt.Sprintf("learner%d", u), CourseID: demoCourse, Mode: "audit", IsActive: true})
	}
	in := &instance{base: startRun(t, "api", e.config())} // no worker yet: the returns stay queued
	for u := int64(52000); u < 52020; u++ {
		if status, _ := in.send(t, "/orders/return", returnBody(fmt.Sprintf("RFLUSH-%d", u), u)); status != 200 {
			t.Fatalf("return %d: %d", u, status)
		}
	}
	opt, _ := redis.ParseURL(e.srv.URL())
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil { // a private server: nobody else's data
		t.Fatal(err)
	}
	startRun(t, "worker", e.config())
	waitFor(t, "every seat taken back", 60*time.Second, func() bool {
		for u := int64(52000); u < 52020; u++ {
			if en, _ := e.fake.Enrollment(fmt.Sprintf("learner%d", u), demoCourse); en.IsActive {
				return false
			}
		}
		return true
	})
	if n := e.fake.Count(lmstest.Deactivate); n != 20 {
		t.Errorf("%d deactivating POSTs for 20 returns, want 20", n)
	}
	if n := e.fake.Count(lmstest.Enroll) - e.fake.Count(lmstest.Deactivate); n != 0 {
		t.Errorf("%d enrollments: the lost returns were requeued as something else", n)
	}
}

// An order accepted by the version before task kinds (task id
// "enroll-<digest>") and repeated after the upgrade is not enrolled twice,
// and its status still reads.
func TestUpgradeKeepsRepeatsIdempotent(t *testing.T) {
	t.Parallel()
	in := startTier(t, false, 53000, 1)
	rdb, _ := newRedisClient(queuetestConfig())
	defer rdb.Close()
	o := fulfillment.Order{Site: "default", OrderNumber: "OLD-1", CourseID: demoCourse, CourseMode: "audit",
		LMSUserID: 53000, OrderPlaced: time.Unix(1714566902, 0).UTC(), AcceptedAt: time.Now().UTC()}
	legacy := "enroll-" + pipeline.Digest(o.Ref().Key())
	// What the earlier version wrote: the order index, then the task.
	if err := rdb.SAdd(t.Context(), "coordinator:{"+in.queue+"}:order:default:OLD-1", legacy).Err(); err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(o)
	if _, err := asynq.NewClientFromRedisClient(rdb).Enqueue(asynq.NewTask(seat.TypeEnroll, payload),
		asynq.TaskID(legacy), asynq.Queue(in.queue), asynq.Retention(time.Hour)); err != nil {
		t.Fatal(err)
	}
	in.waitCompleted(t, legacy)
	status, id := in.send(t, "/orders/fulfill", orderBody("OLD-1", 53000, ""))
	if status != 200 || id != legacy {
		t.Fatalf("repeat after the upgrade: %d %q, want the old task id %q", status, id, legacy)
	}
	time.Sleep(300 * time.Millisecond)
	if n := in.lms.Count(lmstest.Enroll); n != 1 {
		t.Errorf("%d enrollment calls, want 1", n)
	}
	if l := in.lineState(t, "OLD-1"); l.State != fulfillment.StateEnrolled || l.TaskID != legacy {
		t.Errorf("line %+v, want enrolled under the old id", l)
	}
}

func queuetestConfig() config.Redis { return config.Redis{URL: queuetest.URL()} }
