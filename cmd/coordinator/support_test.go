package main

import (
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/pipeline"
	"github.com/openedx/coordinator/internal/seat"
)

// Support finds and fixes a shop's orders, end to end in both tiers: an
// order for "Honor@Example.COM" enrolls the account of "honor@example.com";
// GET /orders?email= finds the line whatever the case (and refuses a
// misspelt parameter by name); /admin/orders shows the email; a return names
// the learner by email; a failed line is dismissed, listed as dismissed and
// never retried by either retry, while a sibling failed line is.
func TestSupportByEmail(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			in, a := startEmailTier(t, ledger)
			supportByEmail(t, in, a)
		})
	}
}

func supportByEmail(t *testing.T, in *instance, a *app) {
	fake := in.lms
	auth := supportToken(t)
	fake.Register(62000, "honor", "honor@example.com")

	// A shop's buyer typed capitals; the LMS account has none.
	place(t, a, emailOrder("SUP-1", "Honor@Example.COM", false))
	if l := in.lineState(t, "SUP-1"); l.State != fulfillment.StateEnrolled {
		t.Fatalf("SUP-1 %+v, want enrolled (the account of honor@example.com)", l)
	}
	if e, _ := fake.Enrollment("honor", demoCourse); !e.IsActive || e.Mode != "verified" {
		t.Fatalf("enrollment %+v, want active verified", e)
	}
	// Two lines that fail: no account has these emails.
	place(t, a, emailOrder("SUP-2", "Typo@Example.com", false))
	place(t, a, emailOrder("SUP-3", "late@example.com", false))
	for _, n := range []string{"SUP-2", "SUP-3"} {
		if l := in.lineState(t, n); l.State != fulfillment.StateFailed {
			t.Fatalf("%s %+v, want failed", n, l)
		}
	}

	t.Run("GET /orders?email= finds the email's lines in any case", func(t *testing.T) {
		var page pipeline.Page
		for _, q := range []string{"honor@example.com", " HONOR@example.COM "} {
			if status := in.call(t, "GET", "/orders?email="+url.QueryEscape(q), "", auth, &page); status != 200 {
				t.Fatalf("?email=%q: %d", q, status)
			}
			if len(page.Lines) != 1 || page.Lines[0].OrderNumber != "SUP-1" || page.Lines[0].Learner.Email != "Honor@Example.COM" {
				t.Errorf("?email=%q: %+v, want SUP-1 of Honor@Example.COM only", q, page.Lines)
			}
		}
		var errs map[string][]string
		if status := in.call(t, "GET", "/orders?emial=honor@example.com", "", auth, &errs); status != 400 || len(errs["emial"]) != 1 {
			t.Errorf("misspelt parameter: %d %v, want 400 naming emial", status, errs)
		}
		const uuid = "0D6A2B5E7F184C299A3B4C5D6E7F8A9B"
		if status := in.call(t, "GET", "/orders?course_uuid="+uuid+"&email=honor%40example.com", "", auth, &page); status != 200 || len(page.Lines) != 0 {
			t.Errorf("?course_uuid=: %d %+v, want 200 and no line (SUP-1 is a course run's)", status, page.Lines)
		}
		if status := in.call(t, "GET", "/orders?course_uuid="+uuid+"&course_id="+url.QueryEscape(demoCourse), "", auth, &errs); status != 400 || len(errs["course_uuid"]) != 1 {
			t.Errorf("course_id and course_uuid: %d %v, want 400 naming course_uuid", status, errs)
		}
		if status := in.call(t, "GET", "/orders?email=not-an-email", "", auth, &errs); status != 400 || len(errs["email"]) != 1 {
			t.Errorf("bad email: %d %v, want 400 naming email", status, errs)
		}
		if status := in.call(t, "POST", "/orders/retry", `{"emial":"x@example.com"}`, auth, &errs); status != 400 ||
			!strings.Contains(strings.Join(errs[fulfillment.NonFieldErrors], ""), `"emial"`) {
			t.Errorf("misspelt retry filter: %d %v, want 400 naming emial", status, errs)
		}
	})

	t.Run("the admin page shows the email in the Learner column", func(t *testing.T) {
		page := in.page(t, "/admin/orders?email=honor%40example.com", auth)
		if !strings.Contains(page, "Honor@Example.COM") || !strings.Contains(page, "SUP-1") || strings.Contains(page, "SUP-2") {
			t.Errorf("page does not list SUP-1 with its email only:\n%s", page)
		}
		if p := in.page(t, "/admin/orders/default/SUP-2", auth); !strings.Contains(p, `action="/admin/orders/default/SUP-2/dismiss"`) {
			t.Errorf("a failed line's page has no Dismiss button:\n%s", p)
		}
		if p := in.page(t, "/admin/orders/default/SUP-1", auth); strings.Contains(p, `/dismiss"`) {
			t.Errorf("an enrolled line's page offers Dismiss")
		}
	})

	t.Run("dismiss: 400, 404 and 409 refused; a failed line closed", func(t *testing.T) {
		body := func(course, reason string) string {
			return `{"course_id":"` + course + `","reason":"` + reason + `"}`
		}
		var out map[string]any
		for _, c := range []struct {
			path, body string
			status     int
			field      string
		}{
			{"/orders/SUP-2/dismiss", `{"course_id":"` + demoCourse + `"}`, 400, "reason"},
			{"/orders/SUP-2/dismiss", body(demoCourse, strings.Repeat("x", 501)), 400, "reason"},
			{"/orders/SUP-2/dismiss", `{"reason":"typo"}`, 400, "course_id"},
			{"/orders/SUP-2/dismiss", body("not a course", "typo"), 400, "course_id"},
			{"/orders/SUP-2/dismiss", `{"course_id":"` + demoCourse + `","reason":"typo","site":"nowhere"}`, 400, "site"},
			{"/orders/SUP-2/dismiss", `{"course_id":"` + demoCourse + `","reason":"typo","why":1}`, 400, fulfillment.NonFieldErrors},
			{"/orders/SUP-404/dismiss", body(demoCourse, "typo"), 404, ""},
			{"/orders/SUP-2/dismiss", body("course-v1:edX+Other+2026", "typo"), 404, ""},
			{"/orders/SUP-1/dismiss", body(demoCourse, "typo"), 409, ""},
		} {
			out = nil
			status := in.call(t, "POST", c.path, c.body, auth, &out)
			if status != c.status || (c.field != "" && out[c.field] == nil) {
				t.Errorf("POST %s %s: %d %v, want %d naming %q", c.path, c.body, status, out, c.status, c.field)
			}
		}
		var st orderStatus
		if status := in.call(t, "POST", "/orders/SUP-2/dismiss", body(demoCourse, "typo in the email; refunded in the shop"), auth, &st); status != 200 ||
			st.OrderNumber != "SUP-2" || len(st.Lines) != 1 || st.Lines[0].TaskID != "dismiss_"+pipeline.Digest(fulfillment.Key{Site: "default", OrderNumber: "SUP-2", Item: demoCourse}) {
			t.Fatalf("dismiss: %d %+v, want the order's line led by its dismissal", status, st)
		}
		l := in.waitLine(t, "SUP-2", fulfillment.StateDismissed)
		if l.Recorded["dismiss_reason"] != "typo in the email; refunded in the shop" || l.DoneAt["dismissed_at"] == nil {
			t.Errorf("dismissed line %+v, want its reason and time", l)
		}
		if status := in.call(t, "POST", "/orders/SUP-2/dismiss", body(demoCourse, "again"), auth, &out); status != 409 {
			t.Errorf("dismissing a dismissed line: %d, want 409", status)
		}
		var page pipeline.Page
		in.call(t, "GET", "/orders?state=dismissed", "", auth, &page)
		if len(page.Lines) != 1 || page.Lines[0].OrderNumber != "SUP-2" {
			t.Errorf("?state=dismissed: %+v, want SUP-2", page.Lines)
		}
		in.call(t, "GET", "/orders?state=failed", "", auth, &page)
		if len(page.Lines) != 1 || page.Lines[0].OrderNumber != "SUP-3" {
			t.Errorf("?state=failed: %+v, want SUP-3 only", page.Lines)
		}
	})

	t.Run("neither retry nor a redelivery runs a dismissed line", func(t *testing.T) {
		// Both learners register: a line that is retried now enrolls, so a
		// retried dismissed line could never show its enrollment failed.
		fake.Register(62001, "typo", "Typo@Example.com")
		fake.Register(62002, "late", "late@example.com")
		enrollFailed := func(l fulfillment.Line) bool {
			for _, task := range l.Tasks {
				if task.Kind == seat.KindEnroll {
					return task.State == fulfillment.StateFailed
				}
			}
			return false
		}
		status, st := in.order(t, "POST", "SUP-2")
		if status != 200 || len(st.Lines) != 1 || st.Lines[0].State != fulfillment.StateDismissed || !enrollFailed(st.Lines[0]) {
			t.Fatalf("order retry of a dismissed line: %d %+v, want it dismissed, its enrollment still failed", status, st)
		}
		var res pipeline.RetryResult
		if status := in.call(t, "POST", "/orders/retry", `{}`, auth, &res); status != 200 || res.Requeued != 1 {
			t.Fatalf("bulk retry: %d %+v, want SUP-3 alone requeued", status, res)
		}
		if l := in.lineState(t, "SUP-3"); l.State != fulfillment.StateEnrolled {
			t.Errorf("SUP-3 %+v, want enrolled once retried", l)
		}
		if _, st := in.order(t, "GET", "SUP-2"); st.Lines[0].State != fulfillment.StateDismissed || !enrollFailed(st.Lines[0]) {
			t.Errorf("SUP-2 after the bulk retry %+v, want dismissed, its enrollment still failed", st.Lines[0])
		}
		// The shop delivers the order again (an order.updated): accepted,
		// but the dismissed line's enrollment ends canceled, not enrolled.
		place(t, a, emailOrder("SUP-2", "Typo@Example.com", false))
		waitFor(t, "SUP-2's enrollment canceled", 30*time.Second, func() bool {
			_, st := in.order(t, "GET", "SUP-2")
			return len(st.Lines) == 1 && slices.ContainsFunc(st.Lines[0].Tasks, func(task fulfillment.Task) bool {
				return task.Kind == seat.KindEnroll && task.State == fulfillment.StateCanceled
			})
		})
		if _, st := in.order(t, "GET", "SUP-2"); st.Lines[0].State != fulfillment.StateDismissed {
			t.Errorf("SUP-2 after a redelivery %+v, want dismissed", st.Lines[0])
		}
		if e, ok := fake.Enrollment("typo", demoCourse); ok && e.IsActive {
			t.Errorf("the dismissed line's learner was enrolled: %+v", e)
		}
	})

	t.Run("the page's Dismiss button, refused from another site", func(t *testing.T) {
		place(t, a, emailOrder("SUP-4", "gone@example.com", false))
		if l := in.lineState(t, "SUP-4"); l.State != fulfillment.StateFailed {
			t.Fatalf("SUP-4 %+v, want failed", l)
		}
		form := url.Values{"course_id": {demoCourse}, "reason": {"duplicate of SUP-1"}}
		if status := in.postForm(t, "/admin/orders/default/SUP-4/dismiss", form, "cross-site"); status != http.StatusForbidden {
			t.Errorf("cross-site dismiss: %d, want 403", status)
		}
		if status := in.postForm(t, "/admin/orders/default/SUP-4/dismiss", url.Values{"course_id": {demoCourse}}, "same-origin"); status != http.StatusBadRequest {
			t.Errorf("dismiss without a reason: %d, want 400", status)
		}
		if status := in.postForm(t, "/admin/orders/default/SUP-4/dismiss", form, "same-origin"); status != http.StatusSeeOther {
			t.Fatalf("dismiss: %d, want 303 to the order's page", status)
		}
		if l := in.waitLine(t, "SUP-4", fulfillment.StateDismissed); l.Recorded["dismiss_reason"] != "duplicate of SUP-1" {
			t.Errorf("SUP-4 %+v, want dismissed with the reason", l)
		}
		if p := in.page(t, "/admin/orders/default/SUP-4", auth); strings.Contains(p, `action="/admin/orders/default/SUP-4/dismiss"`) || !strings.Contains(p, "duplicate of SUP-1") {
			t.Errorf("the dismissed line's page offers Dismiss again or hides the reason:\n%s", p)
		}
		req, _ := http.NewRequest(http.MethodGet, in.base+"/admin/orders?emial=x", nil)
		req.Header.Set("Authorization", auth)
		if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 400 {
			t.Errorf("page with a misspelt parameter: %v %v, want 400", resp, err)
		} else {
			resp.Body.Close()
		}
	})

	t.Run("POST /orders/return names the learner by email, in any case", func(t *testing.T) {
		status, _ := in.send(t, "/orders/return", `{"course_id":"`+demoCourse+`","course_mode":"verified","order_number":"SUP-1","email":"HONOR@example.com"}`)
		if status != 200 {
			t.Fatalf("return by email: %d", status)
		}
		if l := in.lineState(t, "SUP-1"); l.State != fulfillment.StateReturned {
			t.Fatalf("SUP-1 %+v, want returned", l)
		}
		if e, _ := fake.Enrollment("honor", demoCourse); e.IsActive {
			t.Errorf("enrollment %+v, want inactive", e)
		}
		// A learner still awaiting their account, returned by support
		// in another case: the enrollment_allowed under the order's
		// spelling goes, so that registering later enrolls nobody.
		place(t, a, emailOrder("SUP-5", "Newcomer@Example.com", true))
		in.waitLine(t, "SUP-5", fulfillment.StateAwaitingAccount)
		if got := fake.Allowed("Newcomer@Example.com"); len(got) != 1 {
			t.Fatalf("enrollment_allowed %+v, want one", got)
		}
		status, _ = in.send(t, "/orders/return", `{"course_id":"`+demoCourse+`","course_mode":"verified","order_number":"SUP-5","email":"newcomer@example.com"}`)
		if l := in.lineState(t, "SUP-5"); status != 200 || l.State != fulfillment.StateReturned {
			t.Fatalf("return of SUP-5: %d %+v, want returned", status, l)
		}
		if got := fake.Allowed("Newcomer@Example.com"); len(got) != 0 {
			t.Errorf("enrollment_allowed %+v left under the order's spelling, want none", got)
		}
		var errs map[string][]string
		status = in.call(t, "POST", "/orders/return", `{"course_id":"`+demoCourse+`","course_mode":"verified","order_number":"SUP-9","email":"not an email"}`, auth, &errs)
		if status != 400 || len(errs["email"]) != 1 {
			t.Errorf("bad email: %d %v, want 400 naming email", status, errs)
		}
	})
}

