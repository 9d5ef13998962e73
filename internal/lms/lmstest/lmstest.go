// Package lmstest is a fake Open edX LMS that follows the HTTP contracts in
// docs/lms.md: OAuth2 client-credentials JWTs, enrollments,
// enrollment read-back, account look-ups (by LMS user id and by email),
// course details and enrollment_allowed, with the real status codes and
// bodies (406 for unknown users, empty-body 404s, 200 on repeats, 400 after
// enrollment closes, 409 for a duplicate enrollment_allowed), and the LMS's
// registration: a new account whose email is allowed in a course is enrolled
// there in the course's default mode. Tests script faults into it; `cmd/fakelms` serves
// it for a local trial.
package lmstest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Endpoint names an LMS endpoint, for scripting faults and counting calls.
type Endpoint string

// The endpoints the fake serves.
const (
	Token   Endpoint = "token"
	Enroll  Endpoint = "enroll"
	Read    Endpoint = "read"
	Account Endpoint = "account"
	Course  Endpoint = "course"
	// Courses is the Course API's list, /api/courses/v1/courses/.
	Courses Endpoint = "courses"
	// Deactivate counts the enrollment POSTs with is_active false (they
	// are Enroll calls too).
	Deactivate Endpoint = "deactivate"
	// Allowed is /api/enrollment/v1/enrollment_allowed/ (GET, POST, DELETE).
	Allowed Endpoint = "enrollment_allowed"
)

// Reply is a scripted answer that replaces the next call to an endpoint. A
// reply with only a Delay holds the call back, then answers it normally.
type Reply struct {
	Status int
	Body   string
	Header map[string]string
	// Delay holds the answer back, to exceed the client's timeout.
	Delay time.Duration
	// Hangup closes the connection without answering.
	Hangup bool
}

// Client is an OAuth application registered with the fake.
type Client struct {
	Secret string
	Staff  bool // the application's user is staff: may enroll others
}

// CourseRun is a course run the fake knows.
type CourseRun struct {
	Name   string
	Modes  []string // offered mode slugs
	Closed bool     // enrollment closed: new enrollments and repeats get 400
	// Catalog is what the Course API lists and the modes' prices.
	Catalog Catalog
}

// Enrollment is the fake's record of one learner in one course run.
type Enrollment struct {
	User       string
	CourseID   string
	Mode       string
	IsActive   bool
	Created    time.Time
	Attributes []Attribute
}

// EnrollmentAllowed is the fake's record of an email allowed to enroll in a
// course run before it has an account (docs/lms.md#enrollment-allowed).
type EnrollmentAllowed struct {
	Email      string    `json:"email"`
	CourseID   string    `json:"course_id"`
	AutoEnroll bool      `json:"auto_enroll"`
	Created    time.Time `json:"created"`
}

// Attribute is an enrollment attribute as received.
type Attribute struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Value     string `json:"value"`
}

// Call is one request the fake received.
type Call struct {
	Endpoint Endpoint
	Method   string
	Path     string
	Header   http.Header
	Body     []byte
	Status   int
}

// Server is the fake LMS. Configure it before serving and through its methods
// while serving; all methods are safe for concurrent use.
type Server struct {
	mu          sync.Mutex
	clients     map[string]Client
	users       map[int64]string
	usernames   map[string]bool
	emails      map[string]int64 // an account's email → its id
	userEmails  map[int64]string // an account's id → its email
	retired     map[string]bool  // emails of retired accounts
	allowed     map[string]*EnrollmentAllowed
	courses     map[string]*CourseRun
	enrollments map[string]*Enrollment
	tokens      map[string]token
	script      map[Endpoint][]Reply
	calls       []Call
	counts      map[Endpoint]int
	noRecord    bool
	// entitlements.go
	entitlements  []*Entitlement
	slowCreates   int
	slowCreateFor time.Duration
	tokenTTL      time.Duration
	latency       time.Duration
	now           func() time.Time
}

type token struct {
	client  string
	expires time.Time
}

