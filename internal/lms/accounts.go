package lms

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// NoAccountError says no LMS account has a learner's email (docs/lms.md#accounts). It is
// permanent: an order whose integration does not enroll unregistered
// learners fails with it (README, Learners by email).
type NoAccountError struct{ Email string }

func (e *NoAccountError) Error() string { return "no LMS account for " + e.Email }

// Permanent is how pipeline.IsPermanent classifies it.
func (e *NoAccountError) Permanent() bool { return true }

// Learner resolves the learner a line names to a username: the username
// given, else the account of the LMS user id, else the account of the email
// (*NoAccountError when none has it). A line naming nobody is a permanent
// error.
func (c *Client) Learner(ctx context.Context, l fulfillment.Learner, requestID string) (string, error) {
	switch {
	case l.Username != "":
		return l.Username, nil
	case l.LMSUserID != 0:
		return c.Username(ctx, l.LMSUserID, requestID)
	case strings.TrimSpace(l.Email) != "":
		return c.UsernameByEmail(ctx, l.Email, requestID)
	}
	return "", &Error{Op: "account", Class: Permanent, Err: errors.New("the line names no learner")}
}

// UsernameByEmail resolves an email to the username of its LMS account
// (GET /api/user/v1/accounts?email=, docs/lms.md#accounts), from the cache when it can.
// No account — a 404, an empty list, or a retired email — is a
// *NoAccountError. Only found accounts are cached, so an account created
// after an order is seen at the next look.
//
// Emails are compared case-insensitively: the cache is keyed by the
// lower-cased address, and the LMS, which stores an address as it was
// registered and may compare it exactly, is asked for it as given, then
// lower-cased when that differs and the first look found nothing (a shop's
// "Honor@Example.COM" for the account of "honor@example.com").
func (c *Client) UsernameByEmail(ctx context.Context, email, requestID string) (string, error) {
	email = strings.TrimSpace(email) // as the LMS stores it: as given, trimmed
	lower := strings.ToLower(email)
	sum := sha256.Sum256([]byte(lower))
	// The key holds a digest, not the address: memcached keys are listed in
	// its tools and must not contain spaces.
	key := c.keyPrefix + "email:" + hex.EncodeToString(sum[:16])
	none := func() error { return &NoAccountError{Email: email} }
	user, err := c.accountUsername(ctx, key, url.Values{"email": {email}}.Encode(), none, true, requestID)
	var miss *NoAccountError
	if lower != email && errors.As(err, &miss) {
		return c.accountUsername(ctx, key, url.Values{"email": {lower}}.Encode(), none, true, requestID)
	}
	return user, err
}

// accountUsername reads the username of the account the query names (GET
// /api/user/v1/accounts?query, docs/lms.md#accounts), from the cache under key when it
// can; a found one is cached. notFound makes the answer to a 404, and to an
// empty list when emptyIsNotFound (else an empty list is unexpected).
func (c *Client) accountUsername(ctx context.Context, key, query string, notFound func() error, emptyIsNotFound bool, requestID string) (string, error) {
	if v, ok, err := c.cache.Get(ctx, key); err == nil && ok {
		return string(v), nil
	}
	status, body, _, err := c.call(ctx, "account", http.MethodGet, c.base+"/api/user/v1/accounts?"+query, nil, requestID)
	if err != nil {
		return "", err
	}
	switch {
	case status == http.StatusNotFound:
		return "", notFound()
	case status != http.StatusOK:
		return "", &Error{Op: "account", Status: status, Class: classify(status), Message: message(body)}
	}
	var accounts []struct {
		Username string `json:"username"`
	}
	err = json.Unmarshal(body, &accounts)
	if err == nil && len(accounts) == 0 && emptyIsNotFound {
		return "", notFound()
	}
	if err != nil || len(accounts) == 0 || accounts[0].Username == "" {
		return "", &Error{Op: "account", Status: status, Class: Transient, Message: "unexpected account answer"}
	}
	user := accounts[0].Username
	if err := c.cache.Set(ctx, key, []byte(user), usernameTTL); err != nil {
		c.log.WarnContext(ctx, "cache_set_failed", "err", err)
	}
	return user, nil
}

// allowedPath is the enrollment_allowed endpoint; its trailing slash is
// required (docs/lms.md#enrollment-allowed).
const allowedPath = "/api/enrollment/v1/enrollment_allowed/"

type allowedBody struct {
	Email      string `json:"email"`
	CourseID   string `json:"course_id"`
	AutoEnroll bool   `json:"auto_enroll,omitempty"`
}

// allowedTTL is how long a registered enrollment_allowed is remembered, so
// that the looks of a line awaiting its account (every 2 hours for up to 30
// days) do not each post it again: once a day at most, per process or, with
// memcached, per fleet. Posting it again is harmless (409).
const allowedTTL = 24 * time.Hour

