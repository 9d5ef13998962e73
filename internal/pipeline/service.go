package pipeline

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Queue is the task queue (Redis, through asynq).
type Queue interface {
	// Enqueue queues the job unless its task is queued, running, retrying
	// or done, and returns the id of the task in effect: the job's, or
	// o.LegacyID when a task of that id is in effect. A failed task is
	// replaced. When the task o.UnlessExists exists, nothing is queued and
	// the error is ErrSuperseded. An unreachable queue wraps
	// fulfillment.ErrUnavailable.
	Enqueue(ctx context.Context, j Job, o EnqueueOptions) (string, error)
	// Exists reports whether any of the line key's tasks ids exists,
	// cheaply: it runs before every attempt of a kind another can cancel.
	Exists(ctx context.Context, key fulfillment.Key, ids ...string) (bool, error)
	// Task reads one task; found is false when it does not exist (never
	// queued, lost, or older than the retention).
	Task(ctx context.Context, id string) (e Entry, found bool, err error)
	// Order reads the tasks of an order.
	Order(ctx context.Context, site, orderNumber string) ([]Entry, error)
	// RunNow moves a task waiting for its next attempt (retrying or
	// scheduled) to run now. It reports false when the task is not waiting.
	RunNow(ctx context.Context, id string) (bool, error)
	// Scan calls fn for the tasks of the registered kinds, in every state
	// (o.OpenOnly: those that may still run), at most o.Max of them;
	// truncated says there were more.
	Scan(ctx context.Context, o ScanOptions, fn func(Entry) error) (truncated bool, err error)
}

// EnqueueOptions qualify an enqueue.
type EnqueueOptions struct {
	// LegacyID is the id an earlier version gave the task, honoured when
	// that task is in effect.
	LegacyID string
	// UnlessExists names a task whose existence means this one must not
	// be queued (it is checked in the same round trip as the enqueue's
	// other bookkeeping).
	UnlessExists string
}

// ErrSuperseded is Enqueue's answer when EnqueueOptions.UnlessExists exists.
var ErrSuperseded = errors.New("superseded by another task of the line")

// Ledger is the system of record (the Postgres tier): one row per task of a
// line.
type Ledger interface {
	// Accept records a job before it is answered. It returns the id of the
	// task in effect for the line and kind, and whether it must be queued:
	// true for a new task and for one that had failed (which it reopens).
	Accept(ctx context.Context, j Job) (id string, fresh bool, err error)
	// Started records the beginning of an attempt of a job's task (its
	// line, kind and event).
	Started(ctx context.Context, j Job) error
	// Finished records a job's task's new state.
	Finished(ctx context.Context, j Job, state fulfillment.State, lastError string) error
	// Find reads a line's task of a kind (of no event); found is false when
	// there is none.
	Find(ctx context.Context, kind string, k fulfillment.Key) (t fulfillment.Task, found bool, err error)
	// Order reads every task of an order.
	Order(ctx context.Context, site, orderNumber string) ([]Entry, error)
	// ReopenFailed marks an order's failed tasks queued and returns them.
	ReopenFailed(ctx context.Context, site, orderNumber string) ([]Job, error)
	// Open calls fn for every task that may still run and was not updated
	// for quiet, in batches.
	Open(ctx context.Context, quiet time.Duration, fn func(Entry) error) error
	// TryLock takes the fleet-wide reconciler lock if it is free.
	TryLock(ctx context.Context) (release func(), ok bool, err error)
	// Lines reads a page of lines, newest first (see LedgerQuery).
	Lines(ctx context.Context, q LedgerQuery) ([]LedgerLine, error)
	// OldestOpen reports when the oldest task of no event (a line's flow,
	// not a delivery) that may still run, other than one awaiting an
	// account, was accepted; ok is false when there is none.
	OldestOpen(ctx context.Context) (at time.Time, ok bool, err error)
}

// Observer receives measurements (metrics).
type Observer interface {
	// Task is told of each attempt's kind and outcome: the task's new
	// state (enrolled, returned, canceled, failed) or "retried".
	Task(kind, outcome string, attempt int)
	Reconcile(ran bool, requeued, synced int, err error)
}

type noObserver struct{}

func (noObserver) Task(string, string, int)        {}
func (noObserver) Reconcile(bool, int, int, error) {}