// New returns an empty fake LMS: no clients, users or courses.
func New() *Server {
	return &Server{
		clients:     map[string]Client{},
		users:       map[int64]string{},
		usernames:   map[string]bool{},
		emails:      map[string]int64{},
		userEmails:  map[int64]string{},
		retired:     map[string]bool{},
		allowed:     map[string]*EnrollmentAllowed{},
		courses:     map[string]*CourseRun{},
		enrollments: map[string]*Enrollment{},
		tokens:      map[string]token{},
		script:      map[Endpoint][]Reply{},
		counts:      map[Endpoint]int{},
		tokenTTL:    time.Hour,
		now:         time.Now,
	}
}

// NewDemo returns a fake seeded like an Open edX devstack: the client
// "coordinator-worker" with the given secret (staff), learners 3 (edx) to 7,
// and the demo course with audit, honor, verified, professional and credit.
func NewDemo(clientSecret string) *Server {
	s := New()
	s.AddClient("coordinator-worker", Client{Secret: clientSecret, Staff: true})
	for id, name := range map[int64]string{3: "edx", 4: "audit", 5: "honor", 6: "verified", 7: "staff"} {
		s.AddUser(id, name)
	}
	modes := []string{"audit", "honor", "verified", "professional", "no-id-professional", "credit", "masters"}
	s.AddCourse("course-v1:edX+DemoX+Demo_Course", CourseRun{Name: "Demonstration Course", Modes: modes})
	s.AddCourse("edX/DemoX/2014", CourseRun{Name: "Demonstration Course (2014)", Modes: modes})
	return s
}

// Start serves h (a Server, or a handler wrapping one) on a loopback port
// until the test ends.
func Start(t interface {
	Helper()
	Cleanup(func())
}, h http.Handler) *httptest.Server {
	t.Helper()
	ts := httptest.NewServer(h)
	t.Cleanup(ts.Close)
	return ts
}

// AddClient registers an OAuth application.
func (s *Server) AddClient(id string, c Client) { s.locked(func() { s.clients[id] = c }) }

// AddUser registers a learner with the email <username>@example.com.
func (s *Server) AddUser(id int64, username string) {
	s.Register(id, username, username+"@example.com")
}

// Register creates a learner's account as the LMS's registration does: every
// enrollment_allowed with auto_enroll for its email enrolls it in that course
// run, in the course's default mode (audit, else honor), not in a paid mode.
// Tests call it to create an account after an order for its email arrived.
func (s *Server) Register(id int64, username, email string) {
	s.locked(func() {
		s.users[id], s.usernames[username] = username, true
		s.emails[email], s.userEmails[id] = id, email
		delete(s.retired, email)
		for _, a := range s.allowed {
			c := s.courses[a.CourseID]
			if a.Email != email || !a.AutoEnroll || c == nil {
				continue
			}
			key := username + "," + a.CourseID
			if e := s.enrollments[key]; e != nil && e.IsActive {
				continue
			}
			s.enrollments[key] = &Enrollment{User: username, CourseID: a.CourseID, Mode: defaultMode(c), IsActive: true,
				Created: s.now().UTC()}
		}
	})
}

// Retire retires the account with that email: look-ups by it answer 404 with
// an error body, as the LMS does for retired emails.
func (s *Server) Retire(email string) {
	s.locked(func() {
		if id, ok := s.emails[email]; ok {
			delete(s.emails, email)
			delete(s.userEmails, id)
		}
		s.retired[email] = true
	})
}

// Allowed lists the enrollment_allowed entries for an email.
func (s *Server) Allowed(email string) []EnrollmentAllowed {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []EnrollmentAllowed
	for _, a := range s.allowed {
		if a.Email == email {
			out = append(out, *a)
		}
	}
	slices.SortFunc(out, func(a, b EnrollmentAllowed) int { return strings.Compare(a.CourseID, b.CourseID) })
	return out
}

// defaultMode is the mode the LMS enrolls a registering learner in.
func defaultMode(c *CourseRun) string {
	for _, m := range []string{"audit", "honor"} {
		if slices.Contains(c.Modes, m) {
			return m
		}
	}
	if len(c.Modes) > 0 {
		return c.Modes[0]
	}
	return "audit"
}

// AddCourse registers a course run.
func (s *Server) AddCourse(id string, c CourseRun) { s.locked(func() { s.courses[id] = &c }) }

// CloseEnrollment closes or reopens enrollment in a course run.
func (s *Server) CloseEnrollment(id string, closed bool) {
	s.locked(func() { s.courses[id].Closed = closed })
}