// allowedKey is the cache key remembering an email's enrollment_allowed for
// a course run: a digest, not the address.
func (c *Client) allowedKey(email, courseID string) string {
	sum := sha256.Sum256([]byte(strings.ToLower(email) + "\x00" + courseID))
	return c.keyPrefix + "allowed:" + hex.EncodeToString(sum[:16])
}

// AllowEnrollment registers an enrollment_allowed with auto_enroll for an
// email without an account (docs/lms.md#enrollment-allowed): when that person registers, the LMS
// enrolls them in the course's default mode. 201 and 409 (already allowed)
// are success; a success is remembered for allowedTTL, and not posted again
// meanwhile.
func (c *Client) AllowEnrollment(ctx context.Context, email, courseID, requestID string) error {
	email = strings.TrimSpace(email)
	key := c.allowedKey(email, courseID)
	if _, ok, err := c.cache.Get(ctx, key); err == nil && ok {
		return nil
	}
	body, _ := json.Marshal(allowedBody{Email: email, CourseID: courseID, AutoEnroll: true})
	status, resp, err := c.allowedCall(ctx, http.MethodPost, "", body, requestID)
	switch {
	case err != nil:
		return err
	case status == http.StatusCreated || status == http.StatusConflict:
		if err := c.cache.Set(ctx, key, []byte("1"), allowedTTL); err != nil {
			c.log.WarnContext(ctx, "cache_set_failed", "err", err)
		}
		return nil
	}
	return allowedError(status, resp)
}

// DisallowEnrollment removes an email's enrollment_allowed for a course run
// (docs/lms.md#enrollment-allowed), so that a person whose line was returned before they
// registered is not enrolled when they do. 204 and 404 (none) are success.
func (c *Client) DisallowEnrollment(ctx context.Context, email, courseID, requestID string) error {
	email = strings.TrimSpace(email)
	_ = c.cache.Delete(ctx, c.allowedKey(email, courseID))
	body, _ := json.Marshal(allowedBody{Email: email, CourseID: courseID})
	status, resp, err := c.allowedCall(ctx, http.MethodDelete, "", body, requestID)
	switch {
	case err != nil:
		return err
	case status == http.StatusNoContent || status == http.StatusNotFound:
		return nil
	}
	return allowedError(status, resp)
}

// allowedFor reports whether an enrollment_allowed for email and courseID
// is on record (GET ?email=, docs/lms.md#enrollment-allowed).
func (c *Client) allowedFor(ctx context.Context, email, courseID, requestID string) (bool, error) {
	status, resp, err := c.allowedCall(ctx, http.MethodGet, "?"+url.Values{"email": {email}}.Encode(), nil, requestID)
	if err != nil {
		return false, err
	}
	if status != http.StatusOK {
		return false, allowedError(status, resp)
	}
	var list []allowedBody
	if err := json.Unmarshal(resp, &list); err != nil {
		return false, &Error{Op: "enrollment_allowed", Status: status, Class: Transient, Message: "unexpected enrollment_allowed answer"}
	}
	for _, a := range list {
		if a.CourseID == courseID {
			return true, nil
		}
	}
	return false, nil
}

// allowedCall makes one call to the enrollment_allowed API, under the same
// concurrency and rate limits as enrollments (the LMS throttles the
// enrollment API per caller). query is "" or "?...".
func (c *Client) allowedCall(ctx context.Context, method, query string, body []byte, requestID string) (int, []byte, error) {
	const op = "enrollment_allowed"
	release, err := c.acquire(ctx, op)
	if err != nil {
		return 0, nil, err
	}
	defer release()
	status, resp, _, err := c.call(ctx, op, method, c.base+allowedPath+query, body, requestID)
	return status, resp, err
}

// allowedError classifies a failed enrollment_allowed call. Its 400 is keyed
// by field ({"email": ["..."]}), which message does not read.
func allowedError(status int, body []byte) error {
	e := &Error{Op: "enrollment_allowed", Status: status, Class: classify(status), Message: message(body)}
	var fields map[string][]string
	if status == http.StatusBadRequest && json.Unmarshal(body, &fields) == nil {
		var parts []string
		for _, f := range []string{"email", "course_id", "auto_enroll", "non_field_errors"} {
			if len(fields[f]) > 0 {
				parts = append(parts, f+": "+fields[f][0])
			}
		}
		if len(parts) > 0 {
			e.Message = strings.Join(parts, "; ")
		}
	}
	if status == http.StatusNotFound && e.Message == "" {
		e.Message = "not found: does this LMS release have the enrollment_allowed API?"
	}
	return e
}
