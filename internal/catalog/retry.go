package catalog

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// attempts bounds the tries of one call to a shop that answers 429 or 5xx
// (or cannot be reached).
const attempts = 5

// maxWait bounds one wait between tries: a shop asking for longer fails the
// call, and the next sync tries again.
const maxWait = 2 * time.Minute

// transient is a failure worth trying again, after at least After.
type transient struct {
	err   error
	after time.Duration
}

func (t *transient) Error() string { return t.err.Error() }
func (t *transient) Unwrap() error { return t.err }

// retrying calls f until it succeeds, fails with anything but a *transient,
// or has been tried attempts times; it waits between tries for the shop's
// Retry-After, or a growing backoff.
func retrying(ctx context.Context, f func() error) error {
	for attempt := 1; ; attempt++ {
		err := f()
		var t *transient
		if err == nil || !errors.As(err, &t) {
			return err
		}
		if attempt == attempts {
			return fmt.Errorf("%w (after %d tries)", err, attempts)
		}
		wait := max(t.after, time.Duration(attempt)*250*time.Millisecond)
		if wait > maxWait {
			return fmt.Errorf("%w (the shop asks to wait %s)", err, t.after)
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// retryable reports whether an HTTP status is worth another try: 429 and
// the 5xx.
func retryable(status int) bool {
	return status == http.StatusTooManyRequests || status >= 500
}

// retryAfter reads a Retry-After header: seconds or an HTTP date.
func retryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if s, err := strconv.Atoi(v); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}
