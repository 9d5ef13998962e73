package pipeline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// The pipeline's unit tests run against fakes of its two ports; the real
// adapters (queue, store/postgres) have their own tests against Redis and
// PostgreSQL, and cmd/coordinator runs the whole against both.

type fakeQueue struct {
	mu      sync.Mutex
	tasks   map[string]Entry
	order   []string // ids in enqueue order
	down    bool
	enqueue int
	ranNow  []string
}

func newFakeQueue() *fakeQueue {
	return &fakeQueue{tasks: map[string]Entry{}}
}

func (q *fakeQueue) Enqueue(_ context.Context, j Job, o EnqueueOptions) (string, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.down {
		return "", fmt.Errorf("redis: %w", fulfillment.ErrUnavailable)
	}
	if _, ok := q.tasks[o.UnlessExists]; ok && o.UnlessExists != "" {
		return j.ID, ErrSuperseded
	}
	legacy := o.LegacyID
	if e, ok := q.tasks[legacy]; ok && legacy != "" && e.Task.State != fulfillment.StateFailed {
		return legacy, nil
	}
	if e, ok := q.tasks[j.ID]; ok && e.Task.State != fulfillment.StateFailed {
		return j.ID, nil
	}
	q.enqueue++
	q.tasks[j.ID] = Entry{Task: fulfillment.Task{Kind: j.Kind, TaskID: j.ID, State: fulfillment.StateQueued, Ref: j.Ref,
		AcceptedAt: j.Ref.AcceptedAt}, Job: j}
	q.order = append(q.order, j.ID)
	return j.ID, nil
}

func (q *fakeQueue) Task(_ context.Context, id string) (Entry, bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.down {
		return Entry{}, false, fmt.Errorf("redis: %w", fulfillment.ErrUnavailable)
	}
	e, ok := q.tasks[id]
	return e, ok, nil
}

func (q *fakeQueue) Exists(ctx context.Context, _ fulfillment.Key, ids ...string) (bool, error) {
	for _, id := range ids {
		if _, found, err := q.Task(ctx, id); err != nil || found {
			return found, err
		}
	}
	return false, nil
}

func (q *fakeQueue) Order(_ context.Context, site, order string) ([]Entry, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.down {
		return nil, fmt.Errorf("redis: %w", fulfillment.ErrUnavailable)
	}
	var es []Entry
	for _, id := range q.order {
		if e := q.tasks[id]; e.Job.Ref.Site == site && e.Job.Ref.OrderNumber == order {
			es = append(es, e)
		}
	}
	return es, nil
}

func (q *fakeQueue) set(id string, state fulfillment.State) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e := q.tasks[id]
	e.Task.State = state
	q.tasks[id] = e
}

func (q *fakeQueue) state(id string) (fulfillment.State, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.tasks[id]
	return e.Task.State, ok
}

type fakeLedger struct {
	mu     sync.Mutex
	rows   map[string]Entry // by kind + key
	down   bool
	locked bool
}

func newFakeLedger() *fakeLedger { return &fakeLedger{rows: map[string]Entry{}} }

func rowKey(kind string, k fulfillment.Key, event ...string) string {
	return kind + "|" + k.Site + "|" + k.OrderNumber + "|" + k.Item + "|" + strings.Join(event, "")
}

func (l *fakeLedger) Accept(_ context.Context, j Job) (string, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return "", false, fmt.Errorf("postgres: %w", fulfillment.ErrUnavailable)
	}
	k := rowKey(j.Kind, j.Ref.Key(), j.Ref.Event)
	if e, ok := l.rows[k]; ok && e.Task.State != fulfillment.StateFailed {
		return e.Job.ID, false, nil
	}
	l.rows[k] = Entry{Task: fulfillment.Task{Kind: j.Kind, TaskID: j.ID, State: fulfillment.StateQueued, Ref: j.Ref,
		AcceptedAt: j.Ref.AcceptedAt}, Job: j}
	return j.ID, true, nil
}

func (l *fakeLedger) update(j Job, f func(*fulfillment.Task)) error {
	kind, k := j.Kind, j.Ref.Key()
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return errors.New("postgres down")
	}
	e, ok := l.rows[rowKey(kind, k, j.Ref.Event)]
	if ok {
		f(&e.Task)
		l.rows[rowKey(kind, k, j.Ref.Event)] = e
	}
	return nil
}

