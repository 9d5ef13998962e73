package intake

import (
	"context"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
)

// A shop's disputed payment reaches the receivers connected to
// shop_dispute_opened, declared by the shops' registration with none by
// default.
func TestDisputeOpened(t *testing.T) {
	r := flow.NewRegistry()
	shop.Register(r)
	sig, ok := signals.Lookup[shop.DisputeOpened](r.Signals(), shop.SignalDisputeOpened)
	if !ok {
		t.Fatal("shop_dispute_opened not declared")
	}
	if len(sig.Defaults()) != 0 {
		t.Errorf("defaults %v, want none", sig.Defaults())
	}
	var got []shop.DisputeOpened
	sig.Register("test.disputes", func(_ context.Context, d shop.DisputeOpened) (string, error) {
		got = append(got, d)
		return "noted " + d.DisputeID, nil
	})
	if err := r.Signals().Wire(map[string][]string{shop.SignalDisputeOpened: {"test.disputes"}}); err != nil {
		t.Fatal(err)
	}
	d := shop.DisputeOpened{Integration: "stripe", Site: "default", OrderNumber: "stripe-pi_1", DisputeID: "du_1",
		Amount: 1000, Currency: "usd", Reason: "fraudulent", OpenedAt: time.Unix(1700000000, 0).UTC()}
	sent, err := New(r).disputeOpened(t.Context(), d)
	if err != nil || sent.Signal != shop.SignalDisputeOpened || len(sent.Results) != 1 || sent.Results[0].Response != "noted du_1" {
		t.Fatalf("%+v %v", sent, err)
	}
	if len(got) != 1 || got[0] != d {
		t.Errorf("receiver got %+v, want %+v", got, d)
	}
}
