package pipeline

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// A kind with a task per event of a line, like a subscriber's deliveries:
// "note", whose event "b" must not overtake the line's event "a", nor the
// placement while it runs.
func newEventService(t *testing.T, withLedger bool) (*Service, *fakeQueue, *flows, *[]fulfillment.Completed) {
	t.Helper()
	s, q, l, f, completed := newService(t, withLedger)
	kinds := append(s.o.Kinds.All(), Kind{Name: "note", TaskType: "t:note", Done: "noted", Rank: 100, Aside: true,
		Behind: func(j Job) ([]string, []string) {
			if j.Ref.Event != "b" {
				return nil, nil
			}
			a := j.Ref
			a.Event = "a"
			return []string{JobID("note", a)}, []string{TaskID("place", j.Ref.Key())}
		},
		Handle: NoResult(f.handle("note"))})
	o := s.o
	o.Kinds = NewKinds(kinds...)
	if l != nil {
		o.Ledger = l
	}
	o.Logger = slog.New(slog.DiscardHandler)
	return New(o), q, f, completed
}

func acceptEvent(t *testing.T, s *Service, order, event string) string {
	t.Helper()
	r := ref(order)
	r.Event = event
	id, err := s.Accept(context.Background(), "note", r, r)
	if err != nil {
		t.Fatalf("accept note %s: %v", event, err)
	}
	return id
}

func TestJobID(t *testing.T) {
	r := ref("EV-1")
	if got, want := JobID("enroll", r), TaskID("enroll", r.Key()); got != want {
		t.Errorf("JobID without an event = %q, want the line's TaskID %q", got, want)
	}
	a, a2, b := r, r, r
	a.Event, a2.Event, b.Event = "a", "a", "b"
	if JobID("note", a) == JobID("note", b) || JobID("note", a) == TaskID("note", r.Key()) || JobID("note", a) != JobID("note", a2) {
		t.Errorf("event ids not distinct or not stable: %s %s", JobID("note", a), JobID("note", b))
	}
}

// Asides are listed with their line, each with its event, never make its
// state, send no completion and are not canceled by the line's return.
func TestAsideTasks(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, q, _, completed := newEventService(t, withLedger)
		place := accept(t, s, "place", "EV-1")
		idA := acceptEvent(t, s, "EV-1", "a")
		if again := acceptEvent(t, s, "EV-1", "a"); again != idA {
			t.Errorf("ledger %v: repeat of an event got %q, want %q", withLedger, again, idA)
		}
		if st, _ := run(t, s, q, idA, false); st != fulfillment.StateDone {
			t.Fatalf("ledger %v: note a %s, want done", withLedger, st)
		}
		if st, _ := run(t, s, q, place, false); st != fulfillment.StateDone {
			t.Fatalf("ledger %v: place %s", withLedger, st)
		}
		accept(t, s, "undo", "EV-1")
		idB := acceptEvent(t, s, "EV-1", "b")
		if st, _ := run(t, s, q, idB, false); st != fulfillment.StateDone {
			t.Errorf("ledger %v: note b after a return: %s, want done (asides are never canceled)", withLedger, st)
		}
		lines, err := s.Lines(context.Background(), "default", "EV-1")
		if err != nil || len(lines) != 1 {
			t.Fatalf("ledger %v: lines %v %v", withLedger, lines, err)
		}
		l := lines[0]
		if l.State != fulfillment.StateQueued || l.TaskID == idA || l.TaskID == idB || len(l.Tasks) != 4 {
			t.Errorf("ledger %v: line %s from %s with %d tasks, want queued (the undo) with 4 tasks", withLedger, l.State, l.TaskID, len(l.Tasks))
		}
		events := map[string]bool{}
		for _, task := range l.Tasks {
			events[task.Kind+":"+task.Event] = true
		}
		if !events["note:a"] || !events["note:b"] || !events["place:"] {
			t.Errorf("ledger %v: tasks %v, want each note with its event", withLedger, events)
		}
		if len(*completed) != 1 || (*completed)[0].Kind != "place" {
			t.Errorf("ledger %v: completions %+v, want the placement's only", withLedger, *completed)
		}
	}
}

