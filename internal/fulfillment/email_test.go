package fulfillment

import "testing"

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
