package main

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/catalog"
	"github.com/openedx/coordinator/internal/catalog/wootest"
	"github.com/openedx/coordinator/internal/lms/lmstest"
	"github.com/openedx/coordinator/internal/queue/queuetest"
	"github.com/openedx/coordinator/internal/shop/shoptest"
)

// The round trip: `coordinator catalog plan` writes nothing, `sync` stocks
// the store from the LMS (a second sync is all unchanged), and a paid order
// for a product it created, delivered as the store signs it to the real
// server, enrolls the buyer in that product's mode.
func TestCatalogRoundTrip(t *testing.T) {
	t.Parallel()
	const key, secret = "ck_roundtrip", "cs_roundtrip_secret_0123456789"
	_, queue := queuetest.Redis(t)
	fake := lmstest.NewDemo(testSecret)
	fake.AddUser(63000, "learner63000")
	fake.SetPrice(demoCourse, "verified", lmstest.ModePrice{Name: "Verified Certificate", MinPrice: 49, Currency: "usd"})
	fake.SetPrice(demoCourse, "professional", lmstest.ModePrice{Name: "Professional Education", MinPrice: 99, Currency: "usd"})
	store := wootest.New(key, secret)
	cfg := testConfig(t, queuetest.URL(), lmstest.Start(t, fake).URL, queue, fmt.Sprintf(`integrations:
  - name: woo
    type: woocommerce
    secrets: [%q]
    api_url: %q
    consumer_key: %q
    consumer_secret: %q
`, wooSecret, wootest.Start(t, store).URL, key, secret))

	var plan catalog.Report
	if err := json.Unmarshal([]byte(mustRunCmd(t, cfg, nil, "catalog", "plan", "--integration", "woo", "--json")), &plan); err != nil {
		t.Fatal(err)
	}
	if plan.Sync || plan.Counts[catalog.Create] != 2 || store.Len() != 0 {
		t.Fatalf("plan: %+v, %d products: want 2 creates, nothing written", plan.Counts, store.Len())
	}
	out := mustRunCmd(t, cfg, nil, "catalog", "sync", "--integration", "woo")
	if !strings.Contains(out, "create 2 · update 0") || !slices.ContainsFunc(strings.Split(out, "\n"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 3 && f[0] == "create" && f[1] == demoCourse+"@professional" && f[2] == "99.00" && f[3] == "USD"
	}) {
		t.Errorf("sync output:\n%s", out)
	}
	if strings.Contains(out, secret) {
		t.Error("the output shows the consumer secret")
	}
	if out := mustRunCmd(t, cfg, nil, "catalog", "sync", "--integration", "woo"); !strings.Contains(out, "create 0 · update 0 · unchanged 2") {
		t.Errorf("second sync:\n%s", out)
	}
	if _, err := runCmd(t, cfg, nil, "catalog", "sync", "--integration", "nope"); err == nil || !strings.Contains(err.Error(), `no integration "nope" (configured: woo)`) {
		t.Errorf("unknown integration: %v", err)
	}

	p := store.BySKU(demoCourse + "@professional")[0]
	base := startRun(t, "all", cfg)
	e := shopEnv{instance: &instance{base: base}}
	body := shoptest.Patch(t, wooOrder(t, 950, "learner63000@example.com"), func(m map[string]any) {
		m["line_items"] = []any{map[string]any{"id": 1, "product_id": p.ID, "sku": p.SKU, "quantity": 1, "meta_data": []any{}}}
	})
	if a := e.post(t, "woo", body, wooHeaders("order.updated", body, wooSecret)); a.Status != 200 || len(a.Lines) != 1 {
		t.Fatalf("%+v", a)
	}
	waitFor(t, "enrolled in professional", 30*time.Second, func() bool {
		en, ok := fake.Enrollment("learner63000", demoCourse)
		return ok && en.IsActive && en.Mode == "professional"
	})
}
