package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// whsec is a valid Standard Webhooks secret (32 bytes).
const whsec = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"

func webhookEnv(k string) string {
	if k == "CRM_SECRET" {
		return whsec
	}
	return env(k)
}

func TestWebhooks(t *testing.T) {
	cfg, err := Parse([]byte(minimal+`webhooks:
  - name: crm
    url: "https://127.0.0.1:9/hooks"
    secrets: ["${CRM_SECRET}", "`+whsec+`"]
    headers: {Authorization: "Bearer abc"}
`), webhookEnv)
	if err != nil {
		t.Fatal(err)
	}
	w := cfg.Webhooks[0]
	if w.Secrets[0] != whsec || w.Timeout.D() != 10*time.Second || w.MaxConcurrency != DefaultWebhookMaxConcurrency {
		t.Errorf("webhook %+v: want ${CRM_SECRET} expanded, timeout 10s and the default concurrency", w)
	}
}

func TestWebhookRefusals(t *testing.T) {
	tests := []struct{ name, entry, want string }{
		{"bad name", `{name: "C-R-M", url: "http://127.0.0.1", secrets: ["` + whsec + `"]}`, "webhooks[0].name: must be"},
		{"no secret", `{name: crm, url: "http://127.0.0.1", secrets: []}`, "webhooks[0].secrets: required"},
		{"unset secret", `{name: crm, url: "http://127.0.0.1", secrets: ["${NOPE}"]}`, "webhooks[0].secrets[0]: must be a Standard Webhooks secret"},
		{"not whsec", `{name: crm, url: "http://127.0.0.1", secrets: ["hunter2-hunter2-hunter2-hunter2"]}`, "webhooks[0].secrets[0]: must be a Standard Webhooks secret"},
		{"not base64", `{name: crm, url: "http://127.0.0.1", secrets: ["whsec_!!!"]}`, "not base64"},
		{"short key", `{name: crm, url: "http://127.0.0.1", secrets: ["whsec_c2hvcnQ="]}`, "24 to 64 bytes"},
		{"bad url", `{name: crm, url: "ftp://127.0.0.1/x?token=s3cr3t", secrets: ["` + whsec + `"]}`, "webhooks[0].url: is not an absolute http(s) URL"},
		{"no url", `{name: crm, secrets: ["` + whsec + `"]}`, "webhooks[0].url: required"},
		{"timeout", `{name: crm, url: "http://127.0.0.1", secrets: ["` + whsec + `"], timeout: 2m}`, "webhooks[0].timeout: must be positive and at most 1m0s"},
		{"signature header", `{name: crm, url: "http://127.0.0.1", secrets: ["` + whsec + `"], headers: {webhook-signature: x}}`, "webhooks[0].headers.webhook-signature: is set by Coordinator"},
		{"content type", `{name: crm, url: "http://127.0.0.1", secrets: ["` + whsec + `"], headers: {Content-Type: text/plain}}`, "cannot be replaced"},
		{"header line break", `{name: crm, url: "http://127.0.0.1", secrets: ["` + whsec + `"], headers: {X-A: "a\nb"}}`, "line breaks"},
		{"duplicate", `{name: crm, url: "http://127.0.0.1", secrets: ["` + whsec + `"]}, {name: crm, url: "http://127.0.0.1", secrets: ["` + whsec + `"]}`, "webhooks[1].name: \"crm\" is listed twice"},
		{"unknown key", `{name: crm, url: "http://127.0.0.1", secret: "x"}`, "webhooks[0].secret: unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(minimal+"webhooks: ["+tt.entry+"]\n"), webhookEnv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
			for _, secret := range []string{"s3cr3t", "hunter2", whsec} {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error %q shows a secret", err)
				}
			}
		})
	}
}

// Deliveries to a subscriber that never answers each hold a worker slot for
// its timeout. Together the subscribers may hold at most half of
// worker.concurrency, so enrollments keep the rest: more is refused, naming
// the subscriber's max_concurrency, and the default shrinks to fit.
func TestWebhookConcurrencyLeavesWorkerSlots(t *testing.T) {
	sub := func(name, extra string) string {
		return `{name: ` + name + `, url: "http://127.0.0.1:9", secrets: ["` + whsec + `"]` + extra + `}`
	}
	parse := func(concurrency int, subs ...string) (Config, error) {
		return Parse([]byte(minimal+fmt.Sprintf("worker: {concurrency: %d}\nwebhooks: [%s]\n", concurrency, strings.Join(subs, ", "))), webhookEnv)
	}
	for _, tt := range []struct {
		name        string
		concurrency int
		subs        []string
		want        string
	}{
		{"one subscriber, every slot", 50, []string{sub("crm", ", max_concurrency: 50")},
			"webhooks[0].max_concurrency: the subscribers' max_concurrency add up to 50 with this one, more than half of worker.concurrency (50)"},
		{"three subscribers, 30 of 50 slots", 50, []string{sub("a", ", max_concurrency: 10"), sub("b", ", max_concurrency: 10"), sub("c", ", max_concurrency: 10")},
			"webhooks[2].max_concurrency: the subscribers' max_concurrency add up to 30"},
		{"one worker slot", 1, []string{sub("crm", "")}, "webhooks[0].max_concurrency:"},
	} {
		if _, err := parse(tt.concurrency, tt.subs...); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: %v, want %q", tt.name, err, tt.want)
		}
	}
	for _, tt := range []struct {
		name        string
		concurrency int
		subs        []string
		want        []int
	}{
		{"half exactly", 20, []string{sub("crm", ", max_concurrency: 10")}, []int{10}},
		{"the default", 50, []string{sub("crm", "")}, []int{DefaultWebhookMaxConcurrency}},
		{"the default, few slots", 8, []string{sub("crm", "")}, []int{4}},
		{"the default, shared", 50, []string{sub("a", ""), sub("b", ""), sub("c", "")}, []int{8, 8, 8}},
	} {
		cfg, err := parse(tt.concurrency, tt.subs...)
		if err != nil {
			t.Errorf("%s: %v", tt.name, err)
			continue
		}
		for i, w := range cfg.Webhooks {
			if w.MaxConcurrency != tt.want[i] {
				t.Errorf("%s: webhooks[%d].max_concurrency %d, want %d", tt.name, i, w.MaxConcurrency, tt.want[i])
			}
		}
	}
}
