package main

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/entitlement"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/shop/shoptest"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

var chaosFlag = flag.Duration("chaos", 0,
	"TestChaosSoak streams orders for this long in each tier, with kills at random times (also $COORDINATOR_CHAOS); 0: the short soak")

// The short soak: a stream of this length with one kill of each kind. Its
// end is set by asynq's recovery of the tasks the killed worker held: their
// 30 s lease, then 30 s more before a recoverer (each worker process runs
// one at its start and every minute) takes them back.
const chaosShortStream = 15 * time.Second

// chaosLength is how long the soak streams orders, and whether that is the
// long mode (-chaos=15m or COORDINATOR_CHAOS=15m).
func chaosLength(t *testing.T) (time.Duration, bool) {
	t.Helper()
	d := *chaosFlag
	if v := os.Getenv("COORDINATOR_CHAOS"); d == 0 && v != "" {
		var err error
		if d, err = time.ParseDuration(v); err != nil || d < 0 {
			t.Fatalf("COORDINATOR_CHAOS=%q: want a duration such as 15m", v)
		}
	}
	if d == 0 {
		return chaosShortStream, false
	}
	return d, true
}

// chaosSeed seeds the soak's timings: $COORDINATOR_CHAOS_SEED, else the clock.
func chaosSeed(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("COORDINATOR_CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("COORDINATOR_CHAOS_SEED=%q: want an unsigned integer", v)
		}
		return s
	}
	return uint64(time.Now().UnixNano())
}

// A chaos soak, in both tiers: while orders stream in from shops (POST
// /orders/fulfill for course runs and courses, signed WooCommerce
// deliveries) and about a third of them are refunded 0–5 s after they were
// placed, Redis, the worker process and the API process are SIGKILLed at
// random times and started again. Requests answered 503 or not at all are
// sent again, as a shop would. Once every request has its 200 and the
// system is quiet, the fake LMS must hold exactly what the shops paid for:
// every line not returned enrolled (active, in its mode) by one change of
// state, or holding one entitlement; no returned line's learner enrolled or
// entitled; and GET /orders/{n} shows every line in its final state.
// Random are only the timings (seeded, the seed logged); what is asserted
// is the same for every seed.
func TestChaosSoak(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts Redis, the API and the worker for a minute or more")
	}
	streamFor, long := chaosLength(t)
	seed := chaosSeed(t)
	t.Logf("seed %d (COORDINATOR_CHAOS_SEED=%d repeats these timings); streaming %v per tier, long mode %v", seed, seed, streamFor, long)
	t.Parallel()
	for i, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			s := newSoak(t, ledger, seed+uint64(i))
			s.run(streamFor, long)
		})
	}
}

// lockedRand is a seeded source of timings shared by the soak's goroutines.
type lockedRand struct {
	mu sync.Mutex
	r  *rand.Rand
}

func (l *lockedRand) float() float64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.r.Float64()
}

// between is a duration uniformly in [lo, hi).
func (l *lockedRand) between(lo, hi time.Duration) time.Duration {
	return lo + time.Duration(l.float()*float64(hi-lo))
}

// faultyLMS serves the fake LMS as a loaded one behaves: every API call
// waits 5–120 ms before the LMS acts on it (whether or not the caller is
// still there: a killed worker's last call still lands), 6% are answered
// 503 and 2% 429 without being acted on, and 2% are acted on at once but
// answered only after the client's timeout. It records each enrollment call
// that changed an enrollment, so that a repeat that changes nothing (which
// at-least-once delivery allows) is told apart from a second change.
type faultyLMS struct {
	fake  *lmstest.Server
	rng   *lockedRand
	late  time.Duration
	mu    sync.Mutex
	locks map[string]*sync.Mutex // per enrollment: its calls' before and after
	moves map[string][]string    // "user,course" → "none→active:audit", ...
	fault map[string]int
}

func newFaultyLMS(fake *lmstest.Server, rng *lockedRand, late time.Duration) *faultyLMS {
	return &faultyLMS{fake: fake, rng: rng, late: late, locks: map[string]*sync.Mutex{},
		moves: map[string][]string{}, fault: map[string]int{}}
}