func (l *fakeLedger) Started(_ context.Context, j Job) error {
	return l.update(j, func(t *fulfillment.Task) { t.State, t.Attempts = fulfillment.StateRunning, t.Attempts+1 })
}

func (l *fakeLedger) Finished(_ context.Context, j Job, s fulfillment.State, lastErr string) error {
	return l.update(j, func(t *fulfillment.Task) { t.State, t.LastError = s, lastErr })
}

func (l *fakeLedger) Find(_ context.Context, kind string, k fulfillment.Key) (fulfillment.Task, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.rows[rowKey(kind, k)]
	return e.Task, ok, nil
}

func (l *fakeLedger) Order(_ context.Context, site, order string) ([]Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.down {
		return nil, fmt.Errorf("postgres: %w", fulfillment.ErrUnavailable)
	}
	var es []Entry
	for _, e := range l.rows {
		if e.Job.Ref.Site == site && e.Job.Ref.OrderNumber == order {
			es = append(es, e)
		}
	}
	return es, nil
}

func (l *fakeLedger) ReopenFailed(_ context.Context, site, order string) ([]Job, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var js []Job
	for k, e := range l.rows {
		if e.Job.Ref.Site == site && e.Job.Ref.OrderNumber == order && e.Task.State == fulfillment.StateFailed {
			e.Task.State = fulfillment.StateQueued
			l.rows[k] = e
			js = append(js, e.Job)
		}
	}
	return js, nil
}

func (l *fakeLedger) Open(_ context.Context, _ time.Duration, fn func(Entry) error) error {
	l.mu.Lock()
	var open []Entry
	for _, e := range l.rows {
		if e.Task.State.Open() {
			open = append(open, e)
		}
	}
	l.mu.Unlock()
	for _, e := range open {
		if err := fn(e); err != nil {
			return err
		}
	}
	return nil
}

func (l *fakeLedger) TryLock(context.Context) (func(), bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.locked {
		return nil, false, nil
	}
	l.locked = true
	return func() { l.mu.Lock(); l.locked = false; l.mu.Unlock() }, true, nil
}

// The kinds under test: a placement and its undoing, like enroll and
// unenroll, with handlers the tests script.
type flows struct {
	mu    sync.Mutex
	calls []string
	err   map[string]error
	hold  chan struct{} // when set, "place" blocks until it is closed
}

func (f *flows) handle(kind string) func(context.Context, Job) error {
	return func(ctx context.Context, j Job) error {
		f.mu.Lock()
		f.calls = append(f.calls, kind+" "+j.Ref.OrderNumber)
		err, hold := f.err[kind], f.hold
		f.mu.Unlock()
		if hold != nil && kind == "place" {
			<-hold
		}
		return err
	}
}

func (f *flows) called() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func newService(t *testing.T, withLedger bool) (*Service, *fakeQueue, *fakeLedger, *flows, *[]fulfillment.Completed) {
	t.Helper()
	f := &flows{err: map[string]error{}}
	kinds := NewKinds(
		Kind{Name: "place", TaskType: "t:place", Done: fulfillment.StateEnrolled, DoneAt: "enrolled_at", Rank: 1, CanceledBy: "undo",
			LegacyID: func(k fulfillment.Key) string { return "place-" + Digest(k) }, Handle: NoResult(f.handle("place"))},
		Kind{Name: "undo", TaskType: "t:undo", Done: fulfillment.StateReturned, DoneAt: "returned_at", Rank: 2, After: "place", Handle: NoResult(f.handle("undo"))},
	)
	q := newFakeQueue()
	var l *fakeLedger
	o := Options{Kinds: kinds, Queue: q, Logger: slog.New(slog.DiscardHandler), WaitPoll: time.Millisecond, WaitMax: time.Second}
	if withLedger {
		l = newFakeLedger()
		o.Ledger = l
	}
	var mu sync.Mutex
	var completed []fulfillment.Completed
	o.Completed = func(_ context.Context, c fulfillment.Completed) error {
		mu.Lock()
		completed = append(completed, c)
		mu.Unlock()
		return nil
	}
	return New(o), q, l, f, &completed
}

var course = "course-v1:a+b+c"

