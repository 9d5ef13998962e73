package fulfillment

import (
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const valid = `"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","order_placed":1714566902,"edx_lms_user_id":42,"email_opt_in":true,"order_number":"EDX-1"`

func TestParseValid(t *testing.T) {
	placed := time.Date(2024, 5, 1, 12, 35, 2, 0, time.UTC)
	base := Order{Site: DefaultSite, OrderNumber: "EDX-1", CourseID: "course-v1:edX+DemoX+Demo_Course",
		CourseMode: "verified", OrderPlaced: placed, LMSUserID: 42, EmailOptIn: true}
	with := func(f func(*Order)) Order { o := base; f(&o); return o }
	tests := []struct {
		name string
		body string
		want Order
	}{
		{"minimal", `{` + valid + `}`, base},
		{"float seconds", `{` + strings.Replace(valid, "1714566902", "1714566902.999", 1) + `}`, base},
		{"numeric string seconds", `{` + strings.Replace(valid, "1714566902", `"1714566902"`, 1) + `}`, base},
		{"RFC 3339 UTC", `{` + strings.Replace(valid, "1714566902", `"2024-05-01T12:35:02Z"`, 1) + `}`, base},
		{"RFC 3339 offset", `{` + strings.Replace(valid, "1714566902", `"2024-05-01T07:35:02.5-05:00"`, 1) + `}`, base},
		{"user id string", `{` + strings.Replace(valid, "42", `"42"`, 1) + `}`, base},
		{"user id 42.0", `{` + strings.Replace(valid, "42", `42.0`, 1) + `}`, base},
		{"opt-in string", `{` + strings.Replace(valid, `"email_opt_in":true`, `"email_opt_in":"false"`, 1) + `}`, with(func(o *Order) { o.EmailOptIn = false })},
		{"opt-in 1", `{` + strings.Replace(valid, `"email_opt_in":true`, `"email_opt_in":1`, 1) + `}`, base},
		{"integer order number", `{` + strings.Replace(valid, `"EDX-1"`, `1001`, 1) + `}`, with(func(o *Order) { o.OrderNumber = "1001" })},
		{"legacy key", `{` + strings.Replace(valid, "course-v1:edX+DemoX+Demo_Course", "edX/DemoX/2014", 1) + `}`, with(func(o *Order) { o.CourseID = "edX/DemoX/2014" })},
		{"credit with provider", `{` + strings.Replace(valid, `"verified"`, `"credit"`, 1) + `,"provider":"asu"}`, with(func(o *Order) { o.CourseMode, o.Provider = "credit", "asu" })},
		{"null provider", `{` + valid + `,"provider":null}`, base},
		{"username and site", `{` + valid + `,"username":"jdoe","site":"default"}`, with(func(o *Order) { o.Username = "jdoe" })},
		{"unknown fields ignored", `{` + valid + `,"extra":[1,2]}`, base},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse([]byte(tt.body), func(s string) bool { return s == DefaultSite })
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseInvalid(t *testing.T) {
	tests := []struct {
		name string
		body string
		want FieldErrors
	}{
		{"empty object", `{}`, FieldErrors{
			"course_id": {msgRequired}, "course_mode": {msgRequired}, "order_placed": {msgRequired},
			"edx_lms_user_id": {msgRequired}, "email_opt_in": {msgRequired}, "order_number": {msgRequired}}},
		{"nulls", `{"course_id":null,"course_mode":null,"order_placed":null,"edx_lms_user_id":null,"email_opt_in":null,"order_number":null}`, FieldErrors{
			"course_id": {msgNull}, "course_mode": {msgNull}, "order_placed": {msgNull},
			"edx_lms_user_id": {msgNull}, "email_opt_in": {msgNull}, "order_number": {msgNull}}},
		{"wrong types", `{"course_id":1.5,"course_mode":true,"order_placed":[],"edx_lms_user_id":{},"email_opt_in":"maybe","order_number":false}`, FieldErrors{
			"course_id": {msgString}, "course_mode": {msgString}, "order_placed": {"Must be POSIX seconds or an RFC 3339 timestamp."},
			"edx_lms_user_id": {msgInteger}, "email_opt_in": {msgBoolean}, "order_number": {msgString}}},
		{"blank strings", `{` + strings.NewReplacer(`"EDX-1"`, `"  "`, `"verified"`, `""`).Replace(valid) + `}`, FieldErrors{
			"order_number": {msgBlank}, "course_mode": {msgBlank}}},
		{"course key with block", `{` + strings.Replace(valid, "Demo_Course", "Demo_Course+type@html+block@x", 1) + `}`, FieldErrors{
			"course_id": {"Not a valid course run key: expected course-v1:Org+Course+Run or Org/Course/Run."}}},
		{"mode upper case", `{` + strings.Replace(valid, `"verified"`, `"Verified"`, 1) + `}`, FieldErrors{
			"course_mode": {"Not a valid course mode slug: 1-100 of a-z, 0-9, '_' and '-'."}}},
		{"user id zero", `{` + strings.Replace(valid, "42", "0", 1) + `}`, FieldErrors{
			"edx_lms_user_id": {"Ensure this value is greater than or equal to 1."}}},
		{"user id fraction", `{` + strings.Replace(valid, "42", "4.2", 1) + `}`, FieldErrors{"edx_lms_user_id": {msgInteger}}},
		{"user id huge", `{` + strings.Replace(valid, "42", "1e300", 1) + `}`, FieldErrors{"edx_lms_user_id": {msgInteger}}},
		{"negative time", `{` + strings.Replace(valid, "1714566902", "-5", 1) + `}`, FieldErrors{"order_placed": {"Must be a date between 1970 and 9999."}}},
		{"time Inf string", `{` + strings.Replace(valid, "1714566902", `"Inf"`, 1) + `}`, FieldErrors{"order_placed": {"Must be POSIX seconds or an RFC 3339 timestamp."}}},
		{"time garbage", `{` + strings.Replace(valid, "1714566902", `"yesterday"`, 1) + `}`, FieldErrors{"order_placed": {"Must be POSIX seconds or an RFC 3339 timestamp."}}},
		{"order number too long", `{` + strings.Replace(valid, "EDX-1", strings.Repeat("x", 256), 1) + `}`, FieldErrors{"order_number": {"Ensure this field has no more than 255 characters."}}},
		{"order number control char", `{` + strings.Replace(valid, "EDX-1", `EDX\n1`, 1) + `}`, FieldErrors{"order_number": {"Must not contain control characters."}}},
		{"credit without provider", `{` + strings.Replace(valid, `"verified"`, `"credit"`, 1) + `}`, FieldErrors{"provider": {"A credit provider is required for credit mode."}}},
		{"credit with null provider", `{` + strings.Replace(valid, `"verified"`, `"credit"`, 1) + `,"provider":null}`, FieldErrors{"provider": {"A credit provider is required for credit mode."}}},
		{"username with space", `{` + valid + `,"username":"j doe"}`, FieldErrors{"username": {"Not a valid LMS username: at most 150 characters, no spaces, '/' or ','."}}},
		{"unknown site", `{` + valid + `,"site":"other"}`, FieldErrors{"site": {`Unknown site "other".`}}},
		{"bad site name", `{` + valid + `,"site":"a b"}`, FieldErrors{"site": {"Not a valid site name: 1-100 of letters, digits, '_', '.' and '-'."}}},
		{"array body", `[1]`, FieldErrors{NonFieldErrors: {"Invalid data. Expected a dictionary, but got list."}}},
		{"string body", `"x"`, FieldErrors{NonFieldErrors: {"Invalid data. Expected a dictionary, but got str."}}},
		{"two objects", `{}{}`, FieldErrors{NonFieldErrors: {"JSON parse error - unexpected data after the JSON object"}}},
		{"empty body", ``, FieldErrors{NonFieldErrors: {"JSON parse error - empty body"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.body), func(s string) bool { return s == DefaultSite })
			var got FieldErrors
			if !errors.As(err, &got) {
				t.Fatalf("Parse error = %v, want FieldErrors", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseMalformedJSON(t *testing.T) {
	for _, body := range []string{`{"course_id":`, `{'a':1}`, `nope`, "{\"a\":\"\xff\"}x"} {
		_, err := Parse([]byte(body), nil)
		var fe FieldErrors
		if !errors.As(err, &fe) || len(fe[NonFieldErrors]) != 1 || !strings.HasPrefix(fe[NonFieldErrors][0], "JSON parse error") {
			t.Errorf("Parse(%q) = %v, want a non_field_errors JSON parse error", body, err)
		}
	}
}

// The course key grammar as regular expressions: ValidCourseKey is these,
// written out by hand (their compiled Unicode classes weighed 1.5 MB).
var (
	courseKeyNew    = regexp.MustCompile(`^course-v1:([\p{L}\p{N}_~.:-]+)\+([\p{L}\p{N}_~.:-]+)\+([\p{L}\p{N}_~.:-]+)$`)
	courseKeyLegacy = regexp.MustCompile(`^([\p{L}\p{N}_.%-]+)/([\p{L}\p{N}_.%-]+)/([\p{L}\p{N}_.%-]+)$`)
)

func courseKeyByRegexp(s string) bool {
	if len(s) > maxCourseID {
		return false
	}
	if strings.HasPrefix(s, "course-v1:") {
		return courseKeyNew.MatchString(s)
	}
	return courseKeyLegacy.MatchString(s)
}

func FuzzValidCourseKey(f *testing.F) {
	for _, s := range []string{"course-v1:edX+DemoX+Demo_Course", "edX/DemoX/2014", "course-v1:a++b", "course-v1:+a+b",
		"a//b", "/a/b", "a/b/", "course-v1:Ünï+Çødé+Rün", "course-v1:a+b+c+", "x/y/z\xff", "course-v1:a:b+c+d",
		"a/b+c/d", "course-v1:a/b+c+d", "a/b/c%", "course-v1:a+b+\u00b2", "١/٢/٣"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if got, want := ValidCourseKey(s), courseKeyByRegexp(s); got != want {
			t.Fatalf("ValidCourseKey(%q) = %v, the regular expression says %v", s, got, want)
		}
	})
}

func TestValidCourseKey(t *testing.T) {
	for key, want := range map[string]bool{
		"course-v1:edX+DemoX+Demo_Course":           true,
		"course-v1:edX+Demo.X+2024~T1":              true,
		"course-v1:Ünï+Çødé+Rün":                    true,
		"course-v1:org:sub+c+r":                     true,
		"edX/DemoX/2014":                            true,
		"edX/Demo%20X/2014":                         true,
		"course-v1:Org+Course":                      false,
		"course-v1:Org+Cou rse+Run":                 false,
		"course-v1:O%rg+C+R":                        false,
		"course-v1:Org+Course+Run+branch@draft":     false,
		"course-v1:Org+Course+Run+version@abc":      false,
		"course-v1:Org+C+R+type@html+block@x":       false,
		"course-v1:edX+DemoX+Demo_Course\n":         false,
		"edX/DemoX":                                 false,
		"edX/DemoX/2014/extra":                      false,
		"":                                          false,
		"course-v1:a+b+" + strings.Repeat("c", 300): false,
	} {
		if got := ValidCourseKey(key); got != want {
			t.Errorf("ValidCourseKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func BenchmarkParse(b *testing.B) {
	body := []byte(`{` + valid + `}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Parse(body, nil); err != nil {
			b.Fatal(err)
		}
	}
}