// An event waits, without an attempt counted, while the line's earlier event
// may still run, and while the placement runs.
func TestBehind(t *testing.T) {
	s, q, f, _ := newEventService(t, false)
	place := accept(t, s, "place", "EV-2")
	idA := acceptEvent(t, s, "EV-2", "a")
	idB := acceptEvent(t, s, "EV-2", "b")
	st, err := run(t, s, q, idB, false)
	if st != fulfillment.StateRetrying || !isWait(err) {
		t.Fatalf("b before a: %s %v, want a wait", st, err)
	}
	if d, ok := RetryIn(err); !ok || d > 5*time.Second {
		t.Errorf("wait asks for %v %v, want a short delay", d, ok)
	}
	run(t, s, q, idA, false)
	q.set(place, fulfillment.StateRunning)
	if st, _ := s.Process(context.Background(), Attempt{Job: mustJob(t, q, idB), Number: 1}); st != fulfillment.StateRetrying {
		t.Errorf("b while the placement runs: %s, want retrying", st)
	}
	q.set(place, fulfillment.StateRetrying) // not running: a later attempt is no reason to wait
	if st, _ := run(t, s, q, idB, false); st != fulfillment.StateDone {
		t.Errorf("b after a: %s, want done", st)
	}
	var notes []string
	for _, c := range f.called() {
		if c == "note EV-2" {
			notes = append(notes, c)
		}
	}
	if len(notes) != 2 {
		t.Errorf("note handler ran %d times, want twice (a, then b once)", len(notes))
	}
}

func mustJob(t *testing.T, q *fakeQueue, id string) Job {
	t.Helper()
	e, ok, _ := q.Task(context.Background(), id)
	if !ok {
		t.Fatalf("task %s not queued", id)
	}
	return e.Job
}

// A delivery waiting for a subscriber that is down does not make a line
// look stuck (coordinator_oldest_open_line_age_seconds).
func TestOldestOpenIgnoresEvents(t *testing.T) {
	for _, withLedger := range []bool{false, true} {
		s, q, _, _ := newEventService(t, withLedger)
		r := ref("EV-3")
		r.Event = "a"
		r.AcceptedAt = r.AcceptedAt.Add(-time.Hour)
		if _, err := s.Accept(context.Background(), "note", r, r); err != nil {
			t.Fatal(err)
		}
		if _, ok, err := s.OldestOpen(context.Background()); ok || err != nil {
			t.Errorf("ledger %v: only a delivery open: oldest open line reported (%v)", withLedger, err)
		}
		id := accept(t, s, "place", "EV-3")
		at, ok, err := s.OldestOpen(context.Background())
		if !ok || err != nil || !at.Equal(ref("EV-3").AcceptedAt) {
			t.Errorf("ledger %v: oldest open %v %v %v, want the placement's time", withLedger, at, ok, err)
		}
		run(t, s, q, id, false)
	}
}

// A kind with Slots runs at most that many tasks at once in a process; the
// next one waits in the queue without an attempt recorded anywhere.
func TestSlots(t *testing.T) {
	f := &flows{err: map[string]error{}, hold: make(chan struct{})}
	kinds := NewKinds(Kind{Name: "place", TaskType: "t:place", Done: fulfillment.StateEnrolled, Rank: 1, Slots: 1, Handle: NoResult(f.handle("place"))})
	q, l := newFakeQueue(), newFakeLedger()
	s := New(Options{Kinds: kinds, Queue: q, Ledger: l, Logger: slog.New(slog.DiscardHandler)})
	first, second := accept(t, s, "place", "SL-1"), accept(t, s, "place", "SL-2")
	done := make(chan fulfillment.State)
	go func() { st, _ := run(t, s, q, first, false); done <- st }()
	for len(f.called()) == 0 {
		time.Sleep(time.Millisecond)
	}
	st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, second), Number: 1})
	if d, ok := RetryIn(err); st != fulfillment.StateRetrying || !isWait(err) || !ok || d < 2*time.Second || d > 10*time.Second {
		t.Errorf("second task while the only slot is taken: %s %v (retry in %v), want a wait of 2-10 s", st, err, d)
	}
	if task, _, _ := l.Find(context.Background(), "place", ref("SL-2").Key()); task.Attempts != 0 || task.State != fulfillment.StateQueued {
		t.Errorf("waiting task in the ledger: %+v, want queued with no attempt", task)
	}
	// At its last attempt too: it never blocks a worker for the slot (the
	// queue runs a held last attempt again).
	if st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, second), Number: 2, Last: true}); st != fulfillment.StateRetrying || !isWait(err) {
		t.Errorf("second task at its last attempt while the only slot is taken: %s %v, want a wait", st, err)
	}
	close(f.hold)
	if st := <-done; st != fulfillment.StateDone {
		t.Fatalf("first task: %s", st)
	}
	if st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, second), Number: 2, Last: true}); st != fulfillment.StateDone {
		t.Errorf("second task at its last attempt: %s %v, want done once the slot is free", st, err)
	}
}

