package lms

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
)

// A course key goes into the read-enrollment URL escaped, so the LMS reads
// back the key it was given, and a key built to climb out of the API is
// refused before any request is made.
func TestReadEnrollmentPath(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.AddCourse("edX/Demo%X/2014", lmstest.CourseRun{Name: "percent", Modes: []string{"audit"}})
	var mu sync.Mutex
	var seen []string // every request URI as sent
	srv := lmstest.Start(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen = append(seen, r.RequestURI)
		mu.Unlock()
		fake.ServeHTTP(w, r)
	}))
	c := newClient(t, fake, func(o *Options) { o.BaseURL, o.TokenURL = srv.URL, srv.URL+"/oauth2/access_token" })
	ctx := context.Background()

	for _, key := range []string{demoCourse, "edX/DemoX/2014", "edX/Demo%X/2014"} {
		fake.Enroll(lmstest.Enrollment{User: "edx", CourseID: key, Mode: "audit", IsActive: true})
		e, err := c.ReadEnrollment(ctx, "edx", key, "req-1")
		if err != nil || e == nil || e.Mode != "audit" {
			t.Errorf("ReadEnrollment(%q) = %+v, %v; want the active audit enrollment", key, e, err)
		}
	}
	mu.Lock()
	sent := strings.Join(seen, "\n")
	mu.Unlock()
	for _, want := range []string{
		"/api/enrollment/v1/enrollment/edx,course-v1:edX+DemoX+Demo_Course", // '+' and ':' as they are (docs/lms.md#reading-an-enrollment-back)
		"/api/enrollment/v1/enrollment/edx,edX%2FDemoX%2F2014",
		"/api/enrollment/v1/enrollment/edx,edX%2FDemo%25X%2F2014",
	} {
		if !strings.Contains(sent, want) {
			t.Errorf("no request for %s; sent:\n%s", want, sent)
		}
	}

	before := fake.Count(lmstest.Read)
	for _, key := range []string{
		"a/b/%2e%2e%2f%2e%2e%2f%2e%2e%2fadmin",
		"../../..",
		"edX/./2014",
		"a/%2E%2E/c",
		"a/b/%252e%252e%252fx",
		"a/b/%5c..",
		"a/b/%25252525252e",
	} {
		_, err := c.ReadEnrollment(ctx, "edx", key, "req-1")
		if !pipeline.IsPermanent(err) || !errors.Is(err, errPathKey) {
			t.Errorf("ReadEnrollment(%q): %v, want a permanent refusal", key, err)
		}
	}
	if n := fake.Count(lmstest.Read) - before; n != 0 {
		t.Errorf("%d read-enrollment requests for refused keys, want 0", n)
	}
}
