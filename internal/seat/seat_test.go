package seat

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
)

const demoCourse = "course-v1:edX+DemoX+Demo_Course"

// oneSite serves one client for every site.
type oneSite struct{ c *lms.Client }

func (s oneSite) Client(context.Context, string) (*lms.Client, error) { return s.c, nil }

// tasksOf is a line's tasks by kind, as the pipeline would find them.
type tasksOf map[string]fulfillment.Task

// KeepsEveryTask is false: the Redis-only tier.
func (tasksOf) KeepsEveryTask() bool { return false }

// Matching finds no other line.
func (tasksOf) Matching(context.Context, pipeline.Filter, func(pipeline.Row) error) (bool, error) {
	return false, nil
}

func (m tasksOf) Find(_ context.Context, kind string, _ fulfillment.Key) (fulfillment.Task, bool, error) {
	t, ok := m[kind]
	return t, ok, nil
}

// run runs the handler of a kind on a payload.
func run(t *testing.T, c *lms.Client, tasks Tasks, kind string, payload interface{ Ref() fulfillment.Ref }) error {
	t.Helper()
	b, _ := json.Marshal(payload)
	for _, k := range Kinds(oneSite{c}, tasks) {
		if k.Name == kind {
			// As pipeline.Process does: the kind's Decode reads the payload.
			ref, v, err := k.Decode(b)
			if err != nil {
				t.Fatalf("decode %s payload: %v", kind, err)
			}
			_, err = k.Handle(context.Background(), pipeline.Job{Kind: kind, ID: "t", Ref: ref, Payload: b, Value: v})
			return err
		}
	}
	t.Fatalf("no kind %s", kind)
	return nil
}

func emailOrder(email string, unregistered bool, acceptedAt time.Time) fulfillment.Order {
	return fulfillment.Order{Site: "default", OrderNumber: "WOO-1", CourseID: demoCourse, CourseMode: "verified",
		OrderPlaced: time.Date(2024, 5, 1, 12, 35, 2, 0, time.UTC), Email: email, EnrollUnregistered: unregistered,
		Integration: "woo", AcceptedAt: acceptedAt}
}

// An order naming its learner by email (README, "Learners by email").
func TestEnrollByEmail(t *testing.T) {
	now := time.Now().UTC()
	t.Run("account exists: enrolled in the mode bought", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		fake.Register(200, "jdoe", "jdoe@example.com")
		if err := run(t, newClient(t, fake, nil), nil, KindEnroll, emailOrder("jdoe@example.com", false, now)); err != nil {
			t.Fatal(err)
		}
		if e, _ := fake.Enrollment("jdoe", demoCourse); !e.IsActive || e.Mode != "verified" {
			t.Errorf("enrollment %+v", e)
		}
	})
	t.Run("no account, not enrolling unregistered learners: failed", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		err := run(t, newClient(t, fake, nil), nil, KindEnroll, emailOrder("new@example.com", false, now))
		if err == nil || err.Error() != "no LMS account for new@example.com" || !pipeline.IsPermanent(err) {
			t.Errorf("err %v, want permanent %q", err, "no LMS account for new@example.com")
		}
		if n := fake.Count(lmstest.Allowed); n != 0 {
			t.Errorf("%d enrollment_allowed calls, want none", n)
		}
	})
	t.Run("no account, enrolling unregistered learners: awaits, then enrolls in the mode bought", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		c := newClient(t, fake, nil)
		o := emailOrder("new@example.com", true, now.Add(-time.Hour))
		for range 2 { // looking again registers nothing new
			err := run(t, c, nil, KindEnroll, o)
			if !pipeline.IsAwaitingAccount(err) || !pipeline.IsHold(err) || pipeline.IsPermanent(err) ||
				!pipeline.AwaitsAccount(err.Error()) || !strings.Contains(err.Error(), "no LMS account for new@example.com yet") {
				t.Fatalf("err %v, want a wait for the account", err)
			}
			if d, _ := pipeline.RetryIn(err); d != 6*time.Minute {
				t.Errorf("next look in %v, want 6m (an hour after acceptance)", d)
			}
		}
		if got := fake.Allowed("new@example.com"); len(got) != 1 || got[0].CourseID != demoCourse || !got[0].AutoEnroll {
			t.Errorf("allowed %+v, want one auto_enroll entry", got)
		}
		fake.Register(300, "newbie", "new@example.com")
		if e, _ := fake.Enrollment("newbie", demoCourse); !e.IsActive || e.Mode != "audit" {
			t.Fatalf("the LMS's auto-enrollment %+v, want active audit", e)
		}
		if err := run(t, c, nil, KindEnroll, o); err != nil {
			t.Fatalf("look after registration: %v", err)
		}
		if e, _ := fake.Enrollment("newbie", demoCourse); !e.IsActive || e.Mode != "verified" {
			t.Errorf("enrollment %+v, want the mode bought (verified)", e)
		}
	})
	t.Run("no account after 30 days: failed", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		err := run(t, newClient(t, fake, nil), nil, KindEnroll, emailOrder("new@example.com", true, now.Add(-lms.AwaitAccountFor)))
		if !pipeline.IsPermanent(err) || pipeline.IsAwaitingAccount(err) ||
			err.Error() != "no LMS account for new@example.com after 30 days of waiting for the learner to register" {
			t.Errorf("err %v, want a permanent failure saying so", err)
		}
	})
	t.Run("enrollment_allowed refused: retried as the LMS's failure", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		fake.Script(lmstest.Allowed, lmstest.Reply{Status: 503})
		err := run(t, newClient(t, fake, nil), nil, KindEnroll, emailOrder("new@example.com", true, now))
		if err == nil || pipeline.IsAwaitingAccount(err) || pipeline.IsPermanent(err) || pipeline.IsHold(err) {
			t.Errorf("err %v, want a transient LMS error (an attempt)", err)
		}
	})
}

