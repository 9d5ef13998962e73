package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Dismisser closes a failed line as dismissed: kept and listed, never
// retried, not open (package dismiss). fulfillment.ErrNotFound: no such
// order or line; fulfillment.ErrConflict: the line is not failed.
type Dismisser interface {
	Dismiss(ctx context.Context, key fulfillment.Key, reason, operator, requestID string) (taskID string, err error)
}

// maxDismissReason bounds a dismissal's reason, in characters (it is stored
// with the line and logged).
const maxDismissReason = 500

// dismissInput is POST /orders/{n}/dismiss's body, or the page's form.
type dismissInput struct {
	CourseID   string `json:"course_id"`
	CourseUUID string `json:"course_uuid"`
	Site       string `json:"site"`
	Reason     string `json:"reason"`
}

// parse validates the request; problems are added to errs by field. The
// error is the site check's (503).
func (in dismissInput) parse(ctx context.Context, number string, knownSite SiteChecker, errs fulfillment.FieldErrors) (fulfillment.Key, string, error) {
	key := fulfillment.Key{Site: in.Site, OrderNumber: number}
	switch {
	case in.CourseID != "" && in.CourseUUID != "":
		errs.Add(fulfillment.ItemCourseRun, "Give exactly one of course_id and course_uuid.")
	case in.CourseUUID != "":
		u, ok := fulfillment.CourseUUID(in.CourseUUID)
		if !ok {
			errs.Add(fulfillment.ItemCourse, "Not a valid course UUID.")
		}
		key.Item = u
	case in.CourseID == "":
		errs.Add(fulfillment.ItemCourseRun, "Required: the line's course_id (or course_uuid).")
	case len(in.CourseID) > maxFilterText || !fulfillment.ValidCourseKey(in.CourseID):
		errs.Add(fulfillment.ItemCourseRun, "Not a valid course run key.")
	default:
		key.Item = in.CourseID
	}
	if key.Site == "" {
		key.Site = fulfillment.DefaultSite
	}
	if !fulfillment.ValidSiteName(key.Site) {
		errs.Add("site", "Not a valid site name.")
	} else if ok, err := knownSite(ctx, key.Site); err != nil {
		return key, "", err
	} else if !ok {
		errs.Add("site", "Unknown site.")
	}
	reason := strings.TrimSpace(in.Reason)
	switch {
	case reason == "":
		errs.Add("reason", "Required: why the line is dismissed.")
	case !utf8.ValidString(reason) || utf8.RuneCountInString(reason) > maxDismissReason ||
		strings.ContainsFunc(reason, unicode.IsControl):
		errs.Add("reason", fmt.Sprintf("At most %d characters on one line.", maxDismissReason))
	}
	return key, reason, nil
}

// dismiss validates a dismissal and runs it, logging the operator's action.
// It answers a refusal's status and body (status 0: dismissed), or the
// error writeError maps (404, 503).
func dismiss(r *http.Request, d Dismisser, knownSite SiteChecker, number string, in dismissInput, log *slog.Logger) (fulfillment.Key, int, any, error) {
	if problem := fulfillment.OrderNumberProblem(number); problem != "" {
		return fulfillment.Key{}, http.StatusBadRequest, fulfillment.FieldErrors{"order_number": {problem}}, nil
	}
	errs := fulfillment.FieldErrors{}
	key, reason, err := in.parse(r.Context(), number, knownSite, errs)
	if err != nil {
		return key, 0, nil, err
	}
	if len(errs) > 0 {
		return key, http.StatusBadRequest, errs, nil
	}
	id, err := d.Dismiss(r.Context(), key, reason, Operator(r.Context()), RequestID(r.Context()))
	attrs := []any{"request_id", RequestID(r.Context()), "operator", Operator(r.Context()), "action", "dismiss_line",
		"site", key.Site, "order_number", key.OrderNumber, "item", key.Item, "reason", fulfillment.Clip(reason, 200)}
	switch {
	case errors.Is(err, fulfillment.ErrConflict):
		log.InfoContext(r.Context(), "operator_action", append(attrs, "refused", "not failed")...)
		return key, http.StatusConflict, detail("The line is not failed: only a failed line can be dismissed."), nil
	case err != nil && !errors.Is(err, fulfillment.ErrNotFound):
		log.InfoContext(r.Context(), "operator_action", append(attrs, "err", err.Error())...)
		return key, 0, nil, err
	case err != nil:
		return key, 0, nil, err // 404: nothing was done, nothing to log
	}
	log.InfoContext(r.Context(), "operator_action", append(attrs, "task", id)...)
	return key, 0, nil, nil
}

// handleDismiss answers POST /orders/{order_number}/dismiss with
// {"course_id"|"course_uuid", "site"?, "reason"}: the order's lines
// afterwards, as GET /orders/{order_number}.
func handleDismiss(d Dismisser, orders Orders, knownSite SiteChecker, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		number, err := url.PathUnescape(chi.URLParam(r, "order_number"))
		if err != nil {
			encode(w, http.StatusBadRequest, fulfillment.FieldErrors{"order_number": {"Not a valid URL path segment."}})
			return
		}
		if !isJSON(r.Header.Get("Content-Type")) {
			encode(w, http.StatusUnsupportedMediaType, detail(`Unsupported media type in request: use "application/json".`))
			return
		}
		var in dismissInput
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFilterBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil {
			encode(w, http.StatusBadRequest, fulfillment.FieldErrors{fulfillment.NonFieldErrors: {
				"A JSON object with course_id or course_uuid, site (optional) and reason: " + fulfillment.Clip(err.Error(), 200)}})
			return
		}
		key, status, body, err := dismiss(r, d, knownSite, number, in, log)
		if err == nil && status == 0 {
			var lines []fulfillment.Line
			if lines, err = orders.Lines(r.Context(), key.Site, key.OrderNumber); err == nil {
				status, body = http.StatusOK, orderStatus{Site: key.Site, OrderNumber: key.OrderNumber, Lines: lines}
			}
		}
		if err != nil {
			writeError(w, r, err, log)
			return
		}
		encode(w, status, body)
	}
}
