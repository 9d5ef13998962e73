package wcorders_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/queue"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/seat"
	"github.com/openedx/coordinator/internal/signals"
	"github.com/openedx/coordinator/internal/wcorders"
	"github.com/openedx/coordinator/internal/wcorders/wcorderstest"
)

const (
	demo    = "course-v1:edX+DemoX+Demo_Course"
	legacy  = "edX/DemoX/2014"
	missing = "course-v1:edX+Nope+2024"
	secret  = "cs_0123456789abcdef"
)

// site is the one LMS client of the test.
type site struct{ c *lms.Client }

func (s site) Client(context.Context, string) (*lms.Client, error) { return s.c, nil }

// env is the pipeline on the test Redis with the LMS flows, the completer,
// a fake LMS and a fake WooCommerce.
type env struct {
	fake   *lmstest.Server
	woo    *wcorderstest.Store
	placed *signals.Signal[fulfillment.Order]
	pipe   *pipeline.Service
}

func start(t *testing.T) env {
	t.Helper()
	e := env{fake: lmstest.NewDemo("lms-secret"), woo: wcorderstest.New("ck_test", secret)}
	for u := int64(100); u < 200; u++ {
		e.fake.AddUser(u, fmt.Sprintf("learner%d", u))
	}
	e.fake.SetLatency(50 * time.Millisecond) // an order's two enrollments overlap
	lmsURL := lmstest.Start(t, e.fake).URL
	wooURL := httptest.NewServer(e.woo)
	t.Cleanup(wooURL.Close)
	log := slog.New(slog.DiscardHandler)
	client := lms.New(lms.Options{Site: "default", BaseURL: lmsURL, TokenURL: lmsURL + "/oauth2/access_token",
		ClientID: "coordinator-worker", ClientSecret: "lms-secret", Timeout: 5 * time.Second, MaxConcurrency: 20,
		RatePerMinute: 600000, Cache: cache.NewMemory(1000), Logger: log})
	completer := wcorders.New(wcorders.Options{Integrations: []wcorders.Integration{{Name: "woo", BaseURL: wooURL.URL,
		ConsumerKey: "ck_test", ConsumerSecret: secret, OrderPrefix: "woo-", Site: "default"}}})
	flows := flow.NewRegistry()
	seat.Register(flows, site{client})
	completer.Register(flows)
	kinds := flows.Kinds()
	rdb, name := queuetest.Redis(t)
	q := queue.New(rdb, kinds, queue.Options{Name: name, MaxAttempts: 3, Retention: time.Hour, TaskTimeout: time.Minute})
	e.placed, _ = signals.Lookup[fulfillment.Order](flows.Signals(), fulfillment.SignalOrderPlaced)
	completed := flows.Completed()
	e.pipe = pipeline.New(pipeline.Options{Kinds: kinds, Queue: q, Logger: log,
		Completed: func(ctx context.Context, c fulfillment.Completed) error {
			for _, r := range completed.Send(ctx, c) {
				if r.Err != nil {
					t.Errorf("receiver %s: %v", r.Receiver, r.Err)
				}
			}
			return nil
		}})
	flows.Bind(e.pipe)
	if err := flows.Signals().Wire(map[string][]string{fulfillment.SignalLineCompleted: {wcorders.Receiver}}); err != nil {
		t.Fatal(err)
	}
	w := queue.NewWorker(rdb, kinds, e.pipe, queue.WorkerOptions{Queue: name, Concurrency: 20, InitialDelay: 100 * time.Millisecond,
		MaxDelay: time.Second, ShutdownTimeout: 5 * time.Second, Logger: log})
	if err := w.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Shutdown)
	return e
}

// place sends fulfill_order_placed for a line of a shop's order.
func (e env) place(t *testing.T, integration, order, course string, user int64) {
	t.Helper()
	o := fulfillment.Order{Site: "default", OrderNumber: order, CourseID: course, CourseMode: "audit", LMSUserID: user,
		Integration: integration, OrderPlaced: time.Now(), AcceptedAt: time.Now().UTC()}
	for _, r := range e.placed.Send(context.Background(), o) {
		if r.Err != nil {
			t.Fatalf("place %s %s: %v", order, course, r.Err)
		}
	}
}

