package lmstest

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Entitlements is /api/entitlements/v1/entitlements/ (create, list, revoke).
const Entitlements Endpoint = "entitlements"

// Entitlement is the fake's record of a course entitlement.
type Entitlement struct {
	UUID        string     `json:"uuid"`
	User        string     `json:"user"`
	CourseUUID  string     `json:"course_uuid"`
	Mode        string     `json:"mode"`
	OrderNumber string     `json:"order_number"`
	ExpiredAt   *time.Time `json:"expired_at"`
	Created     time.Time  `json:"created"`
}

// entitlementsPage is how many entitlements a list answers with at once.
const entitlementsPage = 50

// entitlementModes are the modes an entitlement may have.
var entitlementModes = []string{"verified", "professional", "no-id-professional", "credit", "masters", "audit", "honor"}

var uuidPattern = regexp.MustCompile(`^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$`)

// Entitlements lists a user's entitlements, expired ones included.
func (s *Server) Entitlements(user string) []Entitlement {
	var out []Entitlement
	s.locked(func() {
		for _, e := range s.entitlements {
			if e.User == user {
				out = append(out, *e)
			}
		}
	})
	return out
}

// AddEntitlement records an entitlement as if the LMS had made it (one
// another system created).
func (s *Server) AddEntitlement(e Entitlement) {
	s.locked(func() {
		if e.UUID == "" {
			e.UUID = newUUID()
		}
		s.entitlements = append(s.entitlements, &e)
	})
}

// SlowEntitlementAnswers makes the next n entitlement creations happen at
// once but answer only after d: the LMS made the entitlement, and the caller
// timed out before it heard so.
func (s *Server) SlowEntitlementAnswers(n int, d time.Duration) {
	s.locked(func() { s.slowCreates, s.slowCreateFor = n, d })
}

// entitlements implements /api/entitlements/v1/entitlements/[<uuid>/]: POST
// creates (201, not idempotent), GET ?user= lists (paginated, 50 a page,
// `next` an absolute URL, 404 past the last page; filter uuid= a comma
// list), DELETE <uuid>/ revokes (204, sets expired_at once; 404 unknown).
// Writes and other users' lists need a staff caller.
func (s *Server) entitlementsAPI(r *http.Request, body []byte, client string) answer {
	rest := strings.TrimPrefix(r.URL.Path, "/api/entitlements/v1/entitlements/")
	s.mu.Lock()
	staff := s.clients[client].Staff
	s.mu.Unlock()
	if !staff {
		return answer{status: 403, body: map[string]string{"detail": "You do not have permission to perform this action."}}
	}
	switch {
	case rest == "" && r.Method == http.MethodPost:
		return s.createEntitlement(r, body)
	case rest == "" && r.Method == http.MethodGet:
		return s.listEntitlements(r)
	case strings.Count(rest, "/") == 1 && strings.HasSuffix(rest, "/") && r.Method == http.MethodDelete:
		return s.revokeEntitlement(strings.TrimSuffix(rest, "/"))
	}
	return answer{status: 404}
}

func (s *Server) createEntitlement(r *http.Request, body []byte) answer {
	var req struct {
		User        string `json:"user"`
		CourseUUID  string `json:"course_uuid"`
		Mode        string `json:"mode"`
		OrderNumber string `json:"order_number"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return answer{status: 400, body: map[string][]string{"non_field_errors": {"Invalid data."}}}
	}
	errs := map[string][]string{}
	if !uuidPattern.MatchString(req.CourseUUID) {
		errs["course_uuid"] = []string{"Must be a valid UUID."}
	}
	if !slices.Contains(entitlementModes, req.Mode) {
		errs["mode"] = []string{`"` + req.Mode + `" is not a valid choice.`}
	}
	s.mu.Lock()
	if !s.usernames[req.User] {
		errs["user"] = []string{"Object with username=" + req.User + " does not exist."}
	}
	if len(errs) > 0 {
		s.mu.Unlock()
		return answer{status: 400, body: errs}
	}
	e := &Entitlement{UUID: newUUID(), User: req.User, CourseUUID: strings.ToLower(req.CourseUUID), Mode: req.Mode,
		OrderNumber: req.OrderNumber, Created: s.now().UTC()}
	s.entitlements = append(s.entitlements, e)
	var slow time.Duration
	if s.slowCreates > 0 {
		s.slowCreates--
		slow = s.slowCreateFor
	}
	out := entitlementJSON(e)
	s.mu.Unlock()
	if slow > 0 { // made; the answer comes too late for the caller
		select {
		case <-time.After(slow):
		case <-r.Context().Done():
		}
	}
	return answer{status: 201, body: out}
}

func (s *Server) listEntitlements(r *http.Request) answer {
	q := r.URL.Query()
	page := 1
	if p := q.Get("page"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 {
			return answer{status: 404, body: map[string]string{"detail": "Invalid page."}}
		}
		page = n
	}
	var uuids []string
	if u := q.Get("uuid"); u != "" {
		uuids = strings.Split(strings.ToLower(u), ",")
	}
	s.mu.Lock()
	var match []map[string]any
	for _, e := range s.entitlements {
		if (q.Has("user") && e.User != q.Get("user")) || (uuids != nil && !slices.Contains(uuids, e.UUID)) {
			continue
		}
		match = append(match, entitlementJSON(e))
	}
	s.mu.Unlock()
	start := (page - 1) * entitlementsPage
	if start > 0 && start >= len(match) {
		return answer{status: 404, body: map[string]string{"detail": "Invalid page."}}
	}
	end := min(start+entitlementsPage, len(match))
	link := func(p int) any {
		if p < 1 || (p-1)*entitlementsPage >= len(match) {
			return nil
		}
		v := url.Values{}
		for k, vs := range q {
			v[k] = vs
		}
		v.Set("page", strconv.Itoa(p))
		return "http://" + r.Host + r.URL.Path + "?" + v.Encode()
	}
	return answer{status: 200, body: map[string]any{"count": len(match), "next": link(page + 1),
		"previous": link(page - 1), "results": append([]map[string]any{}, match[start:end]...)}}
}

func (s *Server) revokeEntitlement(uuid string) answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.entitlements {
		if e.UUID == strings.ToLower(uuid) {
			if e.ExpiredAt == nil {
				now := s.now().UTC()
				e.ExpiredAt = &now
			}
			return answer{status: 204}
		}
	}
	return answer{status: 404, body: map[string]string{"detail": "No CourseEntitlement matches the given query."}}
}

func entitlementJSON(e *Entitlement) map[string]any {
	return map[string]any{"user": e.User, "uuid": e.UUID, "course_uuid": e.CourseUUID, "enrollment_course_run": nil,
		"expired_at": e.ExpiredAt, "created": e.Created, "modified": e.Created, "mode": e.Mode, "refund_locked": false,
		"order_number": e.OrderNumber, "support_details": []any{}}
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
