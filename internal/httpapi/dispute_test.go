package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/intake"
	"github.com/openedx/coordinator/internal/shop"
	"github.com/openedx/coordinator/internal/signals"
)

// An opened Stripe dispute is sent on shop_dispute_opened through the
// intake, records no line, and is answered 200 only once its receivers took
// it (503 otherwise, so that Stripe delivers it again).
func TestWebhookDisputeOpened(t *testing.T) {
	flows := flow.NewRegistry()
	shop.Register(flows)
	sig, _ := signals.Lookup[shop.DisputeOpened](flows.Signals(), shop.SignalDisputeOpened)
	var got []shop.DisputeOpened
	var fail error
	sig.Register("test.disputes", func(_ context.Context, d shop.DisputeOpened) (string, error) {
		if fail != nil {
			return "", fail
		}
		got = append(got, d)
		return "noted", nil
	})
	if err := flows.Signals().Wire(map[string][]string{shop.SignalDisputeOpened: {"test.disputes"}}); err != nil {
		t.Fatal(err)
	}
	rec := &recorder{}
	h, _ := webhookAPI(t, rec, func(d *Deps) { d.Intake = intake.New(flows) })
	body := fmt.Appendf(nil, `{"id":"evt_1","type":"charge.dispute.created","created":%d,"livemode":false,"data":{"object":`+
		`{"id":"du_1","object":"dispute","amount":1000,"currency":"usd","reason":"fraudulent","status":"needs_response","payment_intent":"pi_00000000000000"}}}`,
		time.Now().Unix())

	w := deliver(h, "stripe", "", body, true)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"signals":[{"signal":"shop_dispute_opened","receivers":{"test.disputes":{"response":"noted","error":false}}}]`) ||
		!strings.Contains(w.Body.String(), `"lines":[]`) {
		t.Fatalf("%d %s, want 200 with the signal's receiver and no line", w.Code, w.Body)
	}
	if len(got) != 1 || got[0].OrderNumber != "stripe-pi_00000000000000" || got[0].DisputeID != "du_1" || got[0].Amount != 1000 || got[0].Reason != "fraudulent" {
		t.Errorf("receiver got %+v", got)
	}
	if n, _ := rec.count(); n != 0 {
		t.Errorf("%d lines placed, want none", n)
	}

	fail = errors.New("queue down")
	if w := deliver(h, "stripe", "", body, true); w.Code != http.StatusServiceUnavailable {
		t.Errorf("receiver failing: %d %s, want 503", w.Code, w.Body)
	}
}
