package config

import (
	"encoding/base64"
	"fmt"
	"net/netip"
	"net/url"
	"regexp"
	"strings"
	"time"
)

// Webhook is a subscriber (docs/subscribers.md): an HTTP endpoint that receives the
// signals it is connected to as signed deliveries. Its receiver is
// webhook.<name>.
type Webhook struct {
	Name string `yaml:"name"`
	URL  string `yaml:"url"`
	// Secrets are Standard Webhooks secrets, "whsec_<base64>"; every one
	// signs each delivery, so a subscriber rotating its secret verifies
	// with the old or the new one while both are listed.
	Secrets []string `yaml:"secrets"`
	Timeout Duration `yaml:"timeout"`
	// Headers are sent with every delivery; they may not replace the
	// signature headers or Content-Type.
	Headers map[string]string `yaml:"headers"`
	// MaxConcurrency bounds this subscriber's deliveries in flight per
	// worker process, so a slow subscriber never takes the worker slots
	// enrollments need: all subscribers' together may hold at most half of
	// worker.concurrency.
	MaxConcurrency int `yaml:"max_concurrency"`
}

// Webhook defaults and bounds.
const (
	DefaultWebhookTimeout = 10 * time.Second
	MaxWebhookTimeout     = time.Minute
	// DefaultWebhookMaxConcurrency is a subscriber's max_concurrency, or
	// less where the subscribers would otherwise hold more than half of
	// worker.concurrency together: each then gets an equal share of that
	// half (at least 1).
	DefaultWebhookMaxConcurrency = 10
)

var (
	webhookName = regexp.MustCompile(`^[a-z0-9_]{1,32}$`)
	// headerName is an RFC 9110 token.
	headerName = regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
)

// reservedHeaders are set by Coordinator on every delivery.
var reservedHeaders = []string{"Webhook-Id", "Webhook-Timestamp", "Webhook-Signature", "Content-Type",
	"Content-Length", "Host", "Transfer-Encoding", "Connection"}

// normalizeWebhooks applies each subscriber's defaults.
func (c *Config) normalizeWebhooks() {
	share := max(1, c.Worker.Concurrency/2/max(1, len(c.Webhooks)))
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		if w.Timeout == 0 {
			w.Timeout = Duration(DefaultWebhookTimeout)
		}
		if w.MaxConcurrency == 0 {
			w.MaxConcurrency = min(DefaultWebhookMaxConcurrency, share)
		}
	}
}

// validateWebhooks checks the subscribers. Values are never echoed: a URL
// or a header may hold a token.
func (c *Config) validateWebhooks() error {
	seen := map[string]bool{}
	held := 0 // worker slots the subscribers may hold
	for i, w := range c.Webhooks {
		k := fmt.Sprintf("webhooks[%d]", i)
		switch {
		case !webhookName.MatchString(w.Name):
			return keyErr(k+".name", "must be 1-32 of a-z, 0-9 and '_' (the receiver is webhook.<name>)")
		case seen[w.Name]:
			return keyErr(k+".name", "%q is listed twice", w.Name)
		case w.Timeout <= 0 || w.Timeout.D() > MaxWebhookTimeout:
			return keyErr(k+".timeout", "must be positive and at most %v", MaxWebhookTimeout)
		case w.MaxConcurrency <= 0:
			return keyErr(k+".max_concurrency", "must be positive")
		case len(w.Secrets) == 0:
			return keyErr(k+".secrets", "required: at least one Standard Webhooks secret, whsec_<base64>")
		}
		// Deliveries to a subscriber that does not answer hold their worker
		// slots for its timeout: enrollments keep at least half of them.
		if held += w.MaxConcurrency; held > c.Worker.Concurrency/2 {
			return keyErr(k+".max_concurrency", "the subscribers' max_concurrency add up to %d with this one, more than half of worker.concurrency (%d): subscribers that do not answer would hold the worker slots enrollments need; lower it or raise worker.concurrency",
				held, c.Worker.Concurrency)
		}
		seen[w.Name] = true
		if err := webhookURL(k+".url", w.URL); err != nil {
			return err
		}
		for j, s := range w.Secrets {
			if _, err := WebhookSecret(s); err != nil {
				return keyErr(fmt.Sprintf("%s.secrets[%d]", k, j), "%v", err)
			}
		}
		for name, v := range w.Headers {
			hk := k + ".headers." + keyName(name)
			switch {
			case !headerName.MatchString(name):
				return keyErr(hk, "is not a valid header name")
			case strings.ContainsAny(v, "\r\n\x00"):
				return keyErr(hk, "the value may not hold line breaks")
			}
			for _, r := range reservedHeaders {
				if strings.EqualFold(name, r) {
					return keyErr(hk, "is set by Coordinator on every delivery and cannot be replaced")
				}
			}
		}
	}
	return nil
}

// CredentialsSafe reports whether credentials may travel to u: over https,
// or to this machine.
func CredentialsSafe(u *url.URL) bool { return u.Scheme == "https" || loopback(u.Hostname()) }

// loopback reports whether host is this machine: localhost or a loopback IP.
func loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// webhookURL checks a subscriber's URL without echoing it.
func webhookURL(key, s string) error {
	if s == "" {
		return keyErr(key, "required")
	}
	if err := HTTPURL(key, s); err != nil {
		return keyErr(key, "is not an absolute http(s) URL")
	}
	return nil
}

// WebhookSecret decodes a Standard Webhooks secret, "whsec_" and the base64
// of 24 to 64 random bytes, into the HMAC key.
func WebhookSecret(s string) ([]byte, error) {
	b64, ok := strings.CutPrefix(s, "whsec_")
	if !ok {
		return nil, fmt.Errorf("must be a Standard Webhooks secret: whsec_ and base64 (e.g. whsec_$(openssl rand -base64 32))")
	}
	key, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return nil, fmt.Errorf("the part after whsec_ is not base64")
	}
	if len(key) < 24 || len(key) > 64 {
		return nil, fmt.Errorf("must decode to 24 to 64 bytes (32 recommended), not %d", len(key))
	}
	return key, nil
}

// Connected reports whether the signal map names the receiver.
func (c Config) Connected(receiver string) bool {
	for _, rs := range c.Signals {
		for _, r := range rs {
			if r == receiver {
				return true
			}
		}
	}
	return false
}
