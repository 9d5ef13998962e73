package lms

import (
	"fmt"
	"time"
)

// Class is what an LMS answer means for a fulfillment (docs/lms.md#what-each-answer-means). This file
// is the one place that decides it.
type Class int

// The outcome classes of a failed LMS call.
const (
	// Transient: the LMS is busy, down or slow; retry with backoff.
	Transient Class = iota
	// Permanent: retrying cannot help (unknown user or course, refused
	// permission, a business rule); fail the line and keep the message.
	Permanent
)

// Error is a failed LMS call.
type Error struct {
	Op         string        // "token", "account", "enroll", "unenroll", "read_enrollment"
	Status     int           // HTTP status, 0 when no answer arrived
	Message    string        // the LMS's own message, when it gave one
	RetryAfter time.Duration // from a 429's Retry-After, when present
	Class      Class
	Err        error // the transport error, when no answer arrived
}

func (e *Error) Error() string {
	switch {
	case e.Status == 0:
		return fmt.Sprintf("lms %s: %v", e.Op, e.Err)
	case e.Message != "":
		return fmt.Sprintf("lms %s: %d: %s", e.Op, e.Status, e.Message)
	}
	return fmt.Sprintf("lms %s: %d", e.Op, e.Status)
}

func (e *Error) Unwrap() error { return e.Err }

// classify maps an HTTP status of the enrollment or account API to its class.
func classify(status int) Class {
	switch status {
	case 400, 403, 404, 406:
		return Permanent
	}
	return Transient
}

// Permanent reports whether retrying cannot fix the failure; it is how
// pipeline.IsPermanent classifies LMS errors.
func (e *Error) Permanent() bool { return e.Class == Permanent }

// RetryIn is the delay the LMS asked for, or 0; it is how pipeline.RetryIn
// reads a 429's Retry-After.
func (e *Error) RetryIn() time.Duration { return e.RetryAfter }
