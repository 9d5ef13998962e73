package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/golang-jwt/jwt/v5"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

// Problems finds lines without their order number and retries them in bulk
// (README, Problem orders); pipeline.Service implements it.
type Problems interface {
	List(ctx context.Context, f pipeline.Filter, after *pipeline.Cursor, limit int) (pipeline.Page, error)
	Counts(ctx context.Context, f pipeline.Filter) (map[fulfillment.State]int, bool, error)
	RetryMatching(ctx context.Context, f pipeline.Filter) (pipeline.RetryResult, error)
	States() []fulfillment.State
}

// setOperator records who is making the request, for Operator. It is kept
// with the request's id (requestInfo) rather than in a context of its own:
// the fulfill path would otherwise copy its request once more per order. It
// needs the requestID middleware further out (NewHandler installs it
// first); without it the operator is not recorded.
func setOperator(ctx context.Context, who string) {
	if ri, ok := ctx.Value(requestIDKey).(*requestInfo); ok {
		ri.mu.Lock()
		ri.operator = who
		ri.mu.Unlock()
	}
}

// Operator names who made the request: "basic:<user>" for a basic-auth
// operator, "jwt:<subject>" for a token; "" when nobody was identified.
func Operator(ctx context.Context) string {
	if ri, ok := ctx.Value(requestIDKey).(*requestInfo); ok {
		ri.mu.Lock()
		defer ri.mu.Unlock()
		return ri.operator
	}
	return ""
}

// jwtOperator names a token's holder by its subject, or its username claim
// (the LMS's tokens carry both), clipped: it is logged.
func jwtOperator(c jwt.MapClaims) string {
	for _, name := range []string{"sub", "preferred_username", "username"} {
		if v, _ := c[name].(string); v != "" {
			return "jwt:" + fulfillment.Clip(v, 100)
		}
	}
	return "jwt:(no subject)"
}

// Listing defaults.
const (
	defaultLimit  = 50
	maxFilterText = 255
	// maxLoggedTasks bounds the task ids one operator_action line carries.
	maxLoggedTasks = 100
)

// filterInput is a filter as a query string or a JSON body spells it.
type filterInput struct {
	State    string `json:"state"`
	Site     string `json:"site"`
	CourseID string `json:"course_id"`
	// CourseUUID names an entitlement line's item (a catalog course).
	CourseUUID string `json:"course_uuid"`
	Learner    string `json:"learner"`
	Email      string `json:"email"`
	Since      string `json:"since"`
}

func filterFromQuery(q url.Values) filterInput {
	return filterInput{State: q.Get("state"), Site: q.Get("site"), CourseID: q.Get("course_id"), CourseUUID: q.Get("course_uuid"),
		Learner: q.Get("learner"), Email: q.Get("email"), Since: q.Get("since")}
}

// listParams are the query parameters of a listing: the filter's, the
// cursor and the limit.
var listParams = []string{"state", "site", "course_id", "course_uuid", "learner", "email", "since", "cursor", "limit"}

// unknownParams adds an error for each query parameter that is neither in
// listParams nor in extra: a misspelt filter (?emial=) must not silently
// list every line. At most a few are named, clipped: the query is the
// caller's.
func unknownParams(q url.Values, errs fulfillment.FieldErrors, extra ...string) {
	n := 0
	for name := range q {
		if slices.Contains(listParams, name) || slices.Contains(extra, name) {
			continue
		}
		if n++; n > 5 {
			errs.Add(fulfillment.NonFieldErrors, "More unknown query parameters.")
			return
		}
		errs.Add(fulfillment.Clip(name, 40), "Unknown query parameter; known: "+strings.Join(listParams, ", ")+".")
	}
}

// parse validates the filter; problems are added to errs by field.
func (in filterInput) parse(ctx context.Context, states []fulfillment.State, knownSite SiteChecker, errs fulfillment.FieldErrors) (pipeline.Filter, error) {
	var f pipeline.Filter
	if in.State != "" {
		if !slices.Contains(states, fulfillment.State(in.State)) {
			names := make([]string, len(states))
			for i, s := range states {
				names[i] = string(s)
			}
			errs.Add("state", "Unknown state; one of: "+strings.Join(names, ", ")+".")
		}
		f.State = fulfillment.State(in.State)
	}
	if in.Site != "" {
		if !fulfillment.ValidSiteName(in.Site) {
			errs.Add("site", "Not a valid site name.")
		} else if ok, err := knownSite(ctx, in.Site); err != nil {
			return f, err
		} else if !ok {
			errs.Add("site", "Unknown site.")
		}
		f.Site = in.Site
	}
	if in.CourseID != "" {
		if len(in.CourseID) > maxFilterText || !fulfillment.ValidCourseKey(in.CourseID) {
			errs.Add("course_id", "Not a valid course key.")
		}
		f.CourseID = in.CourseID
	}
	if in.CourseUUID != "" {
		u, ok := fulfillment.CourseUUID(in.CourseUUID)
		switch {
		case in.CourseID != "":
			errs.Add("course_uuid", "Give course_id (a course run) or course_uuid (a course), not both.")
		case !ok:
			errs.Add("course_uuid", "Not a valid course UUID.")
		}
		f.CourseID = u // the line's item, as the filter matches it
	}
	if in.Learner != "" {
		if id, err := strconv.ParseInt(in.Learner, 10, 64); err == nil {
			if id <= 0 {
				errs.Add("learner", "An LMS user id is a positive integer.")
			}
			f.LMSUserID = id
		} else if len(in.Learner) > 150 || strings.ContainsFunc(in.Learner, func(r rune) bool {
			return unicode.IsSpace(r) || unicode.IsControl(r)
		}) {
			errs.Add("learner", "Not an LMS user id or a username.")
		} else {
			f.Username = in.Learner
		}
	}
	if in.Email != "" {
		if !fulfillment.ValidEmail(strings.TrimSpace(in.Email)) {
			errs.Add("email", "Not an email address.")
		}
		f.Email = pipeline.NormalEmail(in.Email)
	}
	if in.Since != "" {
		t, err := time.Parse(time.RFC3339, in.Since)
		if err != nil {
			errs.Add("since", "Not an RFC 3339 time (2026-11-27T05:00:00Z).")
		}
		f.Since = t
	}
	return f, nil
}

