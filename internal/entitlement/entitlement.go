// Package entitlement is the course-entitlement flow: a line whose item is a
// catalog course (course_uuid) rather than a course run. Placed, it creates
// an entitlement for the learner in the LMS (the learner picks the run
// later); returned, it revokes that entitlement. Both are tasks on the
// shared pipeline, so ordering, repeats, retries, status and reconciliation
// are the pipeline's; this package only says what the LMS is asked.
package entitlement

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms"
	"github.com/openedx/coordinator/internal/pipeline"
)

// The flow's names: signals, receivers, task kinds and types, line states.
const (
	SignalPlaced   = "fulfill_entitlement_placed"
	SignalReturned = "fulfill_entitlement_returned"

	ReceiverCreate = "lms.fulfill_entitlement_placed_create_entitlement"
	ReceiverRevoke = "lms.fulfill_entitlement_returned_revoke_entitlement"

	KindCreate = "entitle"
	KindRevoke = "revoke"

	TypeCreate = "lms:fulfill_entitlement_placed_create_entitlement"
	TypeRevoke = "lms:fulfill_entitlement_returned_revoke_entitlement"

	StateEntitled fulfillment.State = "entitled"
	StateRevoked  fulfillment.State = "revoked"

	// Recorded is the name under which a line shows its entitlement.
	Recorded = "entitlement_uuid"
)

// path is the LMS's entitlements API (the trailing slash is required).
const path = "/api/entitlements/v1/entitlements/"

// Register declares the flow: course_uuid lines, their signals with the
// receivers that queue the create and revoke tasks, and those tasks' kinds.
func Register(r *flow.Registry, sites lms.Sites) {
	placed, returned := r.DeclareLine(flow.Item{Field: fulfillment.ItemCourse, Placed: SignalPlaced, Returned: SignalReturned,
		PlacedKind: KindCreate, ReturnedKind: KindRevoke}, []string{ReceiverCreate}, []string{ReceiverRevoke})
	lines := r.Lines()
	f := entitlements{sites: sites, lines: lines}
	r.AddKinds(
		pipeline.Kind{Name: KindCreate, TaskType: TypeCreate, Done: StateEntitled, DoneAt: "entitled_at", Records: Recorded,
			Rank: 1, CanceledBy: KindRevoke, Decode: pipeline.DecodeAs[fulfillment.Order], Handle: f.create},
		pipeline.Kind{Name: KindRevoke, TaskType: TypeRevoke, Done: StateRevoked, DoneAt: "revoked_at",
			Rank: 2, After: KindCreate, Decode: pipeline.DecodeAs[fulfillment.Return], Handle: f.revoke},
	)
	placed.Register(ReceiverCreate, func(ctx context.Context, o fulfillment.Order) (string, error) {
		if o.AcceptedAt.IsZero() {
			o.AcceptedAt = time.Now().UTC() // the wait for an account counts from it
		}
		return lines.Accept(ctx, KindCreate, o.Ref(), o)
	})
	returned.Register(ReceiverRevoke, func(ctx context.Context, ret fulfillment.Return) (string, error) {
		return lines.Accept(ctx, KindRevoke, ret.Ref(), ret)
	})
}

type entitlements struct {
	sites lms.Sites
	lines flow.Lines
}

// entitlement is the part of the LMS's entitlement object the flow reads.
type entitlement struct {
	UUID        string  `json:"uuid"`
	CourseUUID  string  `json:"course_uuid"`
	OrderNumber string  `json:"order_number"`
	ExpiredAt   *string `json:"expired_at"`
}

// create makes the order line's entitlement and records its uuid. The LMS's
// create is not idempotent, so it first reads back the learner's
// entitlements: an unexpired one of this course and order is the line's
// (made by an attempt whose answer was lost).
func (f entitlements) create(ctx context.Context, j pipeline.Job) (string, error) {
	o, err := pipeline.Value[fulfillment.Order](j)
	if err != nil {
		return "", err
	}
	c, err := f.sites.Client(ctx, o.Site)
	if err != nil {
		return "", err
	}
	user, err := c.Learner(ctx, o.Ref().Learner(), o.RequestID)
	var none *lms.NoAccountError
	if errors.As(err, &none) && o.EnrollUnregistered {
		// Paid first, registers later: look again, as seats do (no
		// enrollment_allowed exists for a course).
		wait, err := lms.NextLookFor(none, o.AcceptedAt, time.Now())
		if err != nil {
			return "", err
		}
		return "", pipeline.AwaitAccount(fmt.Errorf("%s yet; next look in %s", none, wait), wait)
	}
	if err != nil {
		return "", err
	}
	if e, found, err := find(ctx, c, user, o.CourseUUID, o.OrderNumber, o.RequestID); err != nil || found {
		return e.UUID, err
	}
	a, err := c.Call(ctx, "create_entitlement", http.MethodPost, path, map[string]any{
		"user": user, "course_uuid": o.CourseUUID, "mode": o.CourseMode, "order_number": o.OrderNumber,
		"email_opt_in": o.EmailOptIn,
	}, true, o.RequestID)
	if err != nil {
		return "", err
	}
	if a.Status != http.StatusCreated {
		return "", a.Err("create_entitlement")
	}
	var e entitlement
	if err := json.Unmarshal(a.Body, &e); err != nil || e.UUID == "" {
		// Made, but unreadable: the next attempt finds it by reading back.
		return "", &lms.Error{Op: "create_entitlement", Status: a.Status, Class: lms.Transient, Message: "unexpected entitlement answer"}
	}
	return e.UUID, nil
}

