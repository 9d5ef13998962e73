package httpapi

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
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
	"github.com/openedx/coordinator/internal/fulfillment"
)

// Authenticator verifies caller JWTs: signed by a configured issuer (HS256
// with its shared secret, or RS256/RS512 with a key from its JWKS), not
// expired, for that issuer's audience, and carrying a true admin claim.
type Authenticator struct {
	issuers     map[string]*issuer
	adminClaim  string
	maxLifetime time.Duration
	parser      *jwt.Parser
	verified    verifiedTokens
	now         func() time.Time
}

// verifiedTokens remembers tokens that passed every check, by the SHA-256 of
// the whole token, so that a shop's repeated token is not parsed and
// verified again on every request: never beyond the token's exp, at most
// verifiedTTL (so a key removed from an issuer's JWKS stops working within
// it), at most maxVerified tokens. Only verified tokens enter it, so no
// caller without a valid token can grow it.
type verifiedTokens struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]verifiedToken
}

type verifiedToken struct {
	claims jwt.MapClaims // read-only once cached
	until  time.Time
}

const (
	verifiedTTL = time.Minute
	maxVerified = 1024
)

func (v *verifiedTokens) get(key [sha256.Size]byte, now time.Time) (jwt.MapClaims, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	t, ok := v.m[key]
	if !ok {
		return nil, false
	}
	if !now.Before(t.until) {
		delete(v.m, key)
		return nil, false
	}
	return t.claims, true
}

