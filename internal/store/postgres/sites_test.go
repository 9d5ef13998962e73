package postgres

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

const siteCanary = "S3cr3t-canary-site-91c4"

// A site's secrets are bound to its name, URLs and column: a row pointed at
// another LMS, or secrets swapped between columns, no longer decrypt, so
// the worker never sends the client secret to a URL someone wrote into the
// table.
func TestSiteSecretsBoundToURLs(t *testing.T) {
	t.Parallel()
	pool := connect(t, true)
	s, err := NewSites(pool, []byte("0123456789abcdef0123456789abcdef"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	put := func(name string) {
		t.Helper()
		if err := s.Put(ctx, Site{Name: name, LMSURL: "https://lms." + name + ".example", OAuthURL: "https://sso." + name + ".example/token",
			ClientID: "cw", ClientSecret: siteCanary, APIKey: "api-key-" + name, Timeout: time.Second}); err != nil {
			t.Fatal(err)
		}
	}
	for _, tamper := range []struct{ name, site, sql string }{
		{"lms_url", "a", "UPDATE sites SET lms_url = 'https://evil.example' WHERE name = $1"},
		{"oauth_url", "b", "UPDATE sites SET oauth_url = 'https://evil.example/token' WHERE name = $1"},
		{"oauth_url cleared (token URL derived from lms_url)", "c", "UPDATE sites SET oauth_url = '' WHERE name = $1"},
		{"columns swapped", "d", "UPDATE sites SET client_secret_enc = api_key_enc, api_key_enc = client_secret_enc WHERE name = $1"},
	} {
		t.Run(tamper.name, func(t *testing.T) {
			name := tamper.site
			put(name)
			if got, err := s.Get(ctx, name); err != nil || got.ClientSecret != siteCanary {
				t.Fatalf("before tampering: %+v, %v", got, err)
			}
			if _, err := pool.Exec(ctx, tamper.sql, name); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, name)
			if err == nil {
				t.Fatalf("after %s changed in the table, the secret decrypted: %+v", tamper.name, got)
			}
			if strings.Contains(err.Error(), "91c4") {
				t.Errorf("the error shows the secret: %v", err)
			}
			if _, err := s.List(ctx); err == nil {
				t.Error("List decrypted the tampered site")
			}
			if _, err := pool.Exec(ctx, "DELETE FROM sites WHERE name = $1", name); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// Rows sealed before the URLs were bound (the site name alone) keep
// working, and an update re-keys them.
func TestLegacySiteSecretsStillDecryptAndAreRekeyed(t *testing.T) {
	t.Parallel()
	pool := connect(t, true)
	key := []byte("0123456789abcdef0123456789abcdef")
	s, err := NewSites(pool, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// As the previous release sealed: nonce || AES-GCM(secret, AAD = name).
	legacy := func(name, plain string) []byte {
		nonce := make([]byte, s.aead.NonceSize())
		_, _ = rand.Read(nonce)
		return s.aead.Seal(nonce, nonce, []byte(plain), []byte(name))
	}
	if _, err := pool.Exec(ctx, `INSERT INTO sites (name, lms_url, oauth_url, client_id, client_secret_enc, api_key_enc, timeout_ms)
		VALUES ('old', 'https://lms.old.example', '', 'cw', $1, $2, 1000)`, legacy("old", siteCanary), legacy("old", "old-api-key")); err != nil {
		t.Fatal(err)
	}
	got, err := s.Get(ctx, "old")
	if err != nil || got.ClientSecret != siteCanary || got.APIKey != "old-api-key" {
		t.Fatalf("legacy row: %+v, %v", got, err)
	}
	if err := s.Put(ctx, got); err != nil { // coordinator sites update old
		t.Fatal(err)
	}
	var enc []byte
	if err := pool.QueryRow(ctx, "SELECT client_secret_enc FROM sites WHERE name = 'old'").Scan(&enc); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(enc, sealedV2) {
		t.Error("an update did not re-key the legacy row")
	}
	if got, err := s.Get(ctx, "old"); err != nil || got.ClientSecret != siteCanary {
		t.Fatalf("re-keyed row: %+v, %v", got, err)
	}
	if _, err := pool.Exec(ctx, "UPDATE sites SET lms_url = 'https://evil.example' WHERE name = 'old'"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "old"); err == nil {
		t.Error("the re-keyed row decrypted after its lms_url changed")
	}
}
