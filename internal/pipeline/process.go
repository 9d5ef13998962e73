package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Attempt is one run of a task, as the queue hands it over.
type Attempt struct {
	Job    Job
	Number int  // counted from 1
	Last   bool // no attempt follows a failure of this one (a Hold is run again)
	// Final says the queue ends the task whatever the attempt returns, a
	// Hold too: a task whose worker died during its last attempt, or one
	// queued by an earlier version at its last attempt.
	Final bool
	// Result, when the queue can keep one, receives what a task of a kind
	// that records a result (an entitlement's uuid) recorded when it was
	// done; the queue returns it as fulfillment.Task.Result. nil: the
	// queue keeps none (the ledger still does).
	Result io.Writer
}

// ends reports whether the queue ends the task after this attempt fails:
// at its last attempt unless the failure is held (it costs no attempt), and
// at its final one whatever it is told.
func (a Attempt) ends(held bool) bool { return a.Final || (a.Last && !held) }

// Process runs one attempt of a task: it records it, orders it against the
// line's other flows (a canceled task does nothing; a task waits for the
// running task of its After kind), runs the kind's handler, classifies the
// outcome, tells Completed of a final state and records it. It returns
// the task's new state — done, canceled, retrying, awaiting_account or failed
// — and the handler's error.
func (s *Service) Process(ctx context.Context, a Attempt) (fulfillment.State, error) {
	j := a.Job
	k, ok := s.o.Kinds.Get(j.Kind)
	if !ok {
		return fulfillment.StateFailed, Permanent(fmt.Errorf("unknown task kind %q", j.Kind))
	}
	if err := k.decode(&j); err != nil {
		s.o.Logger.ErrorContext(ctx, "task_payload_invalid", "task_id", j.ID, "kind", j.Kind, "err", err)
		return fulfillment.StateFailed, Permanent(fmt.Errorf("decode %s payload: %w", j.Kind, err))
	}
	// A task that must wait (for a line's earlier task, for a free slot)
	// goes back to the queue before it counts as an attempt anywhere.
	release, err := s.admit(ctx, k, j, a.Final)
	if err != nil {
		return s.notAdmitted(ctx, j, a, err)
	}
	defer release()
	start := time.Now()
	s.record(ctx, j, func(ctx context.Context, l Ledger) error { return l.Started(ctx, j) })
	state, result, err := s.run(ctx, k, j)
	if state == fulfillment.StateDone && result != "" {
		j.Result = result
		if a.Result != nil {
			if _, werr := io.WriteString(a.Result, result); werr != nil {
				// The task is done at the LMS; what it recorded must be kept
				// or the next attempt finds it again (handlers read back).
				state, err = fulfillment.StateRetrying, Hold(fmt.Errorf("record the result: %w", werr))
			}
		}
	}
	if err != nil && ctx.Err() != nil {
		// Shut down or timed out mid-attempt: asynq runs the task again.
		err = Hold(err)
	}
	// A failure at the last attempt ends the task; a Hold (a wait, a
	// store's failure, an account not there yet) does not, unless the queue
	// ends the task whatever it is told (Final): then it is failed, and
	// says so.
	if err != nil && runsNow(state) && (IsPermanent(err) || a.ends(IsHold(err))) {
		state = fulfillment.StateFailed
	}
	state, err = s.complete(ctx, k, j, a, state, err)
	lastErr := errText(err)
	// One line per attempt, task_attempt, with everything support needs:
	// the task, its line, the learner's LMS id (never the email), the
	// request that accepted it, the attempt, its outcome, error and duration.
	level := slog.LevelInfo
	switch state {
	case fulfillment.StateRetrying:
		level = slog.LevelWarn
	case fulfillment.StateFailed:
		level = slog.LevelError
	}
	wait := state == fulfillment.StateRetrying && isWait(err)
	if wait {
		level = slog.LevelDebug
	}
	if s.o.Logger.Enabled(ctx, level) {
		attrs := []slog.Attr{slog.String("task_id", j.ID), slog.String("kind", j.Kind),
			slog.String("state", s.outcome(k, state)), slog.String("order_number", j.Ref.OrderNumber),
			slog.String("course_id", j.Ref.CourseID), slog.String("site", j.Ref.Site),
			slog.String("course_mode", j.Ref.CourseMode), slog.String("request_id", j.Ref.RequestID),
			slog.Int("attempt", a.Number), slog.Bool("last_attempt", a.Last),
			slog.Int64("duration_ms", time.Since(start).Milliseconds())}
		if j.Ref.Event != "" {
			attrs = append(attrs, slog.String("event", j.Ref.Event))
		}
		if j.Ref.LMSUserID != 0 {
			attrs = append(attrs, slog.Int64("lms_user_id", j.Ref.LMSUserID))
		}
		if j.Ref.Email != "" { // personal data: masked in logs (docs/security.md)
			attrs = append(attrs, slog.String("learner_email", fulfillment.MaskEmail(j.Ref.Email)))
		}
		if err != nil {
			attrs = append(attrs, slog.String("err", fulfillment.MaskEmailIn(lastErr, j.Ref.Email)))
		}
		s.o.Logger.LogAttrs(ctx, level, "task_attempt", attrs...)
	}
	if !wait {
		s.o.Observer.Task(j.Kind, s.outcome(k, state), a.Number)
	}
	s.record(ctx, j, func(ctx context.Context, l Ledger) error {
		return l.Finished(ctx, j, state, lastErr)
	})
	return state, err
}

