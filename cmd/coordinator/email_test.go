package main

import (
	"fmt"
	"log/slog"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hibiken/asynq"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/intake"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/store/postgres/pgtest"
)

// startEmailTier runs `coordinator all` like startTier, with retries waiting
// up to an hour (so that a line awaiting an account is looked at again only
// when an operator asks, within a test), and returns with it an app built
// from the same config, whose signals stand for the shop webhooks (docs/integrations.md)
// that send orders naming learners by email.
func startEmailTier(t *testing.T, ledger bool) (*instance, *app) {
	t.Helper()
	rdb, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	extra := ""
	if ledger {
		extra = databaseYAML(pgtest.Schema(t))
	}
	path := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, extra)
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(strings.Replace(string(raw), "max_delay: 1s", "max_delay: 1h", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	if ledger {
		mustRunCmd(t, path, nil, "migrate")
	}
	in := &instance{lms: fake, queue: queue, insp: asynq.NewInspectorFromRedisClient(rdb)}
	in.base = startRun(t, "all", path)
	cfg, err := config.Load(path, func(k string) string { return testEnv[k] })
	if err != nil {
		t.Fatal(err)
	}
	a, err := newApp(t.Context(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.close)
	return in, a
}

// place sends an order on fulfill_order_placed, as a shop webhook does.
func place(t *testing.T, a *app, o fulfillment.Order) string {
	t.Helper()
	sent, err := intake.New(a.flows).Place(t.Context(), o)
	if res := sent.Results; err != nil || len(res) != 1 || res[0].Err != nil {
		t.Fatalf("place %s: %+v %v", o.OrderNumber, res, err)
	}
	return sent.Results[0].Response
}

// giveBack sends a return on fulfill_order_returned, as a shop webhook does.
func giveBack(t *testing.T, a *app, r fulfillment.Return) {
	t.Helper()
	if sent, err := intake.New(a.flows).Return(t.Context(), r); err != nil || len(sent.Results) != 1 || sent.Results[0].Err != nil {
		t.Fatalf("return %s: %+v %v", r.OrderNumber, sent.Results, err)
	}
}

func emailOrder(number, email string, unregistered bool) fulfillment.Order {
	return fulfillment.Order{Site: "default", OrderNumber: number, CourseID: demoCourse, CourseMode: "verified",
		OrderPlaced: time.Unix(1714566902, 0).UTC(), Email: email, EnrollUnregistered: unregistered, Integration: "woo",
		AcceptedAt: time.Now().UTC()}
}

func shopReturn(number string, l fulfillment.Learner) fulfillment.Return {
	now := time.Now().UTC()
	return fulfillment.Return{Site: "default", OrderNumber: number, CourseID: demoCourse, CourseMode: "verified",
		LMSUserID: l.LMSUserID, Username: l.Username, Email: l.Email, Integration: "woo", ReturnedAt: now, AcceptedAt: now}
}

// waitLine waits until the order's only line is in state want.
func (in *instance) waitLine(t *testing.T, order string, want fulfillment.State) fulfillment.Line {
	t.Helper()
	var l fulfillment.Line
	waitFor(t, fmt.Sprintf("order %s %s", order, want), 30*time.Second, func() bool {
		status, st := in.order(t, "GET", order)
		if status != 200 || len(st.Lines) != 1 {
			return false
		}
		l = st.Lines[0]
		return l.State == want
	})
	return l
}

// The README's learners by email, end to end in both tiers: through the
// signals the shop webhooks send, the worker, the fake LMS and GET /orders.
func TestLearnersByEmail(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			in, a := startEmailTier(t, ledger)
			learnersByEmail(t, in, a)
		})
	}
}