// SetTokenTTL sets the lifetime of tokens issued from now on.
func (s *Server) SetTokenTTL(d time.Duration) { s.locked(func() { s.tokenTTL = d }) }

// SetLatency delays every API answer (not token answers) by d.
func (s *Server) SetLatency(d time.Duration) { s.locked(func() { s.latency = d }) }

// RevokeTokens invalidates every token issued so far.
func (s *Server) RevokeTokens() { s.locked(func() { clear(s.tokens) }) }

// Script queues replies that replace the next calls to an endpoint, in order.
func (s *Server) Script(e Endpoint, replies ...Reply) {
	s.locked(func() { s.script[e] = append(s.script[e], replies...) })
}

// SetRecording turns the keeping of each call (headers, body) on or off;
// load runs turn it off and read Count instead.
func (s *Server) SetRecording(on bool) { s.locked(func() { s.noRecord = !on }) }

// Count returns how many calls an endpoint has received.
func (s *Server) Count(e Endpoint) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[e]
}

// Calls returns the calls received so far, optionally only to some endpoints.
func (s *Server) Calls(endpoints ...Endpoint) []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Call
	for _, c := range s.calls {
		if len(endpoints) == 0 || slices.Contains(endpoints, c.Endpoint) {
			out = append(out, c)
		}
	}
	return out
}

// Enrollment returns the learner's enrollment in a course run, if any.
func (s *Server) Enrollment(user, courseID string) (Enrollment, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.enrollments[user+","+courseID]
	if !ok {
		return Enrollment{}, false
	}
	return *e, true
}

// Enroll records an enrollment directly, as if made earlier.
func (s *Server) Enroll(e Enrollment) { s.locked(func() { s.enrollments[e.User+","+e.CourseID] = &e }) }

func (s *Server) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// ServeHTTP routes like the LMS's URL configuration.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := r.URL.Path
	switch {
	case (p == "/oauth2/access_token" || p == "/oauth2/access_token/") && r.Method == http.MethodPost:
		s.serve(w, r, Token, s.token)
	case p == "/api/enrollment/v1/enrollment" && r.Method == http.MethodPost:
		s.serve(w, r, Enroll, s.authed(s.enroll))
	case p == "/api/enrollment/v1/enrollment_allowed/" &&
		(r.Method == http.MethodGet || r.Method == http.MethodPost || r.Method == http.MethodDelete):
		s.serve(w, r, Allowed, s.authed(s.enrollmentAllowed))
	case strings.HasPrefix(p, "/api/enrollment/v1/enrollment/") && r.Method == http.MethodGet:
		s.serve(w, r, Read, s.authed(s.read))
	case p == "/api/user/v1/accounts" && r.Method == http.MethodGet:
		s.serve(w, r, Account, s.authed(s.account))
	case strings.HasPrefix(p, "/api/enrollment/v1/course/") && r.Method == http.MethodGet:
		s.serve(w, r, Course, s.course)
	case strings.HasPrefix(p, "/api/entitlements/v1/entitlements/"):
		s.serve(w, r, Entitlements, s.authed(s.entitlementsAPI))
	case p == "/api/courses/v1/courses/" && r.Method == http.MethodGet:
		s.serve(w, r, Courses, s.optionalAuth(s.courseList))
	default:
		w.WriteHeader(http.StatusNotFound) // Django's 404 for an unknown URL, e.g. a trailing slash
	}
}

// answer is what a handler decided: status, JSON body (nil = empty) and headers.
type answer struct {
	status int
	body   any
	header map[string]string
}

type handler func(r *http.Request, body []byte, client string) answer