func ref(order string) fulfillment.Ref {
	return fulfillment.Ref{Site: "default", OrderNumber: order, CourseID: course, CourseMode: "verified", LMSUserID: 7,
		AcceptedAt: time.Date(2026, 11, 27, 0, 0, 0, 0, time.UTC)}
}

func accept(t *testing.T, s *Service, kind, order string) string {
	t.Helper()
	id, err := s.Accept(context.Background(), kind, ref(order), ref(order))
	if err != nil {
		t.Fatalf("accept %s %s: %v", kind, order, err)
	}
	return id
}

// run processes a queued task as the worker would, and returns its state.
func run(t *testing.T, s *Service, q *fakeQueue, id string, last bool) (fulfillment.State, error) {
	t.Helper()
	e, ok, _ := q.Task(context.Background(), id)
	if !ok {
		t.Fatalf("task %s not queued", id)
	}
	q.set(id, fulfillment.StateRunning)
	state, err := s.Process(context.Background(), Attempt{Job: e.Job, Number: 1, Last: last})
	q.set(id, state)
	return state, err
}

func TestTaskIDIsStableAndDistinct(t *testing.T) {
	k := fulfillment.Key{Site: "default", OrderNumber: "EDX-1", Item: course}
	a := TaskID("enroll", k)
	if a != TaskID("enroll", k) || a[:7] != "enroll_" {
		t.Errorf("id %q: not stable or not prefixed by its kind", a)
	}
	for _, other := range []string{
		TaskID("unenroll", k),
		TaskID("enroll", fulfillment.Key{Site: "other", OrderNumber: "EDX-1", Item: course}),
		TaskID("enroll", fulfillment.Key{Site: "default", OrderNumber: "EDX-2", Item: course}),
		TaskID("enroll", fulfillment.Key{Site: "default", OrderNumber: "EDX-1" + course}),
	} {
		if other == a {
			t.Errorf("different tasks share id %s", a)
		}
	}
}

func TestAcceptIdempotentPerKindAndLine(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, q, _, _, _ := newService(t, withLedger)
		id := accept(t, s, "place", "O-1")
		if again := accept(t, s, "place", "O-1"); again != id {
			t.Errorf("ledger %v: repeat got %q, want %q", withLedger, again, id)
		}
		if undo := accept(t, s, "undo", "O-1"); undo == id {
			t.Errorf("ledger %v: the undo shares the placement's id", withLedger)
		}
		if q.enqueue != 2 {
			t.Errorf("ledger %v: %d enqueues, want 2", withLedger, q.enqueue)
		}
	}
}

func TestAcceptTiers(t *testing.T) {
	ctx := context.Background()
	// Redis only: an unreachable queue is an error (503).
	s, q, _, _, _ := newService(t, false)
	q.down = true
	if _, err := s.Accept(ctx, "place", ref("O-2"), ref("O-2")); !errors.Is(err, fulfillment.ErrUnavailable) {
		t.Errorf("queue down, no ledger: %v, want ErrUnavailable", err)
	}
	// With a ledger: accepted once recorded; the reconciler queues it.
	s, q, l, _, _ := newService(t, true)
	q.down = true
	id, err := s.Accept(ctx, "place", ref("O-2"), ref("O-2"))
	if err != nil || id == "" {
		t.Fatalf("queue down, ledger up: %q %v, want accepted", id, err)
	}
	q.down = false
	res, err := s.Reconcile(ctx)
	if err != nil || !res.Ran || res.Requeued != 1 {
		t.Fatalf("reconcile: %+v %v, want one requeued", res, err)
	}
	if e, ok, _ := q.Task(ctx, id); !ok || e.Job.Kind != "place" {
		t.Errorf("requeued task %+v, want a place task", e)
	}
	l.down = true
	if _, err := s.Accept(ctx, "place", ref("O-3"), ref("O-3")); !errors.Is(err, fulfillment.ErrUnavailable) {
		t.Errorf("ledger down: %v, want ErrUnavailable", err)
	}
}

func TestLegacyIDKeepsRepeatsIdempotent(t *testing.T) {
	s, q, _, _, _ := newService(t, false)
	k := ref("OLD").Key()
	legacy := "place-" + Digest(k)
	q.tasks[legacy] = Entry{Task: fulfillment.Task{TaskID: legacy, State: fulfillment.StateDone}, Job: Job{Kind: "place", ID: legacy, Ref: ref("OLD")}}
	if id := accept(t, s, "place", "OLD"); id != legacy || q.enqueue != 0 {
		t.Errorf("repeat of a pre-upgrade line: %q, %d enqueued; want %q and none", id, q.enqueue, legacy)
	}
}

func TestProcessOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		err       error
		last      bool
		want      fulfillment.State
		completed fulfillment.State // "" when not sent
	}{
		{"success", nil, false, fulfillment.StateDone, fulfillment.StateEnrolled},
		{"transient", errors.New("503"), false, fulfillment.StateRetrying, ""},
		{"transient on the last attempt", errors.New("503"), true, fulfillment.StateFailed, fulfillment.StateFailed},
		{"permanent", Permanent(errors.New("406")), false, fulfillment.StateFailed, fulfillment.StateFailed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, q, l, f, completed := newService(t, true)
			f.err["place"] = tt.err
			id := accept(t, s, "place", "O-1")
			got, _ := run(t, s, q, id, tt.last)
			if got != tt.want {
				t.Errorf("state %q, want %q", got, tt.want)
			}
			row, _, _ := l.Find(context.Background(), "place", ref("O-1").Key())
			if row.State != tt.want || row.Attempts != 1 {
				t.Errorf("ledger row %+v, want %q after 1 attempt", row, tt.want)
			}
			switch {
			case tt.completed == "" && len(*completed) != 0:
				t.Errorf("completed sent %+v, want nothing", *completed)
			case tt.completed != "" && (len(*completed) != 1 || (*completed)[0].State != tt.completed || (*completed)[0].Learner.LMSUserID != 7):
				t.Errorf("completed %+v, want one %q with the learner", *completed, tt.completed)
			}
		})
	}
}

// Process reads a task's payload once, into the kind's value (Decode) and
// the line's reference; a payload that cannot be read fails the task for
// good without running its handler.
func TestProcessReadsThePayload(t *testing.T) {
	var got []Job
	kinds := NewKinds(Kind{Name: "place", TaskType: "t:place", Done: fulfillment.StateEnrolled, DoneAt: "enrolled_at", Rank: 1,
		Decode: DecodeAs[fulfillment.Order],
		Handle: NoResult(func(_ context.Context, j Job) error { got = append(got, j); return nil })})
	q := newFakeQueue()
	s := New(Options{Kinds: kinds, Queue: q, Logger: slog.New(slog.DiscardHandler)})
	o := fulfillment.Order{Site: "default", OrderNumber: "O-1", CourseID: course, CourseMode: "verified",
		LMSUserID: 7, EmailOptIn: true, OrderPlaced: time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)}
	id, err := s.Accept(context.Background(), "place", o.Ref(), o)
	if err != nil {
		t.Fatal(err)
	}
	if state, err := run(t, s, q, id, false); state != fulfillment.StateDone || err != nil {
		t.Fatalf("state %q, err %v", state, err)
	}
	if len(got) != 1 {
		t.Fatalf("handler ran %d times", len(got))
	}
	if v, ok := got[0].Value.(fulfillment.Order); !ok || !v.EmailOptIn || !v.OrderPlaced.Equal(o.OrderPlaced) || got[0].Ref != o.Ref() {
		t.Errorf("job value %#v, ref %+v: want the order and its reference", got[0].Value, got[0].Ref)
	}
	for _, payload := range []string{"{", `{"edx_lms_user_id":"seven"}`} {
		state, err := s.Process(context.Background(), Attempt{Job: Job{Kind: "place", ID: "place_x", Payload: []byte(payload)}, Number: 1})
		if state != fulfillment.StateFailed || !IsPermanent(err) {
			t.Errorf("payload %s: state %q, err %v; want failed for good", payload, state, err)
		}
	}
	if len(got) != 1 {
		t.Errorf("handler ran on a payload it cannot read")
	}
}

