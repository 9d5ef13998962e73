package lms

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/signals"
)

// The LMS flows: their kinds, task types and receivers (docs/architecture.md).
const (
	KindEnroll   = "enroll"
	KindUnenroll = "unenroll"

	TypeEnroll   = "lms:fulfill_order_placed_send_enroll_in_course"
	TypeUnenroll = "lms:fulfill_order_returned_send_unenroll_in_course"

	ReceiverEnroll   = "lms.fulfill_order_placed_send_enroll_in_course"
	ReceiverUnenroll = "lms.fulfill_order_returned_send_unenroll_in_course"
)

// Sites resolves a site name to its LMS client. An unknown site is an error
// that pipeline.IsPermanent recognises.
type Sites interface {
	Client(ctx context.Context, site string) (*Client, error)
}

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
}

// ErrLearnerUnknown is the permanent failure of a return that names no
// learner when the line's enrollment is not on record (any more): support
// returns the seat with the learner named (POST /orders/return).
var ErrLearnerUnknown = errors.New("learner unknown: the line's enrollment is no longer on record; POST /orders/return with the learner")

// Kinds returns the LMS task kinds: enroll, and unenroll, which waits for a
// running enrollment of its line and cancels a waiting one, and whose
// existence cancels a later enrollment of the line. tasks may be nil when no
// task runs (a process that only queues).
func Kinds(sites Sites, tasks Tasks) []pipeline.Kind {
	return []pipeline.Kind{
		{
			Name: KindEnroll, TaskType: TypeEnroll, Done: fulfillment.StateEnrolled, Rank: 1,
			CanceledBy: KindUnenroll,
			// Before task kinds, enrollment ids were "enroll-<digest>".
			LegacyID: func(k fulfillment.Key) string { return "enroll-" + pipeline.Digest(k) },
			Decode:   pipeline.DecodeAs[fulfillment.Order],
			Handle: func(ctx context.Context, j pipeline.Job) error {
				o, ok := j.Value.(fulfillment.Order)
				if !ok {
					return notDecoded(j)
				}
				c, err := sites.Client(ctx, j.Ref.Site)
				if err != nil {
					return err
				}
				err = c.Fulfill(ctx, o)
				var none *NoAccountError
				if errors.As(err, &none) && o.EnrollUnregistered {
					return c.awaitAccount(ctx, o, none, time.Now())
				}
				return err
			},
		},
		{
			Name: KindUnenroll, TaskType: TypeUnenroll, Done: fulfillment.StateReturned, Rank: 2,
			After:  KindEnroll,
			Decode: pipeline.DecodeAs[fulfillment.Return],
			Handle: func(ctx context.Context, j pipeline.Job) error {
				r, ok := j.Value.(fulfillment.Return)
				if !ok {
					return notDecoded(j)
				}
				c, err := sites.Client(ctx, j.Ref.Site)
				if err != nil {
					return err
				}
				if r.LMSUserID == 0 && r.Username == "" && r.Email == "" {
					// A shop's refund that names nobody: the learner is
					// the one the line's enrollment names. The return
					// waited for a running enrollment (After).
					t, found, err := tasks.Find(ctx, KindEnroll, j.Ref.Key())
					if err != nil {
						return pipeline.Hold(fmt.Errorf("read the line's enrollment: %w", err))
					}
					if !found && tasks.KeepsEveryTask() {
						return nil // nothing was enrolled: nothing to take back
					}
					if !found {
						// Redis only: the enrollment may have been
						// forgotten (worker.retention); the learner may
						// still hold the seat. Support decides.
						return pipeline.Permanent(ErrLearnerUnknown)
					}
					r.LMSUserID, r.Username, r.Email = t.Ref.LMSUserID, t.Ref.Username, t.Ref.Email
				}
				return c.Unenroll(ctx, r)
			},
		},
	}
}

// notDecoded fails a job whose payload its kind's Decode did not read (a
// Handle called without pipeline.Process): a zero order or return must never
// reach the LMS.
func notDecoded(j pipeline.Job) error {
	return pipeline.Permanent(fmt.Errorf("%s payload not decoded (%T)", j.Kind, j.Value))
}

// Accepter takes a line's task into the pipeline (pipeline.Service).
type Accepter interface {
	Accept(ctx context.Context, kind string, ref fulfillment.Ref, payload any) (string, error)
}

// Register makes the LMS receivers available on their signals.
func Register(a Accepter, placed *signals.Signal[fulfillment.Order], returned *signals.Signal[fulfillment.Return]) {
	placed.Register(ReceiverEnroll, func(ctx context.Context, o fulfillment.Order) (string, error) {
		if o.AcceptedAt.IsZero() {
			// The wait for an account is counted from it (README, Learners by email).
			o.AcceptedAt = time.Now().UTC()
		}
		return a.Accept(ctx, KindEnroll, o.Ref(), o)
	})
	returned.Register(ReceiverUnenroll, func(ctx context.Context, r fulfillment.Return) (string, error) {
		return a.Accept(ctx, KindUnenroll, r.Ref(), r)
	})
}
