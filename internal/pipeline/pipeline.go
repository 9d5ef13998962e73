// Package pipeline is Coordinator's application layer: the rules every flow
// of a line shares, written once. A flow (enroll, unenroll, ...) is a Kind: a
// task type and a handler. The pipeline accepts a line's task (ledger, then
// queue, with the reconciler as the fallback), reports an order's lines from
// one status model, retries failed lines, runs each attempt (recording it,
// classifying its outcome, ordering it against the line's other flows) and
// reconciles the queue with the ledger. It talks to Redis and Postgres only
// through the small Queue and Ledger ports.
package pipeline

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Kind is one kind of work on a line, registered by the package that owns it.
type Kind struct {
	// Name is short and has no '-' (asynqmon cuts ids at the first one):
	// task ids are Name + "_" + a digest of the line.
	Name string
	// TaskType is the queue's task type name.
	TaskType string
	// Done is the state a line reports once a task of this kind succeeded.
	Done fulfillment.State
	// DoneAt, when set, names the line's field telling when a task of this
	// kind was done (enrolled_at): null until it is. A task whose line
	// carries the shop's own time of the event (a refund's returned_at)
	// reports that time.
	DoneAt string
	// Records, when set, names what Handle's result is (entitlement_uuid):
	// the task keeps it once done, and the line and its
	// fulfillment_completed event show it under that name.
	Records string
	// Rank orders a line's flows: the line reports its highest-ranked task.
	Rank int
	// After names a kind whose running task for the same line this kind's
	// task waits for (a return waits for the enrollment it undoes).
	After string
	// CanceledBy names a kind whose task, once it exists for the line, makes
	// this kind's task unnecessary (an enrollment of a returned line): it is
	// not queued, and checked again before every attempt.
	CanceledBy string
	// Closes marks a kind whose task closes its line for good (an
	// operator's dismissal): once it exists, an attempt of any of the
	// line's other flows (not an aside) ends canceled, whatever queued it
	// (a shop's redelivery, a retry, the dashboard's "run").
	Closes bool
	// LegacyID, when set, is the id an earlier version gave this kind's task,
	// so that repeats of lines accepted before an upgrade stay idempotent.
	LegacyID func(fulfillment.Key) string
	// Handle performs one attempt. A nil error is success, and its result
	// is what the task records (see Records; "" for none); an error is
	// retried unless IsPermanent says otherwise, after RetryIn when set.
	Handle func(ctx context.Context, j Job) (result string, err error)
	// Aside marks a kind whose tasks serve a line without being one of its
	// flows (a subscriber's deliveries): they are listed with the line but
	// never make its state, nothing cancels them, and they send no
	// fulfillment_completed. Such a kind may have several tasks per line,
	// one per event (fulfillment.Ref.Event).
	Aside bool
	// Behind, when set, names the tasks a job must not overtake: while one
	// of open may still run (queued, running, retrying), or one of running
	// runs, the attempt is put back without counting one (a subscriber's
	// delivery waits for the line's earlier events).
	Behind func(j Job) (open, running []string)
	// Slots, when positive, bounds this kind's tasks running at once in
	// one process: a task that finds none free waits in the queue (a slow
	// subscriber never takes the worker slots other kinds need).
	Slots int
	// Decode, when set, reads a task's payload into the value Handle uses
	// (Job.Value) and returns the line's reference it carries: one pass
	// over the payload per attempt. Without it the payload is read into
	// the reference alone. DecodeAs makes one for a payload type.
	Decode func(payload []byte) (fulfillment.Ref, any, error)
}

// DecodeAs is a Kind's Decode for payloads of type T.
func DecodeAs[T interface{ Ref() fulfillment.Ref }](payload []byte) (fulfillment.Ref, any, error) {
	var v T
	if err := json.Unmarshal(payload, &v); err != nil {
		return fulfillment.Ref{}, nil, err
	}
	return v.Ref(), v, nil
}

// Value is the job's payload as its kind's Decode read it. A job Process did
// not decode (a Handle called without it) fails for good: a zero order or
// return must never reach anyone.
func Value[T any](j Job) (T, error) {
	v, ok := j.Value.(T)
	if !ok {
		return v, Permanent(fmt.Errorf("%s payload not decoded (%T)", j.Kind, j.Value))
	}
	return v, nil
}

// decode reads a job's payload (Kind.Decode).
func (k Kind) decode(j *Job) error {
	j.Ref, j.Value = fulfillment.Ref{}, nil
	if k.Decode == nil {
		return json.Unmarshal(j.Payload, &j.Ref)
	}
	ref, v, err := k.Decode(j.Payload)
	if err != nil {
		return err
	}
	j.Ref, j.Value = ref, v
	return nil
}

// Job is one task of one line: its kind, its id and its payload (JSON whose
// top level carries the fields of fulfillment.Ref). Process reads Ref, and
// Value, from the payload before the kind's Handle runs.
type Job struct {
	Kind    string
	ID      string
	Ref     fulfillment.Ref
	Payload []byte
	// Value is the payload as the kind's Decode read it; nil for a kind
	// without one.
	Value any
	// Result is what the task recorded when it was done (Kind.Records).
	Result string
}

// Entry is a stored task and the job that runs it.
type Entry struct {
	Task fulfillment.Task
	Job  Job
}

// TaskID is the id of a line's task of a kind: the same line always gives the
// same id, which is what makes repeats idempotent.
func TaskID(kind string, k fulfillment.Key) string { return kind + "_" + Digest(k) }