// An undo (return) that arrives first is recorded; the placement that
// follows does nothing, and the line reports returned. Without a ledger the
// placement is not even queued; with one it is, and ends canceled.
func TestUndoBeforePlacementCancelsIt(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, q, _, f, completed := newService(t, withLedger)
		undo := accept(t, s, "undo", "O-1")
		if state, _ := run(t, s, q, undo, false); state != fulfillment.StateDone {
			t.Fatalf("undo: %q", state)
		}
		place := accept(t, s, "place", "O-1")
		_, queued := q.state(place)
		if queued != withLedger {
			t.Errorf("ledger %v: placement after undo queued = %v", withLedger, queued)
		}
		if queued {
			if state, _ := run(t, s, q, place, false); state != fulfillment.StateCanceled {
				t.Errorf("ledger %v: placement after undo ended %q, want canceled", withLedger, state)
			}
		}
		if diff := cmp.Diff([]string{"undo O-1"}, f.called()); diff != "" {
			t.Errorf("ledger %v: handlers called (-want +got):\n%s", withLedger, diff)
		}
		lines, err := s.Lines(context.Background(), "default", "O-1")
		if err != nil || len(lines) != 1 || lines[0].State != fulfillment.StateReturned || lines[0].DoneAt["enrolled_at"] != nil {
			t.Errorf("ledger %v: lines %+v %v, want one returned line, never enrolled", withLedger, lines, err)
		}
		if len(*completed) != 1 || (*completed)[0].State != fulfillment.StateReturned {
			t.Errorf("ledger %v: completed %+v, want one returned", withLedger, *completed)
		}
	}
}

// Whatever queues a placement after its line's undo — an accept that
// checked just before the undo arrived, an operator's retry, the dashboard's
// run — the placement cancels itself when it runs, in both tiers.
func TestPlacementQueuedAfterUndoCancelsItself(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, q, _, f, _ := newService(t, withLedger)
		f.err["place"] = Permanent(errors.New("course closed"))
		place := accept(t, s, "place", "O-1")
		if st, _ := run(t, s, q, place, false); st != fulfillment.StateFailed {
			t.Fatalf("placement: %q", st)
		}
		undo := accept(t, s, "undo", "O-1")
		if st, _ := run(t, s, q, undo, false); st != fulfillment.StateDone {
			t.Fatalf("undo: %q", st)
		}
		delete(f.err, "place")
		if _, err := s.RetryFailed(context.Background(), "default", "O-1"); err != nil {
			t.Fatal(err)
		}
		if st, _ := run(t, s, q, place, false); st != fulfillment.StateCanceled {
			t.Errorf("ledger %v: placement retried after the undo ended %q, want canceled", withLedger, st)
		}
		if diff := cmp.Diff([]string{"place O-1", "undo O-1"}, f.called()); diff != "" {
			t.Errorf("ledger %v: handlers (-want +got):\n%s", withLedger, diff)
		}
	}
}

// An undo while the placement waits in the queue does not wait for it (the
// placement cancels itself when it runs); while it runs, the undo waits for
// it to finish.
func TestUndoOrdersAfterPlacement(t *testing.T) {
	ctx := context.Background()
	s, q, l, f, _ := newService(t, true)
	place := accept(t, s, "place", "O-1")
	undo := accept(t, s, "undo", "O-1")
	if state, _ := run(t, s, q, undo, false); state != fulfillment.StateDone {
		t.Fatalf("undo: %q", state)
	}
	if diff := cmp.Diff([]string{"undo O-1"}, f.called()); diff != "" {
		t.Errorf("handlers (-want +got):\n%s", diff)
	}
	if st, _ := run(t, s, q, place, false); st != fulfillment.StateCanceled {
		t.Errorf("the placement queued before the undo ended %q, want canceled", st)
	}
	if row, _, _ := l.Find(ctx, "place", ref("O-1").Key()); row.State != fulfillment.StateCanceled {
		t.Errorf("the ledger's placement is %q, want canceled", row.State)
	}

	s, q, _, f, _ = newService(t, false)
	f.hold = make(chan struct{})
	place = accept(t, s, "place", "O-2")
	placed := make(chan fulfillment.State)
	go func() { st, _ := run(t, s, q, place, false); placed <- st }()
	for len(f.called()) == 0 {
		time.Sleep(time.Millisecond)
	}
	undo = accept(t, s, "undo", "O-2") // while the placement runs
	undone := make(chan fulfillment.State)
	go func() { st, _ := run(t, s, q, undo, false); undone <- st }()
	time.Sleep(20 * time.Millisecond)
	if got := f.called(); len(got) != 1 {
		t.Fatalf("the undo ran while the placement ran: %v", got)
	}
	close(f.hold)
	if st := <-placed; st != fulfillment.StateDone {
		t.Errorf("placement %q", st)
	}
	if st := <-undone; st != fulfillment.StateDone {
		t.Errorf("undo %q", st)
	}
	if diff := cmp.Diff([]string{"place O-2", "undo O-2"}, f.called()); diff != "" {
		t.Errorf("order of handlers (-want +got):\n%s", diff)
	}
}

