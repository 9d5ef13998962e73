// Package fulfillment is Coordinator's domain: the requests commerce backends
// send (fulfill an order line, return it), their validation, the lines and
// tasks those requests become and the states they go through, and the errors
// the adapters map to HTTP statuses. It imports no infrastructure.
package fulfillment

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"
)

// DefaultSite is the site an order belongs to when the request names none: the
// LMS configured under `lms:`.
const DefaultSite = "default"

// DateLayout is the format the LMS reads enrollment dates in
// (Python's %Y-%m-%dT%H:%M:%SZ).
const DateLayout = "2006-01-02T15:04:05Z"

// The signals lines travel on (docs/architecture.md).
const (
	SignalOrderPlaced   = "fulfill_order_placed"
	SignalOrderReturned = "fulfill_order_returned"
	SignalLineCompleted = "fulfillment_completed"
)

// Key identifies a line: one item (a course run, or a course) in one order
// of one site. Every flow of a line (enroll, unenroll, ...) is idempotent per
// key.
type Key struct {
	Site        string `json:"site"`
	OrderNumber string `json:"order_number"`
	// Item is the line's item: a course run key (a seat) or a course uuid
	// (an entitlement). The two never look alike, so one string names
	// either.
	Item string `json:"item"`
}

// The request fields that name a line's item, exactly one per line.
const (
	ItemCourseRun = "course_id"   // a course run: a seat
	ItemCourse    = "course_uuid" // a catalog course: an entitlement
)

// Ref is what every task payload carries at its top level, whatever its kind:
// the line, the mode bought, and where the request came from. Adapters read it
// without knowing the kind.
type Ref struct {
	Site        string `json:"site"`
	OrderNumber string `json:"order_number"`
	CourseID    string `json:"course_id"`
	// CourseUUID names the line's item when it is a course (an
	// entitlement) rather than a course run.
	CourseUUID string `json:"course_uuid,omitempty"`
	CourseMode string `json:"course_mode"`
	LMSUserID  int64  `json:"edx_lms_user_id,omitempty"`
	Username   string `json:"username,omitempty"`
	// Email is the learner's email when the shop knows no LMS account
	// (shop webhooks, docs/integrations.md): the worker looks the account up.
	Email string `json:"email,omitempty"`
	// Integration is the shop integration (docs/integrations.md) the line came from;
	// empty for lines posted to /orders/fulfill or /orders/return.
	Integration string    `json:"integration,omitempty"`
	RequestID   string    `json:"request_id,omitempty"`
	AcceptedAt  time.Time `json:"accepted_at"`
	// ReturnedAt is a return's time of refund, as the shop gave it.
	ReturnedAt time.Time `json:"returned_at,omitzero"`
	// Event names one of a line's several tasks of one kind (a subscriber's
	// deliveries: one per event of the line); empty for the kinds that have
	// one task per line (enroll, unenroll).
	Event string `json:"event,omitempty"`
}

// Key is the line the reference names.
func (r Ref) Key() Key { return Key{r.Site, r.OrderNumber, r.Item()} }

// Item is the line's item: its course run, or its course.
func (r Ref) Item() string {
	if r.CourseID != "" {
		return r.CourseID
	}
	return r.CourseUUID
}

// ItemField names the request field that holds the line's item
// (ItemCourseRun or ItemCourse).
func (r Ref) ItemField() string {
	if r.CourseUUID != "" && r.CourseID == "" {
		return ItemCourse
	}
	return ItemCourseRun
}

// Learner is the learner the reference names.
func (r Ref) Learner() Learner {
	return Learner{LMSUserID: r.LMSUserID, Username: r.Username, Email: r.Email}
}

// Order is one validated fulfillment line: one course run in one order.
type Order struct {
	Site        string    `json:"site"`
	OrderNumber string    `json:"order_number"`
	CourseID    string    `json:"course_id"`
	CourseUUID  string    `json:"course_uuid,omitempty"`
	CourseMode  string    `json:"course_mode"`
	OrderPlaced time.Time `json:"order_placed"`
	LMSUserID   int64     `json:"edx_lms_user_id"`
	EmailOptIn  bool      `json:"email_opt_in"`
	Provider    string    `json:"provider,omitempty"`
	Username    string    `json:"username,omitempty"`
	// Email names the learner by email instead (shop webhooks, docs/integrations.md).
	Email string `json:"email,omitempty"`
	// EnrollUnregistered: when no LMS account has Email, register an
	// enrollment_allowed and wait for the account (docs/lms.md#enrollment-allowed).
	EnrollUnregistered bool `json:"enroll_unregistered,omitempty"`
	// Integration is the shop integration the line came from, if any.
	Integration string `json:"integration,omitempty"`
	// RequestID is the X-Request-ID of the HTTP request that placed the order;
	// it follows the order into the task and onto the LMS call.
	RequestID string `json:"request_id,omitempty"`
	// AcceptedAt is when Coordinator accepted the line.
	AcceptedAt time.Time `json:"accepted_at"`
}