// Options configure a Service.
type Options struct {
	Kinds  *Kinds
	Queue  Queue
	Ledger Ledger // nil without the Postgres tier
	// Completed is told of every line that reached a final state (the
	// fulfillment_completed signal), before the state is recorded; nil:
	// nobody is. An error holds the attempt: the task runs again and tells
	// it again, so Completed must be idempotent (its receivers queue tasks
	// by id).
	Completed func(ctx context.Context, c fulfillment.Completed) error
	Logger    *slog.Logger
	Observer  Observer // nil: not measured
	// WaitPoll and WaitMax bound how a task waits for a running task of
	// its After kind (defaults 200 ms and 1 minute); then it is retried.
	WaitPoll, WaitMax time.Duration
	// ReconcileQuiet is how long a ledger task must be left alone before
	// the reconciler acts on it, so that it never races an accept or a
	// retry between its ledger write and its enqueue (default 30 s).
	ReconcileQuiet time.Duration
	// Orphaned, when set, says why the open ledger tasks of a kind this
	// process does not know will never run anywhere (a subscriber removed
	// from the configuration): the reconciler fails those left alone for
	// OrphanAfter, with that reason. "" (or nil): the kind may be a newer
	// version's, and its tasks are left alone.
	Orphaned func(kind string) string
	// Settle is how long after a failed attempt of an After task it is
	// still waited for: the LMS may apply a call that timed out on our
	// side (set it to the LMS timeout; default 10 s).
	Settle time.Duration
}

// Service runs the pipeline. It is safe for concurrent use.
type Service struct {
	o     Options
	slots map[string]chan struct{} // per kind with Slots
	// cancelers are, per kind, the kinds whose task cancels its task
	// (CanceledBy, and every kind that Closes the line).
	cancelers map[string][]string
}

// New returns a Service.
func New(o Options) *Service {
	if o.Observer == nil {
		o.Observer = noObserver{}
	}
	if o.WaitPoll <= 0 {
		o.WaitPoll = 200 * time.Millisecond
	}
	if o.WaitMax <= 0 {
		o.WaitMax = time.Minute
	}
	if o.ReconcileQuiet <= 0 {
		o.ReconcileQuiet = 30 * time.Second
	}
	if o.Settle <= 0 {
		o.Settle = 10 * time.Second
	}
	s := &Service{o: o, slots: map[string]chan struct{}{}, cancelers: map[string][]string{}}
	var closers []string
	for _, k := range o.Kinds.All() {
		if k.Closes {
			closers = append(closers, k.Name)
		}
	}
	for _, k := range o.Kinds.All() {
		if k.CanceledBy != "" {
			s.cancelers[k.Name] = append(s.cancelers[k.Name], k.CanceledBy)
		}
		if !k.Aside && !k.Closes {
			s.cancelers[k.Name] = append(s.cancelers[k.Name], closers...)
		}
	}
	for _, k := range o.Kinds.All() {
		if k.Slots > 0 {
			s.slots[k.Name] = make(chan struct{}, k.Slots)
		}
	}
	return s
}

// Accept records and queues a line's task of a kind and returns its task id.
// With a ledger, the task is accepted once it is in the ledger, and queued at
// once when the queue can take it (else the reconciler queues it); without
// one, once it is in the queue. Repeats return the same id and queue nothing
// while the task is open or done; a failed task is queued again.
func (s *Service) Accept(ctx context.Context, kind string, ref fulfillment.Ref, payload any) (string, error) {
	k, ok := s.o.Kinds.Get(kind)
	if !ok {
		return "", fmt.Errorf("accept: unknown kind %q", kind)
	}
	b, err := json.Marshal(payload)
	if err != nil {
		return "", fmt.Errorf("accept %s: encode payload: %w", kind, err)
	}
	j := Job{Kind: kind, ID: JobID(kind, ref), Ref: ref, Payload: b}
	if s.o.Ledger == nil {
		// Without a ledger, a task canceled by another kind's is not queued
		// once that task exists (checked in the enqueue's own round trip);
		// Process checks again before every attempt.
		var o EnqueueOptions
		if k.LegacyID != nil {
			o.LegacyID = k.LegacyID(ref.Key())
		}
		if k.CanceledBy != "" {
			o.UnlessExists = TaskID(k.CanceledBy, ref.Key())
		}
		id, err := s.o.Queue.Enqueue(ctx, j, o)
		if errors.Is(err, ErrSuperseded) {
			s.o.Logger.InfoContext(ctx, "task_superseded", "request_id", ref.RequestID, "task_id", j.ID,
				"order_number", ref.OrderNumber, "by", o.UnlessExists)
			return j.ID, nil
		}
		return id, err
	}
	id, fresh, err := s.o.Ledger.Accept(ctx, j)
	if err != nil || !fresh {
		return id, err
	}
	j.ID = id
	if _, err := s.o.Queue.Enqueue(ctx, j, EnqueueOptions{}); err != nil {
		s.o.Logger.WarnContext(ctx, "enqueue_deferred", "request_id", ref.RequestID, "task_id", id,
			"order_number", ref.OrderNumber, "err", err.Error())
	}
	return id, nil // in the ledger: the reconciler queues it if the queue could not
}