// Returns (README, "What the worker does") with learners named by email, or not named at all.
func TestUnenrollByEmailOrEnrollment(t *testing.T) {
	ret := func(l fulfillment.Learner) fulfillment.Return {
		return fulfillment.Return{Site: "default", OrderNumber: "WOO-1", CourseID: demoCourse, CourseMode: "verified",
			LMSUserID: l.LMSUserID, Username: l.Username, Email: l.Email, Integration: "woo"}
	}
	enrolledAs := func(fake *lmstest.Server, user string) {
		fake.Enroll(lmstest.Enrollment{User: user, CourseID: demoCourse, Mode: "verified", IsActive: true})
	}
	t.Run("by email: deactivated", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		fake.Register(200, "jdoe", "jdoe@example.com")
		enrolledAs(fake, "jdoe")
		if err := run(t, newClient(t, fake, nil), nil, KindUnenroll, ret(fulfillment.Learner{Email: "jdoe@example.com"})); err != nil {
			t.Fatal(err)
		}
		if e, _ := fake.Enrollment("jdoe", demoCourse); e.IsActive {
			t.Errorf("enrollment %+v, want inactive", e)
		}
	})
	t.Run("by email without an account: done, and the allowance removed", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		c := newClient(t, fake, nil)
		if err := c.AllowEnrollment(context.Background(), "new@example.com", demoCourse, "r"); err != nil {
			t.Fatal(err)
		}
		if err := run(t, c, nil, KindUnenroll, ret(fulfillment.Learner{Email: "new@example.com"})); err != nil {
			t.Fatal(err)
		}
		if got := fake.Allowed("new@example.com"); len(got) != 0 {
			t.Errorf("allowed %+v, want none", got)
		}
		fake.Register(300, "newbie", "new@example.com")
		if e, ok := fake.Enrollment("newbie", demoCourse); ok {
			t.Errorf("registration after the return enrolled them: %+v", e)
		}
	})
	t.Run("naming nobody: the learner of the line's enrollment", func(t *testing.T) {
		for name, l := range map[string]fulfillment.Learner{"by email": {Email: "jdoe@example.com"}, "by username": {Username: "jdoe"},
			"by user id": {LMSUserID: 200}} {
			t.Run(name, func(t *testing.T) {
				fake := lmstest.NewDemo("s")
				fake.Register(200, "jdoe", "jdoe@example.com")
				enrolledAs(fake, "jdoe")
				enrolledAs(fake, "edx") // someone else, left alone
				tasks := tasksOf{KindEnroll: {Kind: KindEnroll, Ref: fulfillment.Ref{LMSUserID: l.LMSUserID, Username: l.Username, Email: l.Email}}}
				if err := run(t, newClient(t, fake, nil), tasks, KindUnenroll, ret(fulfillment.Learner{})); err != nil {
					t.Fatal(err)
				}
				if e, _ := fake.Enrollment("jdoe", demoCourse); e.IsActive {
					t.Errorf("enrollment %+v, want inactive", e)
				}
				if e, _ := fake.Enrollment("edx", demoCourse); !e.IsActive {
					t.Errorf("another learner's enrollment %+v was touched", e)
				}
			})
		}
	})
	t.Run("naming nobody, the line never enrolled (on record): done without a call", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		if err := run(t, newClient(t, fake, nil), everyTask{tasksOf{}}, KindUnenroll, ret(fulfillment.Learner{})); err != nil {
			t.Fatal(err)
		}
		if n := len(fake.Calls()); n != 0 {
			t.Errorf("%d LMS calls, want none", n)
		}
	})
}

