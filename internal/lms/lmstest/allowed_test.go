package lmstest

import (
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// The fake's enrollment_allowed and accounts by email answer as docs/lms.md#accounts
// and docs/lms.md#enrollment-allowed say, and registration auto-enrolls in the default mode.
func TestEnrollmentAllowedContract(t *testing.T) {
	s := NewDemo("s")
	srv := Start(t, s)
	tok := accessToken(t, srv.URL)
	call := func(method, path, body string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
		req.Header.Set("Authorization", "JWT "+tok)
		req.Header.Set("Content-Type", "application/json")
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	const course = "course-v1:edX+DemoX+Demo_Course"
	allow := `{"email":"new@example.com","course_id":"` + course + `","auto_enroll":true}`
	steps := []struct {
		method, path, body string
		status             int
		contains           string
	}{
		{"POST", "/api/enrollment/v1/enrollment_allowed", allow, 404, ""}, // the trailing slash is required
		{"POST", "/api/enrollment/v1/enrollment_allowed/", `{"course_id":"` + course + `"}`, 400, `"email":["This field is required."]`},
		{"POST", "/api/enrollment/v1/enrollment_allowed/", allow, 201, `"auto_enroll":true`},
		{"POST", "/api/enrollment/v1/enrollment_allowed/", allow, 409, `"message"`},
		{"GET", "/api/enrollment/v1/enrollment_allowed/?email=new%40example.com", "", 200, `"course_id":"` + course + `"`},
		{"GET", "/api/enrollment/v1/enrollment_allowed/", "", 400, ""},
		{"GET", "/api/user/v1/accounts?email=new%40example.com", "", 404, ""},
		{"DELETE", "/api/enrollment/v1/enrollment_allowed/", `{"email":"new@example.com","course_id":"` + course + `"}`, 204, ""},
		{"DELETE", "/api/enrollment/v1/enrollment_allowed/", `{"email":"new@example.com","course_id":"` + course + `"}`, 404, ""},
		{"POST", "/api/enrollment/v1/enrollment_allowed/", allow, 201, ""},
	}
	for _, st := range steps {
		status, body := call(st.method, st.path, st.body)
		if status != st.status || !strings.Contains(body, st.contains) {
			t.Errorf("%s %s: %d %s, want %d containing %q", st.method, st.path, status, body, st.status, st.contains)
		}
	}
	s.Register(500, "newbie", "new@example.com")
	if e, ok := s.Enrollment("newbie", course); !ok || !e.IsActive || e.Mode != "audit" {
		t.Errorf("after registration: %+v %v, want auto-enrolled in audit", e, ok)
	}
	status, body := call("GET", "/api/user/v1/accounts?email=new%40example.com", "")
	var accounts []map[string]any
	if status != 200 || json.Unmarshal([]byte(body), &accounts) != nil || len(accounts) != 1 || accounts[0]["username"] != "newbie" {
		t.Errorf("account by email: %d %s", status, body)
	}
	s.Retire("new@example.com")
	if status, body := call("GET", "/api/user/v1/accounts?email=new%40example.com", ""); status != 404 || !strings.Contains(body, "error_msg") {
		t.Errorf("retired email: %d %s, want 404 with error_msg", status, body)
	}
}

func accessToken(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.PostForm(base+"/oauth2/access_token", url.Values{"grant_type": {"client_credentials"},
		"client_id": {"coordinator-worker"}, "client_secret": {"s"}, "token_type": {"jwt"}})
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tok struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil || tok.AccessToken == "" {
		t.Fatalf("token: %v", err)
	}
	return tok.AccessToken
}
