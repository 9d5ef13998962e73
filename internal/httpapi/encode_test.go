package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/flow"
	"github.com/openedx/coordinator/internal/fulfillment"
	"github.com/openedx/coordinator/internal/intake"
)

// The hand-written response is what encoding/json writes for the map of
// results it replaced.
func FuzzReceiverResultsJSON(f *testing.F) {
	f.Add("lms.fulfill_order_placed_send_enroll_in_course", "5f1c0d2e9a7b4c3d", false, "hooks.b", "The fulfillment queue is unavailable; retry later.", true)
	f.Add("a", "<script>&amp;\u2028\u2029", false, "b\"\\", "\x00\x1f\x7f\xff", true)
	f.Add("same", "x", false, "same", "y", true)
	f.Add("é", "ünï", true, "", "", false)
	f.Fuzz(func(t *testing.T, name1, resp1 string, err1 bool, name2, resp2 string, err2 bool) {
		if name1 == name2 {
			name2 += "2" // receiver names are unique within a signal
		}
		rs := receiverResults{{name: name1, receiverResult: receiverResult{resp1, err1}}, {name: name2, receiverResult: receiverResult{resp2, err2}}}
		slices.SortFunc(rs, func(a, b namedResult) int { return strings.Compare(a.name, b.name) })
		want, err := json.Marshal(map[string]receiverResult{name1: {resp1, err1}, name2: {resp2, err2}})
		if err != nil {
			t.Fatal(err)
		}
		if got := rs.appendJSON(nil); string(got) != string(want) {
			t.Fatalf("appendJSON = %s, encoding/json writes %s", got, want)
		}
		if got, _ := json.Marshal(struct{ R receiverResults }{rs}); string(got) != `{"R":`+string(want)+`}` {
			t.Fatalf("as a field: %s", got)
		}
	})
}

// A whole fulfill answer, from receivers connected out of name order, is
// what json.Encoder wrote for the map of their results, newline included.
func TestFulfillAnswerBytes(t *testing.T) {
	t.Parallel()
	// Connected in this order, by the signal's defaults.
	reg := flow.NewRegistry()
	placed, _ := reg.DeclareLine(flow.Item{Field: fulfillment.ItemCourseRun, Placed: fulfillment.SignalOrderPlaced,
		Returned: fulfillment.SignalOrderReturned}, []string{"zeta.hook", "alpha.hook"}, nil)
	placed.Register("zeta.hook", func(context.Context, fulfillment.Order) (string, error) { return "task-z", nil })
	placed.Register("alpha.hook", func(context.Context, fulfillment.Order) (string, error) { return "<a&b> ü", nil })
	if err := reg.Signals().Wire(nil); err != nil {
		t.Fatal(err)
	}
	in := intake.New(reg)
	h := NewHandler(Deps{
		Logger:       slog.New(slog.DiscardHandler),
		Auth:         NewAuthenticator(AuthOptions{AdminClaim: "administrator", Issuers: []Issuer{{Issuer: hsIssuer, Audience: audience, Secret: hsSecret}}}, nil),
		Intake:       in,
		KnownSite:    func(_ context.Context, s string) (bool, error) { return s == fulfillment.DefaultSite, nil },
		MaxBodyBytes: 1024,
	})
	rec := do(h, "POST", "/orders/fulfill", "JWT "+hs(t, claims(nil)), "application/json", validBody)
	var want bytes.Buffer
	if err := json.NewEncoder(&want).Encode(map[string]receiverResult{"zeta.hook": {Response: "task-z"}, "alpha.hook": {Response: "<a&b> ü"}}); err != nil {
		t.Fatal(err)
	}
	if rec.Code != 200 || rec.Body.String() != want.String() || rec.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("%d %q (%s), want 200 %q (application/json)", rec.Code, rec.Body, rec.Header().Get("Content-Type"), want.String())
	}
}