// A placement that runs longer than WaitMax makes the undo retry, not fail.
func TestUndoWaitIsBounded(t *testing.T) {
	s, q, _, _, _ := newService(t, false)
	s.o.WaitMax = 10 * time.Millisecond
	place := accept(t, s, "place", "O-1")
	q.set(place, fulfillment.StateRunning)
	undo := accept(t, s, "undo", "O-1")
	state, err := run(t, s, q, undo, false)
	if state != fulfillment.StateRetrying || !errors.Is(err, errWaiting) {
		t.Errorf("undo behind a stuck placement: %q %v, want retrying", state, err)
	}
}

func TestLinesMergeLedgerAndQueue(t *testing.T) {
	ctx := context.Background()
	s, q, l, _, _ := newService(t, true)
	// A line accepted before the ledger was configured lives only in Redis.
	before := ref("O-1")
	before.CourseID = "course-v1:a+b+0"
	b, _ := json.Marshal(before)
	j := Job{Kind: "place", ID: TaskID("place", before.Key()), Ref: before, Payload: b}
	if _, err := q.Enqueue(ctx, j, EnqueueOptions{}); err != nil {
		t.Fatal(err)
	}
	accept(t, s, "place", "O-1")
	lines, err := s.Lines(ctx, "default", "O-1")
	if err != nil || len(lines) != 2 || lines[0].CourseID != before.CourseID {
		t.Fatalf("lines %+v %v, want the Redis-only line and the ledger's", lines, err)
	}
	// Redis down: the ledger still answers.
	q.down = true
	if lines, err := s.Lines(ctx, "default", "O-1"); err != nil || len(lines) != 1 {
		t.Errorf("redis down: %+v %v, want the ledger's line", lines, err)
	}
	q.down = false
	if _, err := s.Lines(ctx, "default", "NOPE"); !errors.Is(err, fulfillment.ErrNotFound) {
		t.Errorf("unknown order: %v", err)
	}
	_ = l
}

func TestRetryFailed(t *testing.T) {
	ctx := context.Background()
	for _, withLedger := range []bool{false, true} {
		s, q, _, f, _ := newService(t, withLedger)
		f.err["place"] = Permanent(errors.New("406"))
		id := accept(t, s, "place", "O-1")
		if st, _ := run(t, s, q, id, false); st != fulfillment.StateFailed {
			t.Fatalf("state %q", st)
		}
		lines, err := s.RetryFailed(ctx, "default", "O-1")
		if err != nil || len(lines) != 1 || lines[0].State != fulfillment.StateQueued {
			t.Errorf("ledger %v: after retry %+v %v, want queued", withLedger, lines, err)
		}
		if st, _ := q.state(id); st != fulfillment.StateQueued {
			t.Errorf("ledger %v: task %q after retry, want queued", withLedger, st)
		}
	}
}

func TestReconcileSyncsAndTakesTurns(t *testing.T) {
	ctx := context.Background()
	s, q, l, _, _ := newService(t, true)
	done := accept(t, s, "place", "O-1")
	q.set(done, fulfillment.StateDone) // finished, but the worker could not write the ledger
	undo := accept(t, s, "undo", "O-2")
	delete(q.tasks, undo) // lost: Redis flushed
	res, err := s.Reconcile(ctx)
	if err != nil || res.Synced != 1 || res.Requeued != 1 || res.Checked != 2 {
		t.Fatalf("reconcile %+v %v", res, err)
	}
	if e, ok, _ := q.Task(ctx, undo); !ok || e.Job.Kind != "undo" {
		t.Errorf("lost undo requeued as %+v, want its own kind", e)
	}
	if row, _, _ := l.Find(ctx, "place", ref("O-1").Key()); row.State != fulfillment.StateDone {
		t.Errorf("synced row %q, want done", row.State)
	}
	release, _, _ := l.TryLock(ctx)
	if res, err := s.Reconcile(ctx); err != nil || res.Ran {
		t.Errorf("reconcile while another holds the lock: %+v %v, want not ran", res, err)
	}
	release()
}