// everyTask is a line's tasks kept for good (the ledger tier).
type everyTask struct{ tasksOf }

func (everyTask) KeepsEveryTask() bool { return true }

// A return naming nobody whose line has no enrollment on record: only a store
// that keeps every task proves nothing was enrolled; without it (Redis only,
// the enrollment forgotten after worker.retention) it fails for support.
func TestReturnNamingNobodyWithoutEnrollment(t *testing.T) {
	ret := fulfillment.Return{Site: "default", OrderNumber: "SHOP-1", CourseID: demoCourse, CourseMode: "verified",
		Integration: "shopify", ReturnedAt: time.Now().UTC()}
	t.Run("redis only: learner unknown, failed", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		fake.Register(200, "alice", "alice@example.com")
		fake.Enroll(lmstest.Enrollment{User: "alice", CourseID: demoCourse, Mode: "verified", IsActive: true})
		err := run(t, newClient(t, fake, nil), tasksOf{}, KindUnenroll, ret)
		if !errors.Is(err, lms.ErrLearnerUnknown) || !pipeline.IsPermanent(err) {
			t.Fatalf("err %v, want permanent %q", err, lms.ErrLearnerUnknown)
		}
	})
	t.Run("ledger: nothing was enrolled, done", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		if err := run(t, newClient(t, fake, nil), everyTask{tasksOf{}}, KindUnenroll, ret); err != nil {
			t.Fatalf("err %v, want none", err)
		}
	})
}

// A handler given a job its kind's Decode did not read (no Value) fails it
// for good and calls nothing: a zero return would look like one that names
// nobody, and a zero order like an enrollment of nobody.
func TestHandleWithoutDecodedPayload(t *testing.T) {
	fake := lmstest.NewDemo("s")
	c := newClient(t, fake, nil)
	for _, k := range Kinds(oneSite{c}, everyTask{tasksOf{}}) {
		_, err := k.Handle(context.Background(), pipeline.Job{Kind: k.Name, ID: "t", Ref: ret("verified").Ref()})
		if !pipeline.IsPermanent(err) {
			t.Errorf("%s: err %v, want permanent", k.Name, err)
		}
	}
	if n := len(fake.Calls()); n != 0 {
		t.Errorf("%d LMS calls, want none", n)
	}
}

// M1: a transport error of the account look-up (a timeout) carries no URL
// query: the learner's email, raw or percent-encoded, stays out of errors and
// so out of task_attempt logs.
func TestAccountLookupErrorHasNoEmail(t *testing.T) {
	fake := lmstest.NewDemo("s")
	// Released when the client gives up; once for the look-up, once for
	// the enrollment's.
	fake.Script(lmstest.Account, lmstest.Reply{Delay: time.Minute}, lmstest.Reply{Delay: time.Minute})
	c := newClient(t, fake, nil)
	email := "alice+shop@example.com"
	_, err := c.UsernameByEmail(context.Background(), email, "req")
	if err == nil {
		t.Fatal("no error from an LMS that does not answer")
	}
	for _, s := range []string{email, url.QueryEscape(email), "example.com", "?email="} {
		if strings.Contains(err.Error(), s) {
			t.Errorf("error %q contains %q", err, s)
		}
	}
	var ue *url.Error
	if !errors.As(err, &ue) || !ue.Timeout() {
		t.Errorf("error %v (%T): want a timeout *url.Error still", err, err)
	}
	err = run(t, c, nil, KindEnroll, emailOrder(email, false, time.Now()))
	if err == nil || strings.Contains(err.Error(), url.QueryEscape(email)) || strings.Contains(err.Error(), email) {
		t.Errorf("enroll's error %v: want one without the email", err)
	}
}

