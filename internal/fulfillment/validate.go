package fulfillment

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// FieldErrors maps request field names to what is wrong with them, in the
// shape Django REST framework answers with: {"field": ["message", ...]}.
type FieldErrors map[string][]string

// Add records a message for a field.
func (e FieldErrors) Add(field, msg string) { e[field] = append(e[field], msg) }

// Error lists the fields in a stable order.
func (e FieldErrors) Error() string {
	keys := make([]string, 0, len(e))
	for k := range e {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString("invalid request:")
	for _, k := range keys {
		fmt.Fprintf(&b, " %s: %s;", k, strings.Join(e[k], " "))
	}
	return b.String()
}

// NonFieldErrors is the key DRF uses for errors not tied to one field, such as
// malformed JSON.
const NonFieldErrors = "non_field_errors"

// Messages, worded as Django REST framework words them so that commerce
// backends written against the original service see familiar text.
const (
	msgRequired = "This field is required."
	msgNull     = "This field may not be null."
	msgBlank    = "This field may not be blank."
	msgString   = "Not a valid string."
	msgInteger  = "A valid integer is required."
	msgBoolean  = "Must be a valid boolean."
)

const (
	maxOrderNumber = 255
	maxCourseID    = 255
	maxUsername    = 150
	maxProvider    = 255
	maxSite        = 100
)

var (
	modeSlug = regexp.MustCompile(`^[a-z0-9_-]{1,100}$`)
	siteName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)
)

// ValidMode reports whether s is a course mode slug (docs/openapi.yaml, CourseMode): lower-case
// letters, digits, '_' and '-', 1 to 100 of them.
func ValidMode(s string) bool { return modeSlug.MatchString(s) }

// ValidCourseKey reports whether s is an Open edX course run key, new style
// (course-v1:Org+Course+Run) or legacy (Org/Course/Run), as opaque-keys
// accepts them (docs/lms.md#course-run-keys). Block, branch and version suffixes are refused.
func ValidCourseKey(s string) bool {
	if len(s) > maxCourseID {
		return false
	}
	// Three parts of letters, digits and a few marks: the regular
	// expressions ^course-v1:([\p{L}\p{N}_~.:-]+)\+(…)\+(…)$ and
	// ^([\p{L}\p{N}_.%-]+)/(…)/(…)$, written out because their compiled
	// Unicode classes kept 1.5 MB alive in every process. '+' and '@' are
	// outside the part marks, so +branch@, +version@ and +type@..+block@
	// suffixes cannot match.
	if rest, ok := strings.CutPrefix(s, "course-v1:"); ok {
		return threeParts(rest, '+', "_~.:-")
	}
	return threeParts(s, '/', "_.%-")
}

// threeParts reports whether s is three non-empty parts separated by sep,
// each made of letters, digits and marks.
func threeParts(s string, sep byte, marks string) bool {
	parts := 0
	for part := range strings.SplitSeq(s, string(sep)) {
		parts++
		if part == "" || parts > 3 {
			return false
		}
		for _, r := range part {
			if !unicode.IsLetter(r) && !unicode.IsNumber(r) && !strings.ContainsRune(marks, r) {
				return false
			}
		}
	}
	return parts == 3
}

// OrderNumberProblem says what is wrong with an order number ("" if nothing):
// 1-255 characters of valid UTF-8, no control characters.
func OrderNumberProblem(s string) string {
	switch {
	case strings.TrimSpace(s) == "":
		return msgBlank
	case !utf8.ValidString(s):
		return msgString
	case utf8.RuneCountInString(s) > maxOrderNumber:
		return fmt.Sprintf("Ensure this field has no more than %d characters.", maxOrderNumber)
	case hasControl(s):
		return "Must not contain control characters."
	}
	return ""
}

// ValidSiteName reports whether s can name a site.
func ValidSiteName(s string) bool { return siteName.MatchString(s) }

