package lms

import (
	"fmt"
	"time"
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

// NextLookFor is how long an order whose learner has no account yet (none)
// waits before its next look, or, once it was accepted AwaitAccountFor ago,
// the failure that ends its line (permanent, as none is).
func NextLookFor(none *NoAccountError, acceptedAt, now time.Time) (time.Duration, error) {
	wait, done := NextLook(now.Sub(acceptedAt))
	if done {
		return 0, fmt.Errorf("%w after %d days of waiting for the learner to register", none, AwaitAccountFor/(24*time.Hour))
	}
	return wait, nil
}