// Ref is the order line's reference.
func (o Order) Ref() Ref {
	return Ref{Site: o.Site, OrderNumber: o.OrderNumber, CourseID: o.CourseID, CourseUUID: o.CourseUUID, CourseMode: o.CourseMode,
		LMSUserID: o.LMSUserID, Username: o.Username, Email: o.Email, Integration: o.Integration,
		RequestID: o.RequestID, AcceptedAt: o.AcceptedAt}
}

// Return is one validated return (refund) of a line: the seat bought in
// CourseMode is to be taken back (README, POST /orders/return).
type Return struct {
	Site        string `json:"site"`
	OrderNumber string `json:"order_number"`
	CourseID    string `json:"course_id"`
	CourseUUID  string `json:"course_uuid,omitempty"`
	CourseMode  string `json:"course_mode"`
	LMSUserID   int64  `json:"edx_lms_user_id,omitempty"`
	Username    string `json:"username,omitempty"`
	// Email names the learner by email (shop webhooks). A return from a
	// shop may name no learner at all: the unenrollment then takes the
	// learner of the line's enrollment.
	Email       string    `json:"email,omitempty"`
	Integration string    `json:"integration,omitempty"`
	ReturnedAt  time.Time `json:"returned_at"`
	RequestID   string    `json:"request_id,omitempty"`
	AcceptedAt  time.Time `json:"accepted_at"`
}

// Ref is the return's reference.
func (r Return) Ref() Ref {
	return Ref{Site: r.Site, OrderNumber: r.OrderNumber, CourseID: r.CourseID, CourseUUID: r.CourseUUID, CourseMode: r.CourseMode,
		LMSUserID: r.LMSUserID, Username: r.Username, Email: r.Email, Integration: r.Integration,
		RequestID: r.RequestID, AcceptedAt: r.AcceptedAt, ReturnedAt: r.ReturnedAt}
}

// State is where a line, or one task of it, stands.
type State string

// The states of a task of a line, whatever its kind.
const (
	StateQueued   State = "queued"
	StateRunning  State = "running"
	StateRetrying State = "retrying"
	StateFailed   State = "failed"
	// StateDone is a task that succeeded; a line reports it under its kind's
	// own name (enrolled, returned).
	StateDone State = "done"
	// StateCanceled is a task that was not needed any more: an enrollment
	// whose line was returned before it ran.
	StateCanceled State = "canceled"
	// StateAwaitingAccount is an enrollment for an email that has no LMS
	// account yet: an enrollment_allowed is registered and the account is
	// looked for again with a growing interval (README, Learners by email).
	StateAwaitingAccount State = "awaiting_account"
)

// The final states a line reports for its successful flows.
const (
	StateEnrolled State = "enrolled"
	StateReturned State = "returned"
	// StateDismissed is a failed line an operator closed (POST
	// /orders/{n}/dismiss): kept and listed, never retried, not open.
	StateDismissed State = "dismissed"
)

// Open reports whether a task in state s may still run.
func (s State) Open() bool {
	return s == StateQueued || s == StateRunning || s == StateRetrying || s == StateAwaitingAccount
}

// Task is the state of one task of a line: one kind of work (enroll,
// unenroll) for one line.
type Task struct {
	Kind          string     `json:"kind"`
	State         State      `json:"state"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error"`
	TaskID        string     `json:"task_id"`
	AcceptedAt    time.Time  `json:"accepted_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	FinishedAt    *time.Time `json:"finished_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	// Event is, for a kind with a task per event of the line (a
	// subscriber's deliveries), the event this task is for.
	Event string `json:"event,omitempty"`
	// Result is what the task recorded when it was done (an entitlement's
	// uuid); its kind says how a line shows it.
	Result string `json:"-"`
	// Ref is the line the task is for; it is not part of the task's JSON,
	// which is always shown inside its line.
	Ref Ref `json:"-"`
}

