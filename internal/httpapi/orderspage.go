package httpapi

import (
	"embed"
	"errors"
	"html/template"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
)

//go:embed templates/orders.html
var templatesFS embed.FS

var ordersTemplates = template.Must(template.New("orders.html").Funcs(template.FuncMap{
	"when": func(t any) string {
		switch v := t.(type) {
		case time.Time:
			if v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		case *time.Time:
			if v == nil || v.IsZero() {
				return ""
			}
			return v.UTC().Format("2006-01-02 15:04:05Z")
		}
		return ""
	},
	"pathSeg": url.PathEscape,
}).ParseFS(templatesFS, "templates/orders.html"))

// ordersPage is /admin/orders: the problem-lines page for support staff,
// server-rendered, usable without JavaScript. Its POST forms rely on the
// operators' cross-site check (Origin / Sec-Fetch-Site) for CSRF safety.
type ordersPage struct {
	problems  Problems
	orders    Orders
	dismiss   Dismisser // nil: no Dismiss buttons
	knownSite SiteChecker
	queue     string
	dashboard bool
	log       *slog.Logger
}

// maxFormBody bounds a page form's body.
const maxFormBody = 4 << 10

func mountOrdersPage(r chi.Router, p ordersPage) {
	// Support staff list and filter lines, and retry the matching ones.
	r.Get("/admin/orders", p.list)
	r.Post("/admin/orders/retry", p.retryMatching)
	// Support staff look at one order and retry it.
	r.Get("/admin/orders/{site}/{order_number}", p.order)
	r.Post("/admin/orders/{site}/{order_number}/retry", p.retryOrder)
	// Support staff close a failed line that will never succeed.
	if p.dismiss != nil {
		r.Post("/admin/orders/{site}/{order_number}/dismiss", p.dismissLine)
	}
}

type listView struct {
	Filter    filterInput
	Errors    fulfillment.FieldErrors
	States    []fulfillment.State
	Counts    []stateCount
	Capped    bool
	Page      pipeline.Page
	Limit     int
	NextQuery template.URL
	Done      *pipeline.RetryResult
}

type stateCount struct {
	State fulfillment.State
	N     int
	Query template.URL
}

func (p ordersPage) render(w http.ResponseWriter, r *http.Request, status int, name string, v any) {
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := ordersTemplates.ExecuteTemplate(w, name, v); err != nil {
		p.log.ErrorContext(r.Context(), "page_render_failed", "request_id", RequestID(r.Context()), "err", err.Error())
	}
}

// query is the filter as a query string, plus extra pairs, for a link's
// href after "?". url.Values.Encode escapes every key and value, so it is
// marked safe: html/template would escape it again ("state%3dfailed"),
// and the link would lose its filter.
func (in filterInput) query(extra ...string) template.URL {
	v := url.Values{}
	for k, s := range map[string]string{"state": in.State, "site": in.Site, "course_id": in.CourseID, "course_uuid": in.CourseUUID,
		"learner": in.Learner, "email": in.Email, "since": in.Since} {
		if s != "" {
			v.Set(k, s)
		}
	}
	for i := 0; i+1 < len(extra); i += 2 {
		v.Set(extra[i], extra[i+1])
	}
	return template.URL(v.Encode())
}

func (p ordersPage) list(w http.ResponseWriter, r *http.Request) {
	in := filterFromQuery(r.URL.Query())
	v := listView{Filter: in, States: p.problems.States(), Page: pipeline.Page{Lines: []pipeline.Row{}}}
	f, after, limit, errs, err := listQuery(r, p.problems, p.knownSite, "requeued", "run_now")
	if err != nil {
		p.failed(w, r, err)
		return
	}
	v.Limit = limit
	if d := r.URL.Query(); d.Has("requeued") {
		rq, _ := strconv.Atoi(d.Get("requeued"))
		rn, _ := strconv.Atoi(d.Get("run_now"))
		v.Done = &pipeline.RetryResult{Requeued: rq, RunNow: rn}
	}
	if len(errs) > 0 {
		v.Errors = errs
		p.render(w, r, http.StatusBadRequest, "list", v)
		return
	}
	counts, capped, err := p.problems.Counts(r.Context(), f)
	if err != nil {
		p.failed(w, r, err)
		return
	}
	v.Capped = capped
	for _, st := range v.States {
		c := in
		c.State = string(st)
		v.Counts = append(v.Counts, stateCount{State: st, N: counts[st], Query: c.query()})
	}
	if v.Page, err = p.problems.List(r.Context(), f, after, limit); err != nil {
		p.failed(w, r, err)
		return
	}
	if v.Page.Next != "" {
		v.NextQuery = in.query("cursor", v.Page.Next, "limit", strconv.Itoa(limit))
	}
	p.render(w, r, http.StatusOK, "list", v)
}

