package lms

import (
	"context"
	"errors"
)

// Sites resolves a site name to its LMS client. An unknown site is an error
// that pipeline.IsPermanent recognises.
type Sites interface {
	Client(ctx context.Context, site string) (*Client, error)
}

// ErrLearnerUnknown is the permanent failure of a return that names no
// learner when the line's enrollment is not on record (any more): support
// returns the seat with the learner named (POST /orders/return).
var ErrLearnerUnknown = errors.New("learner unknown: the line's enrollment is no longer on record; POST /orders/return with the learner")