// listQuery validates a listing's query string: the filter, cursor and limit,
// and no other parameter but those in extra.
func listQuery(r *http.Request, p Problems, knownSite SiteChecker, extra ...string) (pipeline.Filter, *pipeline.Cursor, int, fulfillment.FieldErrors, error) {
	q := r.URL.Query()
	errs := fulfillment.FieldErrors{}
	unknownParams(q, errs, extra...)
	f, err := filterFromQuery(q).parse(r.Context(), p.States(), knownSite, errs)
	if err != nil {
		return f, nil, 0, nil, err
	}
	var after *pipeline.Cursor
	if s := q.Get("cursor"); s != "" {
		c, err := pipeline.ParseCursor(s)
		if err != nil {
			errs.Add("cursor", "Not a cursor this service issued; use the `next` of a previous page.")
		}
		after = &c
	}
	limit := defaultLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > pipeline.MaxLimit {
			errs.Add("limit", "An integer from 1 to "+strconv.Itoa(pipeline.MaxLimit)+".")
		}
		limit = n
	}
	return f, after, limit, errs, nil
}

// handleListLines answers GET /orders?state=&site=&course_id=&course_uuid=&learner=&email=&since=&cursor=&limit=.
func handleListLines(p Problems, knownSite SiteChecker, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f, after, limit, errs, err := listQuery(r, p, knownSite)
		if err != nil {
			writeError(w, r, err, log)
			return
		}
		if len(errs) > 0 {
			encode(w, http.StatusBadRequest, errs)
			return
		}
		page, err := p.List(r.Context(), f, after, limit)
		if err != nil {
			writeError(w, r, err, log)
			return
		}
		encode(w, http.StatusOK, page)
	}
}

// maxFilterBody bounds a bulk retry's JSON body.
const maxFilterBody = 4 << 10

// handleRetryLines answers POST /orders/retry with a JSON filter body.
func handleRetryLines(p Problems, knownSite SiteChecker, log *slog.Logger) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in filterInput
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxFilterBody))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&in); err != nil && !errors.Is(err, io.EOF) {
			encode(w, http.StatusBadRequest, fulfillment.FieldErrors{fulfillment.NonFieldErrors: {
				"A JSON object with state, site, course_id, course_uuid, learner, email and since (all optional): " + fulfillment.Clip(err.Error(), 200)}})
			return
		}
		errs := fulfillment.FieldErrors{}
		f, err := in.parse(r.Context(), p.States(), knownSite, errs)
		if err != nil {
			writeError(w, r, err, log)
			return
		}
		if len(errs) > 0 {
			encode(w, http.StatusBadRequest, errs)
			return
		}
		res, err := retryMatching(r, p, f, log)
		if err != nil {
			writeError(w, r, err, log)
			return
		}
		encode(w, http.StatusOK, res)
	}
}

// retryMatching runs a bulk retry and logs it as an operator action.
func retryMatching(r *http.Request, p Problems, f pipeline.Filter, log *slog.Logger) (pipeline.RetryResult, error) {
	res, err := p.RetryMatching(r.Context(), f)
	attrs := []any{"request_id", RequestID(r.Context()), "operator", Operator(r.Context()), "action", "retry_lines",
		"filter", filterAttrs(f), "requeued", res.Requeued, "run_now", res.RunNow, "capped", res.Capped,
		"tasks", res.Tasks[:min(len(res.Tasks), maxLoggedTasks)], "tasks_total", len(res.Tasks)}
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	log.InfoContext(r.Context(), "operator_action", attrs...)
	return res, err
}

// filterAttrs is a filter as log attributes.
func filterAttrs(f pipeline.Filter) slog.Value {
	var as []slog.Attr
	add := func(k, v string) {
		if v != "" {
			as = append(as, slog.String(k, v))
		}
	}
	add("state", string(f.State))
	add("site", f.Site)
	add("course_id", f.CourseID)
	if f.LMSUserID != 0 {
		as = append(as, slog.Int64("lms_user_id", f.LMSUserID))
	}
	add("username", f.Username)
	if f.Email != "" {
		add("email", fulfillment.MaskEmail(f.Email)) // personal data: masked in logs
	}
	if !f.Since.IsZero() {
		add("since", f.Since.Format(time.RFC3339))
	}
	return slog.GroupValue(as...)
}

// logOrderRetry logs POST /orders/{n}/retry as an operator action.
func logOrderRetry(r *http.Request, site, number string, lines []fulfillment.Line, log *slog.Logger) {
	states := make([]string, 0, len(lines))
	for _, l := range lines {
		states = append(states, l.CourseID+"="+string(l.State))
	}
	log.InfoContext(r.Context(), "operator_action", "request_id", RequestID(r.Context()), "operator", Operator(r.Context()),
		"action", "retry_order", "site", site, "order_number", number, "lines", states)
}
