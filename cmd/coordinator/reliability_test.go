package main

import (
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
)

// Redis killed and restarted during a stream of requests: every request
// answered 200 is enrolled, every other one was answered 503, and the API,
// /health and the worker recover by themselves.
func TestRedisOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts a Redis server")
	}
	t.Parallel()
	srv := queuetest.StartServer(t)
	fake := lmstest.NewDemo(testSecret)
	for id := int64(10000); id < 16000; id++ {
		fake.AddUser(id, fmt.Sprintf("learner%d", id))
	}
	qname := queuetest.Name()
	base := startRun(t, "all", testConfig(t, srv.URL(), lmstest.Start(t, fake).URL, qname, ""))
	health := func() int {
		resp, err := http.Get(base + "/health")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	var downAt, upAt time.Time
	results := stream(t, base, "OUTAGE", 10000, func() {
		time.Sleep(1500 * time.Millisecond)
		srv.Kill()
		downAt = time.Now()
		time.Sleep(1 * time.Second)
		if got := health(); got != http.StatusServiceUnavailable {
			t.Errorf("/health with Redis down: %d, want 503", got)
		}
		time.Sleep(2 * time.Second)
		srv.Start()
		upAt = time.Now()
		time.Sleep(3 * time.Second)
	})
	if got := health(); got != http.StatusOK {
		t.Errorf("/health after Redis returned: %d, want 200", got)
	}

	var accepted []int64
	var refused int
	var worst time.Duration
	for _, r := range results {
		worst = max(worst, r.latency)
		switch r.status {
		case http.StatusOK:
			accepted = append(accepted, r.user)
		case http.StatusServiceUnavailable:
			refused++
		default:
			t.Errorf("order of learner %d answered %d, want 200 or 503", r.user, r.status)
		}
	}
	if refused == 0 || len(accepted) == 0 {
		t.Fatalf("%d accepted, %d refused: the outage was not exercised", len(accepted), refused)
	}
	// Every accepted order is enrolled, including those queued just
	// before the crash and those the worker held when Redis died.
	missing := waitAllEnrolled(fake, accepted, 150*time.Second)
	if len(missing) > 0 {
		t.Errorf("%d of %d accepted orders never enrolled: %v", len(missing), len(accepted), missing[:min(10, len(missing))])
		rdb, _ := newRedisClient(config.Redis{URL: srv.URL()})
		defer rdb.Close()
		insp := asynq.NewInspectorFromRedisClient(rdb)
		for _, u := range missing[:min(5, len(missing))] {
			id := pipeline.TaskID(seat.KindEnroll, fulfillment.Key{Site: "default", OrderNumber: fmt.Sprintf("OUTAGE-%d", u), Item: demoCourse})
			ti, err := insp.GetTaskInfo(qname, id)
			if err != nil {
				t.Logf("learner %d: task %s: %v", u, id, err)
				continue
			}
			t.Logf("learner %d: task %s state %v retried %d err %q next %v", u, id, ti.State, ti.Retried, ti.LastErr, ti.NextProcessAt)
		}
		qi, _ := insp.GetQueueInfo(qname)
		t.Logf("queue %+v", qi)
		servers, _ := insp.Servers()
		for _, sv := range servers {
			t.Logf("server %s status %s active workers %d", sv.ID, sv.Status, len(sv.ActiveWorkers))
		}
	}
	t.Logf("outage %v: %d requests, %d accepted (all enrolled: %v, the last %v after Redis returned), %d refused with 503, slowest answer %v",
		upAt.Sub(downAt).Round(time.Millisecond), len(results), len(accepted), len(missing) == 0,
		time.Since(upAt).Round(time.Second), refused, worst.Round(time.Millisecond))
}

var (
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

// coordinatorBinary builds the real binary once per test run.
func coordinatorBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "coordinator-bin")
		if err != nil {
			buildErr = err
			return
		}
		binPath = filepath.Join(dir, "coordinator")
		out, err := exec.Command("go", "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// startProcess runs the binary as a separate process.
func startProcess(t *testing.T, cfgPath, command string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(coordinatorBinary(t), "--config", cfgPath, command)
	cmd.Env = append(os.Environ(), "TEST_LMS_SECRET="+testSecret, "TEST_JWT_SECRET="+testJWTSecret)
	var logs logtest.Buffer
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
		if t.Failed() {
			t.Logf("%s process logs:\n%s", command, logs.String())
		}
	})
	return cmd
}

