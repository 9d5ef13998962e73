package fulfillment

import (
	"errors"
	"strings"
	"testing"
)

func TestMaskEmail(t *testing.T) {
	tests := []struct{ in, want string }{
		{"jane.doe@example.com", "j***@example.com"},
		{"é@example.com", "é***@example.com"},
		{"@example.com", "***"},
		{"not an email", "***"},
	}
	for _, tt := range tests {
		if got := MaskEmail(tt.in); got != tt.want {
			t.Errorf("MaskEmail(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
	if got := MaskEmailIn("no LMS account for jane@example.com yet", " jane@example.com "); got != "no LMS account for j***@example.com yet" {
		t.Errorf("MaskEmailIn: %q", got)
	}
	if got := MaskEmailIn("lms enroll: 503", ""); got != "lms enroll: 503" {
		t.Errorf("MaskEmailIn without an email: %q", got)
	}
}

func TestValidEmail(t *testing.T) {
	for s, want := range map[string]bool{
		"Honor@Example.COM": true, "a+b@example.com": true, "é@example.com": true,
		"": false, "no-at": false, "@example.com": false, "x@": false, "a b@example.com": false,
		"a\x00@example.com": false, "x@" + strings.Repeat("e", MaxEmail): false, "\xff@example.com": false,
	} {
		if got := ValidEmail(s); got != want {
			t.Errorf("ValidEmail(%q) = %v, want %v", s, got, want)
		}
	}
}

// A return names its learner by LMS user id, username or (a shop's line)
// email; an invalid email is refused by name, and naming nobody too.
func TestParseReturnEmail(t *testing.T) {
	const line = `"course_id":"course-v1:edX+DemoX+Demo_Course","course_mode":"verified","order_number":"W-1"`
	r, err := ParseReturn([]byte(`{`+line+`,"email":" Honor@Example.COM "}`), nil)
	if err != nil || r.Email != "Honor@Example.COM" || r.Ref().Learner() != (Learner{Email: "Honor@Example.COM"}) {
		t.Fatalf("by email: %+v %v", r, err)
	}
	for body, field := range map[string]string{
		`{` + line + `,"email":"not an email"}`: "email",
		`{` + line + `,"email":7}`:              "email",
		`{` + line + `}`:                        "edx_lms_user_id",
	} {
		var fe FieldErrors
		if _, err := ParseReturn([]byte(body), nil); !errors.As(err, &fe) || len(fe[field]) == 0 {
			t.Errorf("%s: %v, want an error on %s", body, err, field)
		}
	}
}
