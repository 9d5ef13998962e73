package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/golang-jwt/jwt/v5"

	"github.com/openedx/coordinator/internal/config"
)

// printToken mints an admin JWT for local trials, signed with the first
// HS256 issuer's secret.
func printToken(cfg config.Config, args []string, stdout io.Writer) error {
	ttl := time.Hour
	for i := 0; i < len(args); i++ {
		if args[i] == "--ttl" && i+1 < len(args) {
			d, err := time.ParseDuration(args[i+1])
			if err != nil {
				return fmt.Errorf("token --ttl: %w", err)
			}
			ttl = d
			i++
			continue
		}
		return fmt.Errorf("token: unknown argument %q (usage: token [--ttl 1h])", args[i])
	}
	for _, is := range cfg.Auth.JWT {
		if is.Secret == "" {
			continue
		}
		now := time.Now()
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"iss": is.Issuer, "aud": is.Audience, "sub": "coordinator-trial",
			"preferred_username": "coordinator-trial", "iat": now.Unix(), "exp": now.Add(ttl).Unix(),
			cfg.Auth.AdminClaim: true,
		}).SignedString([]byte(is.Secret))
		if err != nil {
			return fmt.Errorf("sign token: %w", err)
		}
		fmt.Fprintln(stdout, tok)
		return nil
	}
	return errors.New("token: no auth.jwt issuer has an HS256 secret")
}