// tellsCompleted reports whether a task of kind k ending in state is sent
// as fulfillment_completed: a line's final state, not an aside's.
func (s *Service) tellsCompleted(k Kind, state fulfillment.State) bool {
	return (state == fulfillment.StateDone || state == fulfillment.StateFailed) && s.o.Completed != nil && !k.Aside
}

// complete sends fulfillment_completed for a task that reached a final state,
// before that state is recorded anywhere: its receivers only queue tasks
// (deliveries, an order's completion), each deduplicated by its task id, so
// that sending it twice is harmless and not sending it is not. It runs
// outside the attempt's deadline and retries a store's failures (steady);
// if a receiver still fails, the attempt is held: the task runs again
// without an attempt counted, and sends the same event again (same task id,
// same state, same attempt number). Until then the task is retrying.
func (s *Service) complete(ctx context.Context, k Kind, j Job, a Attempt, state fulfillment.State, err error) (fulfillment.State, error) {
	if !s.tellsCompleted(k, state) {
		return state, err
	}
	c := completedOf(k, j, state, a.Number, errText(err))
	final := c.State
	// The attempt's deadline or a shutdown must not cut the sending short.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), steadyFor+5*time.Second)
	defer cancel()
	if cerr := s.steady(cctx, func() error { return s.o.Completed(cctx, c) }); cerr != nil {
		// A store's outage is held like any (no attempt used); any other
		// failure of a receiver counts, so that one that always fails ends
		// at the last attempt instead of running the task for good.
		outage := errors.Is(cerr, fulfillment.ErrUnavailable)
		if a.ends(outage) { // the task ends here whatever it is told
			s.o.Logger.ErrorContext(ctx, "completed_not_sent", "task_id", j.ID, "kind", j.Kind,
				"order_number", j.Ref.OrderNumber, "state", string(final), "err", cerr.Error())
			return state, err
		}
		werr := fmt.Errorf("%s not sent (%s %s): %w", fulfillment.SignalLineCompleted, j.Kind, final, cerr)
		if outage {
			werr = Hold(werr)
		}
		return fulfillment.StateRetrying, werr
	}
	return state, err
}

