package lms

import (
	"context"
	"fmt"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// AwaitAccountFor is how long an enrollment waits for its learner's account
// (README, Learners by email): then the line fails.
const AwaitAccountFor = 30 * 24 * time.Hour

// NextLook is how long an enrollment that has waited age for its learner's
// account waits before looking again: a tenth of its age, from 1 minute to
// 2 hours — often at first, when a buyer is most likely to register
// straight away, then every 2 hours from the first day on (about 350 looks
// in 30 days). An operator's retry looks at once. done is true once age
// reaches AwaitAccountFor: the line fails.
func NextLook(age time.Duration) (wait time.Duration, done bool) {
	if age >= AwaitAccountFor {
		return 0, true
	}
	return min(max(age/10, time.Minute), 2*time.Hour).Round(time.Second), false
}

// awaitAccount handles an order whose email has no LMS account yet and whose
// integration enrolls unregistered learners: it registers an
// enrollment_allowed (once in effect; repeating it answers 409, done) and
// makes the task wait in state awaiting_account for the next look, or fails
// it after AwaitAccountFor. The LMS enrolls the person in the course's
// default mode when they register; the look that finds the account enrolls
// them in the mode bought.
func (c *Client) awaitAccount(ctx context.Context, o fulfillment.Order, none *NoAccountError, now time.Time) error {
	wait, done := NextLook(now.Sub(o.AcceptedAt))
	if done {
		return pipeline.Permanent(fmt.Errorf("%w after %d days of waiting for the learner to register",
			none, AwaitAccountFor/(24*time.Hour)))
	}
	if err := c.AllowEnrollment(ctx, none.Email, o.CourseID, o.RequestID); err != nil {
		return err
	}
	// Not wrapped: the reason is not the permanent failure it becomes later.
	return pipeline.AwaitAccount(fmt.Errorf("%s yet; enrollment_allowed registered, next look in %s", none, wait), wait)
}