// Parse decodes and validates a fulfill request body. It returns every field
// problem at once as FieldErrors; a body that is not a JSON object yields
// FieldErrors under NonFieldErrors. The order's Site is DefaultSite when the
// request names none; knownSite, when not nil, says which sites exist.
func Parse(body []byte, knownSite func(string) bool) (Order, error) {
	f, err := decodeObject(body)
	if err != nil {
		return Order{}, err
	}
	var o Order
	l := f.line(knownSite)
	o.Site, o.OrderNumber, o.CourseID, o.CourseUUID, o.CourseMode, o.Username = l.Site, l.OrderNumber, l.CourseID, l.CourseUUID, l.CourseMode, l.Username
	o.OrderPlaced = f.time("order_placed", true)
	o.LMSUserID = f.userID("edx_lms_user_id", true)
	if v, ok := f.get("email_opt_in", true); ok {
		if b, ok := parseBool(v); ok {
			o.EmailOptIn = b
		} else {
			f.errs.Add("email_opt_in", msgBoolean)
		}
	}
	if s, ok := f.optStr("provider"); ok {
		if utf8.RuneCountInString(s) > maxProvider || hasControl(s) {
			f.errs.Add("provider", fmt.Sprintf("Must be at most %d characters with no control characters.", maxProvider))
		}
		o.Provider = s
	}
	if o.CourseMode == "credit" && o.Provider == "" && f.errs["provider"] == nil {
		f.errs.Add("provider", "A credit provider is required for credit mode.")
	}
	if len(f.errs) > 0 {
		return Order{}, f.errs
	}
	return o, nil
}

// ParseReturn decodes and validates a return request body (docs/openapi.yaml, ReturnRequest), like
// Parse: every problem at once. ReturnedAt is zero when the request names
// none; the caller stamps it.
func ParseReturn(body []byte, knownSite func(string) bool) (Return, error) {
	f, err := decodeObject(body)
	if err != nil {
		return Return{}, err
	}
	var r Return
	l := f.line(knownSite)
	r.Site, r.OrderNumber, r.CourseID, r.CourseUUID, r.CourseMode, r.Username = l.Site, l.OrderNumber, l.CourseID, l.CourseUUID, l.CourseMode, l.Username
	r.LMSUserID = f.userID("edx_lms_user_id", false)
	// A shop's line names its learner by email: support returns it so.
	if s, ok := f.optStr("email"); ok && s != "" {
		if r.Email = strings.TrimSpace(s); !ValidEmail(r.Email) {
			f.errs.Add("email", fmt.Sprintf("Not a valid email address (at most %d characters, no spaces).", MaxEmail))
		}
	}
	if r.LMSUserID == 0 && r.Username == "" && r.Email == "" && f.errs["edx_lms_user_id"] == nil && f.errs["username"] == nil &&
		f.errs["email"] == nil {
		f.errs.Add("edx_lms_user_id", "One of edx_lms_user_id, username or email is required.")
	}
	r.ReturnedAt = f.time("returned_at", false)
	if len(f.errs) > 0 {
		return Return{}, f.errs
	}
	return r, nil
}

// decodeObject decodes a request body that must be one JSON object.
func decodeObject(body []byte) (fields, error) {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	var raw any
	if err := dec.Decode(&raw); err != nil {
		return fields{}, FieldErrors{NonFieldErrors: {"JSON parse error - " + jsonProblem(err)}}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return fields{}, FieldErrors{NonFieldErrors: {"JSON parse error - unexpected data after the JSON object"}}
	}
	obj, ok := raw.(map[string]any)
	if !ok {
		return fields{}, FieldErrors{NonFieldErrors: {"Invalid data. Expected a dictionary, but got " + jsonType(raw) + "."}}
	}
	return fields{obj: obj, errs: FieldErrors{}}, nil
}

// CourseUUID reads a catalog course's UUID (32 hex digits, hyphens optional)
// in its canonical form (lower case, hyphenated), so that one course is one
// line however a shop spells it.
func CourseUUID(s string) (string, bool) {
	hex := strings.ReplaceAll(s, "-", "")
	if len(hex) != 32 || len(s) > 36 {
		return s, false
	}
	for _, r := range hex {
		if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
			return s, false
		}
	}
	if strings.Contains(s, "-") && (len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-') {
		return s, false
	}
	hex = strings.ToLower(hex)
	return hex[:8] + "-" + hex[8:12] + "-" + hex[12:16] + "-" + hex[16:20] + "-" + hex[20:], true
}

