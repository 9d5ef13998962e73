package postgres

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

func connect(t *testing.T, migrate bool) *pgxpool.Pool {
	t.Helper()
	pool, err := Connect(context.Background(), pgtest.Schema(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	if migrate {
		if _, err := Migrate(context.Background(), pool); err != nil {
			t.Fatal(err)
		}
	}
	return pool
}

func TestMigrateConcurrentlyAndIdempotently(t *testing.T) {
	t.Parallel()
	pool := connect(t, false)
	if err := CheckSchema(context.Background(), pool); !errors.Is(err, ErrSchemaOutdated) {
		t.Fatalf("CheckSchema on an empty schema = %v, want ErrSchemaOutdated", err)
	}
	var wg sync.WaitGroup
	applied := make([][]int, 3)
	errs := make([]error, 3)
	for i := range 3 {
		wg.Go(func() { applied[i], errs[i] = Migrate(context.Background(), pool) })
	}
	wg.Wait()
	total := 0
	for i := range 3 {
		if errs[i] != nil {
			t.Errorf("concurrent migrate %d: %v", i, errs[i])
		}
		total += len(applied[i])
	}
	ms, err := available()
	if err != nil {
		t.Fatal(err)
	}
	if total != len(ms) {
		t.Errorf("%d migrations applied across 3 runs, want each of %d once", total, len(ms))
	}
	if err := CheckSchema(context.Background(), pool); err != nil {
		t.Errorf("CheckSchema after migrate: %v", err)
	}
	if again, err := Migrate(context.Background(), pool); err != nil || len(again) != 0 {
		t.Errorf("migrate again: %v %v, want nothing applied", again, err)
	}
}

func ledgerJob(t *testing.T, kind string, v interface{ Ref() fulfillment.Ref }) pipeline.Job {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return pipeline.Job{Kind: kind, ID: pipeline.TaskID(kind, v.Ref().Key()), Ref: v.Ref(), Payload: b}
}

func TestLedgerLifecycle(t *testing.T) {
	t.Parallel()
	l := NewLedger(connect(t, true), "q")
	ctx := context.Background()
	o := fulfillment.Order{Site: "default", OrderNumber: "L-1", CourseID: "course-v1:a+b+c", CourseMode: "verified",
		LMSUserID: 7, RequestID: "r1", OrderPlaced: time.Unix(1714566902, 0).UTC()}
	j := ledgerJob(t, "enroll", o)
	if id, fresh, err := l.Accept(ctx, j); err != nil || !fresh || id != j.ID {
		t.Fatalf("first accept: %q %v %v", id, fresh, err)
	}
	if id, fresh, err := l.Accept(ctx, j); err != nil || fresh || id != j.ID {
		t.Fatalf("repeat accept: %q %v %v, want not fresh", id, fresh, err)
	}
	if err := l.Started(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}); err != nil {
		t.Fatal(err)
	}
	if err := l.Finished(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}, fulfillment.StateFailed, "lms enroll: 406: The user x does not exist."); err != nil {
		t.Fatal(err)
	}
	es, err := l.Order(ctx, "default", "L-1")
	if err != nil || len(es) != 1 {
		t.Fatalf("order: %v %v", es, err)
	}
	if got := es[0].Task; got.State != fulfillment.StateFailed || got.Attempts != 1 || !strings.Contains(got.LastError, "406") ||
		got.TaskID != j.ID || got.Kind != "enroll" || got.Ref.LMSUserID != 7 {
		t.Errorf("failed task: %+v", got)
	}
	if string(es[0].Job.Payload) == "" || es[0].Job.ID != j.ID {
		t.Errorf("job read back: %+v", es[0].Job)
	}
	if _, fresh, err := l.Accept(ctx, j); err != nil || !fresh {
		t.Fatalf("accept after failure: %v %v, want fresh (re-queue)", fresh, err)
	}
	if err := l.Finished(ctx, pipeline.Job{Kind: "enroll", Ref: o.Ref()}, fulfillment.StateDone, ""); err != nil {
		t.Fatal(err)
	}
	got, found, err := l.Find(ctx, "enroll", o.Ref().Key())
	if err != nil || !found || got.State != fulfillment.StateDone || got.FinishedAt == nil || got.LastError != "" {
		t.Errorf("done task: %+v %v %v", got, found, err)
	}
	// A return of the same line is a row of its own kind.
	r := fulfillment.Return{Site: "default", OrderNumber: "L-1", CourseID: "course-v1:a+b+c", CourseMode: "verified", Username: "edx"}
	if _, fresh, err := l.Accept(ctx, ledgerJob(t, "unenroll", r)); err != nil || !fresh {
		t.Fatalf("accept return: %v %v", fresh, err)
	}
	if _, found, _ := l.Find(ctx, "unenroll", r.Ref().Key()); !found {
		t.Error("return not found")
	}
	var open []string
	if err := l.Open(ctx, time.Hour, func(e pipeline.Entry) error { open = append(open, e.Job.Kind); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(open) != 0 {
		t.Errorf("open tasks updated within the quiet period listed: %v", open)
	}
	if err := l.Open(ctx, 0, func(e pipeline.Entry) error { open = append(open, e.Job.Kind); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(open) != 1 || open[0] != "unenroll" {
		t.Errorf("open tasks %v, want only the return", open)
	}
	if _, found, _ := l.Find(ctx, "enroll", fulfillment.Key{Site: "default", OrderNumber: "NOPE", Item: "x"}); found {
		t.Error("unknown line found")
	}
}

// A row written before task kinds (state 'enrolled', enrolled_at) reads as
// a done enrollment, keeps its id, and a repeat of it is not fresh.
func TestLedgerReadsRowsFromBeforeKinds(t *testing.T) {
	t.Parallel()
	pool := connect(t, true)
	l := NewLedger(pool, "q")
	ctx := context.Background()
	if _, err := pool.Exec(ctx, `INSERT INTO fulfillment_lines
		(site, order_number, course_id, lms_user_id, mode, state, task_id, payload, enrolled_at)
		VALUES ('default', 'OLD-1', 'course-v1:a+b+c', 7, 'verified', 'enrolled', 'enroll-0123', '{"site":"default","order_number":"OLD-1","course_id":"course-v1:a+b+c"}', now())`); err != nil {
		t.Fatal(err)
	}
	o := fulfillment.Order{Site: "default", OrderNumber: "OLD-1", CourseID: "course-v1:a+b+c", CourseMode: "verified", LMSUserID: 7}
	if id, fresh, err := l.Accept(ctx, ledgerJob(t, "enroll", o)); err != nil || fresh || id != "enroll-0123" {
		t.Fatalf("repeat of an old line: %q %v %v, want its old id, not fresh", id, fresh, err)
	}
	got, found, err := l.Find(ctx, "enroll", o.Ref().Key())
	if err != nil || !found || got.State != fulfillment.StateDone || got.FinishedAt == nil {
		t.Errorf("old row reads %+v %v %v, want done with a finish time", got, found, err)
	}
}

func TestReconcilerLockIsExclusive(t *testing.T) {
	t.Parallel()
	pool := connect(t, true)
	a, b := NewLedger(pool, "q"), NewLedger(pool, "q")
	ctx := context.Background()
	release, ok, err := a.TryLock(ctx)
	if err != nil || !ok {
		t.Fatalf("first lock: %v %v", ok, err)
	}
	if _, ok, err := b.TryLock(ctx); err != nil || ok {
		t.Fatalf("second lock while held: %v %v, want refused", ok, err)
	}
	if other, ok, _ := NewLedger(pool, "other-queue").TryLock(ctx); !ok {
		t.Error("another queue's reconciler was locked out")
	} else {
		other()
	}
	release()
	if release, ok, err := b.TryLock(ctx); err != nil || !ok {
		t.Fatalf("lock after release: %v %v", ok, err)
	} else {
		release()
	}
}

func TestSiteSecretsEncryptedAtRest(t *testing.T) {
	t.Parallel()
	pool := connect(t, true)
	key := []byte("0123456789abcdef0123456789abcdef")
	s, err := NewSites(pool, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	site := Site{Name: "north", LMSURL: "https://lms.north.example", ClientID: "cw", ClientSecret: "very-secret-value-42",
		APIKey: "api-key-value-17", Timeout: 3 * time.Second}
	if err := s.Put(ctx, site); err != nil {
		t.Fatal(err)
	}
	var raw string
	if err := pool.QueryRow(ctx, "SELECT row_to_json(s)::text || encode(client_secret_enc, 'escape') || encode(api_key_enc, 'escape') FROM sites s").Scan(&raw); err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{site.ClientSecret, site.APIKey} {
		if strings.Contains(raw, secret) {
			t.Errorf("%q stored in clear: %s", secret, raw)
		}
	}
	got, err := s.Get(ctx, "north")
	if err != nil || got.ClientSecret != site.ClientSecret || got.APIKey != site.APIKey || got.Timeout != site.Timeout {
		t.Errorf("Get = %+v, %v", got, err)
	}
	other, _ := NewSites(pool, []byte("ffffffffffffffffffffffffffffffff"))
	if _, err := other.Get(ctx, "north"); err == nil {
		t.Error("decrypted with the wrong key")
	}
	// A ciphertext moved to another row does not decrypt there.
	if _, err := pool.Exec(ctx, `INSERT INTO sites (name, lms_url, client_id, client_secret_enc)
		SELECT 'south', lms_url, client_id, client_secret_enc FROM sites WHERE name = 'north'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "south"); err == nil {
		t.Error("a secret copied to another site decrypted")
	}
	if err := s.Remove(ctx, "nope"); !errors.Is(err, ErrSiteNotFound) {
		t.Errorf("remove unknown: %v", err)
	}
}
