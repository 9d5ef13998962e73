package httpapi

import (
	"context"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/openedx/coordinator/internal/config"
)

// Authenticator verifies caller JWTs: signed by a configured issuer (HS256
// with its shared secret, or RS256/RS512 with a key from its JWKS), not
// expired, for that issuer's audience, and carrying a true admin claim.
type Authenticator struct {
	issuers    map[string]*issuer
	adminClaim string
	parser     *jwt.Parser
}

type issuer struct {
	audience string
	secret   []byte
	jwks     *jwks
}

// Errors a token check can end in: ErrUnauthenticated maps to 401,
// ErrNotAdmin to 403.
var (
	ErrUnauthenticated = errors.New("invalid or missing credentials")
	ErrNotAdmin        = errors.New("not an administrator")
)

// NewAuthenticator returns an Authenticator for the configured issuers; hc
// fetches JWKS documents.
func NewAuthenticator(a config.Auth, hc *http.Client) *Authenticator {
	au := &Authenticator{
		issuers:    map[string]*issuer{},
		adminClaim: a.AdminClaim,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"HS256", "RS256", "RS512"}),
			jwt.WithExpirationRequired(),
			jwt.WithLeeway(30*time.Second),
		),
	}
	for _, is := range a.JWT {
		i := &issuer{audience: is.Audience}
		if is.Secret != "" {
			i.secret = []byte(is.Secret)
		} else {
			i.jwks = &jwks{url: is.JWKSURL, hc: hc}
		}
		au.issuers[is.Issuer] = i
	}
	return au
}

// Verify checks an Authorization header value ("JWT <token>" or
// "Bearer <token>") and returns the token's claims.
func (a *Authenticator) Verify(ctx context.Context, header string) (jwt.MapClaims, error) {
	scheme, raw, ok := strings.Cut(header, " ")
	if !ok || (!strings.EqualFold(scheme, "JWT") && !strings.EqualFold(scheme, "Bearer")) {
		return nil, fmt.Errorf("%w: expected Authorization: JWT <token>", ErrUnauthenticated)
	}
	var iss *issuer
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(strings.TrimSpace(raw), claims, func(t *jwt.Token) (any, error) {
		name, _ := claims.GetIssuer()
		iss = a.issuers[name]
		if iss == nil {
			return nil, errors.New("unknown issuer")
		}
		if iss.secret != nil {
			if t.Method != jwt.SigningMethodHS256 {
				return nil, errors.New("issuer signs with HS256")
			}
			return iss.secret, nil
		}
		if _, ok := t.Method.(*jwt.SigningMethodRSA); !ok {
			return nil, errors.New("issuer signs with RSA")
		}
		kid, _ := t.Header["kid"].(string)
		return iss.jwks.key(ctx, kid)
	})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	aud, _ := claims.GetAudience()
	if !slices.Contains(aud, iss.audience) {
		return nil, fmt.Errorf("%w: token has the wrong audience", ErrUnauthenticated)
	}
	if admin, _ := claims[a.adminClaim].(bool); !admin {
		return nil, ErrNotAdmin
	}
	return claims, nil
}

// jwks fetches and caches an issuer's RSA public keys. An unknown key id
// triggers a refetch, at most once per jwksMinRefresh.
type jwks struct {
	url string
	hc  *http.Client

	mu      sync.Mutex
	keys    map[string]*rsa.PublicKey
	fetched time.Time
}

const jwksMinRefresh = 30 * time.Second

func (j *jwks) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if k := j.lookup(kid); k != nil {
		return k, nil
	}
	if time.Since(j.fetched) < jwksMinRefresh {
		return nil, fmt.Errorf("no key %q in JWKS", kid)
	}
	j.fetched = time.Now()
	keys, err := fetchJWKS(ctx, j.hc, j.url)
	if err != nil {
		return nil, err
	}
	j.keys = keys
	if k := j.lookup(kid); k != nil {
		return k, nil
	}
	return nil, fmt.Errorf("no key %q in JWKS", kid)
}

// lookup finds a key by id; a token without a kid matches a sole key.
func (j *jwks) lookup(kid string) *rsa.PublicKey {
	if kid == "" && len(j.keys) == 1 {
		for _, k := range j.keys {
			return k
		}
	}
	return j.keys[kid]
}

func fetchJWKS(ctx context.Context, hc *http.Client, url string) (map[string]*rsa.PublicKey, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fmt.Errorf("jwks request: %w", err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch jwks: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch jwks: status %d", resp.StatusCode)
	}
	var doc struct {
		Keys []struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			N   string `json:"n"`
			E   string `json:"e"`
		} `json:"keys"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&doc); err != nil {
		return nil, fmt.Errorf("decode jwks: %w", err)
	}
	keys := map[string]*rsa.PublicKey{}
	for _, k := range doc.Keys {
		if k.Kty != "RSA" {
			continue
		}
		n, err1 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.N, "="))
		e, err2 := base64.RawURLEncoding.DecodeString(strings.TrimRight(k.E, "="))
		if err1 != nil || err2 != nil || len(e) == 0 || len(e) > 4 {
			continue
		}
		keys[k.Kid] = &rsa.PublicKey{N: new(big.Int).SetBytes(n), E: int(new(big.Int).SetBytes(e).Int64())}
	}
	return keys, nil
}