// At its last attempt, a task behind another is put back like at any other
// (the queue runs a held last attempt again); only when the queue ends the
// task whatever it is told (Final) does it fail, and the ledger says so.
func TestBehindAtLastAttempt(t *testing.T) {
	s, q, _, _ := newEventService(t, true)
	acceptEvent(t, s, "EV-4", "a")
	idB := acceptEvent(t, s, "EV-4", "b")
	st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, idB), Number: 3, Last: true})
	if st != fulfillment.StateRetrying || !isWait(err) {
		t.Fatalf("b behind a at its last attempt: %s %v, want a wait", st, err)
	}
	st, err = s.Process(context.Background(), Attempt{Job: mustJob(t, q, idB), Number: 3, Last: true, Final: true})
	if st != fulfillment.StateFailed || !IsPermanent(err) {
		t.Fatalf("b behind a at its final attempt: %s %v, want failed", st, err)
	}
	es, _ := s.o.Ledger.Order(context.Background(), "default", "EV-4")
	for _, e := range es {
		if e.Job.ID == idB && e.Task.State != fulfillment.StateFailed {
			t.Errorf("ledger: %s, want failed", e.Task.State)
		}
	}
}

// A subscriber with max_concurrency 1 and two events of a line at their
// last attempt: the later one never takes the only slot while it waits for
// the earlier one, nor blocks a worker, nor fails; both are delivered, in
// order.
func TestOrderedEventsOneSlotLastAttempt(t *testing.T) {
	s, q, f, _ := newEventService(t, true)
	kinds := s.o.Kinds.All()
	for i := range kinds {
		if kinds[i].Name == "note" {
			kinds[i].Slots = 1
		}
	}
	o := s.o
	o.Kinds = NewKinds(kinds...)
	s = New(o)
	idA := acceptEvent(t, s, "EV-5", "a")
	idB := acceptEvent(t, s, "EV-5", "b")
	// b first: it waits for a, without an attempt, and without the slot.
	st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, idB), Number: 5, Last: true})
	if st != fulfillment.StateRetrying || !isWait(err) {
		t.Fatalf("b before a at its last attempt: %s %v, want a wait", st, err)
	}
	q.set(idB, fulfillment.StateRetrying)
	for _, id := range []string{idA, idB} {
		q.set(id, fulfillment.StateRunning)
		st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, id), Number: 5, Last: true})
		q.set(id, st)
		if st != fulfillment.StateDone || err != nil {
			t.Fatalf("%s at its last attempt: %s %v, want delivered", id, st, err)
		}
	}
	if got := f.called(); len(got) != 2 || got[0] != "note EV-5" {
		t.Errorf("handled %v, want a then b", got)
	}
}

// At the queue's final attempt nothing can be put back: a delivery behind
// an earlier event, or without a free slot, waits in the attempt (Behind up
// to WaitMax, a slot until the attempt's deadline) and then runs.
func TestFinalAttemptWaits(t *testing.T) {
	s, q, _, _ := newEventService(t, true)
	kinds := s.o.Kinds.All()
	for i := range kinds {
		if kinds[i].Name == "note" {
			kinds[i].Slots = 1
		}
	}
	o := s.o
	o.Kinds, o.WaitMax = NewKinds(kinds...), time.Minute
	s = New(o)
	idA := acceptEvent(t, s, "EV-6", "a")
	idB := acceptEvent(t, s, "EV-6", "b")
	// The only slot is taken (another delivery running) while a is open.
	hold := s.slots["note"]
	hold <- struct{}{}
	type result struct {
		st  fulfillment.State
		err error
	}
	done := make(chan result, 1)
	go func() {
		st, err := s.Process(context.Background(), Attempt{Job: mustJob(t, q, idB), Number: 6, Last: true, Final: true})
		done <- result{st, err}
	}()
	time.Sleep(50 * time.Millisecond)
	select {
	case r := <-done:
		t.Fatalf("b at its final attempt returned while a is open and the slot taken: %s %v, want a wait", r.st, r.err)
	default:
	}
	q.set(idA, fulfillment.StateDone) // a is delivered ...
	<-hold                            // ... and the slot is free
	r := <-done
	if r.st != fulfillment.StateDone || r.err != nil {
		t.Fatalf("b at its final attempt: %s %v, want it delivered after waiting", r.st, r.err)
	}
}
