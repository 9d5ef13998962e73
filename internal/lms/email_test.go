package lms

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
)

// Look-ups by email (docs/lms.md#accounts): an account is found and cached; no account,
// an empty list and a retired email are all "no account", never cached.
func TestUsernameByEmail(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.Register(100, "plus", "a+b@example.com")
	fake.Register(101, "gone", "gone@example.com")
	fake.Retire("gone@example.com")
	c := newClient(t, fake, nil)
	ctx := context.Background()

	for range 2 {
		if u, err := c.UsernameByEmail(ctx, "  a+b@example.com ", "r"); err != nil || u != "plus" {
			t.Fatalf("by email: %q %v, want plus", u, err)
		}
	}
	if n := fake.Count(lmstest.Account); n != 1 {
		t.Errorf("%d look-ups for two resolutions, want 1 (cached)", n)
	}
	if p := fake.Calls(lmstest.Account)[0].Path; p != "/api/user/v1/accounts?email=a%2Bb%40example.com" {
		t.Errorf("look-up path %q: the address must arrive as given, '+' included", p)
	}

	var none *NoAccountError
	for name, email := range map[string]string{"unknown": "nobody@example.com", "retired": "gone@example.com"} {
		if _, err := c.UsernameByEmail(ctx, email, "r"); !errors.As(err, &none) || none.Email != email || !pipeline.IsPermanent(err) {
			t.Errorf("%s: %v, want a permanent NoAccountError", name, err)
		}
	}
	fake.Script(lmstest.Account, lmstest.Reply{Status: 200, Body: `[]`})
	if _, err := c.UsernameByEmail(ctx, "empty@example.com", "r"); !errors.As(err, &none) {
		t.Errorf("empty list: %v, want NoAccountError", err)
	}
	fake.Script(lmstest.Account, lmstest.Reply{Status: 503})
	if _, err := c.UsernameByEmail(ctx, "nobody@example.com", "r"); err == nil || errors.As(err, &none) || pipeline.IsPermanent(err) {
		t.Errorf("503: %v, want a transient error", err)
	}
	// A miss is not cached: the account created afterwards is found.
	fake.Register(102, "newbie", "nobody@example.com")
	if u, err := c.UsernameByEmail(ctx, "nobody@example.com", "r"); err != nil || u != "newbie" {
		t.Errorf("after registration: %q %v, want newbie", u, err)
	}
}

// enrollment_allowed (docs/lms.md#enrollment-allowed): 201 and 409 are done, and so are 204 and
// 404 for the removal.
func TestEnrollmentAllowed(t *testing.T) {
	fake := lmstest.NewDemo("s")
	c := newClient(t, fake, nil)
	ctx := context.Background()
	for range 3 { // the repeat is remembered: no second POST
		if err := c.AllowEnrollment(ctx, "new@example.com", demoCourse, "r"); err != nil {
			t.Fatalf("allow: %v", err)
		}
	}
	// Another process (another cache) posts again: 409 is done too.
	if err := newClient(t, fake, nil).AllowEnrollment(ctx, "new@example.com", demoCourse, "r"); err != nil {
		t.Fatalf("allow from another process: %v", err)
	}
	var statuses []int
	for _, call := range fake.Calls(lmstest.Allowed) {
		statuses = append(statuses, call.Status)
	}
	if diff := cmp.Diff([]int{201, 409}, statuses); diff != "" {
		t.Errorf("statuses (-want +got):\n%s", diff)
	}
	var body map[string]any
	_ = json.Unmarshal(fake.Calls(lmstest.Allowed)[0].Body, &body)
	if diff := cmp.Diff(map[string]any{"email": "new@example.com", "course_id": demoCourse, "auto_enroll": true}, body); diff != "" {
		t.Errorf("body (-want +got):\n%s", diff)
	}
	if got := fake.Allowed("new@example.com"); len(got) != 1 || !got[0].AutoEnroll {
		t.Errorf("allowed %+v", got)
	}
	for range 2 {
		if err := c.DisallowEnrollment(ctx, "new@example.com", demoCourse, "r"); err != nil {
			t.Fatalf("disallow: %v", err)
		}
	}
	if got := fake.Allowed("new@example.com"); len(got) != 0 {
		t.Errorf("allowed after removal %+v", got)
	}
	// Removed, then allowed again (a new order): posted, not remembered.
	if err := c.AllowEnrollment(ctx, "new@example.com", demoCourse, "r"); err != nil || len(fake.Allowed("new@example.com")) != 1 {
		t.Errorf("allow after removal: %v %+v", err, fake.Allowed("new@example.com"))
	}
	fake.Script(lmstest.Allowed, lmstest.Reply{Status: 400, Body: `{"email":["Enter a valid email address."]}`})
	err := c.AllowEnrollment(ctx, "not-an-email", demoCourse, "r")
	if !pipeline.IsPermanent(err) || !strings.Contains(err.Error(), "email: Enter a valid email address.") {
		t.Errorf("400: %v, want permanent with the field's message", err)
	}
	fake.Script(lmstest.Allowed, lmstest.Reply{Status: 502})
	if err := c.AllowEnrollment(ctx, "other@example.com", demoCourse, "r"); err == nil || pipeline.IsPermanent(err) {
		t.Errorf("502: %v, want transient", err)
	}
}

