// Package seat is the seat flow: a line whose item is a course run
// (course_id). Placed, it enrolls the learner in the run in the mode bought;
// returned, it takes the seat back. Both are tasks on the shared pipeline;
// this package says what the LMS is asked, through the LMS client's
// enrollment operations.
package seat

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/pipeline"
)

// The seat flow's kinds, task types and receivers.
const (
	KindEnroll   = "enroll"
	KindUnenroll = "unenroll"

	TypeEnroll   = "lms:fulfill_order_placed_send_enroll_in_course"
	TypeUnenroll = "lms:fulfill_order_returned_send_unenroll_in_course"

	ReceiverEnroll   = "lms.fulfill_order_placed_send_enroll_in_course"
	ReceiverUnenroll = "lms.fulfill_order_returned_send_unenroll_in_course"
)

// Tasks reads a line's task of a kind (pipeline.Service.Find): a return that
// names no learner undoes the enrollment of the learner the line's
// enrollment task names.
type Tasks interface {
	Find(ctx context.Context, kind string, key fulfillment.Key) (t fulfillment.Task, found bool, err error)
	// KeepsEveryTask reports whether Find sees every task for good (the
	// ledger tier): only then does a line without an enrollment task prove
	// that nothing was enrolled. Without it (Redis only), a finished
	// enrollment is forgotten after worker.retention, and a return that
	// names nobody cannot tell "never enrolled" from "enrolled, then
	// forgotten".
	KeepsEveryTask() bool
	// Matching calls fn for the lines of any order matching f: a return
	// looks for the seat's other holders.
	Matching(ctx context.Context, f pipeline.Filter, fn func(pipeline.Row) error) (capped bool, err error)
}

// Kinds returns the LMS task kinds: enroll, and unenroll, which waits for a
// running enrollment of its line and cancels a waiting one, and whose
// existence cancels a later enrollment of the line. tasks may be nil when no
// task runs (a process that only queues).
func Kinds(sites lms.Sites, tasks Tasks) []pipeline.Kind {
	return []pipeline.Kind{
		{
			Name: KindEnroll, TaskType: TypeEnroll, Done: fulfillment.StateEnrolled, DoneAt: "enrolled_at", Rank: 1,
			CanceledBy: KindUnenroll,
			// Before task kinds, enrollment ids were "enroll-<digest>".
			LegacyID: func(k fulfillment.Key) string { return "enroll-" + pipeline.Digest(k) },
			Decode:   pipeline.DecodeAs[fulfillment.Order],
			Handle: pipeline.NoResult(func(ctx context.Context, j pipeline.Job) error {
				o, err := pipeline.Value[fulfillment.Order](j)
				if err != nil {
					return err
				}
				c, err := sites.Client(ctx, j.Ref.Site)
				if err != nil {
					return err
				}
				err = c.Fulfill(ctx, o)
				var none *lms.NoAccountError
				if errors.As(err, &none) && o.EnrollUnregistered {
					return awaitAccount(ctx, c, o, none, time.Now())
				}
				return err
			}),
		},
		{
			Name: KindUnenroll, TaskType: TypeUnenroll, Done: fulfillment.StateReturned, DoneAt: "returned_at", Rank: 2,
			Records: "note",
			After:   KindEnroll,
			Decode:  pipeline.DecodeAs[fulfillment.Return],
			Handle:  func(ctx context.Context, j pipeline.Job) (string, error) { return unenroll(ctx, sites, tasks, j) },
		},
	}
}

// unenroll takes a returned line's seat back, unless another line holds it
// (then the note says which). The line's enrollment task, read once, says
// who was enrolled: a shop's refund that names nobody takes that learner
// (the return waited for a running enrollment: After), one naming an email
// takes the order's own spelling of it (an enrollment_allowed the LMS keeps
// is under it), and its names of the learner help find the seat's other
// holders.
func unenroll(ctx context.Context, sites lms.Sites, tasks Tasks, j pipeline.Job) (string, error) {
	r, err := pipeline.Value[fulfillment.Return](j)
	if err != nil {
		return "", err
	}
	c, err := sites.Client(ctx, j.Ref.Site)
	if err != nil {
		return "", err
	}
	var enrolled *fulfillment.Task
	if tasks != nil {
		t, found, err := tasks.Find(ctx, KindEnroll, j.Ref.Key())
		if err != nil {
			return "", pipeline.Hold(fmt.Errorf("read the line's enrollment: %w", err))
		}
		if found {
			enrolled = &t
		}
	}
	switch {
	case r.LMSUserID == 0 && r.Username == "" && r.Email == "":
		if enrolled == nil && tasks != nil && tasks.KeepsEveryTask() {
			return "", nil // nothing was enrolled: nothing to take back
		}
		if enrolled == nil {
			// Redis only: the enrollment may have been forgotten
			// (worker.retention); the learner may still hold the seat.
			// Support decides.
			return "", pipeline.Permanent(lms.ErrLearnerUnknown)
		}
		r.LMSUserID, r.Username, r.Email = enrolled.Ref.LMSUserID, enrolled.Ref.Username, enrolled.Ref.Email
	case r.LMSUserID == 0 && r.Username == "" && enrolled != nil && enrolled.Ref.Email != r.Email &&
		strings.EqualFold(strings.TrimSpace(enrolled.Ref.Email), strings.TrimSpace(r.Email)):
		r.Email = enrolled.Ref.Email
	}
	if tasks != nil {
		if held, err := heldElsewhere(ctx, c, tasks, r, enrolled); err != nil || held != "" {
			return held, err
		}
	}
	return "", c.Unenroll(ctx, r)
}