// completedOf is the fulfillment_completed event of a task of kind k that
// ended in state (done or failed) after attempts.
func completedOf(k Kind, j Job, state fulfillment.State, attempts int, lastErr string) fulfillment.Completed {
	final := state
	if state == fulfillment.StateDone {
		final = k.Done
	}
	c := fulfillment.Completed{
		Site: j.Ref.Site, OrderNumber: j.Ref.OrderNumber, CourseID: j.Ref.CourseID, CourseUUID: j.Ref.CourseUUID,
		CourseMode: j.Ref.CourseMode,
		Learner:    j.Ref.Learner(),
		Kind:       j.Kind, State: final, Attempts: attempts, LastError: CleanText(lastErr), TaskID: j.ID,
		RequestID: j.Ref.RequestID, AcceptedAt: j.Ref.AcceptedAt, FinishedAt: time.Now().UTC(),
		Integration: j.Ref.Integration,
	}
	if k.Records != "" && j.Result != "" {
		c.Recorded = map[string]string{k.Records: j.Result}
	}
	if state == fulfillment.StateDone && !j.Ref.ReturnedAt.IsZero() {
		r := j.Ref.ReturnedAt
		c.ReturnedAt = &r
	}
	return c
}

// outcome names a new state for logs and metrics: a kind's own name for done.
func (s *Service) outcome(k Kind, state fulfillment.State) string {
	switch state {
	case fulfillment.StateDone:
		return string(k.Done)
	case fulfillment.StateRetrying:
		return "retried"
	}
	return string(state)
}

// run orders the task against the line's other flows, then runs its handler:
// the task's new state, what it recorded, and the handler's error.
func (s *Service) run(ctx context.Context, k Kind, j Job) (fulfillment.State, string, error) {
	// Checked before every attempt, whatever queued it (an accept, a retry,
	// the reconciler, the dashboard's "run"): an accept's own check cannot
	// see a return that arrives while the task waits in the queue, nor can
	// a repeat see that its failed line was dismissed.
	if by := s.cancelers[k.Name]; len(by) > 0 {
		var found bool
		err := s.steady(ctx, func() (err error) {
			found, err = s.exists(ctx, by, j.Ref.Key())
			return err
		})
		if err != nil {
			return fulfillment.StateRetrying, "", Hold(err)
		}
		if found {
			return fulfillment.StateCanceled, "", nil
		}
	}
	if k.After != "" {
		if err := s.waitFor(ctx, k.After, j.Ref.Key()); err != nil {
			return fulfillment.StateRetrying, "", Hold(err)
		}
	}
	result, err := k.Handle(ctx, j)
	if err != nil {
		if IsAwaitingAccount(err) {
			return fulfillment.StateAwaitingAccount, "", err
		}
		if errors.Is(err, fulfillment.ErrUnavailable) {
			err = Hold(err) // one of our stores, not the LMS, failed
		}
		return fulfillment.StateRetrying, "", err
	}
	return fulfillment.StateDone, result, nil
}

// admit lets a task of a kind with Behind or Slots run, or says why it must
// wait; release frees its slot. It never blocks, at the last attempt too (a
// wait is put back without an attempt counted, and the queue runs a held
// last attempt again): Behind first, so that a task that may not run yet
// never takes a slot from the one it waits for.
func (s *Service) admit(ctx context.Context, k Kind, j Job, final bool) (release func(), err error) {
	if k.Behind != nil {
		err := s.behind(ctx, k, j)
		// At the queue's final attempt nothing is put back: wait here for
		// the earlier event (up to WaitMax, without holding a slot).
		for deadline := time.Now().Add(s.o.WaitMax); final && isBehind(err) && time.Now().Before(deadline); {
			select {
			case <-ctx.Done():
				return nil, err
			case <-time.After(s.o.WaitPoll):
			}
			err = s.behind(ctx, k, j)
		}
		if err != nil {
			return nil, err
		}
	}
	sem, ok := s.slots[k.Name]
	if !ok {
		return func() {}, nil
	}
	if final { // likewise for a slot, until the attempt's deadline
		select {
		case sem <- struct{}{}:
			return func() { <-sem }, nil
		case <-ctx.Done():
			return nil, Wait(busyErr{k.Name})
		}
	}
	select {
	case sem <- struct{}{}:
		return func() { <-sem }, nil
	default:
		return nil, Wait(busyErr{k.Name})
	}
}