// A store that fails over for a moment during the ordering check costs the
// task no attempt.
func TestStoreHiccupCostsNoAttempt(t *testing.T) {
	s, q, _, f, _ := newService(t, false)
	place := accept(t, s, "place", "O-1")
	if state, _ := run(t, s, q, place, false); state != fulfillment.StateDone {
		t.Fatal("placement")
	}
	undo := accept(t, s, "undo", "O-1")
	e, _, _ := q.Task(context.Background(), undo)
	q.mu.Lock()
	q.down = true
	q.mu.Unlock()
	go func() {
		time.Sleep(200 * time.Millisecond)
		q.mu.Lock()
		q.down = false
		q.mu.Unlock()
	}()
	state, err := s.Process(context.Background(), Attempt{Job: e.Job, Number: 1})
	if state != fulfillment.StateDone || err != nil || len(f.called()) != 2 {
		t.Errorf("after a 200 ms outage: %q %v, handler calls %v; want done in one attempt", state, err, f.called())
	}
}

func (q *fakeQueue) RunNow(_ context.Context, id string) (bool, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	e, ok := q.tasks[id]
	if !ok || (e.Task.State != fulfillment.StateRetrying && e.Task.State != fulfillment.StateAwaitingAccount) {
		return false, nil
	}
	e.Task.State = fulfillment.StateQueued
	q.tasks[id] = e
	q.ranNow = append(q.ranNow, id)
	return true, nil
}

func (q *fakeQueue) Scan(_ context.Context, o ScanOptions, fn func(Entry) error) (bool, error) {
	q.mu.Lock()
	var es []Entry
	for _, id := range q.order {
		if e, ok := q.tasks[id]; ok && (!o.OpenOnly || e.Task.State.Open()) {
			es = append(es, e)
		}
	}
	q.mu.Unlock()
	for i, e := range es {
		if i == o.Max {
			return true, nil
		}
		if err := fn(e); err != nil {
			return false, err
		}
	}
	return false, nil
}

// Lines pages the fake's lines newest first by their first task's
// acceptance, like the ledger's created_at keyset.
func (l *fakeLedger) Lines(_ context.Context, lq LedgerQuery) ([]LedgerLine, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	byKey := map[fulfillment.Key][]Entry{}
	for _, e := range l.rows {
		byKey[e.Job.Ref.Key()] = append(byKey[e.Job.Ref.Key()], e)
	}
	var out []LedgerLine
	for k, es := range byKey {
		at := Cursor{At: es[0].Task.AcceptedAt, Key: Digest(k)}
		for _, e := range es {
			if e.Task.AcceptedAt.Before(at.At) {
				at.At = e.Task.AcceptedAt
			}
		}
		f := lq.Filter
		if (f.Site != "" && k.Site != f.Site) || (f.CourseID != "" && k.Item != f.CourseID) ||
			at.At.Before(f.Since) || (lq.Before != nil && !at.before(*lq.Before)) {
			continue
		}
		if len(lq.States) > 0 && !slices.ContainsFunc(es, func(e Entry) bool { return slices.Contains(lq.States, e.Task.State) }) {
			continue
		}
		out = append(out, LedgerLine{At: at, Entries: es})
	}
	slices.SortFunc(out, func(a, b LedgerLine) int {
		if a.At.before(b.At) {
			return 1
		}
		return -1
	})
	return out[:min(len(out), lq.Limit)], nil
}

func (l *fakeLedger) OldestOpen(context.Context) (time.Time, bool, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var at time.Time
	ok := false
	for _, e := range l.rows {
		if e.Task.State.Open() && e.Job.Ref.Event == "" && (!ok || e.Task.AcceptedAt.Before(at)) {
			at, ok = e.Task.AcceptedAt, true
		}
	}
	return at, ok, nil
}