func (f *faultyLMS) count(what string) {
	f.mu.Lock()
	f.fault[what]++
	f.mu.Unlock()
}

func (f *faultyLMS) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/oauth2/") {
		f.fake.ServeHTTP(w, r)
		return
	}
	time.Sleep(f.rng.between(5*time.Millisecond, 120*time.Millisecond))
	switch p := f.rng.float(); {
	case p < 0.06:
		f.count("503")
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	case p < 0.08:
		f.count("429")
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
		return
	case p < 0.10:
		f.count("late")
		rec := f.act(r)
		select { // done, but the answer comes after the client gave up
		case <-time.After(f.late):
		case <-r.Context().Done():
		}
		copyRecorded(w, rec)
		return
	}
	copyRecorded(w, f.act(r))
}

// act has the fake LMS act on the call, noting what an enrollment call changed.
func (f *faultyLMS) act(r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	if r.Method != http.MethodPost || r.URL.Path != "/api/enrollment/v1/enrollment" {
		f.fake.ServeHTTP(rec, r)
		return rec
	}
	body, _ := io.ReadAll(r.Body)
	var req struct {
		User          string `json:"user"`
		CourseDetails struct {
			CourseID string `json:"course_id"`
		} `json:"course_details"`
	}
	_ = json.Unmarshal(body, &req)
	key := req.User + "," + req.CourseDetails.CourseID
	f.mu.Lock()
	l := f.locks[key]
	if l == nil {
		l = &sync.Mutex{}
		f.locks[key] = l
	}
	f.mu.Unlock()
	l.Lock()
	defer l.Unlock()
	before := f.enrollment(req.User, req.CourseDetails.CourseID)
	r.Body = io.NopCloser(bytes.NewReader(body))
	f.fake.ServeHTTP(rec, r)
	if after := f.enrollment(req.User, req.CourseDetails.CourseID); after != before {
		f.mu.Lock()
		f.moves[key] = append(f.moves[key], before+"→"+after)
		f.mu.Unlock()
	}
	return rec
}

// enrollment is the fake's enrollment as "none", "active:<mode>" or "inactive:<mode>".
func (f *faultyLMS) enrollment(user, course string) string {
	e, ok := f.fake.Enrollment(user, course)
	switch {
	case !ok:
		return "none"
	case e.IsActive:
		return "active:" + e.Mode
	default:
		return "inactive:" + e.Mode
	}
}

// changes lists what the enrollment calls for a learner's course run changed.
func (f *faultyLMS) changes(user, course string) []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.moves[user+","+course])
}

