package httpapi

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// gatedJWKS serves rsaKey as kid "k1" on loopback, counting fetches; while
// hold is set, each fetch waits until release is closed (or its caller
// hangs up), and arrived is signalled when a held fetch starts.
type gatedJWKS struct {
	url     string
	fetches atomic.Int32
	hold    atomic.Bool
	arrived chan struct{}
	release chan struct{}
}

func newGatedJWKS(t *testing.T) *gatedJWKS {
	t.Helper()
	g := &gatedJWKS{arrived: make(chan struct{}, 100), release: make(chan struct{})}
	pub := rsaKey.PublicKey
	doc, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "kid": "k1", "use": "sig",
		"n": base64.RawURLEncoding.EncodeToString(pub.N.Bytes()),
		"e": base64.RawURLEncoding.EncodeToString(big.NewInt(int64(pub.E)).Bytes()),
	}}})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.fetches.Add(1)
		if g.hold.Load() {
			g.arrived <- struct{}{}
			select {
			case <-g.release:
			case <-r.Context().Done():
				return
			}
		}
		_, _ = w.Write(doc)
	}))
	t.Cleanup(srv.Close)
	g.url = srv.URL + "/jwks"
	return g
}

// waitArrived waits for a held fetch to reach the server.
func (g *gatedJWKS) waitArrived(t *testing.T) {
	t.Helper()
	select {
	case <-g.arrived:
	case <-time.After(30 * time.Second): // a watchdog, not a measurement
		t.Fatal("no JWKS fetch started")
	}
}