func learnersByEmail(t *testing.T, in *instance, a *app) {
	fake := in.lms
	fake.Register(61000, "jane", "jane@example.com")
	fake.Register(61001, "joe", "joe@example.com")

	t.Run("an account has the email: enrolled in the mode bought", func(t *testing.T) {
		place(t, a, emailOrder("WOO-1", "jane@example.com", false))
		if l := in.lineState(t, "WOO-1"); l.State != fulfillment.StateEnrolled {
			t.Fatalf("line %+v, want enrolled", l)
		}
		if e, _ := fake.Enrollment("jane", demoCourse); !e.IsActive || e.Mode != "verified" {
			t.Errorf("enrollment %+v, want active verified", e)
		}
	})

	t.Run("no account, unregistered learners not enrolled: failed with the reason", func(t *testing.T) {
		place(t, a, emailOrder("WOO-2", "nobody@example.com", false))
		l := in.lineState(t, "WOO-2")
		if l.State != fulfillment.StateFailed || l.LastError != "no LMS account for nobody@example.com" {
			t.Errorf("line %+v, want failed: no LMS account for nobody@example.com", l)
		}
		if got := fake.Allowed("nobody@example.com"); len(got) != 0 {
			t.Errorf("enrollment_allowed %+v, want none", got)
		}
	})

	t.Run("no account, unregistered learners enrolled: awaits the account, then the mode bought", func(t *testing.T) {
		place(t, a, emailOrder("WOO-3", "later@example.com", true))
		l := in.waitLine(t, "WOO-3", fulfillment.StateAwaitingAccount)
		if !strings.Contains(l.LastError, "no LMS account for later@example.com yet") || l.Tasks[0].State != fulfillment.StateAwaitingAccount ||
			l.Attempts != 0 {
			t.Errorf("line %+v, want the wait explained, no attempt used", l)
		}
		if got := fake.Allowed("later@example.com"); len(got) != 1 || !got[0].AutoEnroll {
			t.Fatalf("enrollment_allowed %+v, want one with auto_enroll", got)
		}
		// The person registers: the LMS enrolls them in the default mode.
		fake.Register(61002, "later", "later@example.com")
		if e, _ := fake.Enrollment("later", demoCourse); e.Mode != "audit" {
			t.Fatalf("auto-enrollment %+v, want audit", e)
		}
		// The next look is a minute or more away: support runs it now.
		if status, st := in.order(t, "POST", "WOO-3"); status != 200 || len(st.Lines) != 1 {
			t.Fatalf("retry: %d %+v", status, st)
		}
		if l := in.lineState(t, "WOO-3"); l.State != fulfillment.StateEnrolled || l.DoneAt["enrolled_at"] == nil {
			t.Fatalf("line %+v, want enrolled", l)
		}
		if e, _ := fake.Enrollment("later", demoCourse); !e.IsActive || e.Mode != "verified" {
			t.Errorf("enrollment %+v, want the mode bought (verified)", e)
		}
	})

	t.Run("a return naming the learner by email", func(t *testing.T) {
		fake.Enroll(lmstest.Enrollment{User: "joe", CourseID: demoCourse, Mode: "verified", IsActive: true})
		giveBack(t, a, shopReturn("WOO-4", fulfillment.Learner{Email: "joe@example.com"}))
		if l := in.lineState(t, "WOO-4"); l.State != fulfillment.StateReturned {
			t.Fatalf("line %+v, want returned", l)
		}
		if e, _ := fake.Enrollment("joe", demoCourse); e.IsActive {
			t.Errorf("enrollment %+v, want inactive", e)
		}
	})

	t.Run("a return naming nobody: the learner of the line's enrollment", func(t *testing.T) {
		fake.Register(61003, "buyer", "buyer@example.com")
		fake.Enroll(lmstest.Enrollment{User: "bystander", CourseID: demoCourse, Mode: "verified", IsActive: true})
		place(t, a, emailOrder("WOO-5", "buyer@example.com", false))
		if l := in.lineState(t, "WOO-5"); l.State != fulfillment.StateEnrolled {
			t.Fatalf("line %+v, want enrolled", l)
		}
		giveBack(t, a, shopReturn("WOO-5", fulfillment.Learner{}))
		if l := in.lineState(t, "WOO-5"); l.State != fulfillment.StateReturned {
			t.Fatalf("line %+v, want returned", l)
		}
		if e, _ := fake.Enrollment("buyer", demoCourse); e.IsActive {
			t.Errorf("buyer's enrollment %+v, want inactive", e)
		}
		if e, _ := fake.Enrollment("bystander", demoCourse); !e.IsActive {
			t.Errorf("another learner's enrollment %+v was taken", e)
		}
	})

	t.Run("a return naming nobody while the line awaits its account: never enrolled", func(t *testing.T) {
		place(t, a, emailOrder("WOO-6", "undecided@example.com", true))
		in.waitLine(t, "WOO-6", fulfillment.StateAwaitingAccount)
		giveBack(t, a, shopReturn("WOO-6", fulfillment.Learner{}))
		in.waitLine(t, "WOO-6", fulfillment.StateReturned)
		if got := fake.Allowed("undecided@example.com"); len(got) != 0 {
			t.Errorf("enrollment_allowed %+v left: they would be enrolled on registering", got)
		}
		// The waiting enrollment, run now, ends canceled.
		in.order(t, "POST", "WOO-6")
		waitFor(t, "the waiting enrollment to end", 30*time.Second, func() bool {
			_, st := in.order(t, "GET", "WOO-6")
			for _, task := range st.Lines[0].Tasks {
				if task.Kind == seat.KindEnroll {
					return task.State == fulfillment.StateCanceled
				}
			}
			return false
		})
		fake.Register(61004, "undecided", "undecided@example.com")
		if e, ok := fake.Enrollment("undecided", demoCourse); ok {
			t.Errorf("enrolled on registering after the return: %+v", e)
		}
	})

	t.Run("a return naming nobody, of a line never placed: done with the ledger, failed without", func(t *testing.T) {
		before := len(fake.Calls(lmstest.Enroll))
		giveBack(t, a, shopReturn("WOO-7", fulfillment.Learner{}))
		l := in.lineState(t, "WOO-7")
		switch {
		case a.pool != nil && l.State != fulfillment.StateReturned:
			t.Fatalf("line %+v, want returned: the ledger proves nothing was enrolled", l)
		case a.pool == nil && (l.State != fulfillment.StateFailed || l.LastError != lms.ErrLearnerUnknown.Error()):
			// Redis only: an enrollment past worker.retention is
			// forgotten, and the learner may still hold the seat.
			t.Fatalf("line %+v, want failed: %s", l, lms.ErrLearnerUnknown)
		}
		if n := len(fake.Calls(lmstest.Enroll)) - before; n != 0 {
			t.Errorf("%d enrollment calls, want none", n)
		}
	})
}
