package main

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/lms/lmstest"
)

// `config check --lms` asks the (fake) LMS for every mapped product's
// course run: a run it does not have and a mode the run does not offer are
// each reported, and the check fails; with every product offered it passes.
func TestConfigCheckLMS(t *testing.T) {
	t.Parallel()
	fake := lmstest.NewDemo(testSecret)
	fake.AddCourse("course-v1:edX+AuditOnly+2026", lmstest.CourseRun{Name: "audit only", Modes: []string{"audit"}})
	lmsURL := lmstest.Start(t, fake).URL
	check := func(products string) (string, error) {
		path := testConfig(t, "redis://127.0.0.1:6379/2", lmsURL, "q", `integrations:
  - name: woo
    type: woocommerce
    secrets: ["woo-secret-0123456789abcdef"]
    products:
`+products)
		var out bytes.Buffer
		err := run(context.Background(), []string{"--config", path, "config", "check", "--lms"},
			func(k string) string { return testEnv[k] }, &out, io.Discard)
		return out.String(), err
	}

	out, err := check(`      "DEMO": {course_id: "course-v1:edX+DemoX+Demo_Course", mode: verified}
      "GONE": {course_id: "course-v1:edX+Gone+2020"}
      "AUDIT": {course_id: "course-v1:edX+AuditOnly+2026", mode: audit}
      "AUDIT-PAID": {course_id: "course-v1:edX+AuditOnly+2026"}
`)
	if err == nil || !strings.Contains(err.Error(), "2 of 4 mapped products") {
		t.Errorf("err = %v, want 2 of 4 missing", err)
	}
	for _, want := range []string{
		`  ok      woo "DEMO": course-v1:edX+DemoX+Demo_Course (verified)`,
		`  MISSING woo "GONE": course-v1:edX+Gone+2020 (verified) at ` + lmsURL + `: the LMS has no such course run`,
		`  ok      woo "AUDIT": course-v1:edX+AuditOnly+2026 (audit)`,
		`  MISSING woo "AUDIT-PAID": course-v1:edX+AuditOnly+2026 (verified) at ` + lmsURL + `: the course run does not offer mode verified (it offers audit)`,
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// One question per course run, however many products sell it.
	if n := fake.Count(lmstest.Course); n != 3 {
		t.Errorf("%d course details calls, want 3 (one per course run)", n)
	}

	out, err = check(`      "DEMO": {course_id: "course-v1:edX+DemoX+Demo_Course", mode: verified}
      "LEGACY": {course_id: "edX/DemoX/2014", mode: audit}
`)
	if err != nil || !strings.Contains(out, "lms check OK: 2 mapped products") {
		t.Errorf("all offered: err %v, output:\n%s", err, out)
	}
}

// An LMS that does not answer fails the check instead of passing it.
func TestConfigCheckLMSUnreachable(t *testing.T) {
	t.Parallel()
	path := testConfig(t, "redis://127.0.0.1:6379/2", "http://"+freeAddr(t), "q", `integrations:
  - {name: woo, type: woocommerce, secrets: ["woo-secret-0123456789abcdef"], products: {"DEMO": {course_id: "course-v1:edX+DemoX+Demo_Course"}}}
`)
	var out bytes.Buffer
	err := run(context.Background(), []string{"--config", path, "config", "check", "--lms"},
		func(k string) string { return testEnv[k] }, &out, io.Discard)
	if err == nil || !strings.Contains(out.String(), "the LMS did not answer") {
		t.Errorf("err %v, output:\n%s", err, out.String())
	}
}
