package wcorders

import (
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/config"
)

// configWith is a whole configuration connecting woocommerce.complete_order
// to one WooCommerce store whose entry ends with extra.
func configWith(extra string) string {
	return `
lms:
  client_secret: "s"
auth:
  jwt:
    - {issuer: "http://lms/oauth2", audience: "lms-key", secret: "0123456789abcdef0123456789abcdef-jwt"}
signals:
  fulfillment_completed: [woocommerce.complete_order]
integrations:
  - {name: woo, type: woocommerce, secrets: ["woo-secret-0123456789abcdef"]` + extra + "\n"
}

// woocommerce.complete_order needs each WooCommerce store's REST API.
func TestCheckNeedsTheStoreAPI(t *testing.T) {
	env := func(k string) string { return "" }
	tests := []struct{ extra, want string }{
		{`}`, "integrations[0].consumer_key: required: woocommerce.complete_order is connected"},
		{`, consumer_key: ck, consumer_secret: cs}`, "integrations[0].api_url: required"},
		{`, consumer_key: ck, consumer_secret: cs, api_url: "https://127.0.0.1:9"}`, ""},
		// The key and secret travel in every call: never in cleartext
		// beyond this machine.
		{`, consumer_key: ck, consumer_secret: cs, api_url: "http://shop.example.com"}`, "integrations[0].api_url: must be https"},
		{`, consumer_key: ck, consumer_secret: cs, api_url: "http://10.0.0.5:8080"}`, "integrations[0].api_url: must be https"},
		{`, consumer_key: ck, consumer_secret: cs, api_url: "http://127.0.0.1:9"}`, ""},
		{`, consumer_key: ck, consumer_secret: cs, api_url: "http://[::1]:9"}`, ""},
		{`, consumer_key: ck, consumer_secret: cs, api_url: "http://localhost:9"}`, ""},
	}
	for _, tt := range tests {
		cfg, err := config.Parse([]byte(configWith(tt.extra)), env)
		if err == nil {
			err = Check(cfg)
		}
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("%s: error %v, want %q", tt.extra, err, tt.want)
		}
	}
}
