package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const canary = "S3cr3t-canary-7f3a"

// envWith is env plus the given variables.
func envWith(kv ...string) func(string) string {
	m := map[string]string{}
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string {
		if v, ok := m[k]; ok {
			return v
		}
		return env(k)
	}
}

// No error echoes a value taken from the environment, or a secret key's
// value; what is echoed of the file is bounded, and URLs lose their
// user info.
func TestConfigErrorsDoNotEchoSecrets(t *testing.T) {
	secretEnv := envWith("LMS_CLIENT_SECRET", "lms-"+canary, "X", canary+strings.Repeat("z", 5000))
	tests := []struct {
		name, yaml, want string
	}{
		{"duration from a secret variable", "lms: {timeout: \"${LMS_CLIENT_SECRET}\", client_secret: x}\n",
			"lms.timeout: the value from ${LMS_CLIENT_SECRET} is not a duration"},
		{"integer from the environment", "worker: {concurrency: \"${X}\"}\n", "worker.concurrency: the value from ${X} is not an integer"},
		{"boolean from the environment", "http: {pprof: \"${X}\"}\n", "http.pprof: the value from ${X} is not true or false"},
		{"log level from the environment", "log: {level: \"${X}\"}\n", "log.level: the value from ${X} is not debug"},
		{"URL partly from the environment", "lms: {url: \"${X}/root\", client_secret: x}\n", "lms.url: the value from ${X} is not an absolute"},
		{"jwks URL from the environment", "auth: {jwt: [{issuer: a, audience: b, jwks_url: \"${X}\"}]}\n", "auth.jwt[0].jwks_url: the value from ${X}"},
		{"URL with a password in the file", "lms: {oauth_url: \"https://ops:" + canary + "@lms example\"}\n",
			`lms.oauth_url: "https://REDACTED@lms example" is not an absolute`},
		{"a long value in the file", "lms: {timeout: \"" + canary + strings.Repeat("y", 5000) + "\"}\n", `lms.timeout: "S3cr3t-canary`},
		{"short HS256 secret", "auth: {jwt: [{issuer: a, audience: b, secret: \"" + canary + "\"}]}\n", "auth.jwt[0].secret: is shorter than 24 bytes"},
		{"secret key of the wrong shape", "database: {secret_key: \"" + canary + "\"}\n", "database.secret_key: must be 32 bytes"},
		{"redis URL with a password", "redis: {url: \"http://u:" + canary + "@redis\"}\n", "redis.url: must be a redis://"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(mergeFirst(tt.yaml, minimal)), secretEnv)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error = %v, want it to contain %q", err, tt.want)
			}
			if !strings.Contains(tt.want, "S3cr3t") && strings.Contains(err.Error(), "7f3a") {
				t.Errorf("the error echoes a secret: %v", err)
			}
			if len(err.Error()) > 300 {
				t.Errorf("error of %d bytes: %.300s", len(err.Error()), err)
			}
		})
	}
}

// --config pointing at a file that is not a Coordinator config (a secret
// file, /etc/shadow through a symlink) is refused without echoing it.
func TestForeignFileNotEchoed(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"shadow":   "root:$6$" + canary + "$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n",
		"json":     `{"api_token": "` + canary + `", "user": "root"}`,
		"env":      "LMS_CLIENT_SECRET=" + canary + "\nJWT_SECRET_KEY=" + canary + "\n",
		"yamlkeys": canary + ": 1\npassword: " + canary + "\n",
		"list":     "- " + canary + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			target := filepath.Join(dir, name)
			if err := os.WriteFile(target, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			link := filepath.Join(dir, name+".yaml")
			if err := os.Symlink(target, link); err != nil {
				t.Fatal(err)
			}
			_, err := Load(link, env)
			if err == nil {
				t.Fatal("a foreign file loaded")
			}
			if strings.Contains(err.Error(), "7f3a") || strings.Contains(err.Error(), "root") || strings.Contains(err.Error(), "password") {
				t.Errorf("the error echoes the file: %v", err)
			}
			if !strings.Contains(err.Error(), "does not look like a Coordinator config file") {
				t.Errorf("error = %v, want it to say the file is not a config", err)
			}
		})
	}
	// In a real config, an unknown key is named, bounded.
	_, err := Parse([]byte(mergeFirst("lms:\n  "+strings.Repeat("k", 1000)+": 1\n", minimal)), env)
	if err == nil || !strings.Contains(err.Error(), "unknown key") || len(err.Error()) > 200 {
		t.Errorf("long unknown key: %v", err)
	}
}