// revoke revokes the entitlement the line's create task recorded; without
// one (recorded by no task, or the record forgotten) it reads the learner's
// entitlements back for this course and order. None: nothing was made, the
// return is done. A revoke touches only that one entitlement.
func (f entitlements) revoke(ctx context.Context, j pipeline.Job) (string, error) {
	r, err := pipeline.Value[fulfillment.Return](j)
	if err != nil {
		return "", err
	}
	c, err := f.sites.Client(ctx, r.Site)
	if err != nil {
		return "", err
	}
	created, found, err := f.lines.Find(ctx, KindCreate, j.Ref.Key())
	if err != nil {
		return "", pipeline.Hold(fmt.Errorf("read the line's entitlement: %w", err))
	}
	uuid := ""
	if found && created.State == fulfillment.StateDone {
		uuid = created.Result
	}
	if uuid == "" {
		learner := r.Ref().Learner()
		if learner == (fulfillment.Learner{}) && found {
			learner = created.Ref.Learner() // a shop's refund that names nobody
		}
		if learner == (fulfillment.Learner{}) {
			if !found && f.lines.KeepsEveryTask() {
				return "", nil // nothing was created: nothing to revoke
			}
			return "", pipeline.Permanent(lms.ErrLearnerUnknown)
		}
		user, err := c.Learner(ctx, learner, r.RequestID)
		var none *lms.NoAccountError
		if errors.As(err, &none) {
			return "", nil // no account: no entitlement
		}
		if err != nil {
			return "", err
		}
		e, found, err := find(ctx, c, user, r.CourseUUID, r.OrderNumber, r.RequestID)
		if err != nil || !found {
			return "", err
		}
		uuid = e.UUID
	}
	a, err := c.Call(ctx, "revoke_entitlement", http.MethodDelete, path+url.PathEscape(uuid)+"/", nil, true, r.RequestID)
	if err != nil {
		return "", err
	}
	if a.Status == http.StatusNoContent || a.Status == http.StatusNotFound {
		return "", nil // revoked now, before, or never there
	}
	return "", a.Err("revoke_entitlement")
}

// maxPages bounds the pages of a learner's entitlements read back.
const maxPages = 100

// find reads back a learner's unexpired entitlement of a course made for an
// order, following the list's pages.
func find(ctx context.Context, c *lms.Client, user, courseUUID, orderNumber, requestID string) (entitlement, bool, error) {
	next := path + "?" + url.Values{"user": {user}}.Encode()
	for page := 0; next != "" && page < maxPages; page++ {
		a, err := c.Call(ctx, "read_entitlements", http.MethodGet, next, nil, false, requestID)
		if err != nil {
			return entitlement{}, false, err
		}
		if a.Status != http.StatusOK {
			return entitlement{}, false, a.Err("read_entitlements")
		}
		var list struct {
			Next    *string       `json:"next"`
			Results []entitlement `json:"results"`
		}
		if err := json.Unmarshal(a.Body, &list); err != nil {
			return entitlement{}, false, &lms.Error{Op: "read_entitlements", Status: a.Status, Class: lms.Transient, Message: "unexpected list answer"}
		}
		for _, e := range list.Results {
			if e.ExpiredAt == nil && strings.EqualFold(e.CourseUUID, courseUUID) && e.OrderNumber == orderNumber {
				return e, true, nil
			}
		}
		next = ""
		if list.Next != nil {
			next = samePath(*list.Next)
		}
	}
	return entitlement{}, false, nil
}

// samePath keeps the path and query of the LMS's absolute `next` link, so
// that the next page is read from the site's own lms.url, whatever host the
// LMS believes it has (a proxy), and never from elsewhere.
func samePath(next string) string {
	u, err := url.Parse(next)
	if err != nil || !strings.HasPrefix(u.Path, path) {
		return ""
	}
	return u.RequestURI()
}