// ids are the ids the kind's task of a line may have: its own, then the
// id an earlier version gave it (LegacyID), if any.
func (k Kind) ids(key fulfillment.Key) []string {
	ids := []string{TaskID(k.Name, key)}
	if k.LegacyID != nil {
		ids = append(ids, k.LegacyID(key))
	}
	return ids
}

// JobID is the id of the task a reference names: TaskID, and for a kind with
// one task per event of the line, a digest of the line and the event.
func JobID(kind string, r fulfillment.Ref) string {
	if r.Event == "" {
		return TaskID(kind, r.Key())
	}
	return kind + "_" + EventDigest(r.Site, r.OrderNumber, r.Item(), r.Event)
}

// EventDigest is the digest of one event of a line: the part of its tasks'
// ids after the kind, and of its subscribers' webhook-id.
func EventDigest(site, orderNumber, item, event string) string {
	return digest(site, orderNumber, item, event)
}

// Digest is a line's digest, the part of its task ids after the kind.
func Digest(k fulfillment.Key) string { return digest(k.Site, k.OrderNumber, k.Item) }

func digest(parts ...string) string {
	h := sha256.New()
	for _, s := range parts {
		h.Write([]byte(s))
		h.Write([]byte{0}) // no field contains NUL, so the join is unambiguous
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Kinds is the set of registered kinds.
type Kinds struct {
	byName     map[string]Kind
	list       []Kind
	supersedes map[string]bool // see Supersedes
}

// NewKinds registers kinds. Names and task types must be unique, and After
// and CanceledBy must name registered kinds; anything else is a programming
// error and panics.
func NewKinds(kinds ...Kind) *Kinds {
	ks := &Kinds{byName: map[string]Kind{}}
	types := map[string]bool{}
	for _, k := range kinds {
		if k.Name == "" || k.TaskType == "" || k.Handle == nil || ks.byName[k.Name].Name != "" || types[k.TaskType] {
			panic(fmt.Sprintf("pipeline: bad or duplicate kind %q (%q)", k.Name, k.TaskType))
		}
		ks.byName[k.Name], types[k.TaskType] = k, true
		ks.list = append(ks.list, k)
	}
	ks.supersedes = map[string]bool{}
	for _, k := range kinds {
		if k.CanceledBy != "" {
			ks.supersedes[k.CanceledBy] = true
		}
		if k.Closes {
			ks.supersedes[k.Name] = true
		}
		for _, other := range []string{k.After, k.CanceledBy} {
			if _, ok := ks.byName[other]; other != "" && !ok {
				panic(fmt.Sprintf("pipeline: kind %q names unknown kind %q", k.Name, other))
			}
		}
	}
	return ks
}

// Get returns the kind named name.
func (ks *Kinds) Get(name string) (Kind, bool) {
	k, ok := ks.byName[name]
	return k, ok
}

// Supersedes reports whether a task of kind name makes another kind's task
// unnecessary (it is some kind's CanceledBy: a line's return) or closes its
// line (Closes: a dismissal). Such a task is the line's tombstone, kept as
// long as a later repeat must find it.
func (ks *Kinds) Supersedes(name string) bool { return ks.supersedes[name] }

// All lists the kinds in registration order.
func (ks *Kinds) All() []Kind { return append([]Kind(nil), ks.list...) }

// permanentErr marks an error retrying cannot fix.
type permanentErr struct{ err error }

func (p permanentErr) Error() string   { return p.err.Error() }
func (p permanentErr) Unwrap() error   { return p.err }
func (p permanentErr) Permanent() bool { return true }

// Permanent marks err as one that retrying cannot fix.
func Permanent(err error) error { return permanentErr{err} }

// holdErr marks a failure of Coordinator's own stores (Redis, PostgreSQL)
// or a wait for another task: retried without counting as an attempt.
type holdErr struct {
	err  error
	wait bool // a routine wait (Wait): neither logged above debug nor measured
}

func (h holdErr) Error() string { return h.err.Error() }
func (h holdErr) Unwrap() error { return h.err }

// Hold marks err as no fault of the task's: the attempt is retried without
// counting against worker.retry.max_attempts, which are for the LMS's
// failures. Handlers need not use it: an error wrapping
// fulfillment.ErrUnavailable is held too.
func Hold(err error) error {
	if err == nil || IsHold(err) {
		return err
	}
	return holdErr{err: err}
}

// Wait marks err as a routine wait (for a line's earlier task, for a free
// slot): held like Hold, and logged at debug level only, without a metric,
// since a backlog waits many times.
func Wait(err error) error {
	if err == nil {
		return nil
	}
	return holdErr{err, true}
}

// isWait reports whether err was marked by Wait.
func isWait(err error) bool {
	var h holdErr
	return errors.As(err, &h) && h.wait
}

// IsHold reports whether err was marked by Hold.
func IsHold(err error) bool {
	var h holdErr
	return errors.As(err, &h)
}

// IsPermanent reports whether err, or an error it wraps, says retrying cannot
// fix it (it has a method Permanent() bool returning true).
func IsPermanent(err error) bool {
	var p interface{ Permanent() bool }
	return errors.As(err, &p) && p.Permanent()
}

// RetryIn returns the delay err asks for before the next attempt (a 429's
// Retry-After), if any: an error with a method RetryIn() time.Duration.
func RetryIn(err error) (time.Duration, bool) {
	var r interface{ RetryIn() time.Duration }
	if errors.As(err, &r) && r.RetryIn() > 0 {
		return r.RetryIn(), true
	}
	return 0, false
}

// NoResult is a Kind's Handle for a handler that records nothing.
func NoResult(h func(ctx context.Context, j Job) error) func(context.Context, Job) (string, error) {
	return func(ctx context.Context, j Job) (string, error) { return "", h(ctx, j) }
}