// enqueueOrders queues n orders for learners from..from+n-1 directly.
func enqueueOrders(t *testing.T, rdb redis.UniversalClient, queueName string, fake *lmstest.Server, from int64, n int) []string {
	t.Helper()
	enq := redisPipeline(rdb, queueName)
	var ids []string
	for u := from; u < from+int64(n); u++ {
		fake.AddUser(u, fmt.Sprintf("learner%d", u))
		o := fulfillment.Order{Site: "default", OrderNumber: fmt.Sprintf("CRASH-%d", u),
			CourseID: demoCourse, CourseMode: "audit", LMSUserID: u, Username: fmt.Sprintf("learner%d", u),
			OrderPlaced: time.Unix(1714566902, 0).UTC(), AcceptedAt: time.Now().UTC()}
		id, err := enq.Accept(t.Context(), seat.KindEnroll, o.Ref(), o)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	return ids
}

// redisPipeline is a Redis-only pipeline over a test's queue, for queueing
// tasks directly; it runs none.
func redisPipeline(rdb redis.UniversalClient, queueName string) *pipeline.Service {
	kinds := pipeline.NewKinds(seat.Kinds(nil, nil)...)
	return pipeline.New(pipeline.Options{Kinds: kinds, Logger: slog.New(slog.DiscardHandler),
		Queue: queue.New(rdb, kinds, queue.Options{Name: queueName, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Minute})})
}

func waitFor(t *testing.T, what string, timeout time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// inFlight is a worker process with n tasks in flight against a fake LMS
// that holds every enrollment for latency.
type inFlight struct {
	rdb    redis.UniversalClient
	queue  string
	fake   *lmstest.Server
	cfg    string
	ids    []string
	worker *exec.Cmd
}

func startInFlight(t *testing.T, latency time.Duration, from int64, n int) inFlight {
	t.Helper()
	rdb, queueName := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	fake.SetLatency(latency)
	cfg := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queueName, "")
	ids := enqueueOrders(t, rdb, queueName, fake, from, n)
	w := startProcess(t, cfg, "worker")
	waitFor(t, fmt.Sprintf("%d enrollment calls in flight", n), 30*time.Second, func() bool { return len(fake.Calls(lmstest.Enroll)) >= n })
	return inFlight{rdb, queueName, fake, cfg, ids, w}
}

// terminate sends SIGTERM and waits for the process; nil means exit 0.
func terminate(t *testing.T, cmd *exec.Cmd) error {
	t.Helper()
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	return cmd.Wait()
}

// A worker SIGKILLed with 30 tasks in flight against a slow LMS loses
// none: a new worker completes all 30, and each learner is enrolled once.
func TestWorkerCrashLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for asynq's lease recovery (up to two minutes)")
	}
	t.Parallel()
	f := startInFlight(t, time.Minute, 20000, 30) // every enrollment hangs until the worker dies
	if err := f.worker.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = f.worker.Wait()
	killedAt := time.Now()
	f.fake.SetLatency(0)

	second := startProcess(t, f.cfg, "worker")
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	waitFor(t, "all 30 tasks completed", 3*time.Minute, func() bool {
		info, err := insp.GetQueueInfo(f.queue)
		return err == nil && info.Completed == 30
	})
	recovered := time.Since(killedAt)
	info, _ := insp.GetQueueInfo(f.queue)
	if info.Size != 30 || info.Archived != 0 {
		t.Errorf("queue: %d tasks, %d failed; want exactly the 30 completed", info.Size, info.Archived)
	}
	for i, id := range f.ids {
		ti, err := insp.GetTaskInfo(f.queue, id)
		if err != nil || ti.State != asynq.TaskStateCompleted {
			t.Errorf("task %s: %v %v", id, ti, err)
		}
		user := fmt.Sprintf("learner%d", 20000+i)
		if e, ok := f.fake.Enrollment(user, demoCourse); !ok || !e.IsActive {
			t.Errorf("%s not enrolled", user)
		}
	}
	perOrder := map[string]int{}
	for _, c := range f.fake.Calls(lmstest.Enroll) {
		perOrder[orderOf(c.Body)]++
	}
	t.Logf("worker killed with 30 in flight; a new worker finished all 30 after %v; enrollment calls per order: %v (the LMS treats the repeat as a no-op)",
		recovered.Round(time.Second), slices.Collect(maps.Values(perOrder)))
	if err := terminate(t, second); err != nil {
		t.Errorf("worker exit after SIGTERM: %v, want status 0", err)
	}
}

// SIGTERM lets in-flight tasks finish within shutdown_timeout.
func TestWorkerDrainsOnSIGTERM(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the worker as a process")
	}
	t.Parallel()
	f := startInFlight(t, time.Second, 30000, 10)
	if err := terminate(t, f.worker); err != nil {
		t.Fatalf("worker exit after SIGTERM: %v, want status 0", err)
	}
	insp := asynq.NewInspectorFromRedisClient(f.rdb)
	for _, id := range f.ids {
		if ti, err := insp.GetTaskInfo(f.queue, id); err != nil || ti.State != asynq.TaskStateCompleted {
			t.Errorf("task %s after drain: %v %v, want completed", id, ti.State, err)
		}
	}
}

func orderOf(body []byte) string {
	s := string(body)
	i := strings.Index(s, `"order_number","value":"`)
	if i < 0 {
		return ""
	}
	s = s[i+len(`"order_number","value":"`):]
	return s[:strings.IndexByte(s, '"')]
}
