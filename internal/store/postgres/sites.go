package postgres

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Site is an LMS that orders may name, with its own OAuth application.
type Site struct {
	Name         string
	LMSURL       string
	OAuthURL     string // empty: <LMSURL>/oauth2/access_token
	ClientID     string
	ClientSecret string
	APIKey       string
	Timeout      time.Duration
	UpdatedAt    time.Time
}

// ErrSiteNotFound means no site has that name.
var ErrSiteNotFound = errors.New("site not found")

// Sites stores LMS sites, with their client secret and API key encrypted at
// rest (AES-256-GCM). Each ciphertext authenticates the site's name, LMS URL
// and token URL and which secret it is: a secret moved to another row or
// column, or a row pointed at another LMS (where the worker would send its
// client secret), no longer decrypts.
//
// Ciphertexts written before the URLs were bound (name only, no version
// prefix) still decrypt, so existing rows keep working; every Put writes
// the bound form, so `coordinator sites update NAME` with no flags re-keys
// a site.
type Sites struct {
	pool *pgxpool.Pool
	aead cipher.AEAD
}

// NewSites returns the site store; key is database.secret_key's 32 bytes.
func NewSites(pool *pgxpool.Pool, key []byte) (*Sites, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("site secret key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("site secret key: %w", err)
	}
	return &Sites{pool: pool, aead: aead}, nil
}

// sealedV2 prefixes ciphertexts bound to the site's name and URLs.
var sealedV2 = []byte("cs2:")

// Which secret a ciphertext holds, bound into it.
const (
	clientSecretColumn = "client_secret"
	apiKeyColumn       = "api_key"
)

// binding is the additional data a site's secret is sealed with: each
// field length-prefixed, so no two sites share it.
func binding(site Site, column string) []byte {
	b := []byte("coordinator site secret v2")
	for _, f := range []string{column, site.Name, site.LMSURL, site.OAuthURL} {
		b = binary.BigEndian.AppendUint32(b, uint32(len(f)))
		b = append(b, f...)
	}
	return b
}

func (s *Sites) seal(site Site, column, plain string) []byte {
	if plain == "" {
		return nil
	}
	nonce := make([]byte, s.aead.NonceSize())
	_, _ = rand.Read(nonce)
	out := append(append([]byte{}, sealedV2...), nonce...)
	return s.aead.Seal(out, nonce, []byte(plain), binding(site, column))
}

func (s *Sites) open(site Site, column string, sealed []byte) (string, error) {
	if len(sealed) == 0 {
		return "", nil
	}
	if rest, ok := bytes.CutPrefix(sealed, sealedV2); ok {
		if plain, err := s.openWith(rest, binding(site, column)); err == nil {
			return plain, nil
		}
	}
	// Sealed before the binding covered the URLs: the name alone. (A
	// ciphertext of that form may start with the prefix by chance.)
	plain, err := s.openWith(sealed, []byte(site.Name))
	if err != nil {
		return "", fmt.Errorf("decrypt %s of site %s (is database.secret_key the one it was stored with? were the site's URLs changed outside `coordinator sites`?): %w",
			column, site.Name, err)
	}
	return plain, nil
}

func (s *Sites) openWith(sealed, aad []byte) (string, error) {
	n := s.aead.NonceSize()
	if len(sealed) < n {
		return "", errors.New("ciphertext too short")
	}
	plain, err := s.aead.Open(nil, sealed[:n], sealed[n:], aad)
	if err != nil {
		return "", err
	}
	return string(plain), nil
}

// Put adds a site or replaces the one with the same name.
func (s *Sites) Put(ctx context.Context, site Site) error {
	_, err := s.pool.Exec(ctx, `
		INSERT INTO sites (name, lms_url, oauth_url, client_id, client_secret_enc, api_key_enc, timeout_ms)
		VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (name) DO UPDATE SET lms_url = EXCLUDED.lms_url, oauth_url = EXCLUDED.oauth_url,
			client_id = EXCLUDED.client_id, client_secret_enc = EXCLUDED.client_secret_enc,
			api_key_enc = EXCLUDED.api_key_enc, timeout_ms = EXCLUDED.timeout_ms, updated_at = now()`,
		site.Name, site.LMSURL, site.OAuthURL, site.ClientID, s.seal(site, clientSecretColumn, site.ClientSecret),
		s.seal(site, apiKeyColumn, site.APIKey), site.Timeout.Milliseconds())
	if err != nil {
		return fmt.Errorf("save site %s: %w", site.Name, err)
	}
	return nil
}

// Remove deletes a site.
func (s *Sites) Remove(ctx context.Context, name string) error {
	tag, err := s.pool.Exec(ctx, "DELETE FROM sites WHERE name = $1", name)
	if err != nil {
		return fmt.Errorf("remove site %s: %w", name, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("site %s: %w", name, ErrSiteNotFound)
	}
	return nil
}

const siteColumns = "name, lms_url, oauth_url, client_id, client_secret_enc, api_key_enc, timeout_ms, updated_at"

func (s *Sites) scan(row pgx.Row) (Site, error) {
	var site Site
	var secret, apiKey []byte
	var timeoutMS int64
	if err := row.Scan(&site.Name, &site.LMSURL, &site.OAuthURL, &site.ClientID, &secret, &apiKey, &timeoutMS, &site.UpdatedAt); err != nil {
		return Site{}, err
	}
	site.Timeout = time.Duration(timeoutMS) * time.Millisecond
	var err error
	if site.ClientSecret, err = s.open(site, clientSecretColumn, secret); err != nil {
		return Site{}, err
	}
	if site.APIKey, err = s.open(site, apiKeyColumn, apiKey); err != nil {
		return Site{}, err
	}
	return site, nil
}

// Get returns one site, decrypted.
func (s *Sites) Get(ctx context.Context, name string) (Site, error) {
	site, err := s.scan(s.pool.QueryRow(ctx, "SELECT "+siteColumns+" FROM sites WHERE name = $1", name))
	if errors.Is(err, pgx.ErrNoRows) {
		return Site{}, fmt.Errorf("site %s: %w", name, ErrSiteNotFound)
	}
	if err != nil {
		return Site{}, fmt.Errorf("get site %s: %w", name, err)
	}
	return site, nil
}

// List returns every site, decrypted, by name.
func (s *Sites) List(ctx context.Context) ([]Site, error) {
	rows, err := s.pool.Query(ctx, "SELECT "+siteColumns+" FROM sites ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("list sites: %w", err)
	}
	defer rows.Close()
	var out []Site
	for rows.Next() {
		site, err := s.scan(rows)
		if err != nil {
			return nil, fmt.Errorf("list sites: %w", err)
		}
		out = append(out, site)
	}
	return out, rows.Err()
}