// postForm posts an admin page's form as a browser would, with its
// Sec-Fetch-Site, and returns the status (redirects not followed).
func (in *instance) postForm(t *testing.T, path string, form url.Values, fetchSite string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, in.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Authorization", supportToken(t))
	req.Header.Set("Sec-Fetch-Site", fetchSite)
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// page reads an admin page's HTML.
func (in *instance) page(t *testing.T, path, auth string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, in.base+path, nil)
	req.Header.Set("Authorization", auth)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b)
	}
	return string(b)
}

// A WooCommerce order whose buyer typed "Learner62100@Example.COM" enrolls
// the account registered as "learner62100@example.com", and support finds
// its lines by that email in another case; an order for an email without an
// account waits for it, as integrations enroll unregistered learners unless
// told not to. Both tiers, through the real webhook endpoint.
func TestShopOrderEmailCase(t *testing.T) {
	t.Parallel()
	for _, ledger := range []bool{false, true} {
		t.Run(map[bool]string{false: "redis", true: "ledger"}[ledger], func(t *testing.T) {
			t.Parallel()
			e := startShops(t, "all", ledger, 62100, 1)
			body := wooOrder(t, 910, "Learner62100@Example.COM")
			if a := e.post(t, "woo", body, wooHeaders("order.created", body, wooSecret)); a.Status != 200 || len(a.Lines) != 2 {
				t.Fatalf("%+v", a)
			}
			waitFor(t, "both courses enrolled", 30*time.Second, func() bool {
				d, ok1 := e.lms.Enrollment("learner62100", demoCourse)
				o, ok2 := e.lms.Enrollment("learner62100", otherCourse)
				return ok1 && ok2 && d.IsActive && o.IsActive
			})
			var page pipeline.Page
			if status := e.call(t, "GET", "/orders?email=LEARNER62100%40example.com", "", supportToken(t), &page); status != 200 || len(page.Lines) != 2 {
				t.Fatalf("?email= in another case: %d %+v, want the order's two lines", status, page.Lines)
			}
			for _, l := range page.Lines {
				if l.OrderNumber != "woo-910" || l.Learner.Email != "Learner62100@Example.COM" {
					t.Errorf("line %+v, want woo-910 of Learner62100@Example.COM", l)
				}
			}

			// No account has this email: by default the line waits for one.
			body = wooOrder(t, 911, "Newcomer@Example.com")
			if a := e.post(t, "woo", body, wooHeaders("order.created", body, wooSecret)); a.Status != 200 {
				t.Fatalf("%+v", a)
			}
			waitFor(t, "woo-911 awaiting the account", 30*time.Second, func() bool {
				_, st := e.order(t, "GET", "woo-911")
				return len(st.Lines) == 2 && st.Lines[0].State == fulfillment.StateAwaitingAccount &&
					st.Lines[1].State == fulfillment.StateAwaitingAccount
			})
			if got := e.lms.Allowed("Newcomer@Example.com"); len(got) != 2 {
				t.Errorf("enrollment_allowed %+v, want one per course", got)
			}
		})
	}
}
