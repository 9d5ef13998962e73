package lms

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// CatalogRun is one course run as the Course API lists it
// (GET /api/courses/v1/courses/).
type CatalogRun struct {
	ID              string `json:"id"` // the course run key
	Name            string `json:"name"`
	Org             string `json:"org"`
	Number          string `json:"number"`
	Start           *Time  `json:"start"`
	End             *Time  `json:"end"`
	EnrollmentStart *Time  `json:"enrollment_start"`
	EnrollmentEnd   *Time  `json:"enrollment_end"`
	InvitationOnly  bool   `json:"invitation_only"`
	Hidden          bool   `json:"hidden"`
}

// CourseMode is one mode of a course run with its price, as the enrollment
// API's course details give it (GET /api/enrollment/v1/course/{run}).
type CourseMode struct {
	Slug string `json:"slug"`
	Name string `json:"name"`
	// MinPrice is in whole units of Currency: the LMS stores an integer.
	MinPrice   int64  `json:"min_price"`
	Currency   string `json:"currency"` // lower case, e.g. usd
	Expiration *Time  `json:"expiration_datetime"`
}

// RunModes is a course run's enrollment details: its modes, expired ones
// included.
type RunModes struct {
	CourseID      string       `json:"course_id"`
	CourseName    string       `json:"course_name"`
	EnrollmentEnd *Time        `json:"enrollment_end"`
	Modes         []CourseMode `json:"course_modes"`
}

// Time is a date the LMS writes: RFC 3339, or Django's ISO 8601 without a
// zone (UTC).
type Time struct{ time.Time }

// UnmarshalJSON reads an LMS date; null stays the zero time.
func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil || s == "" {
		return err
	}
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999", "2006-01-02"} {
		if v, err := time.Parse(layout, s); err == nil {
			t.Time = v.UTC()
			return nil
		}
	}
	return fmt.Errorf("not a date: %q", s)
}

// catalogPageSize is the Course API's largest page.
const catalogPageSize = 100

// maxCatalogPages bounds how many pages are followed: a `next` that never
// ends must not keep the command running for good.
const maxCatalogPages = 10000

// catalogAttempts bounds the tries of one catalog call that the LMS
// throttles (429) or fails (5xx).
const catalogAttempts = 6

// CatalogRuns calls each with every course run the Course API lists to the
// service user (staff: hidden and invitation-only runs too), of org when it
// is not empty, following the pages' `next` links.
func (c *Client) CatalogRuns(ctx context.Context, org string, each func(CatalogRun) error) error {
	q := url.Values{"page_size": {fmt.Sprint(catalogPageSize)}}
	if org != "" {
		q.Set("org", org)
	}
	next := "/api/courses/v1/courses/?" + q.Encode()
	for page := 0; next != ""; page++ {
		if page == maxCatalogPages {
			return fmt.Errorf("course list: more than %d pages", maxCatalogPages)
		}
		var p struct {
			Results    []CatalogRun `json:"results"`
			Pagination struct {
				Next string `json:"next"`
			} `json:"pagination"`
		}
		if err := c.catalogGet(ctx, "course_list", next, &p); err != nil {
			return err
		}
		for _, r := range p.Results {
			if err := each(r); err != nil {
				return err
			}
		}
		var err error
		if next, err = samePath(p.Pagination.Next); err != nil {
			return fmt.Errorf("course list: next: %w", err)
		}
	}
	return nil
}

// CourseModes reads a course run's modes and prices, expired modes included
// (so that their products can be retired).
func (c *Client) CourseModes(ctx context.Context, run string) (RunModes, error) {
	if err := checkPathKey(run); err != nil {
		return RunModes{}, &Error{Op: "course_modes", Class: Permanent, Err: err}
	}
	var d RunModes
	err := c.catalogGet(ctx, "course_modes", "/api/enrollment/v1/course/"+url.PathEscape(run)+"?include_expired=1", &d)
	return d, err
}

// samePath keeps only the path and query of a `next` link: the token is
// sent to lms.url alone, whatever host the LMS (behind a proxy) names.
func samePath(next string) (string, error) {
	if next == "" {
		return "", nil
	}
	u, err := url.Parse(next)
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(u.Path, "/api/courses/v1/courses") {
		return "", fmt.Errorf("unexpected path %q", u.Path)
	}
	return u.RequestURI(), nil
}

// catalogGet reads one catalog answer into v, waiting out a 429 (its
// Retry-After) or a 5xx a few times: the Course API is throttled to tens of
// calls a minute.
func (c *Client) catalogGet(ctx context.Context, op, path string, v any) error {
	for attempt := 1; ; attempt++ {
		status, body, hdr, err := c.call(ctx, op, http.MethodGet, c.base+path, nil, "")
		var wait time.Duration
		switch {
		case err != nil:
			wait = time.Duration(attempt) * time.Second
		case status == http.StatusOK:
			if err := json.Unmarshal(body, v); err != nil {
				return &Error{Op: op, Status: status, Class: Permanent, Message: "unexpected answer: " + err.Error()}
			}
			return nil
		case status == http.StatusTooManyRequests || status >= 500:
			err = &Error{Op: op, Status: status, Class: Transient, Message: message(body)}
			wait = max(parseRetryAfter(hdr.Get("Retry-After"), time.Now()), time.Duration(attempt)*time.Second)
		default:
			return &Error{Op: op, Status: status, Class: classify(status), Message: message(body)}
		}
		if attempt == catalogAttempts {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}