func TestNextLook(t *testing.T) {
	tests := []struct {
		age      time.Duration
		wait     time.Duration
		giveUp   bool
		describe string
	}{
		{0, time.Minute, false, "just accepted"},
		{5 * time.Minute, time.Minute, false, "the first minutes"},
		{time.Hour, 6 * time.Minute, false, "an hour"},
		{10 * time.Hour, time.Hour, false, "ten hours"},
		{3 * 24 * time.Hour, 2 * time.Hour, false, "days: capped"},
		{AwaitAccountFor - time.Second, 2 * time.Hour, false, "the last look"},
		{AwaitAccountFor, 0, true, "30 days"},
	}
	for _, tt := range tests {
		wait, giveUp := NextLook(tt.age)
		if wait != tt.wait || giveUp != tt.giveUp {
			t.Errorf("%s: NextLook(%v) = %v, %v; want %v, %v", tt.describe, tt.age, wait, giveUp, tt.wait, tt.giveUp)
		}
	}
}

// Emails are case-insensitive: the LMS is asked for the address as given,
// then lower-cased when that found nothing, and the cache is shared by every
// spelling of it. An account registered with capitals is found as given.
func TestUsernameByEmailCase(t *testing.T) {
	fake := lmstest.NewDemo("s")
	fake.Register(100, "honor", "honor@example.com")
	fake.Register(101, "mixed", "Mixed@Example.com")
	c := newClient(t, fake, nil)
	ctx := context.Background()

	if u, err := c.UsernameByEmail(ctx, " Honor@Example.COM ", "r"); err != nil || u != "honor" {
		t.Fatalf("other case: %q %v, want honor", u, err)
	}
	var paths []string
	for _, call := range fake.Calls(lmstest.Account) {
		paths = append(paths, call.Path)
	}
	want := []string{"/api/user/v1/accounts?email=Honor%40Example.COM", "/api/user/v1/accounts?email=honor%40example.com"}
	if diff := cmp.Diff(want, paths); diff != "" {
		t.Errorf("look-ups (-want +got):\n%s", diff)
	}
	if u, err := c.UsernameByEmail(ctx, "HONOR@example.com", "r"); err != nil || u != "honor" || fake.Count(lmstest.Account) != 2 {
		t.Errorf("another spelling: %q %v after %d look-ups, want honor from the cache", u, err, fake.Count(lmstest.Account))
	}
	if u, err := c.UsernameByEmail(ctx, "Mixed@Example.com", "r"); err != nil || u != "mixed" || fake.Count(lmstest.Account) != 3 {
		t.Errorf("registered with capitals: %q %v after %d look-ups, want mixed at the first look", u, err, fake.Count(lmstest.Account))
	}
	var none *NoAccountError
	if _, err := c.UsernameByEmail(ctx, "Nobody@Example.com", "r"); !errors.As(err, &none) || none.Email != "Nobody@Example.com" {
		t.Errorf("nobody: %v, want NoAccountError naming the address as given", err)
	}
}