// After a failed attempt of the placement, the undo waits Settle: the LMS
// may still apply a call that timed out on our side.
func TestUndoSettlesAfterFailedPlacement(t *testing.T) {
	s, q, _, _, _ := newService(t, false)
	s.o.WaitMax, s.o.Settle = 10*time.Millisecond, time.Hour
	place := accept(t, s, "place", "O-1")
	q.mu.Lock()
	e := q.tasks[place]
	e.Task.State, e.Task.Attempts, e.Task.UpdatedAt = fulfillment.StateRetrying, 1, time.Now()
	q.tasks[place] = e
	q.mu.Unlock()
	undo := accept(t, s, "undo", "O-1")
	state, err := run(t, s, q, undo, false)
	if state != fulfillment.StateRetrying || !IsHold(err) {
		t.Errorf("undo right after a failed placement attempt: %q %v, want a held retry", state, err)
	}
	s.o.Settle = time.Millisecond // the attempt is long past
	q.set(undo, fulfillment.StateQueued)
	if state, err := run(t, s, q, undo, false); state != fulfillment.StateDone {
		t.Errorf("undo after the settle window: %q %v, want done", state, err)
	}
}

// A failure of Coordinator's own stores is held: retried, never counted as
// the LMS's failure, at the last attempt too; only when the queue ends the
// task whatever it is told (Final) is it failed.
func TestStoreFailureIsHeld(t *testing.T) {
	s, q, _, f, completed := newService(t, false)
	f.err["place"] = fmt.Errorf("site north: %w: connection refused", fulfillment.ErrUnavailable)
	id := accept(t, s, "place", "O-1")
	if state, err := run(t, s, q, id, false); state != fulfillment.StateRetrying || !IsHold(err) {
		t.Errorf("store failure: %q %v, want a held retry", state, err)
	}
	q.set(id, fulfillment.StateQueued)
	if state, err := run(t, s, q, id, true); state != fulfillment.StateRetrying || !IsHold(err) || len(*completed) != 0 {
		t.Errorf("store failure on the last attempt: %q %v, want a held retry", state, err)
	}
	e, _, _ := q.Task(context.Background(), id)
	if state, _ := s.Process(context.Background(), Attempt{Job: e.Job, Number: 1, Last: true, Final: true}); state != fulfillment.StateFailed {
		t.Errorf("store failure on the final attempt: %q, want failed", state)
	}
	if len(*completed) != 1 {
		t.Errorf("completed %+v, want one failed", *completed)
	}
}

// The shop's time of refund is what the line and fulfillment_completed
// report as returned_at.
func TestReturnedAtIsTheShops(t *testing.T) {
	s, q, _, _, completed := newService(t, true)
	r := ref("O-1")
	r.ReturnedAt = time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	id, err := s.Accept(context.Background(), "undo", r, r)
	if err != nil {
		t.Fatal(err)
	}
	if st, _ := run(t, s, q, id, false); st != fulfillment.StateDone {
		t.Fatal(st)
	}
	lines, _ := s.Lines(context.Background(), "default", "O-1")
	if len(lines) != 1 || lines[0].DoneAt["returned_at"] == nil || !lines[0].DoneAt["returned_at"].Equal(r.ReturnedAt) {
		t.Errorf("line %+v, want returned_at %v", lines, r.ReturnedAt)
	}
	if len(*completed) != 1 || (*completed)[0].ReturnedAt == nil || !(*completed)[0].ReturnedAt.Equal(r.ReturnedAt) {
		t.Errorf("completed %+v, want returned_at %v", *completed, r.ReturnedAt)
	}
}

// A final state the ledger never got (the worker died after the queue ended
// the task) is synced with its fulfillment_completed: the event is sent
// before the row is closed, so it is not lost with the worker.
func TestReconcileSendsCompleted(t *testing.T) {
	ctx := context.Background()
	s, q, l, _, completed := newService(t, true)
	id := accept(t, s, "place", "O-1")
	q.set(id, fulfillment.StateDone)
	if res, err := s.Reconcile(ctx); err != nil || res.Synced != 1 {
		t.Fatalf("reconcile %+v %v", res, err)
	}
	if len(*completed) != 1 || (*completed)[0].TaskID != id || (*completed)[0].State != fulfillment.StateEnrolled {
		t.Fatalf("sent %+v, want one enrolled event of %s", *completed, id)
	}
	// Closed: the next pass neither syncs nor sends again.
	if res, err := s.Reconcile(ctx); err != nil || res.Synced != 0 || len(*completed) != 1 {
		t.Errorf("second pass %+v %v, sent %d", res, err, len(*completed))
	}
	if row, _, _ := l.Find(ctx, "place", ref("O-1").Key()); row.State != fulfillment.StateDone {
		t.Errorf("row %q, want done", row.State)
	}
}
