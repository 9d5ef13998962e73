package main

import (
	"context"
	"encoding/json"
	"io/fs"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"
	"github.com/jackc/pgx/v5"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
	"github.com/openedx/coordinator/migrations"
)

// The ledger of the version before lines had items (schema 5, as `b7f0732`
// left it): an order it enrolled, repeated after the upgrade, answers the
// task id that version answered (the README's, for EDX-100001) and enrolls
// nobody again; its return, after the upgrade, takes the learner from that
// row and unenrolls.
func TestUpgradeFromPreviousLedger(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	url := pgtest.Schema(t)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	// The previous version's schema: migrations 1 to 5, recorded as its
	// runner recorded them.
	if _, err := conn.Exec(ctx, `CREATE TABLE schema_migrations (
		version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`); err != nil {
		t.Fatal(err)
	}
	names, _ := fs.Glob(migrations.FS, "*.up.sql")
	for _, name := range names {
		v, _ := strconv.Atoi(name[:4])
		if v > 5 {
			continue
		}
		sql, _ := fs.ReadFile(migrations.FS, name)
		if _, err := conn.Exec(ctx, string(sql)); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := conn.Exec(ctx, "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", v, strings.TrimSuffix(name, ".up.sql")); err != nil {
			t.Fatal(err)
		}
	}
	// Its row of an enrollment done: the payload as it wrote an order.
	const oldID = "enroll_c09b0b73a144825052a272c212e8be2e"
	// The id this version gives the line is the one the previous version gave.
	if id := pipeline.TaskID(seat.KindEnroll, fulfillment.Key{Site: "default", OrderNumber: "EDX-100001", Item: demoCourse}); id != oldID {
		t.Fatalf("task id %s, want the previous version's %s", id, oldID)
	}
	payload, _ := json.Marshal(map[string]any{"site": "default", "order_number": "EDX-100001", "course_id": demoCourse,
		"course_mode": "verified", "order_placed": "2024-05-01T12:35:02Z", "edx_lms_user_id": 3, "email_opt_in": true,
		"request_id": "before", "accepted_at": time.Now().Add(-time.Hour).UTC()})
	if _, err := conn.Exec(ctx, `INSERT INTO fulfillment_lines
		(site, order_number, course_id, kind, lms_user_id, username, mode, state, attempts, request_id, task_id, payload, event, finished_at)
		VALUES ('default', 'EDX-100001', $1, 'enroll', 3, '', 'verified', 'done', 1, 'before', $2, $3, '', now())`,
		demoCourse, oldID, payload); err != nil {
		t.Fatal(err)
	}

	rdb, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	fake.Enroll(lmstest.Enrollment{User: "edx", CourseID: demoCourse, Mode: "verified", IsActive: true})
	cfg := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, databaseYAML(url))
	if out := mustRunCmd(t, cfg, nil, "migrate"); !strings.Contains(out, "applied migrations [6 7]") {
		t.Fatalf("migrate: %q", out)
	}
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, "all", cfg)

	body := `{"course_id":"` + demoCourse + `","course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":3,"email_opt_in":true,"order_number":"EDX-100001"}`
	if status, id := in.send(t, "/orders/fulfill", body); status != 200 || id != oldID {
		t.Fatalf("the repeat after the upgrade: %d %s, want 200 and %s", status, id, oldID)
	}
	if _, st := in.order(t, "GET", "EDX-100001"); len(st.Lines) != 1 || st.Lines[0].State != fulfillment.StateEnrolled {
		t.Fatalf("order after the upgrade: %+v, want its line enrolled", st.Lines)
	}
	if status, _ := in.send(t, "/orders/return", `{"course_id":"`+demoCourse+`","course_mode":"verified","edx_lms_user_id":3,"order_number":"EDX-100001"}`); status != 200 {
		t.Fatalf("return: %d", status)
	}
	in.waitLine(t, "EDX-100001", fulfillment.StateReturned)
	if n := fake.Count(lmstest.Enroll) - fake.Count(lmstest.Deactivate); n != 0 {
		t.Errorf("%d enrollment calls after the upgrade, want none (only the return's deactivation)", n)
	}
	if e, _ := fake.Enrollment("edx", demoCourse); e.IsActive {
		t.Errorf("after the return: %+v, want unenrolled", e)
	}
}
