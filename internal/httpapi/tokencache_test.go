package httpapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// A verified token is remembered — never beyond its exp or verifiedTTL —
// and nothing unverified is; the cache stays within maxVerified.
func TestVerifiedTokenCache(t *testing.T) {
	a := NewAuthenticator(AuthOptions{AdminClaim: "administrator", Issuers: []Issuer{{Issuer: hsIssuer, Audience: audience, Secret: hsSecret}}},
		http.DefaultClient)
	now := time.Now()
	a.now = func() time.Time { return now }
	ctx := context.Background()
	exp := now.Add(90 * time.Second)
	tok := hs(t, claims(func(c jwt.MapClaims) { c["exp"] = exp.Unix(); c["sub"] = "shop" }))
	if _, err := a.Verify(ctx, "JWT "+tok); err != nil {
		t.Fatal(err)
	}
	if len(a.verified.m) != 1 {
		t.Fatalf("%d cached tokens after one verification, want 1", len(a.verified.m))
	}
	// Served from the cache: a changed secret would refuse a fresh parse.
	a.issuers[hsIssuer].secret = []byte("rotated")
	if c, err := a.Verify(ctx, "Bearer "+tok); err != nil || c["sub"] != "shop" {
		t.Fatalf("cached token: %v %v", c, err)
	}
	// At most verifiedTTL: then verified again (and refused, with the new secret).
	now = now.Add(verifiedTTL)
	if _, err := a.Verify(ctx, "JWT "+tok); !errors.Is(err, ErrUnauthenticated) {
		t.Fatalf("after verifiedTTL: %v, want a fresh verification", err)
	}

	// Never beyond exp.
	a.issuers[hsIssuer].secret = []byte(hsSecret)
	now = time.Now()
	short := hs(t, claims(func(c jwt.MapClaims) { c["exp"] = now.Add(10 * time.Second).Unix() }))
	if _, err := a.Verify(ctx, "JWT "+short); err != nil {
		t.Fatal(err)
	}
	key := verifiedKey(short)
	if until := a.verified.m[key].until; until.After(now.Add(10 * time.Second)) {
		t.Fatalf("cached until %v, beyond the token's exp", until)
	}
	now = now.Add(11 * time.Second)
	if _, ok := a.verified.get(key, now); ok {
		t.Fatal("an expired token is served from the cache")
	}

	// Refused tokens are never cached.
	before := len(a.verified.m)
	for _, bad := range []string{"JWT not-a-token", "JWT " + hs(t, claims(func(c jwt.MapClaims) { c["administrator"] = false }))} {
		if _, err := a.Verify(ctx, bad); err == nil {
			t.Fatalf("%q verified", bad)
		}
	}
	if len(a.verified.m) != before {
		t.Fatalf("refused tokens were cached: %d entries, want %d", len(a.verified.m), before)
	}

	// Bounded.
	for i := range maxVerified + 10 {
		a.verified.put(verifiedKey(string(rune(i))+"x"), jwt.MapClaims{"exp": float64(now.Add(time.Hour).Unix())}, now)
	}
	if n := len(a.verified.m); n > maxVerified {
		t.Fatalf("%d cached tokens, more than %d", n, maxVerified)
	}
}

func verifiedKey(tok string) [32]byte { return sha256.Sum256([]byte(tok)) }