// rsaOnly is an Authenticator for one RS256 issuer whose clock the test
// moves by hand.
func rsaOnly(t *testing.T, jwksURL string) (*Authenticator, *fakeClock) {
	t.Helper()
	a := NewAuthenticator(AuthOptions{AdminClaim: "administrator", Issuers: []Issuer{
		{Issuer: rsIssuer, Audience: audience, JWKSURL: jwksURL},
	}}, &http.Client{Timeout: 5 * time.Second})
	clock := &fakeClock{t: time.Now()}
	a.issuers[rsIssuer].jwks.now = clock.Now
	return a, clock
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// A request with an unknown kid, abandoned while the key set is being
// fetched, used to leave the set empty and marked fresh for 30 s: every
// RS256 caller was refused. The fetch now outlives the caller.
func TestJWKSAbortedFetchDoesNotLockOut(t *testing.T) {
	t.Parallel()
	g := newGatedJWKS(t)
	g.hold.Store(true)
	a, _ := rsaOnly(t, g.url)

	attackCtx, abort := context.WithCancel(context.Background())
	attack := make(chan error, 1)
	go func() {
		_, err := a.Verify(attackCtx, "JWT "+rs(t, jwt.SigningMethodRS256, "made-up", claims(nil)))
		attack <- err
	}()
	g.waitArrived(t) // the fetch is under way
	abort()
	if err := <-attack; err == nil {
		t.Fatal("a token with an unknown kid was accepted")
	}
	g.hold.Store(false)
	close(g.release)

	for i := range 20 {
		if _, err := a.Verify(context.Background(), "JWT "+rs(t, jwt.SigningMethodRS256, "k1", claims(nil))); err != nil {
			t.Fatalf("valid RS256 caller %d after the aborted fetch: %v", i, err)
		}
	}
	if n := g.fetches.Load(); n != 1 {
		t.Errorf("%d JWKS fetches, want 1", n)
	}
}

// While a flood of unknown kids runs, from callers that hang up at once,
// RS256 callers with the known key keep being accepted, the issuer is asked
// once per refresh interval, and a refetch that hangs holds up nobody whose
// key is known.
func TestJWKSFloodOfUnknownKids(t *testing.T) {
	t.Parallel()
	g := newGatedJWKS(t)
	a, clock := rsaOnly(t, g.url)
	valid := "JWT " + rs(t, jwt.SigningMethodRS256, "k1", claims(nil))

	flood := func(n int) {
		var wg sync.WaitGroup
		for w := range 8 {
			wg.Go(func() {
				for i := range n {
					ctx, cancel := context.WithCancel(context.Background())
					if i%2 == 0 {
						cancel() // hung up before even asking
					}
					tok := "JWT " + rs(t, jwt.SigningMethodRS256, "evil-"+strconv.Itoa(w)+"-"+strconv.Itoa(i), claims(nil))
					if _, err := a.Verify(ctx, tok); err == nil {
						t.Error("a token with an unknown kid was accepted")
					}
					cancel()
				}
			})
		}
		for range 4 {
			wg.Go(func() {
				for i := range n {
					if _, err := a.Verify(context.Background(), valid); err != nil {
						t.Errorf("valid RS256 caller, call %d, during the flood: %v", i, err)
						return
					}
				}
			})
		}
		wg.Wait()
	}

	flood(50)
	if n := g.fetches.Load(); n != 1 {
		t.Errorf("%d JWKS fetches during a flood within one refresh interval, want 1", n)
	}

	// Past the interval, one unknown kid refetches, and that fetch hangs.
	clock.Advance(jwksMinRefresh + time.Second)
	g.hold.Store(true)
	go func() {
		_, _ = a.Verify(context.Background(), "JWT "+rs(t, jwt.SigningMethodRS256, "rotated?", claims(nil)))
	}()
	g.waitArrived(t)
	done := make(chan error, 1)
	go func() {
		var err error
		for range 20 {
			if _, err = a.Verify(context.Background(), valid); err != nil {
				break
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("valid RS256 caller while a refetch hangs: %v", err)
		}
	case <-time.After(30 * time.Second): // a watchdog, not a measurement
		t.Error("valid RS256 callers wait for a hanging refetch")
	}
	close(g.release)
	flood(20) // within the interval again: no more fetches
	if n := g.fetches.Load(); n != 2 {
		t.Errorf("%d JWKS fetches, want 2 (one per interval)", n)
	}
}

// A made-up kid is cut short in the error, and so in the log.
func TestUnknownKidIsNotLoggedWhole(t *testing.T) {
	t.Parallel()
	h, logs := securityAPI(t, nil)
	kid := "kid-" + strings.Repeat("A", 10_000)
	rec := do(h, "POST", "/orders/fulfill", "JWT "+rs(t, jwt.SigningMethodRS256, kid, claims(nil)), "application/json", validBody)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("unknown kid: %d, want 401", rec.Code)
	}
	out := logs.String()
	if !strings.Contains(out, `"msg":"auth_refused"`) || !strings.Contains(out, "kid-AAAA") {
		t.Fatalf("refusal not logged:\n%.500s", out)
	}
	if strings.Contains(out, strings.Repeat("A", 100)) {
		t.Errorf("the kid is logged whole (%d bytes of log)", len(out))
	}
}

// iat in the future, or a token valid for longer than
// auth.max_token_lifetime, is refused.
func TestTokenLifetime(t *testing.T) {
	t.Parallel()
	a := NewAuthenticator(AuthOptions{AdminClaim: "administrator", MaxTokenLifetime: 2 * time.Hour,
		Issuers: []Issuer{{Issuer: hsIssuer, Audience: audience, Secret: hsSecret}}}, http.DefaultClient)
	now := time.Now()
	tests := []struct {
		name     string
		iat, exp time.Time // zero iat: none
		ok       bool
	}{
		{"1h token", now, now.Add(time.Hour), true},
		{"issued a minute ago, 2h", now.Add(-time.Minute), now.Add(2*time.Hour - time.Minute), true},
		{"no iat, 1h left", time.Time{}, now.Add(time.Hour), true},
		{"iat within the clock leeway", now.Add(10 * time.Second), now.Add(time.Hour), true},
		{"iat in the future", now.Add(time.Hour), now.Add(2 * time.Hour), false},
		{"lifetime over the maximum", now, now.Add(3 * time.Hour), false},
		{"ten-year token issued long ago", now.Add(-24 * time.Hour), now.Add(10 * 365 * 24 * time.Hour), false},
		{"no iat, valid for a year", time.Time{}, now.Add(365 * 24 * time.Hour), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := hs(t, claims(func(c jwt.MapClaims) {
				c["exp"] = tt.exp.Unix()
				if !tt.iat.IsZero() {
					c["iat"] = tt.iat.Unix()
				}
			}))
			_, err := a.Verify(context.Background(), "JWT "+tok)
			if (err == nil) != tt.ok {
				t.Errorf("Verify: %v, want ok=%v", err, tt.ok)
			}
		})
	}
}