// line reads the fields every line request shares: course_id, course_mode,
// order_number, username and site.
func (f fields) line(knownSite func(string) bool) Ref {
	var l Ref
	// The item: a course run (a seat) or a course (an entitlement).
	_, hasRun := f.obj[ItemCourseRun]
	_, hasCourse := f.obj[ItemCourse]
	switch {
	case hasRun && hasCourse:
		msg := "Give exactly one of course_id (a course run) and course_uuid (a course), not both."
		f.errs.Add(ItemCourseRun, msg)
		f.errs.Add(ItemCourse, msg)
	case hasCourse:
		if s, ok := f.str(ItemCourse, true); ok {
			u, valid := CourseUUID(s)
			if !valid {
				f.errs.Add(ItemCourse, "Not a valid course UUID: expected 32 hexadecimal digits, with or without hyphens.")
			}
			l.CourseUUID = u
		}
	default:
		if s, ok := f.str(ItemCourseRun, true); ok {
			if !ValidCourseKey(s) {
				f.errs.Add(ItemCourseRun, "Not a valid course run key: expected course-v1:Org+Course+Run or Org/Course/Run.")
			}
			l.CourseID = s
		}
	}
	if s, ok := f.str("course_mode", true); ok {
		if !modeSlug.MatchString(s) {
			f.errs.Add("course_mode", "Not a valid course mode slug: 1-100 of a-z, 0-9, '_' and '-'.")
		}
		l.CourseMode = s
	}
	if s, ok := f.str("order_number", true); ok {
		if problem := OrderNumberProblem(s); problem != "" {
			f.errs.Add("order_number", problem)
		}
		l.OrderNumber = s
	}
	if s, ok := f.optStr("username"); ok {
		if utf8.RuneCountInString(s) > maxUsername || strings.IndexFunc(s, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) || r == '/' || r == ',' }) >= 0 {
			f.errs.Add("username", fmt.Sprintf("Not a valid LMS username: at most %d characters, no spaces, '/' or ','.", maxUsername))
		}
		l.Username = s
	}
	l.Site = DefaultSite
	if s, ok := f.optStr("site"); ok && s != "" {
		if !siteName.MatchString(s) {
			f.errs.Add("site", fmt.Sprintf("Not a valid site name: 1-%d of letters, digits, '_', '.' and '-'.", maxSite))
		}
		l.Site = s
	}
	if knownSite != nil && f.errs["site"] == nil && !knownSite(l.Site) {
		f.errs.Add("site", fmt.Sprintf("Unknown site %q.", l.Site))
	}
	return l
}

// fields reads typed values out of a decoded JSON object, recording errors.
type fields struct {
	obj  map[string]any
	errs FieldErrors
}

func (f fields) get(name string, required bool) (any, bool) {
	v, present := f.obj[name]
	switch {
	case !present:
		if required {
			f.errs.Add(name, msgRequired)
		}
		return nil, false
	case v == nil:
		if required {
			f.errs.Add(name, msgNull)
		}
		return nil, false
	}
	return v, true
}

// str reads a string field. Like DRF's CharField it takes an integer in place
// of a string (shops often send order numbers as numbers), but not a boolean,
// a fraction, an array or an object.
func (f fields) str(name string, required bool) (string, bool) {
	v, ok := f.get(name, required)
	if !ok {
		return "", false
	}
	var s string
	switch v := v.(type) {
	case string:
		s = v
	case json.Number:
		if _, err := strconv.ParseInt(v.String(), 10, 64); err != nil {
			f.errs.Add(name, msgString)
			return "", false
		}
		s = v.String()
	default:
		f.errs.Add(name, msgString)
		return "", false
	}
	if strings.TrimSpace(s) == "" {
		if required {
			f.errs.Add(name, msgBlank)
		}
		return "", !required
	}
	if !utf8.ValidString(s) {
		f.errs.Add(name, msgString)
		return "", false
	}
	return s, true
}