// HS256 secrets that anyone could forge tokens with are refused unless
// COORDINATOR_DEV=1, and the refusal does not show them.
func TestHS256SecretStrength(t *testing.T) {
	doc := func(secret string) []byte {
		return []byte(mergeFirst("auth: {jwt: [{issuer: a, audience: b, secret: \"${JWT}\"}]}\n", minimal))
	}
	tests := []struct {
		secret, dev string
		want        string // "" = accepted
	}{
		{"0123456789abcdef0123456789abcdef", "", ""},
		{"Xq3vR8pZk2LmN7tYw4Hs9dJb", "", ""}, // Tutor's JWT_COMMON_SECRET_KEY: 24 random characters
		{"0123456789abcdef0123456", "", "shorter than 24 bytes"},
		{"dev-jwt-secret-change-me", "", "published development secret"},
		{"please-change-me-0123456789abcdefghijklmnop", "", "published development secret"},
		{"dev-jwt-secret-change-me", "1", ""},
		{"short", "1", ""},
		{"short", "0", "shorter than 24 bytes"},
	}
	for _, tt := range tests {
		cfg, err := Parse(doc(tt.secret), envWith("JWT", tt.secret, "COORDINATOR_DEV", tt.dev))
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("secret %q (dev %q): %v, want accepted", tt.secret, tt.dev, err)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), "auth.jwt[0].secret: ") || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("secret %q (dev %q): %v, want %q", tt.secret, tt.dev, err, tt.want)
		case err != nil && len(tt.secret) > 8 && strings.Contains(err.Error(), tt.secret):
			t.Errorf("the refusal shows the secret: %v", err)
		case tt.dev == "1" && err == nil && len(cfg.Warnings()) == 0:
			t.Error("COORDINATOR_DEV=1 without a warning")
		}
	}
}

// A config file others can change, or read while it holds secrets in
// clear, is warned about; secrets taken from the environment are fine.
func TestPermissionWarnings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	inFile := strings.Replace(minimal, `"${SECRET}"`, `"`+canary+`"`, 1)
	withDBPassword := minimal + "database: {url: \"postgres://u:" + canary + "@db/x\"}\n"
	withDBFromEnv := minimal + "database: {url: \"postgres://u:${JWT}@db/x\"}\n"
	tests := []struct {
		name, content string
		mode          os.FileMode
		want          []string
	}{
		{"secrets from the environment, readable", minimal, 0o644, nil},
		{"secret in the file, private", inFile, 0o600, nil},
		{"secret in the file, readable", inFile, 0o644, []string{"world-readable and holds secrets (lms.client_secret)"}},
		{"database password in the file, readable", withDBPassword, 0o644, []string{"holds secrets (database.url)"}},
		{"database password from the environment, readable", withDBFromEnv, 0o644, nil},
		{"writable", minimal, 0o666, []string{"world-writable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Load(write(strings.ReplaceAll(tt.name, " ", "_")+".yaml", tt.content, tt.mode), env)
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Join(cfg.Warnings(), "\n")
			if len(tt.want) == 0 && got != "" {
				t.Errorf("warnings %q, want none", got)
			}
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("warnings %q, want %q", got, w)
				}
			}
			if strings.Contains(got, "7f3a") {
				t.Errorf("a warning shows the secret: %s", got)
			}
		})
	}
}

func TestNewKeys(t *testing.T) {
	cfg, err := Parse([]byte(minimal), env)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Worker.HTTPAddr != "127.0.0.1:8141" || cfg.HTTP.Addr != "127.0.0.1:8140" || cfg.Auth.MaxTokenLifetime.D() != 24*time.Hour {
		t.Errorf("defaults: worker.http_addr %q, http.addr %q, auth.max_token_lifetime %v", cfg.Worker.HTTPAddr, cfg.HTTP.Addr, cfg.Auth.MaxTokenLifetime.D())
	}
	cfg, err = Parse([]byte(mergeFirst("worker: {http_addr: \"0.0.0.0:9141\"}\n", minimal)), env)
	if err != nil || cfg.Worker.HTTPAddr != "0.0.0.0:9141" {
		t.Errorf("worker.http_addr: %v %q", err, cfg.Worker.HTTPAddr)
	}
	for doc, want := range map[string]string{
		"worker: {http_addr: \"\"}\n": "worker.http_addr: required",
		"auth: {max_token_lifetime: 0s, jwt: [{issuer: a, audience: b, secret: \"${JWT}\"}]}\n": "auth.max_token_lifetime: must be positive",
	} {
		if _, err := Parse([]byte(mergeFirst(doc, minimal)), env); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", doc, err, want)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"http://ops:" + canary + "@lms.example:8000/root?token=" + canary + "#x": "http://lms.example:8000/root",
		"https://lms.example":   "https://lms.example",
		"http://user@lms:18000": "http://lms:18000",
		"http://[::1]:%zz":      "(unparsable)",
	} {
		if got := RedactURL(in); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", in, got, want)
		}
	}
}
