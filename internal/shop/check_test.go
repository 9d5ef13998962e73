package shop

import (
	"strings"
	"testing"

	"github.com/openedx/coordinator/internal/config"
)

// The adapters check integrations[].type and the API keys each type uses.
func TestCheckIntegration(t *testing.T) {
	tests := []struct {
		name string
		in   config.Integration
		want string
	}{
		{"unknown type", config.Integration{Type: "magento"}, `integrations[0].type: "magento" is not woocommerce`},
		{"stripe without key", config.Integration{Type: TypeStripe}, "integrations[0].api_key: required for type stripe"},
		{"key on shopify", config.Integration{Type: TypeShopify, APIKey: "k"}, "integrations[0].api_key: is not used by type shopify"},
		{"consumer key on stripe", config.Integration{Type: TypeStripe, APIKey: "k", ConsumerKey: "ck"}, "integrations[0].consumer_key: is not used by type stripe"},
		{"stripe", config.Integration{Type: TypeStripe, APIKey: "k"}, ""},
		{"woocommerce with its API", config.Integration{Type: TypeWooCommerce, APIURL: "https://shop.test", ConsumerKey: "ck", ConsumerSecret: "cs"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckIntegration("integrations[0]", tt.in)
			if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
				t.Errorf("error %v, want %q", err, tt.want)
			}
		})
	}
}
