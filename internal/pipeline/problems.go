package pipeline

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// This file is the operators' use case (README, Problem orders): find lines by state, site,
// course, learner and age without knowing their order, page through them
// newest first, and retry the stuck ones in bulk. Lines are summarised by the
// same status model as Lines (line, rank).

// Filter selects lines. Zero fields match everything.
type Filter struct {
	State     fulfillment.State // the line's state, as Lines reports it
	Site      string
	CourseID  string
	LMSUserID int64  // the learner, by LMS user id
	Username  string // or by username
	// Email, or by email (a shop's line): compared case-insensitively; set
	// it trimmed and lower-cased (NormalEmail).
	Email string
	Since time.Time
}

// NormalEmail is an email as Filter.Email holds it and the ledger indexes
// it: trimmed and lower-cased (emails are compared case-insensitively).
func NormalEmail(email string) string { return strings.ToLower(strings.TrimSpace(email)) }

// Row is one line in a listing: where it belongs and its summary, in one
// JSON object.
type Row struct {
	Site        string              `json:"site"`
	OrderNumber string              `json:"order_number"`
	Learner     fulfillment.Learner `json:"learner"`
	fulfillment.Line
}

// rowHead is a Row's own fields.
type rowHead struct {
	Site        string              `json:"site"`
	OrderNumber string              `json:"order_number"`
	Learner     fulfillment.Learner `json:"learner"`
}

// MarshalJSON writes the row's fields and its line's in one object (the
// line's own MarshalJSON would otherwise be the row's).
func (r Row) MarshalJSON() ([]byte, error) {
	head, err := json.Marshal(rowHead{r.Site, r.OrderNumber, r.Learner})
	if err != nil {
		return nil, err
	}
	line, err := json.Marshal(r.Line)
	if err != nil {
		return nil, err
	}
	return append(append(head[:len(head)-1], ','), line[1:]...), nil
}

// UnmarshalJSON reads a row as MarshalJSON writes it.
func (r *Row) UnmarshalJSON(b []byte) error {
	var head rowHead
	if err := json.Unmarshal(b, &head); err != nil {
		return err
	}
	if err := r.Line.UnmarshalJSON(b); err != nil {
		return err
	}
	r.Site, r.OrderNumber, r.Learner = head.Site, head.OrderNumber, head.Learner
	delete(r.Recorded, "site")
	delete(r.Recorded, "order_number")
	return nil
}

// Cursor is a position in the newest-first list of lines: the time the line
// was accepted and a tie-breaker (the ledger row id of the line's first task,
// or the line's digest without a ledger).
type Cursor struct {
	At  time.Time
	Seq int64
	Key string
}

// maxCursor bounds the length of an encoded cursor.
const maxCursor = 128

// ErrBadCursor is ParseCursor's answer for anything it did not issue.
var ErrBadCursor = errors.New("not a cursor this service issued")

// String encodes the cursor for a `next` link.
func (c Cursor) String() string {
	return base64.RawURLEncoding.EncodeToString(
		[]byte(strconv.FormatInt(c.At.UnixNano(), 10) + "." + strconv.FormatInt(c.Seq, 10) + "." + c.Key))
}

