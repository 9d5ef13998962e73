package lms

import (
	"github.com/openedx/coordinator/internal/fulfillment"
)

// Attribute is one enrollment attribute.
type Attribute struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Value     string `json:"value"`
}

// CourseDetails names the course run of an enrollment.
type CourseDetails struct {
	CourseID string `json:"course_id"`
}

// EnrollmentData is the body of POST /api/enrollment/v1/enrollment (docs/lms.md#enroll).
type EnrollmentData struct {
	User                 string        `json:"user"`
	Mode                 string        `json:"mode"`
	IsActive             bool          `json:"is_active"`
	CourseDetails        CourseDetails `json:"course_details"`
	EmailOptIn           *bool         `json:"email_opt_in,omitempty"`
	EnrollmentAttributes []Attribute   `json:"enrollment_attributes,omitempty"`
}

// NewEnrollmentData builds the enrollment for an order and a resolved username.
// The placement date is sent twice: order_placed (the original service's
// name) and date_placed (what the LMS reads for refund windows).
func NewEnrollmentData(o fulfillment.Order, username string) EnrollmentData {
	placed := o.OrderPlaced.UTC().Format(fulfillment.DateLayout)
	attrs := make([]Attribute, 3, 4)
	attrs[0] = Attribute{"order", "order_number", o.OrderNumber}
	attrs[1] = Attribute{"order", "order_placed", placed}
	attrs[2] = Attribute{"order", "date_placed", placed}
	if o.CourseMode == "credit" {
		attrs = append(attrs, Attribute{"credit", "provider_id", o.Provider})
	}
	return EnrollmentData{
		User:                 username,
		Mode:                 o.CourseMode,
		IsActive:             true,
		CourseDetails:        CourseDetails{CourseID: o.CourseID},
		EmailOptIn:           &o.EmailOptIn,
		EnrollmentAttributes: attrs,
	}
}

// NewUnenrollmentData builds the deactivation of a returned line's seat: the
// mode bought, and nothing else — no attributes, which would replace the
// enrollment's, and no email_opt_in, which would change the learner's choice.
func NewUnenrollmentData(r fulfillment.Return, username string) EnrollmentData {
	return EnrollmentData{User: username, Mode: r.CourseMode, IsActive: false, CourseDetails: CourseDetails{CourseID: r.CourseID}}
}

// Enrollment is the part of the LMS's enrollment object Coordinator reads.
type Enrollment struct {
	User          string        `json:"user"`
	Mode          string        `json:"mode"`
	IsActive      bool          `json:"is_active"`
	CourseDetails CourseDetails `json:"course_details"`
}
