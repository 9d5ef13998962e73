// Package fulfillment is Coordinator's domain: the order-fulfillment request a
// commerce backend sends, its validation, the states a fulfillment line goes
// through, and the errors the adapters map to HTTP statuses. It imports no
// infrastructure.
package fulfillment

import (
	"errors"
	"time"
)

// DefaultSite is the site an order belongs to when the request names none: the
// LMS configured under `lms:`.
const DefaultSite = "default"

// DateLayout is the format the LMS reads enrollment dates in
// (Python's %Y-%m-%dT%H:%M:%SZ).
const DateLayout = "2006-01-02T15:04:05Z"

// Order is one validated fulfillment line: one course run in one order.
type Order struct {
	Site        string    `json:"site"`
	OrderNumber string    `json:"order_number"`
	CourseID    string    `json:"course_id"`
	CourseMode  string    `json:"course_mode"`
	OrderPlaced time.Time `json:"order_placed"`
	LMSUserID   int64     `json:"edx_lms_user_id"`
	EmailOptIn  bool      `json:"email_opt_in"`
	Provider    string    `json:"provider,omitempty"`
	Username    string    `json:"username,omitempty"`
	// RequestID is the X-Request-ID of the HTTP request that placed the order;
	// it follows the order into the task and onto the LMS call.
	RequestID string `json:"request_id,omitempty"`
	// AcceptedAt is when Coordinator accepted the line.
	AcceptedAt time.Time `json:"accepted_at"`
}

// Line is the fulfillment state of one course in an order, as GET
// /orders/{order_number} reports it.
type Line struct {
	CourseID      string     `json:"course_id"`
	CourseMode    string     `json:"course_mode"`
	State         State      `json:"state"`
	Attempts      int        `json:"attempts"`
	LastError     string     `json:"last_error"`
	TaskID        string     `json:"task_id"`
	AcceptedAt    time.Time  `json:"accepted_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	EnrolledAt    *time.Time `json:"enrolled_at"`
	NextAttemptAt *time.Time `json:"next_attempt_at"`
}

// State is where a fulfillment line stands.
type State string

// The states of a fulfillment line, as reported by GET /orders/{order_number}.
const (
	StateQueued   State = "queued"
	StateRunning  State = "running"
	StateRetrying State = "retrying"
	StateEnrolled State = "enrolled"
	StateFailed   State = "failed"
)

// Errors the adapters return and the HTTP layer maps to statuses.
var (
	// ErrUnavailable means a backing store (the queue) cannot take work now;
	// the caller should retry later (HTTP 503).
	ErrUnavailable = errors.New("service temporarily unavailable")
	// ErrNotFound means the order or line is unknown (HTTP 404).
	ErrNotFound = errors.New("not found")
)
