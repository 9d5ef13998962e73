package lms

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/pipeline"
)

func ret(mode string) fulfillment.Return {
	return fulfillment.Return{Site: "default", OrderNumber: "EDX-1", CourseID: demoCourse, CourseMode: mode, LMSUserID: 3, RequestID: "req-r"}
}

// Each unenroll path of docs/lms.md#unenroll against the fake LMS.
func TestUnenroll(t *testing.T) {
	tests := []struct {
		name        string
		setup       func(*lmstest.Server)
		ret         fulfillment.Return
		wantErr     string // "" for success
		permanent   bool
		posts       int  // deactivating POSTs
		wantActive  bool // the enrollment's state afterwards, when one exists
		wantPresent bool
	}{
		{name: "active in the bought mode: deactivated", setup: enrolled("verified", true), ret: ret("verified"), posts: 1, wantPresent: true},
		{name: "no enrollment: done without a POST", ret: ret("verified")},
		{name: "already inactive: done without a POST", setup: enrolled("verified", false), ret: ret("verified"), wantPresent: true},
		{name: "another mode active: mode mismatch is done", setup: enrolled("audit", true), ret: ret("verified"), posts: 1, wantActive: true, wantPresent: true},
		{name: "by username", setup: enrolled("verified", true), ret: func() fulfillment.Return { r := ret("verified"); r.LMSUserID, r.Username = 0, "edx"; return r }(),
			posts: 1, wantPresent: true},
		{name: "unknown learner is permanent", ret: func() fulfillment.Return { r := ret("verified"); r.LMSUserID = 999; return r }(),
			wantErr: "no LMS user with lms_user_id 999", permanent: true},
		{name: "read-back 503 is transient", setup: func(s *lmstest.Server) {
			enrolled("verified", true)(s)
			s.Script(lmstest.Read, lmstest.Reply{Status: 503})
		}, ret: ret("verified"), wantErr: "503", wantActive: true, wantPresent: true},
		{name: "deactivation 429 is transient", setup: func(s *lmstest.Server) {
			enrolled("verified", true)(s)
			s.Script(lmstest.Enroll, lmstest.Reply{Status: 429, Header: map[string]string{"Retry-After": "3"}})
		}, ret: ret("verified"), wantErr: "429", posts: 1, wantActive: true, wantPresent: true},
		{name: "deactivation 403 is permanent", setup: func(s *lmstest.Server) {
			enrolled("verified", true)(s)
			s.Script(lmstest.Enroll, lmstest.Reply{Status: 403, Body: `{"message":"Users from this location cannot access the course."}`})
		}, ret: ret("verified"), wantErr: "cannot access", permanent: true, posts: 1, wantActive: true, wantPresent: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fake := lmstest.NewDemo("s")
			if tt.setup != nil {
				tt.setup(fake)
			}
			c := newClient(t, fake, nil)
			err := c.Unenroll(context.Background(), tt.ret)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("Unenroll: %v", err)
			case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
				t.Fatalf("Unenroll error %v, want %q", err, tt.wantErr)
			case err != nil && pipeline.IsPermanent(err) != tt.permanent:
				t.Errorf("permanent = %v, want %v", pipeline.IsPermanent(err), tt.permanent)
			}
			if n := fake.Count(lmstest.Deactivate); n != tt.posts {
				t.Errorf("%d deactivating POSTs, want %d", n, tt.posts)
			}
			e, present := fake.Enrollment("edx", demoCourse)
			if present != tt.wantPresent || (present && e.IsActive != tt.wantActive) {
				t.Errorf("enrollment afterwards %+v (present %v), want present %v active %v", e, present, tt.wantPresent, tt.wantActive)
			}
		})
	}
}

// The deactivation sends the bought mode and is_active false, and nothing
// that would change the learner's other settings.
func TestUnenrollBody(t *testing.T) {
	fake := lmstest.NewDemo("s")
	enrolled("verified", true)(fake)
	c := newClient(t, fake, nil)
	if err := c.Unenroll(context.Background(), ret("verified")); err != nil {
		t.Fatal(err)
	}
	calls := fake.Calls(lmstest.Enroll)
	if len(calls) != 1 {
		t.Fatalf("%d POSTs", len(calls))
	}
	var body map[string]any
	if err := json.Unmarshal(calls[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	if body["is_active"] != false || body["mode"] != "verified" || body["user"] != "edx" {
		t.Errorf("body %s", calls[0].Body)
	}
	for _, absent := range []string{"email_opt_in", "enrollment_attributes"} {
		if _, ok := body[absent]; ok {
			t.Errorf("body sends %s: %s", absent, calls[0].Body)
		}
	}
	if got := calls[0].Header.Get("X-Request-ID"); got != "req-r" {
		t.Errorf("X-Request-ID %q", got)
	}
}

func enrolled(mode string, active bool) func(*lmstest.Server) {
	return func(s *lmstest.Server) {
		s.Enroll(lmstest.Enrollment{User: "edx", CourseID: demoCourse, Mode: mode, IsActive: active})
	}
}