// isBehind reports whether err is a wait for a line's earlier task.
func isBehind(err error) bool {
	var b behindErr
	return errors.As(err, &b)
}

// notAdmitted puts a task that may not run yet back, without an attempt:
// a wait is logged at debug level and not measured; a failure of our
// stores while checking is held and logged as a warning.
func (s *Service) notAdmitted(ctx context.Context, j Job, a Attempt, err error) (fulfillment.State, error) {
	var b behindErr
	if errors.As(err, &b) {
		err = Wait(err)
	}
	level := slog.LevelDebug
	if !isWait(err) {
		err, level = Hold(err), slog.LevelWarn
	}
	if a.Final {
		// The queue ends the task now whatever it is told: it failed,
		// and the ledger says so.
		err, level = Permanent(fmt.Errorf("still not admitted at the last attempt: %w", err)), slog.LevelError
		s.record(ctx, j, func(ctx context.Context, l Ledger) error {
			return l.Finished(ctx, j, fulfillment.StateFailed, err.Error())
		})
		s.o.Observer.Task(j.Kind, string(fulfillment.StateFailed), a.Number)
	}
	if s.o.Logger.Enabled(ctx, level) {
		s.o.Logger.LogAttrs(ctx, level, "task_waits", slog.String("task_id", j.ID), slog.String("kind", j.Kind),
			slog.String("event", j.Ref.Event), slog.String("order_number", j.Ref.OrderNumber),
			slog.String("request_id", j.Ref.RequestID), slog.Int("attempt", a.Number), slog.String("err", err.Error()))
	}
	if a.Final {
		return fulfillment.StateFailed, err
	}
	return fulfillment.StateRetrying, err
}

// busyErr is the wait of a task whose kind has no free slot: 2 to 10 s,
// spread, so that a backlog of thousands costs the worker little.
type busyErr struct{ kind string }

func (b busyErr) Error() string          { return "all " + b.kind + " slots busy in this process" }
func (b busyErr) RetryIn() time.Duration { return 2*time.Second + rand.N(8*time.Second) }

// behindErr is the retry of a task that must not overtake another one yet;
// it asks for a short delay, so that a line's events follow each other
// closely once the earlier one is through.
type behindErr struct{ id string }

func (e behindErr) Error() string          { return "waiting for task " + e.id }
func (e behindErr) RetryIn() time.Duration { return time.Second }

// behind checks, with the queue's view of each task, that none of the tasks
// the job must not overtake (Kind.Behind) may still run, or runs.
func (s *Service) behind(ctx context.Context, k Kind, j Job) error {
	open, running := k.Behind(j)
	for i, id := range append(open, running...) {
		e, found, err := s.o.Queue.Task(ctx, id)
		switch {
		case err != nil:
			return err
		case !found:
		case e.Task.State == fulfillment.StateRunning, i < len(open) && e.Task.State.Open():
			return behindErr{id}
		}
	}
	return nil
}

// exists reports whether the line has a task of any of the kinds: in the
// ledger, which records every task before it is queued, when there is one,
// else in the queue (for as long as it keeps the task: worker.retention, and
// worker.return_retention for a line's return or dismissal), in one look.
func (s *Service) exists(ctx context.Context, kinds []string, key fulfillment.Key) (bool, error) {
	if s.o.Ledger != nil {
		for _, kind := range kinds {
			if _, found, err := s.o.Ledger.Find(ctx, kind, key); err != nil || found {
				return found, err
			}
		}
		return false, nil
	}
	ids := make([]string, len(kinds))
	for i, kind := range kinds {
		ids[i] = TaskID(kind, key)
	}
	return s.o.Queue.Exists(ctx, key, ids...)
}

