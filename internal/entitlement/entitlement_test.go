package entitlement

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
)

const course = "f3c9b0b6-1a2b-4c3d-8e9f-0a1b2c3d4e5f"

type oneSite struct{ c *lms.Client }

func (s oneSite) Client(context.Context, string) (*lms.Client, error) { return s.c, nil }

// lines is the pipeline as the handlers read it: the line's create task.
type lines struct {
	created *fulfillment.Task
	every   bool
}

func (l lines) Accept(context.Context, string, fulfillment.Ref, any) (string, error) {
	return "", errors.New("not used")
}

func (l lines) Find(_ context.Context, kind string, _ fulfillment.Key) (fulfillment.Task, bool, error) {
	if kind != KindCreate || l.created == nil {
		return fulfillment.Task{}, false, nil
	}
	return *l.created, true, nil
}

func (l lines) KeepsEveryTask() bool { return l.every }

func (l lines) Matching(context.Context, pipeline.Filter, func(pipeline.Row) error) (bool, error) {
	return false, errors.New("not used")
}

func (l lines) Lines(context.Context, string, string) ([]fulfillment.Line, error) {
	return nil, errors.New("not used")
}

// kinds registers the flow against the fake and returns its two kinds.
func kinds(t *testing.T, fake *lmstest.Server, l flow.Lines) (create, revoke pipeline.Kind) {
	t.Helper()
	srv := lmstest.Start(t, fake)
	c := lms.New(lms.Options{Site: "default", BaseURL: srv.URL, TokenURL: srv.URL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: "s", Timeout: 500 * time.Millisecond, MaxConcurrency: 4,
		RatePerMinute: 60000, Cache: cache.NewMemory(100), Logger: slog.New(slog.DiscardHandler)})
	r := flow.NewRegistry()
	Register(r, oneSite{c})
	r.Bind(l)
	create, _ = r.Kind(KindCreate)
	revoke, _ = r.Kind(KindRevoke)
	return create, revoke
}

func run(t *testing.T, k pipeline.Kind, payload any, ref fulfillment.Ref) (string, error) {
	t.Helper()
	return k.Handle(context.Background(), pipeline.Job{Kind: k.Name, ID: "t", Ref: ref, Value: payload})
}

// The read-back follows the list's pages: a learner with 60 entitlements
// of other orders (two pages) gets none more for an order already made, and
// one for a new order.
func TestCreateReadsBackEveryPage(t *testing.T) {
	fake := lmstest.NewDemo("s")
	for i := range 60 {
		fake.AddEntitlement(lmstest.Entitlement{User: "edx", CourseUUID: course, Mode: "verified", OrderNumber: "OLD-" + string(rune('A'+i%26)) + string(rune('a'+i/26))})
	}
	fake.AddEntitlement(lmstest.Entitlement{UUID: "aaaaaaaa-0000-0000-0000-000000000001", User: "edx", CourseUUID: course, Mode: "verified", OrderNumber: "ORDER-1"})
	create, _ := kinds(t, fake, lines{})
	o := fulfillment.Order{Site: "default", OrderNumber: "ORDER-1", CourseUUID: course, CourseMode: "verified", LMSUserID: 3}
	got, err := run(t, create, o, o.Ref())
	if err != nil || got != "aaaaaaaa-0000-0000-0000-000000000001" {
		t.Fatalf("create of an order already made: %q, %v; want its uuid read back", got, err)
	}
	if n := len(fake.Entitlements("edx")); n != 61 {
		t.Fatalf("%d entitlements, want 61 (none made)", n)
	}
	o.OrderNumber = "ORDER-2"
	got, err = run(t, create, o, o.Ref())
	if err != nil || got == "" || len(fake.Entitlements("edx")) != 62 {
		t.Fatalf("create of a new order: %q, %v, %d entitlements", got, err, len(fake.Entitlements("edx")))
	}
}

// An unknown learner is a permanent failure with the LMS's reason; the
// LMS's throttling is retried after its Retry-After.
func TestCreateFailures(t *testing.T) {
	fake := lmstest.NewDemo("s")
	create, _ := kinds(t, fake, lines{})
	o := fulfillment.Order{Site: "default", OrderNumber: "ORDER-1", CourseUUID: course, CourseMode: "verified", Username: "nobody"}
	if _, err := run(t, create, o, o.Ref()); !pipeline.IsPermanent(err) {
		t.Errorf("unknown user: %v, want permanent", err)
	}
	fake.Script(lmstest.Entitlements, lmstest.Reply{Status: 429, Body: `{"detail":"throttled"}`, Header: map[string]string{"Retry-After": "7"}})
	o.Username = "edx"
	_, err := run(t, create, o, o.Ref())
	if d, ok := pipeline.RetryIn(err); pipeline.IsPermanent(err) || !ok || d != 7*time.Second {
		t.Errorf("throttled: %v (retry in %v), want retried after 7s", err, d)
	}
}

// The revoke uses the uuid the create recorded and touches nothing else; an
// unknown uuid (already gone) is done; without a record it reads back.
func TestRevoke(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.AddEntitlement(lmstest.Entitlement{UUID: "aaaaaaaa-0000-0000-0000-000000000001", User: "edx", CourseUUID: course, Mode: "verified", OrderNumber: "ORDER-1"})
	fake.AddEntitlement(lmstest.Entitlement{UUID: "aaaaaaaa-0000-0000-0000-000000000002", User: "edx", CourseUUID: course, Mode: "verified", OrderNumber: "ORDER-2"})
	r := fulfillment.Return{Site: "default", OrderNumber: "ORDER-1", CourseUUID: course, CourseMode: "verified", LMSUserID: 3}
	recorded := &fulfillment.Task{State: fulfillment.StateDone, Result: "aaaaaaaa-0000-0000-0000-000000000001"}
	_, revoke := kinds(t, fake, lines{created: recorded})
	if _, err := run(t, revoke, r, r.Ref()); err != nil {
		t.Fatal(err)
	}
	for _, e := range fake.Entitlements("edx") {
		if (e.ExpiredAt != nil) != (e.OrderNumber == "ORDER-1") {
			t.Errorf("entitlement %+v: want only ORDER-1's revoked", e)
		}
	}
	if _, err := run(t, revoke, r, r.Ref()); err != nil {
		t.Errorf("repeat: %v, want done", err)
	}
	recorded.Result = "bbbbbbbb-0000-0000-0000-000000000009"
	if _, err := run(t, revoke, r, r.Ref()); err != nil {
		t.Errorf("unknown uuid: %v, want done", err)
	}
	// No record: read back by learner, course and order.
	r.OrderNumber = "ORDER-2"
	_, revoke = kinds(t, fake, lines{})
	if _, err := run(t, revoke, r, r.Ref()); err != nil {
		t.Fatal(err)
	}
	for _, e := range fake.Entitlements("edx") {
		if e.ExpiredAt == nil {
			t.Errorf("entitlement %+v still unexpired", e)
		}
	}
}
