package fulfillment

import "testing"

func TestClip(t *testing.T) {
	for _, tt := range []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly", 7, "exactly"},
		{"longer text", 6, "longer..."},
		{"héllo", 2, "h..."}, // not inside é
		{"a\xffb", 10, "a\ufffdb"},
	} {
		if got := Clip(tt.s, tt.n); got != tt.want {
			t.Errorf("Clip(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
	}
}

func TestValidMode(t *testing.T) {
	for s, want := range map[string]bool{"verified": true, "no-id-professional": true, "a_1": true,
		"": false, "Verified": false, "pro mode": false, string(make([]byte, 101)): false} {
		if got := ValidMode(s); got != want {
			t.Errorf("ValidMode(%q) = %v, want %v", s, got, want)
		}
	}
}