// serve records the call, applies the script and latency, and writes the answer.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, e Endpoint, h handler) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	s.mu.Lock()
	var scripted *Reply
	if q := s.script[e]; len(q) > 0 {
		scripted, s.script[e] = &q[0], q[1:]
	}
	latency := s.latency
	if e == Token || e == Course {
		latency = 0
	}
	// Record the call on arrival, so a caller that gave up waiting still
	// sees it counted.
	s.counts[e]++
	if e == Enroll && deactivates(body) {
		s.counts[Deactivate]++
	}
	i := -1
	if !s.noRecord {
		i = len(s.calls)
		s.calls = append(s.calls, Call{Endpoint: e, Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header.Clone(), Body: body})
	}
	s.mu.Unlock()

	var a answer
	if scripted != nil {
		if scripted.Delay > 0 {
			select {
			case <-time.After(scripted.Delay):
			case <-r.Context().Done():
			}
		}
		if scripted.Hangup {
			if hj, ok := w.(http.Hijacker); ok {
				if conn, _, err := hj.Hijack(); err == nil {
					conn.Close()
					return
				}
			}
			panic(http.ErrAbortHandler)
		}
		a = answer{status: scripted.Status, header: scripted.Header}
		if scripted.Body != "" {
			a.body = json.RawMessage(scripted.Body)
		}
		if scripted.Status == 0 {
			a = h(r, body, "")
		}
	} else {
		if latency > 0 {
			select {
			case <-time.After(latency):
			case <-r.Context().Done():
			}
		}
		a = h(r, body, "")
	}
	if i >= 0 {
		s.mu.Lock()
		s.calls[i].Status = a.status
		s.mu.Unlock()
	}
	for k, v := range a.header {
		w.Header().Set(k, v)
	}
	if a.body == nil {
		w.WriteHeader(a.status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(a.status)
	_ = json.NewEncoder(w).Encode(a.body)
}

// deactivates reports whether an enrollment POST asks for is_active false.
func deactivates(body []byte) bool {
	var req struct {
		IsActive *bool `json:"is_active"`
	}
	return json.Unmarshal(body, &req) == nil && req.IsActive != nil && !*req.IsActive
}

func msg(status int, text string) answer {
	return answer{status: status, body: map[string]string{"message": text}}
}

// token implements POST /oauth2/access_token (docs/lms.md#oauth2-tokens).
func (s *Server) token(r *http.Request, body []byte, _ string) answer {
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return answer{status: 400, body: map[string]string{"error": "invalid_request"}}
	}
	if form.Get("grant_type") != "client_credentials" {
		return answer{status: 400, body: map[string]string{"error": "unsupported_grant_type"}}
	}
	id, secret := form.Get("client_id"), form.Get("client_secret")
	if u, p, ok := r.BasicAuth(); ok {
		id, secret = u, p
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok || c.Secret != secret {
		return answer{status: 401, body: map[string]string{"error": "invalid_client"}}
	}
	tok := newJWTish(id)
	s.tokens[tok] = token{client: id, expires: s.now().Add(s.tokenTTL)}
	tokenType := "Bearer"
	if form.Get("token_type") == "jwt" {
		tokenType = "JWT"
	}
	return answer{status: 200, body: map[string]any{
		"access_token": tok, "expires_in": int(s.tokenTTL.Seconds()), "token_type": tokenType,
		"scope": "read write email profile",
	}}
}

// authed checks `Authorization: JWT <token>` as edx-drf-extensions does; a
// JWT sent as Bearer is refused.
func (s *Server) authed(h handler) handler {
	return func(r *http.Request, body []byte, _ string) answer {
		auth := r.Header.Get("Authorization")
		deny := answer{status: 401, body: map[string]string{"detail": "Authentication credentials were not provided."},
			header: map[string]string{"WWW-Authenticate": `JWT realm="api"`}}
		tok, ok := strings.CutPrefix(auth, "JWT ")
		if !ok {
			return deny
		}
		s.mu.Lock()
		t, ok := s.tokens[tok]
		expired := ok && !s.now().Before(t.expires)
		s.mu.Unlock()
		if !ok {
			deny.body = map[string]string{"detail": "Invalid token."}
			return deny
		}
		if expired {
			deny.body = map[string]string{"detail": "Token has expired."}
			return deny
		}
		return h(r, body, t.client)
	}
}

// enroll implements POST /api/enrollment/v1/enrollment (docs/lms.md#enroll).
func (s *Server) enroll(_ *http.Request, body []byte, client string) answer {
	var req struct {
		User          string          `json:"user"`
		Mode          string          `json:"mode"`
		IsActive      json.RawMessage `json:"is_active"`
		CourseDetails struct {
			CourseID string `json:"course_id"`
		} `json:"course_details"`
		Attributes []Attribute `json:"enrollment_attributes"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return msg(400, "Invalid request body.")
	}
	id := req.CourseDetails.CourseID
	if id == "" {
		return msg(400, "Course ID must be specified to create a new enrollment.")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	course, ok := s.courses[id]
	if !ok {
		return msg(400, fmt.Sprintf("No course '%s' found for enrollment", id))
	}
	if !s.clients[client].Staff {
		return answer{status: 404} // a non-staff caller naming another user
	}
	if !s.usernames[req.User] {
		return msg(406, fmt.Sprintf("The user %s does not exist.", req.User))
	}
	active := true
	if len(req.IsActive) > 0 {
		if err := json.Unmarshal(req.IsActive, &active); err != nil {
			return msg(400, fmt.Sprintf("'%s' is an invalid enrollment activation status.", strings.Trim(string(req.IsActive), `"`)))
		}
	}
	mode := req.Mode
	if mode == "" {
		mode = "audit"
	}
	key := req.User + "," + id
	existing := s.enrollments[key]
	if !active {
		// Deactivating needs the active mode; with none active it creates
		// or keeps an inactive enrollment (docs/lms.md#unenroll).
		if existing != nil && existing.IsActive && existing.Mode != mode {
			return msg(400, fmt.Sprintf("Enrollment mode mismatch: active mode=%s, requested mode=%s. Won't deactivate.", existing.Mode, mode))
		}
		if existing == nil {
			existing = &Enrollment{User: req.User, CourseID: id, Created: s.now().UTC(), Mode: mode}
			s.enrollments[key] = existing
		}
		existing.IsActive = false
		return answer{status: 200, body: s.enrollmentJSON(existing)}
	}
	if !slices.Contains(course.Modes, mode) {
		return answer{status: 400, body: map[string]any{
			"message":        fmt.Sprintf("The [%s] course mode is expired or otherwise unavailable for course run [%s].", mode, id),
			"course_details": s.courseJSON(id, course),
		}}
	}
	// The closed check runs before the already-enrolled check (docs/lms.md#enroll).
	if course.Closed {
		return msg(400, fmt.Sprintf("An error occurred while creating the new course enrollment for user '%s' in course '%s'", req.User, id))
	}
	if existing == nil {
		existing = &Enrollment{User: req.User, CourseID: id, Created: s.now().UTC()}
		s.enrollments[key] = existing
	}
	existing.Mode, existing.IsActive = mode, true
	if req.Attributes != nil {
		existing.Attributes = req.Attributes // each call replaces the whole set
	}
	return answer{status: 200, body: s.enrollmentJSON(existing)}
}

