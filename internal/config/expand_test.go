package config

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// ${NAME:-default} takes the default when NAME is unset or empty, and NAME
// when it is set: `make run` moves the trial's ports this way.
func TestExpandDefault(t *testing.T) {
	doc := "http: {addr: \"${ADDR:-127.0.0.1:8140}\"}\nlms: {url: \"http://${FAKE:-127.0.0.1:18000}\", client_secret: \"${SECRET}\"}\n"
	doc = mergeFirst(doc, minimal)
	cfg, err := Parse([]byte(doc), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "127.0.0.1:8140" || cfg.LMS.URL != "http://127.0.0.1:18000" {
		t.Errorf("defaults not taken: addr %q, lms.url %q", cfg.HTTP.Addr, cfg.LMS.URL)
	}
	cfg, err = Parse([]byte(doc), envWith("ADDR", "127.0.0.1:8150", "FAKE", "127.0.0.1:18010"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Addr != "127.0.0.1:8150" || cfg.LMS.URL != "http://127.0.0.1:18010" {
		t.Errorf("variables not taken: addr %q, lms.url %q", cfg.HTTP.Addr, cfg.LMS.URL)
	}
}

// A secret's default is written in the file: a readable file holding one
// is warned about like any literal secret.
func TestExpandDefaultOfASecretIsInTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "c.yaml")
	doc := mergeFirst("lms: {client_secret: \"${UNSET_LMS_SECRET:-written-here}\"}\n", minimal)
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.LMS.ClientSecret != "written-here" || !slices.ContainsFunc(cfg.Warnings(), func(w string) bool {
		return strings.Contains(w, "world-readable") && strings.Contains(w, "lms.client_secret")
	}) {
		t.Errorf("client_secret %q, warnings %q", cfg.LMS.ClientSecret, cfg.Warnings())
	}
}

// A rotation's second secret left unset is dropped, and said so, naming the
// key and the variable; with both set, nothing is said.
func TestDroppedSecretIsWarned(t *testing.T) {
	section := `integrations:
  - {name: woo, type: woocommerce, secrets: ["${WOO_SECRET}", "${WOO_NEXT_SECRET}"]}
`
	cfg, err := parseIntegrations(t, section)
	if err != nil {
		t.Fatal(err)
	}
	want := "integrations[0].secrets[1]: ${WOO_NEXT_SECRET} is not set in the environment, so this secret is dropped"
	if len(cfg.Integrations[0].Secrets) != 1 || !slices.ContainsFunc(cfg.Warnings(), func(w string) bool { return strings.HasPrefix(w, want) }) {
		t.Errorf("secrets %d, warnings %q; want one secret and a warning %q", len(cfg.Integrations[0].Secrets), cfg.Warnings(), want)
	}
	cfg, err = Parse([]byte(minimal+section), envWith("WOO_SECRET", "woo-secret-0123456789abcdef", "WOO_NEXT_SECRET", "woo-next-0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings()) != 0 || len(cfg.Integrations[0].Secrets) != 2 {
		t.Errorf("both set: secrets %d, warnings %q", len(cfg.Integrations[0].Secrets), cfg.Warnings())
	}
}
