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
	// enrollments need.
	MaxConcurrency int `yaml:"max_concurrency"`
}

// Webhook defaults and bounds.
const (
	DefaultWebhookTimeout        = 10 * time.Second
	MaxWebhookTimeout            = time.Minute
	DefaultWebhookMaxConcurrency = 10
	// WebhookReceiverPrefix names a subscriber's receiver: webhook.<name>.
	WebhookReceiverPrefix = "webhook."
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
	for i := range c.Webhooks {
		w := &c.Webhooks[i]
		if w.Timeout == 0 {
			w.Timeout = Duration(DefaultWebhookTimeout)
		}
		if w.MaxConcurrency == 0 {
			w.MaxConcurrency = DefaultWebhookMaxConcurrency
		}
	}
}

// validateWebhooks checks the subscribers. Values are never echoed: a URL
// or a header may hold a token.
func (c *Config) validateWebhooks() error {
	if err := c.validateCompleteOrder(); err != nil {
		return err
	}
	seen := map[string]bool{}
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
		seen[w.Name] = true
		if !c.connected(WebhookReceiverPrefix + w.Name) {
			c.warnings = append(c.warnings, fmt.Sprintf("%s (%s%s) is connected to no signal: it receives nothing (list it under signals:)",
				k, WebhookReceiverPrefix, w.Name))
		}
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

// CompleteOrderReceiver is the built-in receiver that completes WooCommerce
// orders through their store's REST API (internal/wcorders).
const CompleteOrderReceiver = "woocommerce.complete_order"

// validateCompleteOrder requires, when woocommerce.complete_order is
// connected, the REST API of every WooCommerce integration.
func (c *Config) validateCompleteOrder() error {
	if !c.connected(CompleteOrderReceiver) {
		return nil
	}
	for i, in := range c.Integrations {
		if in.Type != IntegrationWooCommerce {
			continue
		}
		k := fmt.Sprintf("integrations[%d]", i)
		switch {
		case in.ConsumerKey == "":
			return keyErr(k+".consumer_key", "required: %s is connected and calls the store's REST API", CompleteOrderReceiver)
		case in.ConsumerSecret == "":
			return keyErr(k+".consumer_secret", "required: %s is connected and calls the store's REST API", CompleteOrderReceiver)
		}
		if err := HTTPURL(k+".api_url", in.APIURL); err != nil {
			return keyErr(k+".api_url", "required: the store's base URL (https://shop.example.com), as %s calls its REST API", CompleteOrderReceiver)
		}
		if u, _ := url.Parse(in.APIURL); u.Scheme != "https" && !loopback(u.Hostname()) {
			return keyErr(k+".api_url", "must be https: %s sends the consumer key and secret with every call (plain http only to a loopback address)", CompleteOrderReceiver)
		}
	}
	return nil
}

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

// WebhookReceivers lists the receiver names the subscribers provide.
func (c Config) WebhookReceivers() []string {
	names := make([]string, len(c.Webhooks))
	for i, w := range c.Webhooks {
		names[i] = WebhookReceiverPrefix + w.Name
	}
	return names
}

// connected reports whether the signal map names the receiver.
func (c *Config) connected(receiver string) bool {
	for _, rs := range c.Signals {
		for _, r := range rs {
			if r == receiver {
				return true
			}
		}
	}
	return false
}