func (v *verifiedTokens) put(key [sha256.Size]byte, claims jwt.MapClaims, now time.Time) {
	until := now.Add(verifiedTTL)
	if exp, err := claims.GetExpirationTime(); err != nil || exp == nil {
		return
	} else if exp.Before(until) {
		until = exp.Time
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil {
		v.m = map[[sha256.Size]byte]verifiedToken{}
	}
	if len(v.m) >= maxVerified {
		for k, t := range v.m { // expired ones first, else any
			if !now.Before(t.until) {
				delete(v.m, k)
			}
		}
		for k := range v.m {
			if len(v.m) < maxVerified {
				break
			}
			delete(v.m, k)
		}
	}
	v.m[key] = verifiedToken{claims: claims, until: until}
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

// clockLeeway is how far the issuer's clock and ours may disagree.
const clockLeeway = 30 * time.Second

// DefaultMaxTokenLifetime is auth.max_token_lifetime's default.
const DefaultMaxTokenLifetime = 24 * time.Hour

// Issuer is one accepted JWT issuer: HS256 with a shared Secret, or
// RS256/RS512 with keys from JWKSURL.
type Issuer struct {
	Issuer   string
	Audience string
	Secret   string
	JWKSURL  string
}

// AuthOptions configure an Authenticator.
type AuthOptions struct {
	Issuers    []Issuer
	AdminClaim string // the claim that must be true
	// MaxTokenLifetime refuses tokens valid for longer (exp - iat); 0 means
	// DefaultMaxTokenLifetime.
	MaxTokenLifetime time.Duration
}

// NewAuthenticator returns an Authenticator for the issuers; hc fetches JWKS
// documents.
func NewAuthenticator(a AuthOptions, hc *http.Client) *Authenticator {
	au := &Authenticator{
		issuers:     map[string]*issuer{},
		adminClaim:  a.AdminClaim,
		maxLifetime: a.MaxTokenLifetime,
		now:         time.Now,
		parser: jwt.NewParser(
			jwt.WithValidMethods([]string{"HS256", "RS256", "RS512"}),
			jwt.WithExpirationRequired(),
			jwt.WithIssuedAt(), // an iat in the future is refused
			jwt.WithLeeway(clockLeeway),
		),
	}
	if au.maxLifetime <= 0 {
		au.maxLifetime = DefaultMaxTokenLifetime
	}
	for _, is := range a.Issuers {
		i := &issuer{audience: is.Audience}
		if is.Secret != "" {
			i.secret = []byte(is.Secret)
		} else {
			i.jwks = &jwks{url: is.JWKSURL, hc: hc, now: time.Now}
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
	raw = strings.TrimSpace(raw)
	key := sha256.Sum256([]byte(raw))
	now := a.now()
	if claims, ok := a.verified.get(key, now); ok {
		return claims, nil
	}
	var iss *issuer
	claims := jwt.MapClaims{}
	_, err := a.parser.ParseWithClaims(raw, claims, func(t *jwt.Token) (any, error) {
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
	if err := a.checkLifetime(claims); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	if admin, _ := claims[a.adminClaim].(bool); !admin {
		return nil, ErrNotAdmin
	}
	a.verified.put(key, claims, now)
	return claims, nil
}

// checkLifetime refuses a token valid for longer than maxLifetime: from its
// iat to its exp, or from now to its exp when it has no iat. A stolen
// long-lived token stays useful for too long.
func (a *Authenticator) checkLifetime(c jwt.MapClaims) error {
	exp, err := c.GetExpirationTime()
	if err != nil || exp == nil {
		return errors.New("token has no valid exp")
	}
	from := time.Now()
	iat, err := c.GetIssuedAt()
	if err != nil {
		return errors.New("token has an invalid iat")
	}
	if iat != nil {
		from = iat.Time
	}
	if exp.Sub(from) > a.maxLifetime {
		return fmt.Errorf("token lifetime exceeds %v (auth.max_token_lifetime)", a.maxLifetime)
	}
	return nil
}

// maxLoggedKid bounds how much of a caller's key id reaches an error (and
// so the log).
const maxLoggedKid = 40

// jwks fetches and caches an issuer's RSA public keys. A token with an
// unknown key id triggers a refetch, because the issuer may have rotated its
// keys, but at most one fetch runs at a time and refetches for unknown ids
// are spaced by jwksMinRefresh (jwksRetry after a failed fetch), so a flood
// of made-up key ids costs the issuer one request per interval. The fetch
// runs detached from the request that asked for it, with its own timeout:
// a caller that gives up does not abort it, and callers whose key is known
// never wait for it.
type jwks struct {
	url string
	hc  *http.Client
	now func() time.Time

	mu       sync.Mutex
	keys     map[string]*rsa.PublicKey
	fetched  bool          // a fetch succeeded at least once
	failed   bool          // the last fetch failed
	tried    time.Time     // when the last fetch started
	inflight chan struct{} // closed when the running fetch ends; nil: none
	lastErr  error
}

const (
	jwksMinRefresh   = 30 * time.Second
	jwksRetry        = 2 * time.Second
	jwksFetchTimeout = 10 * time.Second
)

func (j *jwks) key(ctx context.Context, kid string) (*rsa.PublicKey, error) {
	for round := 0; ; round++ {
		j.mu.Lock()
		if k := j.lookup(kid); k != nil {
			j.mu.Unlock()
			return k, nil
		}
		wait := j.inflight
		if wait == nil && round == 0 && j.mayFetch() {
			wait = j.startFetch()
		}
		err := j.lastErr
		j.mu.Unlock()
		if wait == nil || round == 2 {
			if err != nil {
				return nil, fmt.Errorf("no key %q: %w", fulfillment.Clip(kid, maxLoggedKid), err)
			}
			return nil, fmt.Errorf("no key %q in JWKS", fulfillment.Clip(kid, maxLoggedKid))
		}
		select {
		case <-wait:
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for jwks: %w", ctx.Err())
		}
	}
}

// mayFetch says whether a fetch may start now; j.mu is held.
func (j *jwks) mayFetch() bool {
	since := j.now().Sub(j.tried)
	if !j.fetched || j.failed {
		return since >= jwksRetry
	}
	return since >= jwksMinRefresh
}

// startFetch fetches the key set in the background; j.mu is held.
func (j *jwks) startFetch() chan struct{} {
	done := make(chan struct{})
	j.inflight, j.tried = done, j.now()
	go func() {
		defer close(done)
		ctx, cancel := context.WithTimeout(context.Background(), jwksFetchTimeout)
		defer cancel()
		keys, err := fetchJWKS(ctx, j.hc, j.url)
		j.mu.Lock()
		defer j.mu.Unlock()
		j.inflight, j.lastErr, j.failed = nil, err, err != nil
		if err == nil {
			j.keys, j.fetched = keys, true
		}
	}()
	return done
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
