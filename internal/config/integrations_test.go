package config

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func integrationEnv(k string) string {
	return map[string]string{"WOO_SECRET": "woo-secret-0123456789abcdef", "STRIPE_KEY": "sk_live_0123456789"}[k]
}

func parseIntegrations(t *testing.T, section string) (Config, error) {
	t.Helper()
	return Parse([]byte(minimal+section), func(k string) string {
		if v := integrationEnv(k); v != "" {
			return v
		}
		return env(k)
	})
}

func TestIntegrationsDefaultsAndExpansion(t *testing.T) {
	cfg, err := parseIntegrations(t, `integrations:
  - name: woo
    type: woocommerce
    secrets: ["${WOO_SECRET}", "${WOO_OLD_SECRET}"]
    products:
      "DEMO-VERIFIED": {course_id: "course-v1:edX+DemoX+Demo_Course", mode: verified}
  - name: stripe
    type: stripe
    secrets: ["whsec_0123456789abcdef"]
    api_key: "${STRIPE_KEY}"
    order_prefix: "S"
  - name: strict
    type: shopify
    secrets: ["shpss_0123456789abcdef"]
    enroll_unregistered: false
`)
	if err != nil {
		t.Fatal(err)
	}
	want := []Integration{
		{Name: "woo", Type: "woocommerce", Secrets: []string{"woo-secret-0123456789abcdef"}, Site: "default", OrderPrefix: "woo-",
			CourseMode: "verified", Products: map[string]Product{"DEMO-VERIFIED": {{CourseID: "course-v1:edX+DemoX+Demo_Course", Mode: "verified"}}},
			EnrollUnregistered: true}, // by default: shop buyers pay first and register later
		{Name: "stripe", Type: "stripe", Secrets: []string{"whsec_0123456789abcdef"}, Site: "default", OrderPrefix: "S",
			CourseMode: "verified", APIKey: "sk_live_0123456789", EnrollUnregistered: true},
		{Name: "strict", Type: "shopify", Secrets: []string{"shpss_0123456789abcdef"}, Site: "default", OrderPrefix: "strict-",
			CourseMode: "verified"}, // an explicit false holds
	}
	if diff := cmp.Diff(want, cfg.Integrations); diff != "" {
		t.Errorf("integrations (-want +got):\n%s", diff)
	}
}

// Each refusal names the key; no secret is shown.
func TestIntegrationsRefusals(t *testing.T) {
	const ok = `secrets: ["${WOO_SECRET}"]`
	tests := []struct{ name, yaml, want string }{
		{"bad name", `[{name: "Woo Shop", type: woocommerce, ` + ok + `}]`, `integrations[0].name: "Woo Shop" must be 1-32`},
		{"duplicate name", `[{name: woo, type: woocommerce, ` + ok + `}, {name: woo, type: shopify, ` + ok + `}]`, "integrations[1].name: \"woo\" is used by another"},
		{"no secret", `[{name: w, type: woocommerce, secrets: ["${UNSET}"]}]`, "integrations[0].secrets: required"},
		{"short secret", `[{name: w, type: woocommerce, secrets: ["hunter2"]}]`, "integrations[0].secrets[0]: is shorter than 16 bytes"},
		{"bad course", `[{name: w, type: woocommerce, ` + ok + `, products: {SKU1: {course_id: "DemoX"}}}]`, `integrations[0].products.SKU1.course_id: "DemoX" is not a course run key`},
		{"bad mode", `[{name: w, type: woocommerce, ` + ok + `, course_mode: "Verified!"}]`, "integrations[0].course_mode:"},
		{"stripe bad url", `[{name: s, type: stripe, ` + ok + `, api_key: k, api_url: "ftp://x"}]`, "integrations[0].api_url:"},
		{"woo credentials over plain http", `[{name: w, type: woocommerce, ` + ok + `, api_url: "http://shop.test", consumer_key: ck, consumer_secret: cs}]`, "integrations[0].api_url: must be https"},
		{"half woo credentials", `[{name: w, type: woocommerce, ` + ok + `, api_url: "https://shop.test", consumer_key: ck}]`, "integrations[0].consumer_secret: set consumer_key and consumer_secret together"},
		{"same prefix", `[{name: a, type: woocommerce, ` + ok + `, order_prefix: "x-"}, {name: b, type: shopify, ` + ok + `, order_prefix: "x-"}]`, "integrations[1].order_prefix: is also a's"},
		// Finding 7: "S" + "12" is "S1" + "2".
		{"prefix of another prefix", `[{name: a, type: stripe, ` + ok + `, api_key: k, order_prefix: "S"}, {name: b, type: woocommerce, ` + ok + `, order_prefix: "S1"}]`, `integrations[1].order_prefix: "S1" and a's "S" on site default: one starts with the other`},
		{"another prefix of this one", `[{name: a, type: woocommerce, ` + ok + `, order_prefix: "shop-eu-"}, {name: b, type: shopify, ` + ok + `, order_prefix: "shop-"}]`, `integrations[1].order_prefix: "shop-" and a's "shop-eu-"`},
		{"unset secret variable named", `[{name: w, type: woocommerce, secrets: ["${WOO_UNSET_SECRET}"]}]`, "(it refers to ${WOO_UNSET_SECRET}, which is not set"},
		{"site without the sites table", `[{name: w, type: woocommerce, ` + ok + `, site: school}]`, `integrations[0].site: "school" needs the sites table`},
		{"unknown key", `[{name: w, type: woocommerce, ` + ok + `, secret: x}]`, "integrations[0].secret: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseIntegrations(t, "integrations: "+tt.yaml+"\n")
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
			if err != nil && (strings.Contains(err.Error(), "woo-secret") || strings.Contains(err.Error(), "hunter2")) {
				t.Errorf("error %v shows a secret", err)
			}
		})
	}
}