func copyRecorded(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// How a soak's order reaches Coordinator.
const (
	viaFulfill     = "fulfill"     // POST /orders/fulfill, a course run; refund POST /orders/return
	viaEntitlement = "entitlement" // the same with a course_uuid
	viaWoo         = "woocommerce" // signed deliveries: order.created, then order.updated "refunded"
)

// chaosLine is one order of the soak, with one line.
type chaosLine struct {
	via      string
	order    string
	wooID    int
	user     int64
	item     string // course_id or course_uuid
	mode     string
	refundIn time.Duration // < 0: kept

	mu       sync.Mutex
	placed   int // the final answer: 200, or what ended the shop's retries (0: none)
	returned int
	problem  string
}

func (l *chaosLine) username() string { return fmt.Sprintf("learner%d", l.user) }
func (l *chaosLine) refunded() bool   { return l.refundIn >= 0 }

// want is the line's final state.
func (l *chaosLine) want() fulfillment.State {
	switch {
	case l.via == viaEntitlement && l.refunded():
		return entitlement.StateRevoked
	case l.via == viaEntitlement:
		return entitlement.StateEntitled
	case l.refunded():
		return fulfillment.StateReturned
	default:
		return fulfillment.StateEnrolled
	}
}

// chaosStats counts the shops' requests.
type chaosStats struct {
	requests, ok, unavailable, noAnswer, other atomic.Int64
	longest                                    atomic.Int64 // from a request's first try to its 200, in ms
}

// soak is one tier's run: a private Redis server, the faulty fake LMS,
// `coordinator api` and `coordinator worker` as processes of the binary.
type soak struct {
	t      *testing.T
	ledger bool
	rng    *lockedRand
	redis  *queuetest.Server
	lms    *faultyLMS
	insp   *asynq.Inspector
	cfg    string
	queue  string
	base   string
	token  string
	woo    map[string]any // the WooCommerce order the deliveries are made from
	client *http.Client

	api, worker *chaosProc
	kills       map[string]int
	inFlight    []int // tasks the worker held at each of its kills (-1: unknown)
	redisDown   time.Duration

	mu    sync.Mutex
	lines []*chaosLine
	stats chaosStats
}

func newSoak(t *testing.T, ledger bool, seed uint64) *soak {
	s := &soak{t: t, ledger: ledger, rng: &lockedRand{r: rand.New(rand.NewPCG(seed, 0x0c4a05))},
		queue: queuetest.Name(), token: adminToken(t), kills: map[string]int{},
		client: &http.Client{Timeout: 10 * time.Second}}
	s.redis = queuetest.StartServer(t)
	fake := lmstest.NewDemo(testSecret)
	fake.SetRecording(false) // the soak reads enrollments, entitlements and faultyLMS's changes
	s.lms = newFaultyLMS(fake, s.rng, 2500*time.Millisecond)
	extra := fmt.Sprintf("integrations:\n  - {name: woo, type: woocommerce, secrets: [%q]}\n", wooSecret)
	if ledger {
		extra += databaseYAML(pgtest.Schema(t))
	}
	s.cfg = testConfig(t, s.redis.URL(), lmstest.Start(t, s.lms).URL, s.queue, extra)
	// Enough attempts that the LMS's scripted faults and the attempts
	// asynq counts for a killed worker never exhaust a line (the default
	// is 20); the config's lms.timeout (2s) is below the late answers.
	rewrite(t, s.cfg, 0o600, "max_attempts: 3", "max_attempts: 20")
	cfg, err := config.Load(s.cfg, func(k string) string { return testEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	s.base = "http://" + listenAddr(cfg, "api")
	rdb, err := newRedisClient(config.Redis{URL: s.redis.URL()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	s.insp = asynq.NewInspectorFromRedisClient(rdb)
	if ledger {
		mustRunCmd(t, s.cfg, nil, "migrate")
	}
	raw := shoptest.Patch(t, shoptest.Fixture(t, "woocommerce-order-partially-refunded.wcdocs.json"), func(m map[string]any) {
		item := m["line_items"].([]any)[0].(map[string]any)
		item["sku"] = demoCourse
		m["line_items"], m["refunds"], m["date_paid_gmt"] = []any{item}, []any{}, "2026-12-01T10:00:00"
	})
	if err := json.Unmarshal(raw, &s.woo); err != nil {
		t.Fatal(err)
	}
	return s
}

// chaosProc is one run of a coordinator process; its log is kept in memory.
type chaosProc struct {
	cmd  *exec.Cmd
	logs *logtest.Buffer
}

// start runs `coordinator <command>` as a process of the built binary.
func (s *soak) start(command string) *chaosProc {
	t := s.t
	t.Helper()
	p := &chaosProc{cmd: exec.Command(coordinatorBinary(t), "--config", s.cfg, command), logs: &logtest.Buffer{}}
	p.cmd.Env = append(os.Environ(), "TEST_LMS_SECRET="+testSecret, "TEST_JWT_SECRET="+testJWTSecret)
	p.cmd.Stderr = p.logs
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		if t.Failed() {
			logs := p.logs.String()
			t.Logf("%s (pid %d) log, last 8 KiB:\n%s", command, p.cmd.Process.Pid, logs[max(0, len(logs)-8192):])
		}
	})
	return p
}

// kill stops the process with SIGKILL, as a crash or the OOM killer would.
func (p *chaosProc) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	_ = p.cmd.Wait()
}

// run streams orders for streamFor while killing, then waits for quiet and
// checks the fake LMS against what the shops were answered.
func (s *soak) run(streamFor time.Duration, long bool) {
	t := s.t
	s.api, s.worker = s.start("api"), s.start("worker")
	waitFor(t, "the API to answer /health", 30*time.Second, func() bool {
		resp, err := s.client.Get(s.base + "/health")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})

	began := time.Now()
	stopAt := began.Add(streamFor)
	// The shops give up on a request this long after the stream ended:
	// everything is up again by then.
	ctx, cancel := context.WithDeadline(context.Background(), stopAt.Add(2*time.Minute))
	defer cancel()
	var shops sync.WaitGroup
	var next atomic.Int64
	for range 4 {
		shops.Go(func() {
			for time.Now().Before(stopAt) {
				l := s.newLine(int(next.Add(1)))
				shops.Go(func() { s.place(ctx, l) })
				if l.refunded() {
					shops.Go(func() {
						time.Sleep(l.refundIn)
						s.refund(ctx, l)
					})
				}
				time.Sleep(s.rng.between(100*time.Millisecond, 300*time.Millisecond))
			}
		})
	}
	s.chaos(began, stopAt, long)
	shops.Wait()
	streamEnded := time.Now()

	quiet, pending := s.quiesce(map[bool]time.Duration{false: 2 * time.Minute, true: 5 * time.Minute}[long])
	s.check(pending)
	s.report(time.Since(began), streamEnded.Sub(began), quiet)
}

// newLine makes the soak's n-th order: a course run through the API (45%),
// a course (20%) or a WooCommerce order of a course run (35%); 30% of them
// are refunded 0–5 s after they were placed. Every order has a learner of
// its own.
func (s *soak) newLine(n int) *chaosLine {
	l := &chaosLine{user: 700000 + int64(n), refundIn: -1, mode: "audit", item: demoCourse}
	switch p := s.rng.float(); {
	case p < 0.45:
		l.via, l.order = viaFulfill, fmt.Sprintf("CHAOS-%d", n)
		if s.rng.float() < 0.5 {
			l.mode = "verified"
		}
	case p < 0.65:
		l.via, l.order, l.item, l.mode = viaEntitlement, fmt.Sprintf("CHAOS-%d", n), courseA, "verified"
	default:
		l.via, l.wooID, l.mode = viaWoo, 100000+n, "verified" // the integration's course_mode
		l.order = fmt.Sprintf("woo-%d", l.wooID)
	}
	if s.rng.float() < 0.3 {
		l.refundIn = s.rng.between(0, 5*time.Second)
	}
	s.lms.fake.AddUser(l.user, l.username())
	s.mu.Lock()
	s.lines = append(s.lines, l)
	s.mu.Unlock()
	return l
}

// place sends the line's order until it is answered 200.
func (s *soak) place(ctx context.Context, l *chaosLine) {
	status, problem := s.deliver(ctx, func() *http.Request {
		switch l.via {
		case viaWoo:
			return s.wooDelivery("order.created", l, "completed")
		case viaEntitlement:
			return s.apiRequest("/orders/fulfill", entitlementBody(l.item, l.order, l.user))
		}
		return s.apiRequest("/orders/fulfill", fmt.Sprintf(
			`{"course_id":%q,"course_mode":%q,"order_placed":1714566902,"edx_lms_user_id":%d,"email_opt_in":false,"order_number":%q}`,
			l.item, l.mode, l.user, l.order))
	})
	l.mu.Lock()
	l.placed, l.problem = status, l.problem+problem
	l.mu.Unlock()
}

// refund sends the line's return until it is answered 200.
func (s *soak) refund(ctx context.Context, l *chaosLine) {
	status, problem := s.deliver(ctx, func() *http.Request {
		switch l.via {
		case viaWoo:
			return s.wooDelivery("order.updated", l, "refunded")
		case viaEntitlement:
			return s.apiRequest("/orders/return", entitlementReturn(l.item, l.order, l.user))
		}
		return s.apiRequest("/orders/return", fmt.Sprintf(`{"course_id":%q,"course_mode":%q,"edx_lms_user_id":%d,"order_number":%q}`,
			l.item, l.mode, l.user, l.order))
	})
	l.mu.Lock()
	l.returned, l.problem = status, l.problem+problem
	l.mu.Unlock()
}

func (s *soak) apiRequest(path, body string) *http.Request {
	req, _ := http.NewRequest(http.MethodPost, s.base+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+s.token)
	return req
}

// wooDelivery is a signed WooCommerce delivery of the line's order in the
// given status, paid by the learner (the billing email).
func (s *soak) wooDelivery(topic string, l *chaosLine, status string) *http.Request {
	m := map[string]any{}
	for k, v := range s.woo {
		m[k] = v
	}
	billing := map[string]any{}
	for k, v := range s.woo["billing"].(map[string]any) {
		billing[k] = v
	}
	billing["email"] = l.username() + "@example.com"
	m["id"], m["number"], m["status"], m["billing"] = l.wooID, strconv.Itoa(l.wooID), status, billing
	body, _ := json.Marshal(m)
	req, _ := http.NewRequest(http.MethodPost, s.base+"/webhooks/woo", bytes.NewReader(body))
	req.Header = wooHeaders(topic, body, wooSecret)
	return req
}

// deliver sends a request until it is answered 200, as a shop does: again
// after a 503 (waiting its Retry-After, at most 2 s) or no answer (the API
// is down). Any other answer ends it and is returned with a note.
func (s *soak) deliver(ctx context.Context, build func() *http.Request) (int, string) {
	first := time.Now()
	for {
		s.stats.requests.Add(1)
		resp, err := s.client.Do(build().WithContext(ctx))
		wait := s.rng.between(200*time.Millisecond, 700*time.Millisecond)
		if err != nil {
			s.stats.noAnswer.Add(1)
		} else {
			raw, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				s.stats.ok.Add(1)
				for took := time.Since(first).Milliseconds(); ; {
					if was := s.stats.longest.Load(); took <= was || s.stats.longest.CompareAndSwap(was, took) {
						break
					}
				}
				return http.StatusOK, ""
			case http.StatusServiceUnavailable:
				s.stats.unavailable.Add(1)
				if secs, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil {
					wait = min(time.Duration(secs)*time.Second, 2*time.Second) + s.rng.between(0, 200*time.Millisecond)
				}
			default:
				s.stats.other.Add(1)
				return resp.StatusCode, fmt.Sprintf("answered %d: %s; ", resp.StatusCode, raw)
			}
		}
		select {
		case <-ctx.Done():
			return 0, "no 200 before the shops gave up; "
		case <-time.After(wait):
		}
	}
}

// chaos kills Redis, the worker and the API until stopAt. The long soak
// kills each every 15–75 s, Redis for 0.5–5 s. The short one kills each
// once: Redis first, for longer than the API's 3 s enqueue timeout (so
// that shops see 503s), then the worker: a task whose outcome asynq could
// not write while Redis was down stays active until its lease expires, and
// is taken back by the same recoverer tick, a minute after the new worker
// started, as the tasks the killed worker held.
func (s *soak) chaos(began, stopAt time.Time, long bool) {
	if !long {
		s.kill("redis", began.Add(s.rng.between(500*time.Millisecond, time.Second)), s.rng.between(3500*time.Millisecond, 4500*time.Millisecond))
		s.kill("worker", began.Add(s.rng.between(6*time.Second, 7*time.Second)), s.rng.between(200*time.Millisecond, 2*time.Second))
		s.kill("api", began.Add(s.rng.between(9*time.Second, 12*time.Second)), s.rng.between(200*time.Millisecond, 2*time.Second))
		time.Sleep(time.Until(stopAt))
		return
	}
	next := map[string]time.Time{}
	for _, what := range []string{"redis", "worker", "api"} {
		next[what] = began.Add(s.rng.between(time.Second, 30*time.Second))
	}
	for {
		what := "redis"
		for _, k := range []string{"worker", "api"} {
			if next[k].Before(next[what]) {
				what = k
			}
		}
		if !next[what].Before(stopAt) {
			time.Sleep(time.Until(stopAt))
			return
		}
		down := s.rng.between(200*time.Millisecond, 2*time.Second)
		if what == "redis" {
			down = s.rng.between(500*time.Millisecond, 5*time.Second)
		}
		s.kill(what, next[what], down)
		next[what] = time.Now().Add(s.rng.between(15*time.Second, 75*time.Second))
	}
}

// kill SIGKILLs one part at the given time and starts it again after down.
func (s *soak) kill(what string, at time.Time, down time.Duration) {
	time.Sleep(time.Until(at))
	s.kills[what]++
	switch what {
	case "redis":
		s.redis.Kill()
		time.Sleep(down)
		s.redis.Start()
		s.redisDown += down
	case "api":
		s.api.kill()
		time.Sleep(down)
		s.api = s.start("api")
	case "worker":
		held := -1
		if active, err := s.insp.ListActiveTasks(s.queue, asynq.PageSize(10000)); err == nil {
			held = len(active)
		}
		s.worker.kill()
		s.inFlight = append(s.inFlight, held)
		time.Sleep(down)
		s.worker = s.start("worker")
	}
}

// accepted lists the lines whose order was answered 200.
func (s *soak) accepted() []*chaosLine {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*chaosLine
	for _, l := range s.lines {
		l.mu.Lock()
		ok := l.placed == http.StatusOK
		l.mu.Unlock()
		if ok {
			out = append(out, l)
		}
	}
	return out
}

// quiesce waits up to timeout until GET /orders/{n} shows every accepted
// line in its final state with no task of it open; it returns how long
// that took and the lines that did not get there.
func (s *soak) quiesce(timeout time.Duration) (time.Duration, []*chaosLine) {
	start := time.Now()
	pending := s.accepted()
	lastLog := start
	for {
		var mu sync.Mutex
		var still []*chaosLine
		seen := map[string]int{}
		var wg sync.WaitGroup
		work := make(chan *chaosLine)
		for range 8 {
			wg.Go(func() {
				for l := range work {
					if got, ok := s.final(l); !ok {
						mu.Lock()
						still = append(still, l)
						seen[l.via+" want "+string(l.want())+": "+summary(got)]++
						mu.Unlock()
					}
				}
			})
		}
		for _, l := range pending {
			work <- l
		}
		close(work)
		wg.Wait()
		pending = still
		if time.Since(lastLog) > 10*time.Second && len(pending) > 0 {
			lastLog = time.Now()
			s.t.Logf("%v after the stream: %d lines not final: %v", time.Since(start).Round(time.Second), len(pending), seen)
		}
		if len(pending) == 0 || time.Since(start) > timeout {
			return time.Since(start), pending
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// final reads the line with GET /orders/{n}: it is final when its state is
// the one it must end in and none of its tasks may still run.
func (s *soak) final(l *chaosLine) (string, bool) {
	req, _ := http.NewRequest(http.MethodGet, s.base+"/orders/"+url.PathEscape(l.order), nil)
	req.Header.Set("Authorization", "JWT "+s.token)
	resp, err := s.client.Do(req)
	if err != nil {
		return err.Error(), false
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var st orderStatus
	if resp.StatusCode != http.StatusOK || json.Unmarshal(raw, &st) != nil || len(st.Lines) != 1 {
		return fmt.Sprintf("%d %s", resp.StatusCode, raw), false
	}
	line := st.Lines[0]
	if line.Item() != l.item || line.State != l.want() {
		return string(raw), false
	}
	for _, task := range line.Tasks {
		if task.State.Open() {
			return string(raw), false
		}
	}
	return string(raw), true
}

// summary is a line's state and its tasks' from GET /orders/{n}.
func summary(raw string) string {
	var st orderStatus
	if json.Unmarshal([]byte(raw), &st) != nil || len(st.Lines) != 1 {
		return raw[:min(len(raw), 80)]
	}
	out := string(st.Lines[0].State)
	for _, task := range st.Lines[0].Tasks {
		out += fmt.Sprintf(" %s:%s", task.Kind, task.State)
		if task.State == fulfillment.StateRetrying {
			out += fmt.Sprintf("(attempts %d, next %v: %.80s)", task.Attempts, task.NextAttemptAt, task.LastError)
		}
	}
	return out
}

// check asserts the soak's invariants on every order: each answered 200
// (the shops retried until then), each line in its final state, and the
// fake LMS holding exactly the seats and entitlements not refunded.
func (s *soak) check(pending []*chaosLine) {
	t := s.t
	var problems []string
	s.mu.Lock()
	lines := slices.Clone(s.lines)
	s.mu.Unlock()
	for _, l := range lines {
		l.mu.Lock()
		placed, returned, note := l.placed, l.returned, l.problem
		l.mu.Unlock()
		if placed != http.StatusOK || (l.refunded() && returned != http.StatusOK) {
			problems = append(problems, fmt.Sprintf("%s (%s): order answered %d, return %d: %s", l.order, l.via, placed, returned, note))
		}
	}
	for _, l := range pending {
		got, _ := s.final(l)
		problems = append(problems, fmt.Sprintf("%s (%s): not %s after the wait: %s", l.order, l.via, l.want(), got))
	}
	for _, l := range s.accepted() {
		if p := s.lmsHolds(l); p != "" {
			problems = append(problems, fmt.Sprintf("%s (%s, learner%d, refunded %v): %s", l.order, l.via, l.user, l.refunded(), p))
		}
	}
	for i, p := range problems {
		if i == 20 {
			t.Errorf("... and %d more", len(problems)-i)
			break
		}
		t.Error(p)
	}
}

// lmsHolds checks the fake LMS for the line: a kept course run is enrolled
// in its mode by exactly one change (repeats that change nothing are
// allowed); a refunded one is not active, and was either never enrolled or
// enrolled once and deactivated. A kept course holds exactly one unexpired
// entitlement of the order; a refunded one none, and none was made twice.
func (s *soak) lmsHolds(l *chaosLine) string {
	if l.via == viaEntitlement {
		var of, live []lmstest.Entitlement
		for _, e := range s.lms.fake.Entitlements(l.username()) {
			if e.CourseUUID == l.item {
				of = append(of, e)
				if e.ExpiredAt == nil {
					live = append(live, e)
				}
			}
		}
		switch {
		case len(of) > 1:
			return fmt.Sprintf("%d entitlements made, want at most 1: %+v", len(of), of)
		case !l.refunded() && (len(live) != 1 || live[0].OrderNumber != l.order || live[0].Mode != l.mode):
			return fmt.Sprintf("entitlements %+v, want one unexpired %s of order %s", of, l.mode, l.order)
		case l.refunded() && len(live) != 0:
			return fmt.Sprintf("refunded, yet entitlement %+v is unexpired", live)
		}
		return ""
	}
	now := s.lms.enrollment(l.username(), l.item)
	changes := s.lms.changes(l.username(), l.item)
	enrolled := "none→active:" + l.mode
	switch {
	case !l.refunded() && (now != "active:"+l.mode || !slices.Equal(changes, []string{enrolled})):
		return fmt.Sprintf("enrollment %s after changes %v, want active:%s after one change", now, changes, l.mode)
	case l.refunded() && (strings.HasPrefix(now, "active") ||
		!(len(changes) == 0 || slices.Equal(changes, []string{enrolled, "active:" + l.mode + "→inactive:" + l.mode}))):
		return fmt.Sprintf("refunded: enrollment %s after changes %v, want none, or enrolled once then deactivated", now, changes)
	}
	return ""
}

// report logs what the soak did.
func (s *soak) report(total, streamed, quiet time.Duration) {
	counts := map[string]int{}
	refunds := 0
	s.mu.Lock()
	for _, l := range s.lines {
		counts[l.via]++
		if l.refunded() {
			refunds++
		}
	}
	n := len(s.lines)
	s.mu.Unlock()
	s.lms.mu.Lock()
	faults := fmt.Sprint(s.lms.fault)
	s.lms.mu.Unlock()
	s.t.Logf("ledger=%v: %v streaming, %v in all; %d orders (%d course runs by API, %d courses by API, %d WooCommerce), %d refunded 0–5 s later; "+
		"kills: redis %d (down %v in all), worker %d (tasks it held at each: %v), api %d; "+
		"shop requests %d: 200 %d, 503 %d, no answer %d, other %d (longest from first try to 200: %v); LMS faults %s; quiet %v after the last shop request was answered",
		s.ledger, streamed.Round(time.Second), total.Round(time.Second), n, counts[viaFulfill], counts[viaEntitlement], counts[viaWoo], refunds,
		s.kills["redis"], s.redisDown.Round(100*time.Millisecond), s.kills["worker"], s.inFlight, s.kills["api"],
		s.stats.requests.Load(), s.stats.ok.Load(), s.stats.unavailable.Load(), s.stats.noAnswer.Load(), s.stats.other.Load(),
		(time.Duration(s.stats.longest.Load()) * time.Millisecond).Round(100*time.Millisecond), faults, quiet.Round(100*time.Millisecond))
}