// steadyFor bounds how long steady retries a store's errors (a variable for
// the tests).
var steadyFor = 15 * time.Second

// steady calls f until it succeeds, for up to steadyFor (or ctx's end), with
// a growing pause: a store that fails over for a few seconds must not cost a
// task its attempts, which are for the LMS's failures.
func (s *Service) steady(ctx context.Context, f func() error) error {
	deadline := time.Now().Add(steadyFor)
	pause := 50 * time.Millisecond
	for {
		err := f()
		if err == nil || time.Now().Add(pause).After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(pause):
		}
		pause = min(2*pause, time.Second)
	}
}

// waitFor waits while the line's task of the kind runs, and for Settle after
// a failed attempt of it (a call that timed out on our side may still be
// applied by the LMS), so that the two never overlap. A task of the kind that
// waits in the queue is not waited for: it cancels itself when it runs (its
// CanceledBy). After WaitMax it gives up; the attempt is retried.
func (s *Service) waitFor(ctx context.Context, kind string, key fulfillment.Key) error {
	k, ok := s.o.Kinds.Get(kind)
	if !ok {
		k = Kind{Name: kind}
	}
	deadline := time.Now().Add(s.o.WaitMax)
	for _, id := range k.ids(key) {
		for {
			var e Entry
			var found bool
			err := s.steady(ctx, func() (err error) {
				e, found, err = s.o.Queue.Task(ctx, id)
				return err
			})
			if err != nil {
				return err
			}
			t := e.Task
			settling := t.State == fulfillment.StateRetrying && t.Attempts > 0 && time.Since(t.UpdatedAt) < s.o.Settle
			if !found || (t.State != fulfillment.StateRunning && !settling) {
				break
			}
			if time.Now().After(deadline) {
				return errWaiting
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(s.o.WaitPoll):
			}
		}
	}
	return nil
}

// record writes to the ledger when there is one. A ledger failure does not
// fail the task: the reconciler copies the outcome from the queue later.
func (s *Service) record(ctx context.Context, j Job, write func(context.Context, Ledger) error) {
	if s.o.Ledger == nil {
		return
	}
	// The write must land even when the task's own deadline has passed.
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := write(wctx, s.o.Ledger); err != nil {
		s.o.Logger.WarnContext(ctx, "ledger_write_failed", "task_id", j.ID, "err", err.Error())
	}
}

// ReconcileResult says what one reconciliation did.
type ReconcileResult struct {
	Ran      bool // false when another process held the lock
	Checked  int  // open tasks looked at
	Requeued int  // tasks lost from the queue and queued again
	Synced   int  // final states copied from the queue into the ledger
}

// Reconcile makes the queue agree with the ledger, if no other process is
// doing it: it queues again every open task the queue lost (Redis restarted
// without persistence, was flushed, or was down when the task was accepted),
// as its own kind, and copies into the ledger the outcomes the worker could
// not write.
func (s *Service) Reconcile(ctx context.Context) (ReconcileResult, error) {
	var res ReconcileResult
	if s.o.Ledger == nil {
		return res, errors.New("reconcile: no ledger")
	}
	release, ok, err := s.o.Ledger.TryLock(ctx)
	if err != nil || !ok {
		return res, err
	}
	defer release()
	res.Ran = true
	err = s.o.Ledger.Open(ctx, s.o.ReconcileQuiet, func(e Entry) error {
		res.Checked++
		k, ok := s.o.Kinds.Get(e.Job.Kind)
		if !ok {
			return s.orphan(ctx, e, &res)
		}
		q, found, err := s.o.Queue.Task(ctx, e.Job.ID)
		switch {
		case err != nil && !errors.Is(err, fulfillment.ErrUnavailable):
			// One undecodable task must not stop the pass for the rest.
			s.o.Logger.WarnContext(ctx, "reconcile_skipped", "task_id", e.Job.ID, "err", err.Error())
			return nil
		case err != nil:
			return err
		case !found:
			if _, err := s.o.Queue.Enqueue(ctx, e.Job, EnqueueOptions{}); err != nil {
				return err
			}
			res.Requeued++
		case !q.Task.State.Open():
			e.Job.Result = q.Task.Result
			// The worker sends fulfillment_completed before it records a
			// final state; a task whose final state the ledger never got
			// (the worker died, or asynq archived it at its final attempt)
			// may not have sent it: sent here, first (receivers take an
			// event once: the same task id).
			if st := q.Task.State; s.tellsCompleted(k, st) {
				c := completedOf(k, e.Job, st, q.Task.Attempts, q.Task.LastError)
				if err := s.o.Completed(ctx, c); err != nil {
					s.o.Logger.WarnContext(ctx, "reconcile_completed_not_sent", "task_id", e.Job.ID, "err", err.Error())
					return nil // the next pass tries again
				}
			}
			if err := s.o.Ledger.Finished(ctx, e.Job, q.Task.State, q.Task.LastError); err != nil {
				return err
			}
			res.Synced++
		}
		return nil
	})
	return res, err
}

