package lms

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/lms/lmstest"
)

// The course list is read page by page through `next` (page_size 100),
// with the service user's token: staff see hidden and invitation-only runs,
// another application's user does not; a 429 is waited out.
func TestCatalogRuns(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.AddClient("learner-app", lmstest.Client{Secret: "l"})
	var want []string
	for i := range 205 {
		id := fmt.Sprintf("course-v1:Big+C%03d+2027", i)
		fake.AddCourse(id, lmstest.CourseRun{Name: id, Modes: []string{"verified"},
			Catalog: lmstest.Catalog{Hidden: i%50 == 0, InvitationOnly: i == 7}})
		want = append(want, id)
	}
	fake.Script(lmstest.Courses, lmstest.Reply{Status: 429, Header: map[string]string{"Retry-After": "1"}})
	read := func(c *Client, org string) []string {
		t.Helper()
		var got []string
		if err := c.CatalogRuns(t.Context(), org, func(r CatalogRun) error { got = append(got, r.ID); return nil }); err != nil {
			t.Fatal(err)
		}
		return got
	}
	staff := newClient(t, fake, func(o *Options) { o.Timeout = 5 * time.Second })
	if diff := cmp.Diff(want, read(staff, "BIG")); diff != "" {
		t.Errorf("staff, org BIG (-want +got):\n%s", diff)
	}
	var pages []string
	for _, c := range fake.Calls(lmstest.Courses) {
		u, _ := url.Parse(c.Path)
		pages = append(pages, fmt.Sprint(c.Status, " page=", u.Query().Get("page"), " size=", u.Query().Get("page_size")))
	}
	if diff := cmp.Diff([]string{"429 page= size=100", "200 page= size=100", "200 page=2 size=100", "200 page=3 size=100"}, pages); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	learner := newClient(t, fake, func(o *Options) { o.ClientID, o.ClientSecret = "learner-app", "l" })
	if got := read(learner, "big"); len(got) != 199 || slices.Contains(got, want[0]) || slices.Contains(got, want[7]) {
		t.Errorf("a non-staff user sees %d runs, want 199 (no hidden or invitation-only ones)", len(got))
	}
}

// The fake answers a page past the end 404, as the LMS does: a client must
// follow `next`, not count pages.
func TestCatalogPagePastTheEnd(t *testing.T) {
	fake := lmstest.NewDemo("s")
	srv := lmstest.Start(t, fake)
	for page, want := range map[string]int{"1": 200, "2": 404} {
		resp, err := http.Get(srv.URL + "/api/courses/v1/courses/?page_size=2&page=" + page)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("page %s: %d %v, want %d", page, resp.StatusCode, body, want)
		}
	}
}

// A run's modes, expired ones included, with their prices; an unknown run
// is a permanent error.
func TestCourseModes(t *testing.T) {
	fake := lmstest.NewDemo("s")
	end := time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC)
	fake.SetPrice(demoCourse, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 49, Currency: "eur", Expires: end})
	c := newClient(t, fake, nil)
	d, err := c.CourseModes(t.Context(), demoCourse)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(d.Modes, func(m CourseMode) bool { return m.Slug == "verified" })
	if i < 0 || d.Modes[i].MinPrice != 49 || d.Modes[i].Currency != "eur" || d.Modes[i].Expiration == nil || !d.Modes[i].Expiration.Equal(end) {
		t.Errorf("modes %+v, want verified 49 eur expired %s", d.Modes, end)
	}
	if _, err := c.CourseModes(t.Context(), "course-v1:edX+Nope+1"); err == nil || !err.(*Error).Permanent() {
		t.Errorf("unknown run: %v, want a permanent error", err)
	}
}
