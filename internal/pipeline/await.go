package pipeline

import (
	"errors"
	"strings"
	"time"
)

// awaitingPrefix starts the last error of a task that waits for a learner's
// LMS account. It is how the queue, which keeps only a task's last error,
// tells such a task (asynq's retry state) from one that is retrying.
const awaitingPrefix = "awaiting_account: "

// awaitErr marks a task waiting for a learner's LMS account (README, Learners by email): the
// enrollment cannot run yet, through no fault of the LMS's.
type awaitErr struct {
	err error
	in  time.Duration
}

func (a awaitErr) Error() string          { return awaitingPrefix + a.err.Error() }
func (a awaitErr) Unwrap() error          { return a.err }
func (a awaitErr) RetryIn() time.Duration { return a.in }

// Permanent is false whatever the reason wraps: waiting is not failing.
func (a awaitErr) Permanent() bool { return false }

// AwaitAccount marks err, which says why, as a wait for a learner's LMS
// account: the task's state becomes awaiting_account, it is looked at again
// after in, and like a Hold the wait costs no attempt of
// worker.retry.max_attempts (the queue's longest retry delay still bounds
// in). The handler decides when waiting is over (an error that is not a wait).
func AwaitAccount(err error, in time.Duration) error {
	return holdErr{err: awaitErr{err: err, in: in}}
}

// IsAwaitingAccount reports whether err was marked by AwaitAccount.
func IsAwaitingAccount(err error) bool {
	var a awaitErr
	return errors.As(err, &a)
}

// AwaitsAccount reports whether a task's last error, as stored, is that of
// a wait for an account: how a store that keeps only the error text reads the
// state back.
func AwaitsAccount(lastError string) bool { return strings.HasPrefix(lastError, awaitingPrefix) }
