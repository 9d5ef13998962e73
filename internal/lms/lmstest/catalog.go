package lmstest

import (
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Catalog is what the Course API says of a course run, and its modes'
// prices.
type Catalog struct {
	Org            string // default: the key's org part
	Hidden         bool   // catalog visibility none: listed to staff only
	InvitationOnly bool   // listed to staff only
	Start, End     time.Time
	EnrollmentEnd  time.Time
	// Prices gives modes a name, price, currency and expiry; a mode
	// without one is free, in usd, named by its slug.
	Prices map[string]ModePrice
}

// ModePrice is a course mode's sale terms.
type ModePrice struct {
	Name     string
	MinPrice int64  // whole currency units, as the LMS stores it
	Currency string // lower case; default usd
	Expires  time.Time
}

// maxCoursePage is the Course API's max_page_size.
const maxCoursePage = 100

// SetPrice sets a mode's sale terms in a course run the fake knows.
func (s *Server) SetPrice(id, mode string, p ModePrice) {
	s.locked(func() {
		c := s.courses[id]
		if c.Catalog.Prices == nil {
			c.Catalog.Prices = map[string]ModePrice{}
		}
		c.Catalog.Prices[mode] = p
	})
}

// SetCatalog replaces a course run's catalog entry.
func (s *Server) SetCatalog(id string, cat Catalog) { s.locked(func() { s.courses[id].Catalog = cat }) }

// optionalAuth lets anonymous callers through (client ""), and checks a
// token when one is sent, as the Course API does.
func (s *Server) optionalAuth(h handler) handler {
	return func(r *http.Request, body []byte, client string) answer {
		if r.Header.Get("Authorization") == "" {
			return h(r, body, "")
		}
		return s.authed(h)(r, body, client)
	}
}

// courseList implements GET /api/courses/v1/courses/: the runs
// the caller may see (staff: hidden and invitation-only ones too), of org
// (case-insensitive) when given, by id, paged with page and page_size; a page
// past the end is 404.
func (s *Server) courseList(r *http.Request, _ []byte, client string) answer {
	q := r.URL.Query()
	size, page := maxCoursePage, 1
	if v := q.Get("page_size"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return answer{status: 404, body: map[string]string{"detail": "Invalid page."}}
		}
		size = min(n, maxCoursePage)
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return answer{status: 404, body: map[string]string{"detail": "Invalid page."}}
		}
		page = n
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	staff := client != "" && s.clients[client].Staff
	var ids []string
	for id, c := range s.courses {
		if (c.Catalog.Hidden || c.Catalog.InvitationOnly) && !staff {
			continue
		}
		if org := q.Get("org"); org != "" && !strings.EqualFold(org, orgOf(id, c)) {
			continue
		}
		ids = append(ids, id)
	}
	slices.Sort(ids)
	pages := max(1, (len(ids)+size-1)/size)
	if page > pages {
		return answer{status: 404, body: map[string]string{"detail": "Invalid page."}}
	}
	link := func(p int) any {
		if p < 1 || p > pages {
			return nil
		}
		u := *r.URL
		u.Scheme, u.Host = "http", r.Host
		v := u.Query()
		v.Set("page", strconv.Itoa(p))
		u.RawQuery = v.Encode()
		return u.String()
	}
	results := []map[string]any{}
	for _, id := range ids[(page-1)*size : min(page*size, len(ids))] {
		results = append(results, s.runJSON(id, s.courses[id]))
	}
	return answer{status: 200, body: map[string]any{
		"results": results,
		"pagination": map[string]any{"next": link(page + 1), "previous": link(page - 1),
			"count": len(ids), "num_pages": pages},
	}}
}

// orgOf is a run's org: its catalog's, else the key's first part.
func orgOf(id string, c *CourseRun) string {
	if c.Catalog.Org != "" {
		return c.Catalog.Org
	}
	org, _, _ := strings.Cut(strings.TrimPrefix(id, "course-v1:"), "+")
	org, _, _ = strings.Cut(org, "/")
	return org
}

func (s *Server) runJSON(id string, c *CourseRun) map[string]any {
	return map[string]any{
		"id": id, "course_id": id, "name": c.Name, "org": orgOf(id, c), "number": "",
		"short_description": "", "start": date(c.Catalog.Start), "end": date(c.Catalog.End),
		"enrollment_start": nil, "enrollment_end": date(c.Catalog.EnrollmentEnd),
		"hidden": c.Catalog.Hidden, "invitation_only": c.Catalog.InvitationOnly, "pacing": "instructor",
		"media": map[string]any{"image": map[string]any{"raw": "http://lms.example/asset/" + id + ".png"}},
	}
}

// detailsJSON is the enrollment API's course_details: the modes valid at now,
// or every mode with includeExpired.
func (c *CourseRun) detailsJSON(id string, now time.Time, includeExpired bool) map[string]any {
	modes := make([]map[string]any, 0, len(c.Modes))
	for _, m := range c.Modes {
		p := c.Catalog.Prices[m]
		if !p.Expires.IsZero() && p.Expires.Before(now) && !includeExpired {
			continue
		}
		name, cur := orDefault(p.Name, m), orDefault(p.Currency, "usd")
		modes = append(modes, map[string]any{"slug": m, "name": name, "min_price": p.MinPrice, "suggested_prices": "",
			"currency": cur, "expiration_datetime": date(p.Expires), "description": nil, "sku": nil, "bulk_sku": nil})
	}
	return map[string]any{"course_id": id, "course_name": c.Name, "enrollment_start": nil,
		"enrollment_end": date(c.Catalog.EnrollmentEnd), "course_start": date(c.Catalog.Start),
		"course_end": date(c.Catalog.End), "invite_only": c.Catalog.InvitationOnly, "course_modes": modes}
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// date writes a time as the LMS's serializers do; the zero time is null.
func date(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UTC().Format("2006-01-02T15:04:05Z")
}