func (f fields) optStr(name string) (string, bool) { return f.str(name, false) }

// time reads a timestamp field (parseTime); zero when absent or invalid.
func (f fields) time(name string, required bool) time.Time {
	v, ok := f.get(name, required)
	if !ok {
		return time.Time{}
	}
	t, problem := parseTime(v)
	if problem != "" {
		f.errs.Add(name, problem)
	}
	return t
}

// userID reads an LMS user id field (parseUserID); 0 when absent or invalid.
func (f fields) userID(name string, required bool) int64 {
	v, ok := f.get(name, required)
	if !ok {
		return 0
	}
	id, problem := parseUserID(v)
	if problem != "" {
		f.errs.Add(name, problem)
	}
	return id
}

func hasControl(s string) bool {
	return strings.IndexFunc(s, unicode.IsControl) >= 0
}

// Bounds on order_placed: the POSIX epoch to the end of year 9999, the range
// the LMS's date format can express.
var (
	minPlaced = time.Unix(0, 0).UTC()
	maxPlaced = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)
)

// msgPlaced is the problem with an order_placed that is neither form.
const msgPlaced = "Must be POSIX seconds or an RFC 3339 timestamp."

// parseTime accepts POSIX seconds (integer, fraction, or either as a string)
// or an RFC 3339 timestamp, and returns the instant in UTC truncated to whole
// seconds, which is all the LMS's format keeps. A non-empty string is the
// problem with v.
func parseTime(v any) (time.Time, string) {
	var num string
	switch v := v.(type) {
	case json.Number:
		num = v.String()
	case string:
		s := strings.TrimSpace(v)
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			return checkPlaced(t)
		}
		num = s
	default:
		return time.Time{}, msgPlaced
	}
	secs, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return time.Time{}, msgPlaced
	}
	if secs < float64(minPlaced.Unix()) || secs > float64(maxPlaced.Unix()) {
		return time.Time{}, "Must be a date between 1970 and 9999."
	}
	whole, frac := math.Modf(secs)
	return time.Unix(int64(whole), int64(frac*1e9)).UTC().Truncate(time.Second), ""
}

func checkPlaced(t time.Time) (time.Time, string) {
	t = t.UTC().Truncate(time.Second)
	if t.Before(minPlaced) || t.After(maxPlaced) {
		return time.Time{}, "Must be a date between 1970 and 9999."
	}
	return t, ""
}

// parseUserID accepts a positive integer, an integral number such as 42.0, or
// a numeric string, as DRF's IntegerField does.
func parseUserID(v any) (int64, string) {
	var s string
	switch v := v.(type) {
	case json.Number:
		s = v.String()
	case string:
		s = strings.TrimSpace(v)
	default:
		return 0, msgInteger
	}
	id, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		f, ferr := strconv.ParseFloat(s, 64)
		if ferr != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
			return 0, msgInteger
		}
		id = int64(f)
	}
	if id <= 0 {
		return 0, "Ensure this value is greater than or equal to 1."
	}
	return id, ""
}

// parseBool accepts what DRF's BooleanField accepts.
func parseBool(v any) (bool, bool) {
	switch v := v.(type) {
	case bool:
		return v, true
	case json.Number:
		switch v.String() {
		case "1":
			return true, true
		case "0":
			return false, true
		}
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1", "yes", "on", "t", "y":
			return true, true
		case "false", "0", "no", "off", "f", "n":
			return false, true
		}
	}
	return false, false
}

func jsonType(v any) string {
	switch v.(type) {
	case []any:
		return "list"
	case string:
		return "str"
	case json.Number:
		return "number"
	case bool:
		return "bool"
	case nil:
		return "null"
	}
	return fmt.Sprintf("%T", v)
}

// jsonProblem describes a JSON syntax error without echoing the body.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("%s (at byte %d)", se.Error(), se.Offset)
	case errors.Is(err, io.EOF):
		return "empty body"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	return err.Error()
}