// A learner who registered while their line waited for the account was
// auto-enrolled by the LMS in the default mode (from Coordinator's
// enrollment_allowed); refunded before the look that moves them to the mode
// bought, that seat is the line's and is taken back. An enrollment in
// another mode without an enrollment_allowed (the learner's own) is kept.
func TestReturnTakesBackTheAutoEnrollment(t *testing.T) {
	now := time.Now().UTC()
	ret := fulfillment.Return{Site: "default", OrderNumber: "WOO-1", CourseID: demoCourse, CourseMode: "verified",
		Email: "new@example.com", Integration: "woo", ReturnedAt: now}
	t.Run("auto-enrolled from our enrollment_allowed: deactivated, allowed removed", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		c := newClient(t, fake, nil)
		if err := run(t, c, nil, KindEnroll, emailOrder("new@example.com", true, now)); !pipeline.IsAwaitingAccount(err) {
			t.Fatalf("enroll: %v, want a wait for the account", err)
		}
		fake.Register(300, "newbie", "new@example.com")
		if e, _ := fake.Enrollment("newbie", demoCourse); !e.IsActive || e.Mode != "audit" {
			t.Fatalf("auto-enrollment %+v, want active audit", e)
		}
		if err := run(t, c, tasksOf{}, KindUnenroll, ret); err != nil {
			t.Fatal(err)
		}
		if e, _ := fake.Enrollment("newbie", demoCourse); e.IsActive {
			t.Errorf("enrollment %+v, want inactive: the seat came from the line", e)
		}
		if got := fake.Allowed("new@example.com"); len(got) != 0 {
			t.Errorf("enrollment_allowed %+v left", got)
		}
	})
	t.Run("the allowed's removal fails once: the retry removes it", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		c := newClient(t, fake, nil)
		if err := run(t, c, nil, KindEnroll, emailOrder("new@example.com", true, now)); !pipeline.IsAwaitingAccount(err) {
			t.Fatalf("enroll: %v, want a wait for the account", err)
		}
		fake.Register(300, "newbie", "new@example.com")
		// The look-up answers as the LMS does; the DELETE after the
		// deactivation fails.
		fake.Script(lmstest.Allowed,
			lmstest.Reply{Status: 200, Body: `[{"email":"new@example.com","course_id":"` + demoCourse + `","auto_enroll":true}]`},
			lmstest.Reply{Status: 500, Body: "oops"})
		if err := run(t, c, tasksOf{}, KindUnenroll, ret); err == nil {
			t.Fatal("unenroll with the allowed's removal failing: no error")
		}
		if e, _ := fake.Enrollment("newbie", demoCourse); e.IsActive {
			t.Fatalf("enrollment %+v, want inactive after the first attempt", e)
		}
		if err := run(t, c, tasksOf{}, KindUnenroll, ret); err != nil {
			t.Fatal(err)
		}
		if got := fake.Allowed("new@example.com"); len(got) != 0 {
			t.Errorf("enrollment_allowed %+v left after the retry", got)
		}
	})
	t.Run("the learner's own enrollment in another mode: kept", func(t *testing.T) {
		fake := lmstest.NewDemo("s")
		fake.Register(300, "newbie", "new@example.com")
		fake.Enroll(lmstest.Enrollment{User: "newbie", CourseID: demoCourse, Mode: "audit", IsActive: true})
		if err := run(t, newClient(t, fake, nil), tasksOf{}, KindUnenroll, ret); err != nil {
			t.Fatal(err)
		}
		if e, _ := fake.Enrollment("newbie", demoCourse); !e.IsActive || e.Mode != "audit" {
			t.Errorf("enrollment %+v, want the learner's own audit kept", e)
		}
	})
}

func newClient(t *testing.T, fake *lmstest.Server, mod func(*lms.Options)) *lms.Client {
	t.Helper()
	srv := lmstest.Start(t, fake)
	o := lms.Options{
		Site: "default", BaseURL: srv.URL, TokenURL: srv.URL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: "s", Timeout: 500 * time.Millisecond,
		MaxConcurrency: 4, RatePerMinute: 60000, Cache: cache.NewMemory(100), Logger: slog.New(slog.DiscardHandler),
	}
	if mod != nil {
		mod(&o)
	}
	return lms.New(o)
}

func ret(mode string) fulfillment.Return {
	return fulfillment.Return{Site: "default", OrderNumber: "EDX-1", CourseID: demoCourse, CourseMode: mode, LMSUserID: 3, RequestID: "req-r"}
}

// Each unenroll path of a return against the fake LMS.