// final waits until every line of the order and its completion task (if
// any) reached a final state, and returns the lines.
func (e env) final(t *testing.T, order string) []fulfillment.Line {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		lines, err := e.pipe.Lines(context.Background(), "default", order)
		settled := err == nil
		for _, l := range lines {
			for _, task := range l.Tasks {
				settled = settled && !task.State.Open()
			}
		}
		if settled {
			return lines
		}
		if time.Now().After(deadline) {
			t.Fatalf("order %s not settled: %+v %v", order, lines, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Each fully enrolled order of the WooCommerce integration is completed in
// the shop exactly once, even when its two lines finish together; an order
// with a line that failed is not completed, nor are other shops' orders; a
// repeat of the shop's webhook completes nothing again.
func TestCompleteOrder(t *testing.T) {
	t.Parallel()
	e := start(t)
	const orders = 20
	var wg sync.WaitGroup
	for i := range orders {
		wg.Go(func() {
			order, user := fmt.Sprintf("woo-%d", 1000+i), int64(100+i)
			e.place(t, "woo", order, demo, user)
			e.place(t, "woo", order, legacy, user)
		})
	}
	e.place(t, "woo", "woo-2000", demo, 150)
	e.place(t, "woo", "woo-2000", missing, 150) // no such course: the line fails
	e.place(t, "", "3000", demo, 151)           // not from a shop
	e.place(t, "other", "woo-4000", demo, 152)  // another integration
	wg.Wait()

	for i := range orders {
		order := fmt.Sprintf("woo-%d", 1000+i)
		lines := e.final(t, order)
		if n := e.woo.Completions(fmt.Sprint(1000 + i)); n != 1 {
			t.Errorf("order %s: %d completions, want 1 (lines %+v)", order, n, lines)
		}
		var task *fulfillment.Task
		for _, l := range lines {
			if l.State != fulfillment.StateEnrolled {
				t.Errorf("order %s line %s: %s, want enrolled (the completion never becomes a line's state)", order, l.CourseID, l.State)
			}
			for _, tk := range l.Tasks {
				if tk.Kind == wcorders.Kind {
					task = &tk
				}
			}
		}
		if task == nil || task.State != fulfillment.StateDone || task.Event != wcorders.Event {
			t.Errorf("order %s: completion task %+v, want done and listed with the order's first line", order, task)
		}
	}
	for _, order := range []string{"woo-2000", "3000", "woo-4000"} {
		e.final(t, order)
	}
	if n := e.woo.Completions("2000"); n != 0 {
		t.Errorf("order with a failed line: %d completions, want none", n)
	}
	if n := e.woo.Completions("3000") + e.woo.Completions("4000"); n != 0 {
		t.Errorf("orders of no WooCommerce integration: %d completions, want none", n)
	}

	// The shop redelivers an order: nothing runs again.
	e.place(t, "woo", "woo-1000", demo, 100)
	e.place(t, "woo", "woo-1000", legacy, 100)
	e.final(t, "woo-1000")
	if n := e.woo.Completions("1000"); n != 1 {
		t.Errorf("after a redelivery: %d completions, want still 1", n)
	}
	if n := e.woo.Refused(); n != 0 {
		t.Errorf("the fake WooCommerce refused %d calls", n)
	}
}

// An order with two seats of a course has two lines, the second numbered
// "<order>-p2" (the shop package): the order is completed once, under its own
// number, only when both participants are enrolled — here the second one
// later, once the learner's account exists and an operator retried it.
func TestCompleteOrderWithParticipants(t *testing.T) {
	t.Parallel()
	e := start(t)
	const user2 = 300 // no LMS account yet: the enrollment fails
	e.place(t, "woo", "woo-5000", demo, 170)
	e.place(t, "woo", "woo-5000-p2", demo, user2)
	e.final(t, "woo-5000")
	p2 := e.final(t, "woo-5000-p2")
	if len(p2) != 1 || p2[0].State != fulfillment.StateFailed {
		t.Fatalf("participant 2: %+v, want failed", p2)
	}
	if n := e.woo.Completions("5000"); n != 0 {
		t.Fatalf("order completed %d times while participant 2 is not enrolled", n)
	}

	e.fake.AddUser(user2, "learner300")
	if _, err := e.pipe.RetryFailed(context.Background(), "default", "woo-5000-p2"); err != nil {
		t.Fatal(err)
	}
	if p2 = e.final(t, "woo-5000-p2"); p2[0].State != fulfillment.StateEnrolled {
		t.Fatalf("participant 2 after the retry: %+v, want enrolled", p2)
	}
	lines := e.final(t, "woo-5000")
	if n := e.woo.Completions("5000"); n != 1 {
		t.Errorf("order completed %d times, want once (lines %+v)", n, lines)
	}
	for _, l := range p2 {
		for _, tk := range l.Tasks {
			if tk.Kind == wcorders.Kind {
				t.Errorf("participant 2 has a completion task of its own: %+v", tk)
			}
		}
	}
	if n := e.woo.Refused(); n != 0 {
		t.Errorf("the fake WooCommerce refused %d calls", n)
	}
}