// entries reads an order's tasks: the ledger's, and the queue's for tasks the
// ledger never saw (accepted before the ledger was configured). Without a
// ledger, only the queue's.
func (s *Service) entries(ctx context.Context, site, orderNumber string) (ledgered, queued []Entry, err error) {
	if s.o.Ledger != nil {
		if ledgered, err = s.o.Ledger.Order(ctx, site, orderNumber); err != nil {
			return nil, nil, err
		}
	}
	queued, err = s.o.Queue.Order(ctx, site, orderNumber)
	if err != nil {
		if s.o.Ledger == nil {
			return nil, nil, err
		}
		// The ledger is the system of record; Redis only adds lines it
		// never saw, so an outage of Redis hides only those.
		s.o.Logger.WarnContext(ctx, "order_queue_unreadable", "order_number", orderNumber, "err", err.Error())
		queued = nil
	}
	known := make(map[string]bool, len(ledgered))
	for _, e := range ledgered {
		known[taskOf(e.Job)] = true
	}
	queued = slices.DeleteFunc(queued, func(e Entry) bool { return known[taskOf(e.Job)] })
	return ledgered, queued, nil
}

// taskOf names a job's task whatever its id: line, kind and event (a task
// queued before the ledger was configured may have a legacy id).
func taskOf(j Job) string {
	return j.Kind + "\x00" + j.Ref.Item() + "\x00" + j.Ref.Event
}

// Lines reports every line of an order; fulfillment.ErrNotFound when none.
func (s *Service) Lines(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	ledgered, queued, err := s.entries(ctx, site, orderNumber)
	if err != nil {
		return nil, err
	}
	lines := s.lines(append(ledgered, queued...))
	if len(lines) == 0 {
		return nil, fmt.Errorf("order %s: %w", orderNumber, fulfillment.ErrNotFound)
	}
	return lines, nil
}

// lines groups tasks into lines, sorted by item; each line reports its
// highest-ranked task.
func (s *Service) lines(entries []Entry) []fulfillment.Line {
	byItem := map[string][]Entry{}
	for _, e := range entries {
		if _, ok := s.o.Kinds.Get(e.Job.Kind); ok {
			byItem[e.Job.Ref.Item()] = append(byItem[e.Job.Ref.Item()], e)
		}
	}
	lines := make([]fulfillment.Line, 0, len(byItem))
	for _, es := range byItem {
		slices.SortStableFunc(es, func(a, b Entry) int {
			return cmp.Or(cmp.Compare(s.rank(a), s.rank(b)), a.Task.AcceptedAt.Compare(b.Task.AcceptedAt))
		})
		lines = append(lines, s.line(es))
	}
	slices.SortFunc(lines, func(a, b fulfillment.Line) int { return cmp.Compare(a.Item(), b.Item()) })
	return lines
}

func (s *Service) rank(e Entry) int {
	k, _ := s.o.Kinds.Get(e.Job.Kind)
	return k.Rank
}

// line summarises a line's tasks, sorted by rank, from the last one that is
// not an aside (a line known only by asides reports the last of them).
func (s *Service) line(es []Entry) fulfillment.Line {
	top := es[len(es)-1].Task
	for _, e := range slices.Backward(es) {
		if k, _ := s.o.Kinds.Get(e.Job.Kind); !k.Aside {
			top = e.Task
			break
		}
	}
	l := fulfillment.Line{
		CourseID: es[0].Job.Ref.CourseID, CourseUUID: es[0].Job.Ref.CourseUUID, CourseMode: es[0].Job.Ref.CourseMode,
		State: top.State, Attempts: top.Attempts, LastError: top.LastError, TaskID: top.TaskID,
		AcceptedAt: es[0].Task.AcceptedAt, UpdatedAt: top.UpdatedAt, NextAttemptAt: top.NextAttemptAt,
	}
	for _, e := range es {
		t := e.Task
		t.Event = e.Job.Ref.Event
		k, _ := s.o.Kinds.Get(e.Job.Kind)
		if k.DoneAt != "" {
			if l.DoneAt == nil {
				l.DoneAt = map[string]*time.Time{}
			}
			if _, seen := l.DoneAt[k.DoneAt]; !seen {
				l.DoneAt[k.DoneAt] = nil
			}
		}
		if t.State == fulfillment.StateDone {
			if k.DoneAt != "" {
				at := t.FinishedAt
				if !t.Ref.ReturnedAt.IsZero() { // the shop's own time of the event
					r := t.Ref.ReturnedAt
					at = &r
				}
				l.DoneAt[k.DoneAt] = at
			}
			if k.Records != "" && t.Result != "" {
				if l.Recorded == nil {
					l.Recorded = map[string]string{}
				}
				l.Recorded[k.Records] = t.Result
			}
			if e.Task.TaskID == top.TaskID {
				l.State = k.Done
			}
		}
		l.Tasks = append(l.Tasks, t)
	}
	return l
}