// ErrSeatUnclear fails a return whose search for the seat's other lines
// could not read every line (the Redis tier's scan is bounded): support
// checks the learner's other orders and returns the seat by hand.
var ErrSeatUnclear = errors.New("could not read every line of the learner's course run (the queue holds more tasks than one scan reads): the seat may be held by another order; check the learner's other orders, then POST /orders/return again or dismiss")

// heldElsewhere reports whether another line holds the seat a return would
// take back — an enrolled line, of another order or shop, of the same
// learner and course run whose own return has not been accepted — and then
// leaves the LMS as it is, but for the mode: the enrollment is moved to the
// remaining line's mode when it holds another. The note it returns says so
// ("seat still held by <order>"); "" when no line holds the seat and the
// return unenrolls. A line with a return accepted is not a holder (its
// state is no longer enrolled), so two returns of the seat's two lines at
// once both unenroll. Lines are matched by every name of the learner the
// return and the line's own enrollment give (LMS user id, username, email,
// case-insensitively); a line naming the learner only otherwise is not
// seen. Without a ledger, a line is seen for worker.retention, and a search
// the queue's scan had to cut short fails the return for support to decide
// (ErrSeatUnclear) rather than take a seat that may be held.
func heldElsewhere(ctx context.Context, c *lms.Client, tasks Tasks, r fulfillment.Return, enrolled *fulfillment.Task) (string, error) {
	learners := []fulfillment.Learner{r.Ref().Learner()}
	if enrolled != nil {
		learners = append(learners, enrolled.Ref.Learner())
	}
	var filters []pipeline.Filter
	for _, l := range learners {
		for _, by := range []pipeline.Filter{{LMSUserID: l.LMSUserID}, {Username: l.Username}, {Email: pipeline.NormalEmail(l.Email)}} {
			if by != (pipeline.Filter{}) {
				by.State, by.Site, by.CourseID = fulfillment.StateEnrolled, r.Site, r.CourseID
				filters = append(filters, by)
			}
		}
	}
	var holder *pipeline.Row
	for _, f := range slices.Compact(filters) {
		capped, err := tasks.Matching(ctx, f, func(row pipeline.Row) error {
			if row.OrderNumber != r.OrderNumber && holder == nil {
				holder = &row
			}
			return nil
		})
		if err != nil {
			return "", pipeline.Hold(fmt.Errorf("look for the seat's other lines: %w", err))
		}
		if holder != nil {
			break
		}
		if capped {
			return "", pipeline.Permanent(ErrSeatUnclear)
		}
	}
	if holder == nil {
		return "", nil
	}
	if holder.CourseMode != r.CourseMode {
		user, err := c.Learner(ctx, r.Ref().Learner(), r.RequestID)
		if err != nil {
			return "", err
		}
		got, err := c.ReadEnrollment(ctx, user, r.CourseID, r.RequestID)
		if err != nil {
			return "", err
		}
		if got != nil && got.IsActive && got.Mode != holder.CourseMode {
			if err := c.ChangeMode(ctx, user, r.CourseID, holder.CourseMode, r.RequestID); err != nil {
				return "", err
			}
		}
	}
	return "seat still held by " + holder.OrderNumber, nil
}

// Register declares the seat flow: lines whose item is a course run
// (course_id), sent on fulfill_order_placed and fulfill_order_returned, whose
// receivers queue the enroll and unenroll tasks.
func Register(r *flow.Registry, sites lms.Sites) {
	placed, returned := r.DeclareLine(flow.Item{Field: fulfillment.ItemCourseRun,
		Placed: fulfillment.SignalOrderPlaced, Returned: fulfillment.SignalOrderReturned,
		PlacedKind: KindEnroll, ReturnedKind: KindUnenroll},
		[]string{ReceiverEnroll}, []string{ReceiverUnenroll})
	lines := r.Lines()
	r.AddKinds(Kinds(sites, lines)...)
	placed.Register(ReceiverEnroll, func(ctx context.Context, o fulfillment.Order) (string, error) {
		if o.AcceptedAt.IsZero() {
			// The wait for an account is counted from it.
			o.AcceptedAt = time.Now().UTC()
		}
		return lines.Accept(ctx, KindEnroll, o.Ref(), o)
	})
	returned.Register(ReceiverUnenroll, func(ctx context.Context, r fulfillment.Return) (string, error) {
		return lines.Accept(ctx, KindUnenroll, r.Ref(), r)
	})
}

// awaitAccount handles an order whose email has no LMS account yet and whose
// integration enrolls unregistered learners: it registers an
// enrollment_allowed (once in effect; repeating it answers 409, done) and
// makes the task wait in state awaiting_account for the next look, or fails
// it after lms.AwaitAccountFor. The LMS enrolls the person in the course's
// default mode when they register; the look that finds the account enrolls
// them in the mode bought.
func awaitAccount(ctx context.Context, c *lms.Client, o fulfillment.Order, none *lms.NoAccountError, now time.Time) error {
	wait, err := lms.NextLookFor(none, o.AcceptedAt, now)
	if err != nil {
		return err
	}
	if err := c.AllowEnrollment(ctx, none.Email, o.CourseID, o.RequestID); err != nil {
		return err
	}
	// Not wrapped: the reason is not the permanent failure it becomes later.
	return pipeline.AwaitAccount(fmt.Errorf("%s yet; enrollment_allowed registered, next look in %s", none, wait), wait)
}