// OrphanAfter is how long an open task of a kind no longer configured is
// left alone before the reconciler fails it: longer than any rollout of a
// configuration, during which another process may still run it.
const OrphanAfter = 24 * time.Hour

// orphan handles an open ledger task of a kind this process does not know:
// one written by a newer version (before a rollback) is not ours to run and
// is skipped; one of a kind Options.Orphaned says is gone (a removed
// subscriber's delivery) is failed, with the reason, once it was left alone
// for OrphanAfter, so that it neither stays open forever nor is warned
// about at every pass. An operator's retry of its order reopens it (and
// it fails again, until the kind is configured again).
func (s *Service) orphan(ctx context.Context, e Entry, res *ReconcileResult) error {
	reason := ""
	if s.o.Orphaned != nil {
		reason = s.o.Orphaned(e.Job.Kind)
	}
	if reason == "" {
		s.o.Logger.WarnContext(ctx, "reconcile_skipped", "task_id", e.Job.ID, "kind", e.Job.Kind, "err", "unknown kind")
		return nil
	}
	if time.Since(e.Task.UpdatedAt) < OrphanAfter {
		return nil // a process with the kind may still run it (a rollout)
	}
	if err := s.o.Ledger.Finished(ctx, e.Job, fulfillment.StateFailed, reason); err != nil {
		return err
	}
	s.o.Logger.InfoContext(ctx, "reconcile_orphaned", "task_id", e.Job.ID, "kind", e.Job.Kind,
		"order_number", e.Job.Ref.OrderNumber, "reason", reason)
	res.Synced++
	return nil
}

// RunReconciler reconciles every interval until ctx ends.
func (s *Service) RunReconciler(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		res, err := s.Reconcile(ctx)
		if ctx.Err() == nil {
			s.o.Observer.Reconcile(res.Ran, res.Requeued, res.Synced, err)
		}
		switch {
		case err != nil && ctx.Err() == nil:
			s.o.Logger.WarnContext(ctx, "reconcile_failed", "err", err.Error())
		case res.Requeued > 0 || res.Synced > 0:
			s.o.Logger.InfoContext(ctx, "reconciled", "checked", res.Checked, "requeued", res.Requeued, "synced", res.Synced)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errText is err's message as stored and sent (CleanText).
func errText(err error) string {
	if err == nil {
		return ""
	}
	return CleanText(err.Error())
}

// CleanText is an error text as stored and sent: valid UTF-8 without NUL
// bytes, which PostgreSQL's text and jsonb refuse (an LMS that answers a
// binary body must not make a task's outcome unrecordable). The ledger
// cleans every error text it writes with it, whatever its source (an
// attempt's error, or the queue's last error the reconciler copies), and
// so does every fulfillment_completed event.
func CleanText(s string) string {
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}