// RetryFailed queues an order's failed tasks again, runs its retrying and
// awaiting_account tasks now, and returns the order's lines afterwards. With
// a ledger, a task the queue cannot take now stays queued in the ledger, and
// the reconciler queues it later. The flows of a dismissed line are never
// retried (dismissed).
func (s *Service) RetryFailed(ctx context.Context, site, orderNumber string) ([]fulfillment.Line, error) {
	ledgered, queued, err := s.entries(ctx, site, orderNumber)
	if err != nil {
		return nil, err
	}
	closed := s.dismissed(append(ledgered, queued...))
	skip := func(e Entry) bool { // a dismissed line's flow; asides are not its flows
		k, _ := s.o.Kinds.Get(e.Job.Kind)
		return closed[e.Job.Ref.Item()] && !k.Aside
	}
	if s.o.Ledger != nil {
		var reopened []Job
		if len(closed) == 0 {
			if reopened, err = s.o.Ledger.ReopenFailed(ctx, site, orderNumber); err != nil {
				return nil, err
			}
		}
		for _, e := range ledgered {
			if len(closed) == 0 || e.Task.State != fulfillment.StateFailed || skip(e) {
				continue
			}
			id, fresh, err := s.o.Ledger.Accept(ctx, e.Job) // reopens the failed task
			if err != nil {
				return nil, err
			}
			if fresh {
				e.Job.ID = id
				reopened = append(reopened, e.Job)
			}
		}
		for _, j := range reopened {
			if _, err := s.o.Queue.Enqueue(ctx, j, EnqueueOptions{}); err != nil {
				s.o.Logger.WarnContext(ctx, "enqueue_deferred", "task_id", j.ID, "order_number", orderNumber, "err", err.Error())
			}
		}
	}
	for _, e := range queued {
		if e.Task.State != fulfillment.StateFailed || skip(e) {
			continue
		}
		if _, err := s.o.Queue.Enqueue(ctx, e.Job, EnqueueOptions{}); err != nil {
			return nil, err
		}
	}
	// A retrying task need not wait out its backoff once the cause is
	// fixed, nor one awaiting an account once the learner registered: it
	// runs now.
	for _, e := range append(ledgered, queued...) {
		if !runsNow(e.Task.State) || skip(e) {
			continue
		}
		if _, err := s.o.Queue.RunNow(ctx, e.Task.TaskID); err != nil {
			return nil, fmt.Errorf("run %s now: %w", e.Task.TaskID, err)
		}
	}
	return s.Lines(ctx, site, orderNumber)
}

// dismissed lists the items of an order's lines that were dismissed (they
// report fulfillment.StateDismissed): operators' retries leave their flows
// alone.
func (s *Service) dismissed(entries []Entry) map[string]bool {
	items := map[string]bool{}
	for _, l := range s.lines(entries) {
		if l.State == fulfillment.StateDismissed {
			items[l.Item()] = true
		}
	}
	return items
}

// runsNow reports whether an operator's retry moves a task in state st to
// run now: one that waits for its next attempt.
func runsNow(st fulfillment.State) bool {
	return st == fulfillment.StateRetrying || st == fulfillment.StateAwaitingAccount
}

// KeepsEveryTask reports whether Find sees every task for good: with a
// ledger, a line without a task of a kind never had one.
func (s *Service) KeepsEveryTask() bool { return s.o.Ledger != nil }

// Find reads a line's task of a kind (with its Ref: the learner as the task
// names it); found is false when the line has none. With a ledger it is
// read there (the queue only for tasks the ledger never saw), else from the
// queue, under the kind's legacy id too.
func (s *Service) Find(ctx context.Context, kind string, key fulfillment.Key) (fulfillment.Task, bool, error) {
	k, ok := s.o.Kinds.Get(kind)
	if !ok {
		return fulfillment.Task{}, false, fmt.Errorf("find: unknown kind %q", kind)
	}
	if s.o.Ledger != nil {
		t, found, err := s.o.Ledger.Find(ctx, kind, key)
		if err != nil || found {
			return t, found, err
		}
	}
	for _, id := range k.ids(key) {
		e, found, err := s.o.Queue.Task(ctx, id)
		if err != nil || found {
			return e.Task, found, err
		}
	}
	return fulfillment.Task{}, false, nil
}

// errWaiting is the retry of a task whose After task kept running.
var errWaiting = errors.New("waiting for the line's earlier task to finish")
