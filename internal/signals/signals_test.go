package signals

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestSendIsRobust(t *testing.T) {
	sig := New[int]("order_placed")
	var ran []string
	sig.Register("a.fails", func(_ context.Context, n int) (string, error) {
		ran = append(ran, "a")
		return "", errors.New("boom")
	})
	sig.Register("b.panics", func(_ context.Context, n int) (string, error) {
		ran = append(ran, "b")
		panic("oops")
	})
	sig.Register("c.works", func(_ context.Context, n int) (string, error) {
		ran = append(ran, "c")
		return "got " + strings.Repeat("x", n), nil
	})
	if err := sig.Connect([]string{"c.works", "a.fails", "b.panics"}); err != nil {
		t.Fatal(err)
	}
	res := sig.Send(context.Background(), 2)
	if diff := cmp.Diff([]string{"c", "a", "b"}, ran); diff != "" {
		t.Errorf("receivers ran (-want +got):\n%s", diff)
	}
	if res[0].Receiver != "c.works" || res[0].Response != "got xx" || res[0].Err != nil {
		t.Errorf("c.works result = %+v", res[0])
	}
	if res[1].Err == nil || res[1].Err.Error() != "boom" {
		t.Errorf("a.fails result = %+v", res[1])
	}
	var pe *PanicError
	if !errors.As(res[2].Err, &pe) || pe.Value != "oops" || len(pe.Stack) == 0 {
		t.Errorf("b.panics result = %+v, want a PanicError with a stack", res[2])
	}
}

func TestWireRefusals(t *testing.T) {
	newSig := func() *Signal[string] {
		s := New[string]("fulfill_order_placed", "lms.enroll")
		s.Register("lms.enroll", func(context.Context, string) (string, error) { return "", nil })
		return s
	}
	tests := []struct {
		name    string
		mapping map[string][]string
		want    string
	}{
		{"unknown receiver", map[string][]string{"fulfill_order_placed": {"lms.enrol"}}, `signals.fulfill_order_placed: unknown receiver "lms.enrol" (known: lms.enroll)`},
		{"empty list", map[string][]string{"fulfill_order_placed": {}}, "signals.fulfill_order_placed: no receivers listed"},
		{"duplicate", map[string][]string{"fulfill_order_placed": {"lms.enroll", "lms.enroll"}}, "listed twice"},
		{"unknown signal", map[string][]string{"fulfill_order_placed": {"lms.enroll"}, "order_refunded": {"x"}}, "signals.order_refunded: unknown signal"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Wire(tt.mapping, newSig())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Wire error = %v, want %q", err, tt.want)
			}
		})
	}
	s := newSig()
	if err := Wire(map[string][]string{"fulfill_order_placed": {"lms.enroll"}}, s); err != nil {
		t.Fatalf("valid mapping: %v", err)
	}
	if got := s.Connected(); len(got) != 1 || got[0] != "lms.enroll" {
		t.Errorf("Connected = %v", got)
	}
}

// A signal the configuration does not name gets its defaults, which may be
// none: configurations written before the signal existed keep loading.
func TestWireDefaults(t *testing.T) {
	placed := New[string]("fulfill_order_placed", "lms.enroll")
	placed.Register("lms.enroll", func(context.Context, string) (string, error) { return "id", nil })
	completed := New[string]("fulfillment_completed")
	completed.Register("webhook.crm", func(context.Context, string) (string, error) { return "", nil })
	if err := Wire(map[string][]string{}, placed, completed); err != nil {
		t.Fatalf("Wire with nothing mapped: %v", err)
	}
	if got := placed.Connected(); len(got) != 1 || got[0] != "lms.enroll" {
		t.Errorf("placed.Connected = %v, want its default [lms.enroll]", got)
	}
	if got := completed.Send(context.Background(), "x"); len(got) != 0 {
		t.Errorf("completed reached %v, want no receiver by default", got)
	}
	if err := Wire(map[string][]string{"fulfillment_completed": {"webhook.crm"}}, placed, completed); err != nil {
		t.Fatal(err)
	}
	if got := completed.Send(context.Background(), "x"); len(got) != 1 || got[0].Receiver != "webhook.crm" {
		t.Errorf("completed reached %v, want webhook.crm as configured", got)
	}
	// An explicit empty list is what config check prints for it: accepted
	// for a signal whose default is none, refused for one that has some.
	if err := Wire(map[string][]string{"fulfillment_completed": {}}, placed, completed); err != nil {
		t.Errorf("fulfillment_completed: []: %v", err)
	}
	if err := Wire(map[string][]string{"fulfill_order_placed": {}}, placed, completed); err == nil {
		t.Error("fulfill_order_placed: [] accepted")
	}
}
