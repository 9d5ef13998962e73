package webhooks

import (
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/config"
)

// A subscriber no signal reaches is warned about, by its receiver's name.
func TestWarnings(t *testing.T) {
	cfg := config.Config{
		Webhooks: []config.Webhook{{Name: "crm"}, {Name: "erp"}},
		Signals:  map[string][]string{"fulfillment_completed": {"webhook.erp"}},
	}
	got := strings.Join(Warnings(cfg), "\n")
	if !strings.Contains(got, "webhooks[0] (webhook.crm) is connected to no signal") || strings.Contains(got, "erp") {
		t.Errorf("warnings %q, want one for crm only", got)
	}
}
