package shop

import "testing"

func TestBaseOrderNumber(t *testing.T) {
	for in, want := range map[string]string{
		"woo-123": "woo-123", "woo-123-p2": "woo-123", "woo-123-p17": "woo-123", "woo-123-p1": "woo-123-p1",
		"woo-123-p02": "woo-123-p02", "woo-123-px": "woo-123-px", "-p2": "-p2", "A-p3-p2": "A-p3",
	} {
		if got := BaseOrderNumber(in); got != want {
			t.Errorf("BaseOrderNumber(%q) = %q, want %q", in, got, want)
		}
	}
	for k := 2; k < 5; k++ {
		if got := BaseOrderNumber(participantNumber("EDX-9", k)); got != "EDX-9" {
			t.Errorf("participant %d: base %q", k, got)
		}
	}
}
