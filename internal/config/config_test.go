package config

import (
	"strings"
	"testing"
	"time"
)

const minimal = `
lms:
  client_secret: "${SECRET}"
auth:
  jwt:
    - {issuer: "http://lms/oauth2", audience: "lms-key", secret: "${JWT}"}
signals:
  fulfill_order_placed: [lms.fulfill_order_placed_send_enroll_in_course]
`

// jwtSecret is long enough for HS256 (32 bytes or more).
const jwtSecret = "0123456789abcdef0123456789abcdef-jwt"

func env(k string) string {
	return map[string]string{"SECRET": "s3cret: with # yaml chars", "JWT": jwtSecret, "PORT": "9000"}[k]
}

func TestParseDefaultsAndExpansion(t *testing.T) {
	cfg, err := Parse([]byte(minimal), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LMS.ClientSecret != "s3cret: with # yaml chars" {
		t.Errorf("client_secret = %q: ${SECRET} not expanded verbatim", cfg.LMS.ClientSecret)
	}
	if cfg.LMS.Timeout.D() != 7*time.Second || cfg.Worker.Retry.MaxAttempts != 20 || cfg.HTTP.Addr != "127.0.0.1:8140" {
		t.Errorf("defaults not applied: %+v", cfg)
	}
	if got := cfg.LMS.TokenURL(); got != "http://127.0.0.1:18000/oauth2/access_token" {
		t.Errorf("TokenURL = %q", got)
	}
	cfg, err = Parse([]byte(minimal+"http:\n  max_body_bytes: ${PORT}\n"), env)
	if err != nil || cfg.HTTP.MaxBodyBytes != 9000 {
		t.Errorf("integer from ${PORT}: %v, %d", err, cfg.HTTP.MaxBodyBytes)
	}
}

// Each start-up refusal (README.md, Configuration) names the offending key.
func TestParseRefusals(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"unknown top-level key", "htp: {}\n", "htp: unknown key"},
		{"unknown nested key", "lms: {timeout: 7s, timout: 8s}\n", "lms.timout: unknown key"},
		{"unknown key in list item", "auth: {jwt: [{issuer: a, audience: b, secret: c, algo: x}]}\n", "auth.jwt[0].algo: unknown key"},
		{"bad duration", "lms: {timeout: soon}\n", `lms.timeout: "soon" is not a duration`},
		{"number as duration", "worker: {retry: {max_delay: 5}}\n", `worker.retry.max_delay: "5" is not a duration`},
		{"bad integer", "worker: {concurrency: many}\n", `worker.concurrency: "many" is not an integer`},
		{"map for scalar", "http: {addr: {a: b}}\n", "http.addr: must be a single value"},
		{"scalar for list", "cache: {memcached: localhost}\n", "cache.memcached: must be a list"},
		{"bad lms url", "lms: {url: 'not a url'}\n", `lms.url: "not a url" is not an absolute http(s) URL`},
		{"bad oauth url", "lms: {oauth_url: 'ftp://x'}\n", "lms.oauth_url:"},
		{"bad redis url", "redis: {url: 'http://x'}\n", "redis.url: must be a redis://"},
		{"two redis modes", "redis: {url: 'redis://x', cluster: {addrs: [a:1]}}\n", "redis: set exactly one"},
		{"missing secret", "lms: {client_secret: ''}\n", "lms.client_secret: required"},
		{"issuer without key", "auth: {jwt: [{issuer: a, audience: b}]}\n", "auth.jwt[0].secret: required"},
		{"no issuers", "auth: {jwt: []}\n", "auth.jwt: required"},
		{"zero attempts", "worker: {retry: {max_attempts: 0}}\n", "worker.retry.max_attempts: must be positive"},
		{"max below initial", "worker: {retry: {initial_delay: 1m, max_delay: 1s}}\n", "worker.retry.max_delay: must be at least"},
		{"bad queue", "worker: {queue: 'a b'}\n", "worker.queue:"},
		{"no servers", "worker: {servers: 0}\n", "worker.servers: must be 1-64"},
		{"bad secret key", "database: {secret_key: short}\n", "database.secret_key: must be 32 bytes"},
		{"bad log level", "log: {level: loud}\n", "log.level:"},
		{"not yaml", "lms: [\n", "not valid YAML"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Later keys override the minimal ones; yaml.v3 refuses
			// duplicate keys, so merge by putting the override first.
			doc := mergeFirst(tt.yaml, minimal)
			_, err := Parse([]byte(doc), env)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}

// mergeFirst drops from base the top-level sections that override redefines.
func mergeFirst(override, base string) string {
	top := map[string]bool{}
	for _, l := range strings.Split(override, "\n") {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			top[k] = true
		}
	}
	var keep []string
	skipping := false
	for _, l := range strings.Split(base, "\n") {
		if l != "" && !strings.HasPrefix(l, " ") {
			k, _, _ := strings.Cut(l, ":")
			skipping = top[k]
		}
		if !skipping {
			keep = append(keep, l)
		}
	}
	return override + strings.Join(keep, "\n")
}

func TestUnsetVariableIsNamed(t *testing.T) {
	_, err := Parse([]byte(minimal), func(string) string { return "" })
	if err == nil || !strings.Contains(err.Error(), "lms.client_secret: required (it refers to ${SECRET}, which is not set") {
		t.Errorf("error = %v, want it to name lms.client_secret and ${SECRET}", err)
	}
}

// Optional tiers and the dashboard's basic-auth user switch off when their
// environment variables are unset, so one config file serves every
// deployment; a half-set user is still refused.
func TestUnsetOptionalEntriesDropped(t *testing.T) {
	doc := minimal + "admin: {basic_auth: [{user: \"${ADMIN_USER}\", password_bcrypt: \"${ADMIN_HASH}\"}]}\n" +
		"cache: {memcached: [\"${MEMCACHED}\"]}\n"
	cfg, err := Parse([]byte(doc), env)
	if err != nil {
		t.Fatalf("all unset: %v", err)
	}
	if len(cfg.Admin.BasicAuth) != 0 || len(cfg.Cache.Memcached) != 0 {
		t.Errorf("unset entries kept: %+v %+v", cfg.Admin.BasicAuth, cfg.Cache.Memcached)
	}
	half := func(k string) string {
		if k == "ADMIN_USER" {
			return "ops"
		}
		return env(k)
	}
	if _, err := Parse([]byte(doc), half); err == nil {
		t.Error("a user without a password hash was accepted")
	}
}
