package main

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/config"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/store/postgres"
)

// maxCourseRetryAfter bounds how long `config check --lms` waits when the
// LMS throttles its course details endpoint (anonymous callers get a few
// dozen calls a minute).
const maxCourseRetryAfter = time.Minute

// configCheckLMS is `config check --lms`: the offline check, then, for every
// product an integration maps, whether the LMS of its site has the course
// run and offers the mode (GET /api/enrollment/v1/course/{course_id}, which
// needs no token). A shop selling a seat the LMS cannot give fails every
// such order; this finds it before the first sale.
func configCheckLMS(ctx context.Context, cfg config.Config, stdout io.Writer) error {
	if err := configCheck(cfg, stdout); err != nil {
		return err
	}
	lmsURLs, err := siteLMSURLs(ctx, cfg)
	if err != nil {
		return err
	}
	client := &http.Client{Timeout: cfg.LMS.Timeout.D(), CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}
	type run struct{ site, course string }
	modes := map[run]courseModes{} // each course run is asked once
	checked, missing := 0, 0
	fmt.Fprintln(stdout, "lms check:")
	for _, in := range cfg.Integrations {
		for _, sku := range slices.Sorted(maps.Keys(in.Products)) {
			for _, it := range in.Products[sku] {
				mode := cmp.Or(it.Mode, in.CourseMode)
				if it.CourseID == "" {
					// A course (an entitlement): the enrollment API knows
					// course runs only; the LMS checks the course when the
					// entitlement is made.
					fmt.Fprintf(stdout, "  skip    %s %q: course %s (%s): an entitlement, not checked\n", in.Name, sku, it.CourseUUID, mode)
					continue
				}
				r := run{in.Site, it.CourseID}
				m, ok := modes[r]
				if !ok {
					m = fetchCourseModes(ctx, client, lmsURLs[in.Site], it.CourseID)
					modes[r] = m
				}
				checked++
				line := fmt.Sprintf("%s %q: %s (%s) at %s", in.Name, sku, it.CourseID, mode, config.RedactURL(lmsURLs[in.Site]))
				switch {
				case m.err != nil:
					missing++
					fmt.Fprintf(stdout, "  MISSING %s: %v\n", line, m.err)
				case !slices.Contains(m.slugs, mode):
					missing++
					fmt.Fprintf(stdout, "  MISSING %s: the course run does not offer mode %s (it offers %s)\n", line, mode, strings.Join(m.slugs, ", "))
				default:
					fmt.Fprintf(stdout, "  ok      %s\n", line)
				}
			}
		}
	}
	if checked == 0 {
		fmt.Fprintln(stdout, "  no integration maps a product: nothing to ask the LMS")
		return nil
	}
	if missing > 0 {
		return fmt.Errorf("config check --lms: %d of %d mapped products name a course run or mode the LMS does not have", missing, checked)
	}
	fmt.Fprintf(stdout, "lms check OK: %d mapped products\n", checked)
	return nil
}

// siteLMSURLs is the LMS root URL of every site an integration uses: the
// YAML lms: section for default, the sites table for the others.
func siteLMSURLs(ctx context.Context, cfg config.Config) (map[string]string, error) {
	urls := map[string]string{fulfillment.DefaultSite: cfg.LMS.URL}
	var store *postgres.Sites
	for _, in := range cfg.Integrations {
		if _, ok := urls[in.Site]; ok || len(in.Products) == 0 {
			continue
		}
		if store == nil {
			pool, err := postgres.Connect(ctx, cfg.Database.URL)
			if err != nil {
				return nil, err
			}
			defer pool.Close()
			key, _ := config.SecretKeyBytes(cfg.Database.SecretKey)
			if store, err = postgres.NewSites(pool, key); err != nil {
				return nil, err
			}
		}
		site, err := store.Get(ctx, in.Site)
		if err != nil {
			return nil, fmt.Errorf("config check --lms: integration %s: %w", in.Name, err)
		}
		urls[in.Site] = site.LMSURL
	}
	return urls, nil
}

// courseModes is what the LMS said of a course run: its mode slugs, or why
// it has none to offer.
type courseModes struct {
	slugs []string
	err   error
}

// fetchCourseModes asks the LMS for a course run's modes, waiting once for
// Retry-After when throttled.
func fetchCourseModes(ctx context.Context, client *http.Client, lmsURL, courseID string) courseModes {
	u := strings.TrimRight(lmsURL, "/") + "/api/enrollment/v1/course/" + url.PathEscape(courseID)
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
		if err != nil {
			return courseModes{err: fmt.Errorf("course details request: %w", err)}
		}
		req.Header.Set("Accept", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return courseModes{err: fmt.Errorf("the LMS did not answer: %w", err)}
		}
		body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		_ = resp.Body.Close()
		switch {
		case err != nil:
			return courseModes{err: fmt.Errorf("read the LMS's answer: %w", err)}
		case resp.StatusCode == http.StatusTooManyRequests && attempt == 0:
			wait, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
			select {
			case <-time.After(min(max(time.Duration(wait)*time.Second, time.Second), maxCourseRetryAfter)):
				continue
			case <-ctx.Done():
				return courseModes{err: ctx.Err()}
			}
		case resp.StatusCode == http.StatusBadRequest, resp.StatusCode == http.StatusNotFound:
			// The LMS answers 400 "No course found for course ID" for an
			// unknown run.
			return courseModes{err: errors.New("the LMS has no such course run")}
		case resp.StatusCode != http.StatusOK:
			return courseModes{err: fmt.Errorf("the LMS answered %d", resp.StatusCode)}
		}
		var details struct {
			CourseModes []struct {
				Slug string `json:"slug"`
			} `json:"course_modes"`
		}
		if err := json.Unmarshal(body, &details); err != nil {
			return courseModes{err: errors.New("the LMS's course details are not JSON")}
		}
		var m courseModes
		for _, cm := range details.CourseModes {
			m.slugs = append(m.slugs, cm.Slug)
		}
		return m
	}
}
