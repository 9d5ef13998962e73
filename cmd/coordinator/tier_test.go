package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"
	"github.com/redis/go-redis/v9"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

const testSecretKey = "6f1c3b0e9d2a4c8b7e5f0a1d2c3b4a59687f6e5d4c3b2a190817263544536271"

func databaseYAML(url string) string {
	return fmt.Sprintf("database:\n  url: %q\n  reconcile_interval: 300ms\n  secret_key: %q\n", url, testSecretKey)
}

// runCmd runs a one-shot command (migrate, sites ...) and returns its output.
func runCmd(t *testing.T, cfgPath string, env map[string]string, args ...string) (string, error) {
	t.Helper()
	var out bytes.Buffer
	getenv := func(k string) string {
		if v, ok := env[k]; ok {
			return v
		}
		return testEnv[k]
	}
	err := run(context.Background(), append([]string{"--config", cfgPath}, args...), getenv, &out, io.Discard)
	return out.String(), err
}

func mustRunCmd(t *testing.T, cfgPath string, env map[string]string, args ...string) string {
	t.Helper()
	out, err := runCmd(t, cfgPath, env, args...)
	if err != nil {
		t.Fatalf("coordinator %v: %v", args, err)
	}
	return out
}

// post sends a fulfill request and returns its status.
func post(t *testing.T, base, body string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/orders/fulfill", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "JWT "+adminToken(t))
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatalf("POST: %v", err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// orderBody is a fulfill request for an audit enrollment in the demo course;
// extra adds fields (`,"site":"x"`).
func orderBody(order string, user int64, extra string) string {
	return courseOrderBody(demoCourse, order, user, extra)
}

func courseOrderBody(course, order string, user int64, extra string) string {
	return fmt.Sprintf(`{"course_id":%q,"course_mode":"audit","order_placed":1714566902,"edx_lms_user_id":%d,"email_opt_in":false,"order_number":%q%s}`, course, user, order, extra)
}

func addLearners(fake *lmstest.Server, from int64, n int) {
	for u := from; u < from+int64(n); u++ {
		fake.AddUser(u, fmt.Sprintf("learner%d", u))
	}
}

func waitEnrolled(t *testing.T, fake *lmstest.Server, from int64, n int, timeout time.Duration) {
	t.Helper()
	if missing := waitAllEnrolled(fake, learners(from, n), timeout); len(missing) > 0 {
		t.Fatalf("timed out after %v: %d of %d learners not enrolled", timeout, len(missing), n)
	}
}

// ledgerEnv is a private Redis server, a fake LMS with learners, and a
// migrated Postgres schema; config writes a config for them (each with an
// http.addr of its own, for processes side by side).
type ledgerEnv struct {
	srv    *queuetest.Server
	fake   *lmstest.Server
	config func() string
}

func newLedgerEnv(t *testing.T, from int64, n int) ledgerEnv {
	t.Helper()
	e := ledgerEnv{srv: queuetest.StartServer(t), fake: lmstest.NewDemo(testSecret)}
	addLearners(e.fake, from, n)
	lmsURL, qname, dbURL := lmstest.Start(t, e.fake).URL, queuetest.Name(), pgtest.Schema(t)
	e.config = func() string { return testConfig(t, e.srv.URL(), lmsURL, qname, databaseYAML(dbURL)) }
	mustRunCmd(t, e.config(), nil, "migrate")
	return e
}

// postOrders sends n orders for learners from, from+1, ... and requires 200s.
func postOrders(t *testing.T, base, prefix string, from int64, n int) {
	t.Helper()
	for _, u := range learners(from, n) {
		if status := post(t, base, orderBody(fmt.Sprintf("%s-%d", prefix, u), u, "")); status != http.StatusOK {
			t.Fatalf("order for learner %d: %d, want 200", u, status)
		}
	}
}

func TestRefusesOldSchema(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t, queuetest.URL(), "http://127.0.0.1:1", queuetest.Name(), databaseYAML(pgtest.Schema(t)))
	_, err := runCmd(t, cfg, nil, "all")
	if err == nil || !strings.Contains(err.Error(), "run `coordinator migrate`") {
		t.Fatalf("start on an unmigrated database: %v, want a refusal naming coordinator migrate", err)
	}
	if out := mustRunCmd(t, cfg, nil, "migrate"); !strings.Contains(out, "applied migrations [1 2 3 4 5 6 7]") {
		t.Errorf("migrate: %q", out)
	}
	if out := mustRunCmd(t, cfg, nil, "migrate"); !strings.Contains(out, "schema up to date") {
		t.Errorf("second migrate: %q", out)
	}
}

// With the ledger, orders are accepted while Redis is down and all enrolled
// once it returns.
func TestLedgerAcceptsWhileRedisDown(t *testing.T) {
	t.Parallel()
	e := newLedgerEnv(t, 40000, 20)
	srv, fake := e.srv, e.fake
	in := &instance{base: startRun(t, "all", e.config())}

	srv.Kill()
	postOrders(t, in.base, "DOWN", 40000, 20) // Redis down, the ledger up: all 200
	if status, st := in.order(t, "GET", "DOWN-40000"); status != 200 || st.Lines[0].State != fulfillment.StateQueued {
		t.Errorf("status with Redis down: %d %+v, want queued from the ledger", status, st)
	}
	srv.Start()
	waitEnrolled(t, fake, 40000, 20, 30*time.Second)
	waitFor(t, "the ledger to show enrolled", 10*time.Second, func() bool {
		status, st := in.order(t, "GET", "DOWN-40019")
		return status == 200 && st.Lines[0].State == fulfillment.StateEnrolled && st.Lines[0].Attempts == 1
	})
	if n := len(fake.Calls(lmstest.Enroll)); n != 20 {
		t.Errorf("%d enrollment calls for 20 orders, want 20", n)
	}
}

// Redis flushed with 100 queued orders: the reconciler re-queues them and
// each is enrolled once.
func TestReconcilerRequeuesAfterFlush(t *testing.T) {
	t.Parallel()
	e := newLedgerEnv(t, 41000, 100)
	srv, fake := e.srv, e.fake
	in := &instance{base: startRun(t, "api", e.config())} // no worker yet: the orders stay queued
	postOrders(t, in.base, "FLUSH", 41000, 100)
	opt, _ := redis.ParseURL(srv.URL())
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.FlushAll(context.Background()).Err(); err != nil { // a private server: nobody else's data
		t.Fatal(err)
	}
	startRun(t, "worker", e.config())
	waitEnrolled(t, fake, 41000, 100, 60*time.Second)
	perOrder := map[string]int{}
	for _, c := range fake.Calls(lmstest.Enroll) {
		perOrder[orderOf(c.Body)]++
	}
	for order, n := range perOrder {
		if n != 1 {
			t.Errorf("order %s: %d enrollment calls, want 1", order, n)
		}
	}
	if len(perOrder) != 100 {
		t.Errorf("%d orders reached the LMS, want 100", len(perOrder))
	}
}

// Two sites with different LMSs and credentials: each order reaches its
// own LMS, and the second site's secret is never shown.
func TestTwoSites(t *testing.T) {
	t.Parallel()
	const northSecret = "north-secret-9f8e7d"
	fakeA := lmstest.NewDemo(testSecret)
	fakeB := lmstest.New()
	fakeB.AddClient("north-worker", lmstest.Client{Secret: northSecret, Staff: true})
	fakeB.AddUser(3, "north-edx")
	fakeB.AddCourse(demoCourse, lmstest.CourseRun{Modes: []string{"audit"}})
	urlB := lmstest.Start(t, fakeB).URL
	dbURL := pgtest.Schema(t)
	_, qname := queuetest.Redis(t) // the shared Redis: a queue that is purged afterwards
	cfg := testConfig(t, queuetest.URL(), lmstest.Start(t, fakeA).URL, qname, databaseYAML(dbURL))
	mustRunCmd(t, cfg, nil, "migrate")
	mustRunCmd(t, cfg, map[string]string{"SITE_CLIENT_SECRET": northSecret}, "sites", "add", "north", "--lms-url", urlB, "--client-id", "north-worker")
	list := mustRunCmd(t, cfg, nil, "sites", "list")
	if !strings.Contains(list, "north") || !strings.Contains(list, "north-worker") || strings.Contains(list, northSecret) {
		t.Errorf("sites list:\n%s", list)
	}
	if _, err := runCmd(t, cfg, nil, "sites", "add", "default", "--lms-url", urlB, "--client-id", "x"); err == nil {
		t.Error("a site named default was stored")
	}

	base, logs := startRunLogs(t, "all", cfg)
	if status := post(t, base, orderBody("SITE-A", 3, "")); status != 200 {
		t.Fatalf("default-site order: %d", status)
	}
	if status := post(t, base, orderBody("SITE-B", 3, `,"site":"north"`)); status != 200 {
		t.Fatalf("north order: %d", status)
	}
	if status := post(t, base, orderBody("SITE-C", 3, `,"site":"south"`)); status != 400 {
		t.Errorf("unknown site: %d, want 400", status)
	}
	waitFor(t, "both enrollments", 15*time.Second, func() bool {
		_, a := fakeA.Enrollment("edx", demoCourse)
		_, b := fakeB.Enrollment("north-edx", demoCourse)
		return a && b
	})
	for _, c := range fakeA.Calls(lmstest.Enroll) {
		if orderOf(c.Body) != "SITE-A" {
			t.Errorf("default LMS got order %s", orderOf(c.Body))
		}
	}
	for _, c := range fakeB.Calls(lmstest.Enroll) {
		if orderOf(c.Body) != "SITE-B" {
			t.Errorf("north LMS got order %s", orderOf(c.Body))
		}
	}
	for _, c := range fakeB.Calls(lmstest.Token) {
		if !strings.Contains(string(c.Body), "client_id=north-worker") {
			t.Errorf("north token request used %q", c.Body)
		}
	}

	conn, err := pgx.Connect(context.Background(), dbURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var dump string
	if err := conn.QueryRow(context.Background(), `SELECT string_agg(row_to_json(s)::text || encode(client_secret_enc, 'escape'), ' ') FROM sites s`).Scan(&dump); err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string]string{"database": dump, "logs": logs.String(), "sites list": list} {
		if strings.Contains(text, northSecret) || strings.Contains(text, testSecret) {
			t.Errorf("a client secret appears in the %s", where)
		}
	}
}

// Three worker processes sharing memcached: 300 enrollments cost one token
// request.
func TestSharedTokenAcrossWorkers(t *testing.T) {
	t.Parallel()
	rdb, qname := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	fake.SetLatency(5 * time.Millisecond) // spread the work over the three
	lmsURL := lmstest.Start(t, fake).URL
	for range 3 { // each process its own config: its own http.addr for /health and /metrics
		startProcess(t, testConfig(t, queuetest.URL(), lmsURL, qname, "cache:\n  memcached: [\"127.0.0.1:11211\"]\n"), "worker")
	}
	enqueueOrders(t, rdb, qname, fake, 42000, 300)
	insp := asynq.NewInspectorFromRedisClient(rdb)
	waitFor(t, "300 tasks completed", 60*time.Second, func() bool {
		info, err := insp.GetQueueInfo(qname)
		return err == nil && info.Completed == 300
	})
	if servers := mustServers(t, insp, qname); len(servers) != 3 {
		t.Errorf("%d worker processes serve the queue, want 3", len(servers))
	}
	if n := len(fake.Calls(lmstest.Token)); n != 1 {
		t.Errorf("%d token requests by 3 worker processes for 300 enrollments, want 1", n)
	}
}

// mustServers lists the worker processes serving a queue (each runs
// worker.servers asynq servers).
func mustServers(t *testing.T, insp *asynq.Inspector, queue string) []string {
	t.Helper()
	servers, err := insp.Servers()
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range servers {
		id := s.Host + ":" + strconv.Itoa(s.PID)
		if _, ok := s.Queues[queue]; ok && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	return ids
}

// A memcached outage degrades to direct calls, never to failed orders.
func TestMemcachedDownDegrades(t *testing.T) {
	t.Parallel()
	in := startAll(t, "cache:\n  memcached: [\"127.0.0.1:1\"]\n")
	status, out := in.fulfill(t, orderBody("MC-DOWN-1", 3, ""), "")
	if status != 200 {
		t.Fatalf("status %d %v", status, out)
	}
	in.waitCompleted(t, out[seat.ReceiverEnroll]["response"].(string))
	resp, err := http.Get(in.base + "/health")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"memcached":"UNAVAILABLE"`) {
		t.Errorf("health with memcached down: %d %s, want 200 reporting memcached UNAVAILABLE", resp.StatusCode, body)
	}
}