// ParseCursor decodes a cursor String made.
func ParseCursor(s string) (Cursor, error) {
	if len(s) > maxCursor {
		return Cursor{}, ErrBadCursor
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	parts := strings.SplitN(string(b), ".", 3)
	if len(parts) != 3 {
		return Cursor{}, ErrBadCursor
	}
	ns, err1 := strconv.ParseInt(parts[0], 10, 64)
	seq, err2 := strconv.ParseInt(parts[1], 10, 64)
	if err1 != nil || err2 != nil || seq < 0 || strings.ContainsFunc(parts[2], func(r rune) bool {
		return !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f')
	}) {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{At: time.Unix(0, ns).UTC(), Seq: seq, Key: parts[2]}, nil
}

// before orders cursors newest first: whether a comes after b in the list.
func (a Cursor) before(b Cursor) bool {
	if c := a.At.Compare(b.At); c != 0 {
		return c < 0
	}
	if a.Seq != b.Seq {
		return a.Seq < b.Seq
	}
	return a.Key < b.Key
}

// LedgerQuery is a page of lines read from the ledger.
type LedgerQuery struct {
	// Filter's site, course, learner and since are applied by the ledger;
	// its state is not (a line's state is its highest-ranked task's, which
	// only the pipeline knows).
	Filter Filter
	// States, when set, keeps only lines with a task in one of them.
	States []fulfillment.State
	// Before, when set, keeps only lines listed after it.
	Before *Cursor
	Limit  int
}

// LedgerLine is one line of a ledger page: its position (its first task's
// created time and row id) and all its tasks.
type LedgerLine struct {
	At      Cursor
	Entries []Entry
}

// Page is a page of lines, newest first.
type Page struct {
	Lines []Row `json:"lines"`
	// Next continues the list; "" at its end.
	Next string `json:"next"`
	// Truncated says the queue held more tasks than one listing reads
	// (without a ledger): lines beyond them are not listed.
	Truncated bool `json:"truncated,omitempty"`
}

// Listing limits.
const (
	MaxLimit = 500 // lines per page
	// ledgerRounds bounds the pages a filtered listing reads from the
	// ledger to fill one page; a page may come back short, with a Next.
	ledgerRounds = 20
	// MaxScan bounds the tasks one listing reads from Redis without a ledger.
	MaxScan = 50_000
	// MaxBulk bounds the lines one bulk retry touches.
	MaxBulk = 10_000
)

// States lists the states a line may report, for validating a filter.
func (s *Service) States() []fulfillment.State {
	states := []fulfillment.State{fulfillment.StateQueued, fulfillment.StateRunning, fulfillment.StateRetrying,
		fulfillment.StateAwaitingAccount, fulfillment.StateFailed, fulfillment.StateCanceled}
	for _, k := range s.o.Kinds.All() {
		if !k.Aside && !slices.Contains(states, k.Done) { // an aside's is never a line's
			states = append(states, k.Done)
		}
	}
	return states
}

// taskStates are the task states a line in state st must have one of.
func (s *Service) taskStates(st fulfillment.State) []fulfillment.State {
	switch st {
	case "":
		return nil
	case fulfillment.StateQueued, fulfillment.StateRunning, fulfillment.StateRetrying, fulfillment.StateAwaitingAccount,
		fulfillment.StateFailed, fulfillment.StateCanceled:
		return []fulfillment.State{st}
	}
	return []fulfillment.State{fulfillment.StateDone}
}

// summary is the line of one line's tasks, as Lines reports it.
func (s *Service) summary(es []Entry) (Row, bool) {
	es = slices.DeleteFunc(slices.Clone(es), func(e Entry) bool { _, ok := s.o.Kinds.Get(e.Job.Kind); return !ok })
	if len(es) == 0 {
		return Row{}, false
	}
	slices.SortStableFunc(es, func(a, b Entry) int { return cmp.Compare(s.rank(a), s.rank(b)) })
	r := Row{Site: es[0].Job.Ref.Site, OrderNumber: es[0].Job.Ref.OrderNumber, Line: s.line(es)}
	for _, e := range es {
		if r.Learner.LMSUserID == 0 {
			r.Learner.LMSUserID = e.Job.Ref.LMSUserID
		}
		if r.Learner.Username == "" {
			r.Learner.Username = e.Job.Ref.Username
		}
		if r.Learner.Email == "" {
			r.Learner.Email = e.Job.Ref.Email
		}
	}
	return r, true
}

// matches applies the filter to a summarised line.
func (f Filter) matches(r Row, es []Entry) bool {
	if (f.State != "" && r.State != f.State) || (f.Site != "" && r.Site != f.Site) ||
		(f.CourseID != "" && r.Item() != f.CourseID) || (!f.Since.IsZero() && r.AcceptedAt.Before(f.Since)) {
		return false
	}
	if f.LMSUserID == 0 && f.Username == "" && f.Email == "" {
		return true
	}
	return slices.ContainsFunc(es, func(e Entry) bool {
		return (f.LMSUserID != 0 && e.Job.Ref.LMSUserID == f.LMSUserID) || (f.Username != "" && e.Job.Ref.Username == f.Username) ||
			(f.Email != "" && NormalEmail(e.Job.Ref.Email) == f.Email)
	})
}

// List reads the lines matching f, newest first, after the cursor (nil: from
// the newest), at most limit (1..MaxLimit) of them. With a ledger, lines come
// from the ledger in the order of their first task's acceptance: a cursor
// stays valid while new lines arrive (they sort before it). Without one, they
// come from the queue's task lists, at most MaxScan tasks per call.
func (s *Service) List(ctx context.Context, f Filter, after *Cursor, limit int) (Page, error) {
	limit = min(max(limit, 1), MaxLimit)
	if s.o.Ledger != nil {
		return s.listLedger(ctx, f, after, limit)
	}
	return s.listQueue(ctx, f, after, limit)
}

func (s *Service) listLedger(ctx context.Context, f Filter, after *Cursor, limit int) (Page, error) {
	p := Page{Lines: []Row{}}
	states := s.taskStates(f.State)
	for range ledgerRounds {
		batch, err := s.o.Ledger.Lines(ctx, LedgerQuery{Filter: f, States: states, Before: after, Limit: limit})
		if err != nil {
			return Page{}, fmt.Errorf("list lines: %w", err)
		}
		for _, l := range batch {
			at := l.At
			after = &at
			if r, ok := s.summary(l.Entries); ok && f.matches(r, l.Entries) {
				p.Lines = append(p.Lines, r)
				if len(p.Lines) == limit {
					p.Next = at.String()
					return p, nil
				}
			}
		}
		if len(batch) < limit {
			return p, nil
		}
	}
	p.Next = after.String()
	return p, nil
}

// positioned is a summarised line and its place in the list.
type positioned struct {
	at  Cursor
	row Row
}

func (s *Service) listQueue(ctx context.Context, f Filter, after *Cursor, limit int) (Page, error) {
	rows, truncated, err := s.queueLines(ctx, f, false)
	if err != nil {
		return Page{}, err
	}
	p := Page{Lines: []Row{}, Truncated: truncated}
	for _, r := range rows {
		if after != nil && !r.at.before(*after) {
			continue
		}
		if len(p.Lines) == limit {
			p.Next = p.Lines[limit-1].position().String()
			break
		}
		p.Lines = append(p.Lines, r.row)
	}
	return p, nil
}

// position is a queue-tier line's place in the list.
func (r Row) position() Cursor {
	return Cursor{At: r.AcceptedAt, Key: Digest(fulfillment.Key{Site: r.Site, OrderNumber: r.OrderNumber, Item: r.Item()})}
}

// queueLines reads the queue's tasks (only those that may still run, with
// open), summarises them into lines, keeps those matching f and sorts them
// newest first.
func (s *Service) queueLines(ctx context.Context, f Filter, open bool) ([]positioned, bool, error) {
	byLine := map[fulfillment.Key][]Entry{}
	truncated, err := s.o.Queue.Scan(ctx, ScanOptions{OpenOnly: open, Max: MaxScan}, func(e Entry) error {
		byLine[e.Job.Ref.Key()] = append(byLine[e.Job.Ref.Key()], e)
		return nil
	})
	if err != nil {
		return nil, false, fmt.Errorf("list lines: %w", err)
	}
	rows := make([]positioned, 0, len(byLine))
	for _, es := range byLine {
		if r, ok := s.summary(es); ok && f.matches(r, es) {
			rows = append(rows, positioned{r.position(), r})
		}
	}
	slices.SortFunc(rows, func(a, b positioned) int {
		switch {
		case a.at.before(b.at):
			return 1
		case b.at.before(a.at):
			return -1
		}
		return 0
	})
	return rows, truncated, nil
}

// ScanOptions qualify a Queue.Scan.
type ScanOptions struct {
	OpenOnly bool // only tasks that may still run (pending, scheduled, retry, active)
	Max      int  // stop after this many tasks
}

// Counts reads how many lines matching f (whatever its State) are in each
// state, over at most MaxBulk lines; capped says there were more.
func (s *Service) Counts(ctx context.Context, f Filter) (counts map[fulfillment.State]int, capped bool, err error) {
	f.State = ""
	counts = map[fulfillment.State]int{}
	err = s.each(ctx, f, func(r Row) error { counts[r.State]++; return nil }, &capped)
	return counts, capped, err
}

// Matching calls fn for every line matching f, of any order, newest first,
// at most MaxBulk of them (capped says there were more): what a flow reads
// to know which other lines hold what a line holds.
func (s *Service) Matching(ctx context.Context, f Filter, fn func(Row) error) (capped bool, err error) {
	err = s.each(ctx, f, fn, &capped)
	return capped, err
}

// each calls fn for every line matching f, newest first, at most MaxBulk.
// Without a ledger, the lines come from one read of the queue.
func (s *Service) each(ctx context.Context, f Filter, fn func(Row) error, capped *bool) error {
	if s.o.Ledger == nil {
		rows, truncated, err := s.queueLines(ctx, f, false)
		if err != nil {
			return err
		}
		*capped = truncated || len(rows) > MaxBulk
		for _, r := range rows[:min(len(rows), MaxBulk)] {
			if err := fn(r.row); err != nil {
				return err
			}
		}
		return nil
	}
	var after *Cursor
	seen := 0
	for {
		p, err := s.List(ctx, f, after, MaxLimit)
		if err != nil {
			return err
		}
		for _, r := range p.Lines {
			if seen == MaxBulk {
				*capped = true
				return nil
			}
			seen++
			if err := fn(r); err != nil {
				return err
			}
		}
		*capped = *capped || p.Truncated
		if p.Next == "" {
			return nil
		}
		c, err := ParseCursor(p.Next)
		if err != nil {
			return fmt.Errorf("list lines: %w", err)
		}
		after = &c
	}
}

// RetryResult is what a retry did.
type RetryResult struct {
	// Requeued counts failed lines queued again; RunNow counts retrying
	// and awaiting_account lines moved to run now.
	Requeued int `json:"requeued"`
	RunNow   int `json:"run_now"`
	// Capped says more lines matched than one bulk retry touches (MaxBulk).
	Capped bool `json:"capped,omitempty"`
	// Tasks are the ids of the tasks retried or moved.
	Tasks []string `json:"-"`
}

// RetryMatching queues every failed line matching f again and moves every
// retrying or awaiting_account one to run now (a filter on another state
// matches nothing).
func (s *Service) RetryMatching(ctx context.Context, f Filter) (RetryResult, error) {
	var res RetryResult
	states := []fulfillment.State{fulfillment.StateFailed, fulfillment.StateRetrying, fulfillment.StateAwaitingAccount}
	if f.State != "" {
		states = slices.DeleteFunc(states, func(st fulfillment.State) bool { return st != f.State })
	}
	for _, st := range states {
		f.State = st
		var capped bool
		err := s.each(ctx, f, func(r Row) error {
			n, ids, err := s.retryLine(ctx, r)
			if n > 0 {
				res.Tasks = append(res.Tasks, ids...)
				if st == fulfillment.StateFailed {
					res.Requeued++
				} else {
					res.RunNow++
				}
			}
			return err
		}, &capped)
		res.Capped = res.Capped || capped
		if err != nil {
			return res, err
		}
	}
	return res, nil
}

// retryLine queues a line's failed tasks again and runs its retrying and
// awaiting_account tasks now; it returns how many it touched and their ids.
func (s *Service) retryLine(ctx context.Context, r Row) (int, []string, error) {
	var ids []string
	for _, t := range r.Tasks {
		switch {
		case t.State == fulfillment.StateFailed:
			ok, err := s.requeue(ctx, t)
			if err != nil {
				return len(ids), ids, err
			}
			if ok {
				ids = append(ids, t.TaskID)
			}
		case runsNow(t.State):
			ok, err := s.o.Queue.RunNow(ctx, t.TaskID)
			if err != nil {
				return len(ids), ids, fmt.Errorf("run %s now: %w", t.TaskID, err)
			}
			if ok {
				ids = append(ids, t.TaskID)
			}
		}
	}
	return len(ids), ids, nil
}

// requeue queues a failed task again: with a ledger, reopened there first
// (Accept reopens a failed task), the reconciler queueing it if the queue
// cannot take it now.
func (s *Service) requeue(ctx context.Context, t fulfillment.Task) (bool, error) {
	j, err := s.job(ctx, t)
	if err != nil {
		return false, err
	}
	if s.o.Ledger != nil {
		id, fresh, err := s.o.Ledger.Accept(ctx, j)
		if err != nil || !fresh {
			return false, err
		}
		j.ID = id
		if _, err := s.o.Queue.Enqueue(ctx, j, EnqueueOptions{}); err != nil {
			s.o.Logger.WarnContext(ctx, "enqueue_deferred", "task_id", id, "order_number", j.Ref.OrderNumber, "err", err.Error())
		}
		return true, nil
	}
	if _, err := s.o.Queue.Enqueue(ctx, j, EnqueueOptions{}); err != nil {
		return false, fmt.Errorf("requeue %s: %w", t.TaskID, err)
	}
	return true, nil
}

// job reads the job of a task listed in a line (its payload).
func (s *Service) job(ctx context.Context, t fulfillment.Task) (Job, error) {
	if s.o.Ledger != nil {
		es, err := s.o.Ledger.Order(ctx, t.Ref.Site, t.Ref.OrderNumber)
		if err != nil {
			return Job{}, fmt.Errorf("requeue %s: %w", t.TaskID, err)
		}
		for _, e := range es {
			if e.Task.TaskID == t.TaskID {
				return e.Job, nil
			}
		}
	}
	e, found, err := s.o.Queue.Task(ctx, t.TaskID)
	if err != nil {
		return Job{}, fmt.Errorf("requeue %s: %w", t.TaskID, err)
	}
	if !found {
		return Job{}, fmt.Errorf("requeue %s: %w", t.TaskID, fulfillment.ErrNotFound)
	}
	return e.Job, nil
}

// OldestOpen reports when the oldest line that may still run (queued,
// running or retrying, whatever its place in the queue) was accepted; ok is
// false when there is none. A line awaiting its learner's account is not
// counted: it waits for a person, for up to 30 days, and is not stuck. Nor
// are tasks of events (a subscriber's deliveries): they are not lines, and a
// subscriber that is down does not make a line look stuck.
func (s *Service) OldestOpen(ctx context.Context) (at time.Time, ok bool, err error) {
	if s.o.Ledger != nil {
		return s.o.Ledger.OldestOpen(ctx)
	}
	_, err = s.o.Queue.Scan(ctx, ScanOptions{OpenOnly: true, Max: MaxScan}, func(e Entry) error {
		if e.Task.State == fulfillment.StateAwaitingAccount || e.Job.Ref.Event != "" {
			return nil
		}
		if a := e.Task.AcceptedAt; !a.IsZero() && (!ok || a.Before(at)) {
			at, ok = a, true
		}
		return nil
	})
	if err != nil {
		return time.Time{}, false, fmt.Errorf("oldest open line: %w", err)
	}
	return at, ok, nil
}
