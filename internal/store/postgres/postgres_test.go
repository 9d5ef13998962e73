package postgres

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/openedx/coordinator/internal/fulfillment"
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
	if total != LatestVersion() {
		t.Errorf("%d migrations applied across 3 runs, want each of %d once", total, LatestVersion())
	}
	if err := CheckSchema(context.Background(), pool); err != nil {
		t.Errorf("CheckSchema after migrate: %v", err)
	}
	if again, err := Migrate(context.Background(), pool); err != nil || len(again) != 0 {
		t.Errorf("migrate again: %v %v, want nothing applied", again, err)
	}
}

func TestLedgerLifecycle(t *testing.T) {
	t.Parallel()
	l := NewLedger(connect(t, true))
	ctx := context.Background()
	o := fulfillment.Order{Site: "default", OrderNumber: "L-1", CourseID: "course-v1:a+b+c", CourseMode: "verified",
		LMSUserID: 7, RequestID: "r1", OrderPlaced: time.Unix(1714566902, 0).UTC()}
	if fresh, err := l.Accept(ctx, o, "task-1"); err != nil || !fresh {
		t.Fatalf("first accept: %v %v", fresh, err)
	}
	if fresh, err := l.Accept(ctx, o, "task-1"); err != nil || fresh {
		t.Fatalf("repeat accept: %v %v, want not fresh", fresh, err)
	}
	if err := l.Started(ctx, o); err != nil {
		t.Fatal(err)
	}
	if err := l.Finished(ctx, o, fulfillment.StateFailed, "lms enroll: 406: The user x does not exist."); err != nil {
		t.Fatal(err)
	}
	lines, err := l.Lines(ctx, "default", "L-1")
	if err != nil || len(lines) != 1 {
		t.Fatalf("lines: %v %v", lines, err)
	}
	if got := lines[0]; got.State != fulfillment.StateFailed || got.Attempts != 1 || !strings.Contains(got.LastError, "406") || got.TaskID != "task-1" {
		t.Errorf("failed line: %+v", got)
	}
	if fresh, err := l.Accept(ctx, o, "task-1"); err != nil || !fresh {
		t.Fatalf("accept after failure: %v %v, want fresh (re-queue)", fresh, err)
	}
	if err := l.Finished(ctx, o, fulfillment.StateEnrolled, ""); err != nil {
		t.Fatal(err)
	}
	lines, _ = l.Lines(ctx, "default", "L-1")
	if got := lines[0]; got.State != fulfillment.StateEnrolled || got.EnrolledAt == nil || got.LastError != "" {
		t.Errorf("enrolled line: %+v", got)
	}
	if _, err := l.Lines(ctx, "default", "NOPE"); !errors.Is(err, fulfillment.ErrNotFound) {
		t.Errorf("unknown order: %v, want ErrNotFound", err)
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