// Line is the fulfillment state of one course in an order, as GET
// /orders/{order_number} reports it: the state of its latest flow, and every
// task of the line.
type Line struct {
	// CourseID or CourseUUID is the line's item (Ref.Item).
	CourseID      string     `json:"course_id,omitempty"`
	CourseUUID    string     `json:"course_uuid,omitempty"`
	CourseMode    string     `json:"course_mode"`
	State         State      `json:"state"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error"`
	TaskID        string     `json:"task_id"`
	AcceptedAt    time.Time  `json:"accepted_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
	Tasks         []Task     `json:"tasks"`
	// DoneAt holds, under the name each of the line's flows gives it
	// (enrolled_at, returned_at, ...), when that flow was done: null while
	// it is not. Recorded holds what a flow recorded, under the name it
	// gives it (entitlement_uuid). Both appear in the line's JSON at its
	// top level.
	DoneAt   map[string]*time.Time `json:"-"`
	Recorded map[string]string     `json:"-"`
}

// Item is the line's item: its course run, or its course.
func (l Line) Item() string { return cmp.Or(l.CourseID, l.CourseUUID) }

type lineFields Line

// MarshalJSON writes the line with its flows' times and records at the top
// level.
func (l Line) MarshalJSON() ([]byte, error) {
	return withExtras(lineFields(l), l.DoneAt, l.Recorded)
}

// UnmarshalJSON reads a line as MarshalJSON writes it.
func (l *Line) UnmarshalJSON(b []byte) error {
	if err := json.Unmarshal(b, (*lineFields)(l)); err != nil {
		return err
	}
	l.DoneAt, l.Recorded = nil, nil
	var extra map[string]json.RawMessage
	if err := json.Unmarshal(b, &extra); err != nil {
		return err
	}
	for k, v := range extra {
		switch {
		case strings.HasSuffix(k, "_at") && !lineKeys[k]:
			var t *time.Time
			if err := json.Unmarshal(v, &t); err != nil {
				return fmt.Errorf("line %s: %w", k, err)
			}
			if l.DoneAt == nil {
				l.DoneAt = map[string]*time.Time{}
			}
			l.DoneAt[k] = t
		case !lineKeys[k]:
			var s string
			if json.Unmarshal(v, &s) == nil {
				if l.Recorded == nil {
					l.Recorded = map[string]string{}
				}
				l.Recorded[k] = s
			}
		}
	}
	return nil
}

// lineKeys are the line's own JSON fields.
var lineKeys = func() map[string]bool {
	m := map[string]bool{}
	t := reflect.TypeFor[lineFields]()
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ","); name != "" && name != "-" {
			m[name] = true
		}
	}
	return m
}()

// withExtras encodes v, a struct, with the entries of times and records
// added at its top level.
func withExtras(v any, times map[string]*time.Time, records map[string]string) ([]byte, error) {
	b, err := json.Marshal(v)
	if err != nil || len(times)+len(records) == 0 {
		return b, err
	}
	extra := make(map[string]any, len(times)+len(records))
	for k, t := range times {
		extra[k] = t
	}
	for k, r := range records {
		extra[k] = r
	}
	e, err := json.Marshal(extra)
	if err != nil {
		return nil, err
	}
	return append(append(b[:len(b)-1], ','), e[1:]...), nil
}

// Errors the adapters return and the HTTP layer maps to statuses.
var (
	// ErrUnavailable means a backing store (the queue) cannot take work now;
	// the caller should retry later (HTTP 503).
	ErrUnavailable = errors.New("service temporarily unavailable")
	// ErrNotFound means the order or line is unknown (HTTP 404).
	ErrNotFound = errors.New("not found")
	// ErrConflict means the line is not in a state the request applies to
	// (HTTP 409): dismissing a line that has not failed.
	ErrConflict = errors.New("conflict with the line's state")
)

// Learner is who a line is for, as far as the request said.
type Learner struct {
	LMSUserID int64  `json:"edx_lms_user_id,omitempty"`
	Username  string `json:"username,omitempty"`
	Email     string `json:"email,omitempty"`
}

// Completed is a line that reached a final state — enrolled, returned or
// failed — as the fulfillment_completed signal carries it (README, What the worker does).
type Completed struct {
	Site        string    `json:"site"`
	OrderNumber string    `json:"order_number"`
	CourseID    string    `json:"course_id"`
	CourseUUID  string    `json:"course_uuid,omitempty"`
	CourseMode  string    `json:"course_mode"`
	Learner     Learner   `json:"learner"`
	Kind        string    `json:"kind"`
	State       State     `json:"state"`
	Attempts    int       `json:"attempts"`
	LastError   string    `json:"last_error"`
	TaskID      string    `json:"task_id"`
	RequestID   string    `json:"request_id,omitempty"`
	AcceptedAt  time.Time `json:"accepted_at"`
	FinishedAt  time.Time `json:"finished_at"`
	// ReturnedAt is the shop's time of refund, for a returned line.
	ReturnedAt *time.Time `json:"returned_at,omitempty"`
	// Integration is the shop integration the line came from, if any.
	Integration string `json:"integration,omitempty"`
	// Recorded is what the flow recorded, under the name it gives it
	// (entitlement_uuid), at the event's top level.
	Recorded map[string]string `json:"-"`
}

type completedFields Completed

// MarshalJSON writes the event with what the flow recorded at its top level.
func (c Completed) MarshalJSON() ([]byte, error) {
	return withExtras(completedFields(c), nil, c.Recorded)
}

// Ref is the reference of the completed line.
func (c Completed) Ref() Ref {
	return Ref{Site: c.Site, OrderNumber: c.OrderNumber, CourseID: c.CourseID, CourseUUID: c.CourseUUID, CourseMode: c.CourseMode,
		LMSUserID: c.Learner.LMSUserID, Username: c.Learner.Username, Email: c.Learner.Email,
		Integration: c.Integration, RequestID: c.RequestID, AcceptedAt: c.AcceptedAt}
}