// read implements GET /api/enrollment/v1/enrollment/{username},{course_id} (docs/lms.md#reading-an-enrollment-back).
func (s *Server) read(r *http.Request, _ []byte, _ string) answer {
	// Split before decoding, as the LMS's URL pattern does after Django
	// decodes the path: a legacy key arrives with its '/' as %2F.
	rest := strings.TrimPrefix(r.URL.EscapedPath(), "/api/enrollment/v1/enrollment/")
	rawUser, rawCourse, ok := strings.Cut(rest, ",")
	if !ok {
		return answer{status: 404}
	}
	user, err1 := url.PathUnescape(rawUser)
	course, err2 := url.PathUnescape(rawCourse)
	if err1 != nil || err2 != nil {
		return answer{status: 404}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.enrollments[user+","+course]
	if !ok {
		return answer{status: 200} // the LMS answers 200 with an empty body
	}
	return answer{status: 200, body: s.enrollmentJSON(e)}
}

var digits = regexp.MustCompile(`^[0-9]+$`)

// account implements GET /api/user/v1/accounts?lms_user_id=N and
// ?email=... (docs/lms.md#accounts).
func (s *Server) account(r *http.Request, _ []byte, client string) answer {
	q := r.URL.Query()
	if q.Has("email") {
		return s.accountByEmail(strings.TrimSpace(q.Get("email")), client)
	}
	v := q.Get("lms_user_id")
	if !digits.MatchString(v) {
		return answer{status: 400}
	}
	id, _ := strconv.ParseInt(v, 10, 64)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[client].Staff {
		return answer{status: 403, body: map[string]string{"detail": "You do not have permission to perform this action."}}
	}
	if _, ok := s.users[id]; !ok {
		return answer{status: 404}
	}
	return answer{status: 200, body: []map[string]any{s.accountJSON(id)}}
}

func (s *Server) accountByEmail(email, client string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[client].Staff {
		return answer{status: 403, body: map[string]string{"detail": "You do not have permission to perform this action."}}
	}
	if s.retired[email] {
		return answer{status: 404, body: map[string]string{"error_msg": "This email is associated to a retired account."}}
	}
	id, ok := s.emails[email]
	if !ok {
		return answer{status: 404}
	}
	return answer{status: 200, body: []map[string]any{s.accountJSON(id)}}
}

func (s *Server) accountJSON(id int64) map[string]any {
	return map[string]any{"username": s.users[id], "id": id, "email": s.userEmails[id], "is_active": true}
}

// enrollmentAllowed implements /api/enrollment/v1/enrollment_allowed/
// (docs/lms.md#enrollment-allowed): GET ?email= lists, POST creates (201; 409 when it exists),
// DELETE removes one (204; 404 when none). Staff only.
func (s *Server) enrollmentAllowed(r *http.Request, body []byte, client string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.clients[client].Staff {
		return answer{status: 403, body: map[string]string{"detail": "You do not have permission to perform this action."}}
	}
	if r.Method == http.MethodGet {
		email := r.URL.Query().Get("email")
		if email == "" {
			return msg(400, "Please provide a valid email.")
		}
		out := []EnrollmentAllowed{}
		for _, a := range s.allowed {
			if a.Email == email {
				out = append(out, *a)
			}
		}
		return answer{status: 200, body: out}
	}
	var req struct {
		Email      string `json:"email"`
		CourseID   string `json:"course_id"`
		AutoEnroll *bool  `json:"auto_enroll"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return answer{status: 400, body: map[string][]string{"non_field_errors": {"Invalid data."}}}
	}
	key := req.Email + "|" + req.CourseID
	if r.Method == http.MethodDelete {
		if req.Email == "" {
			return msg(400, "Please provide a value for 'email' in the request body.")
		}
		if _, ok := s.allowed[key]; !ok {
			return msg(404, fmt.Sprintf("An enrollment allowed with email %s and course %s doesn't exists.", req.Email, req.CourseID))
		}
		delete(s.allowed, key)
		return answer{status: 204}
	}
	missing := map[string][]string{}
	if req.Email == "" {
		missing["email"] = []string{"This field is required."}
	}
	if req.CourseID == "" {
		missing["course_id"] = []string{"This field is required."}
	}
	if len(missing) > 0 {
		return answer{status: 400, body: missing}
	}
	if _, ok := s.allowed[key]; ok {
		return msg(409, "An enrollment allowed with those values already exists.")
	}
	a := &EnrollmentAllowed{Email: req.Email, CourseID: req.CourseID, AutoEnroll: req.AutoEnroll != nil && *req.AutoEnroll,
		Created: s.now().UTC()}
	s.allowed[key] = a
	return answer{status: 201, body: a}
}

// course implements GET /api/enrollment/v1/course/{course_id} (docs/lms.md#course-details).
func (s *Server) course(r *http.Request, _ []byte, _ string) answer {
	id := strings.TrimPrefix(r.URL.Path, "/api/enrollment/v1/course/")
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.courses[id]
	if !ok {
		return msg(400, fmt.Sprintf("No course found for course ID '%s'", id))
	}
	return answer{status: 200, body: c.detailsJSON(id, s.now(), r.URL.Query().Get("include_expired") != "")}
}

func (s *Server) courseJSON(id string, c *CourseRun) map[string]any {
	return c.detailsJSON(id, s.now(), false)
}

func (s *Server) enrollmentJSON(e *Enrollment) map[string]any {
	return map[string]any{
		"created": e.Created.Format("2006-01-02T15:04:05.000000Z"), "mode": e.Mode, "is_active": e.IsActive,
		"course_details": s.courseJSON(e.CourseID, s.courses[e.CourseID]), "user": e.User,
	}
}

// newJWTish returns a unique token shaped like a JWT (three base64 parts).
func newJWTish(client string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "eyJhbGciOiJIUzI1NiJ9." + hex.EncodeToString([]byte(client)) + "." + hex.EncodeToString(b)
}