// failed shows an error page for errors the API would answer 503 or 500 to.
func (p ordersPage) failed(w http.ResponseWriter, r *http.Request, err error) {
	rec := &statusRecorder{}
	writeError(rec, r, err, p.log)
	p.render(w, r, rec.status, "error", map[string]any{"Status": rec.status, "RequestID": RequestID(r.Context())})
}

// statusRecorder keeps only the status writeError chose.
type statusRecorder struct{ status int }

func (s *statusRecorder) Header() http.Header         { return http.Header{} }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

func (p ordersPage) retryMatching(w http.ResponseWriter, r *http.Request) {
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		p.render(w, r, http.StatusBadRequest, "error", map[string]any{"Status": http.StatusBadRequest, "RequestID": RequestID(r.Context())})
		return
	}
	in := filterFromQuery(r.PostForm)
	errs := fulfillment.FieldErrors{}
	f, err := in.parse(r.Context(), p.problems.States(), p.knownSite, errs)
	if err != nil {
		p.failed(w, r, err)
		return
	}
	if len(errs) > 0 {
		p.render(w, r, http.StatusBadRequest, "list", listView{Filter: in, Errors: errs, States: p.problems.States(),
			Page: pipeline.Page{Lines: []pipeline.Row{}}})
		return
	}
	res, err := retryMatching(r, p.problems, f, p.log)
	if err != nil {
		p.failed(w, r, err)
		return
	}
	http.Redirect(w, r, "/admin/orders?"+string(in.query("requeued", strconv.Itoa(res.Requeued), "run_now", strconv.Itoa(res.RunNow))),
		http.StatusSeeOther)
}

type orderView struct {
	Site, OrderNumber string
	Lines             []fulfillment.Line
	Queue             string
	Dashboard         bool
	Retried           bool
	Dismissed         bool
	CanDismiss        bool
	NotFound          bool
}

// orderParams validates the site and order number of an order's page.
func (p ordersPage) orderParams(w http.ResponseWriter, r *http.Request) (site, number string, ok bool) {
	site, number = chi.URLParam(r, "site"), chi.URLParam(r, "order_number")
	var err error
	if number, err = url.PathUnescape(number); err != nil || fulfillment.OrderNumberProblem(number) != "" ||
		!fulfillment.ValidSiteName(site) {
		p.render(w, r, http.StatusBadRequest, "error", map[string]any{"Status": http.StatusBadRequest, "RequestID": RequestID(r.Context())})
		return "", "", false
	}
	return site, number, true
}

func (p ordersPage) order(w http.ResponseWriter, r *http.Request) {
	site, number, ok := p.orderParams(w, r)
	if !ok {
		return
	}
	v := orderView{Site: site, OrderNumber: number, Queue: p.queue, Dashboard: p.dashboard, Retried: r.URL.Query().Has("retried"),
		Dismissed: r.URL.Query().Has("dismissed"), CanDismiss: p.dismiss != nil}
	lines, err := p.orders.Lines(r.Context(), site, number)
	switch {
	case err == nil:
		v.Lines = lines
	case isNotFound(err):
		v.NotFound = true
		p.render(w, r, http.StatusNotFound, "order", v)
		return
	default:
		p.failed(w, r, err)
		return
	}
	p.render(w, r, http.StatusOK, "order", v)
}

func (p ordersPage) retryOrder(w http.ResponseWriter, r *http.Request) {
	site, number, ok := p.orderParams(w, r)
	if !ok {
		return
	}
	lines, err := p.orders.RetryFailed(r.Context(), site, number)
	if err != nil && !isNotFound(err) {
		p.failed(w, r, err)
		return
	}
	logOrderRetry(r, site, number, lines, p.log)
	http.Redirect(w, r, "/admin/orders/"+url.PathEscape(site)+"/"+url.PathEscape(number)+"?retried=1", http.StatusSeeOther)
}

// dismissLine closes one failed line of the order: the form names its item
// (course_id or course_uuid) and the reason.
func (p ordersPage) dismissLine(w http.ResponseWriter, r *http.Request) {
	site, number, ok := p.orderParams(w, r)
	if !ok {
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, maxFormBody)
	if err := r.ParseForm(); err != nil {
		p.render(w, r, http.StatusBadRequest, "error", map[string]any{"Status": http.StatusBadRequest, "RequestID": RequestID(r.Context())})
		return
	}
	f := r.PostForm
	in := dismissInput{CourseID: f.Get("course_id"), CourseUUID: f.Get("course_uuid"), Site: site, Reason: f.Get("reason")}
	_, status, _, err := dismiss(r, p.dismiss, p.knownSite, number, in, p.log)
	switch {
	case err != nil:
		p.failed(w, r, err)
	case status != 0:
		p.render(w, r, status, "error", map[string]any{"Status": status, "RequestID": RequestID(r.Context())})
	default:
		http.Redirect(w, r, "/admin/orders/"+url.PathEscape(site)+"/"+url.PathEscape(number)+"?dismissed=1", http.StatusSeeOther)
	}
}

func isNotFound(err error) bool { return errors.Is(err, fulfillment.ErrNotFound) }
