// Package config loads Coordinator's YAML configuration: ${NAME} expansion from
// the environment, defaults, and validation whose errors name the offending
// key (README.md, Configuration). Unknown keys are errors, so a typo is never silently ignored.
package config

import (
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
	"gopkg.in/yaml.v3"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// Config is the whole configuration file.
type Config struct {
	HTTP            HTTP                `yaml:"http"`
	ShutdownTimeout Duration            `yaml:"shutdown_timeout"`
	Log             Log                 `yaml:"log"`
	Redis           Redis               `yaml:"redis"`
	LMS             LMS                 `yaml:"lms"`
	Auth            Auth                `yaml:"auth"`
	Admin           Admin               `yaml:"admin"`
	Worker          Worker              `yaml:"worker"`
	Database        Database            `yaml:"database"`
	Cache           Cache               `yaml:"cache"`
	Signals         map[string][]string `yaml:"signals"`
	// Integrations are the shops posting webhooks (docs/integrations.md; integrations.go).
	Integrations []Integration `yaml:"integrations"`
	// Webhooks are the subscribers (docs/subscribers.md; webhooks.go).
	Webhooks []Webhook `yaml:"webhooks"`

	dev      bool     // COORDINATOR_DEV=1: development secrets accepted
	warnings []string // problems worth logging that do not stop the process
}

// Warnings lists what an operator should fix but that does not stop the
// process, such as a config file holding secrets that others can read.
func (c Config) Warnings() []string { return c.warnings }

// HTTP configures the API listener.
type HTTP struct {
	Addr         string `yaml:"addr"`
	MaxBodyBytes int64  `yaml:"max_body_bytes"`
	// Pprof mounts /debug/pprof/ behind admin authentication.
	Pprof bool `yaml:"pprof"`
}

// Log configures the JSON logs written to standard error.
type Log struct {
	Level string `yaml:"level"` // debug, info, warn, error
}

// Redis locates the asynq broker: a URL, a Sentinel-managed primary, or a cluster.
type Redis struct {
	URL      string    `yaml:"url"`
	Sentinel *Sentinel `yaml:"sentinel"`
	Cluster  *Cluster  `yaml:"cluster"`
}

// Sentinel is a Redis primary managed by Redis Sentinel.
type Sentinel struct {
	MasterName       string   `yaml:"master_name"`
	Addrs            []string `yaml:"addrs"`
	Password         string   `yaml:"password"`
	SentinelPassword string   `yaml:"sentinel_password"`
	DB               int      `yaml:"db"`
}

// Cluster is a Redis Cluster.
type Cluster struct {
	Addrs    []string `yaml:"addrs"`
	Password string   `yaml:"password"`
}

// LMS is the default site's LMS and how to call it.
type LMS struct {
	URL            string   `yaml:"url"`
	OAuthURL       string   `yaml:"oauth_url"`
	ClientID       string   `yaml:"client_id"`
	ClientSecret   string   `yaml:"client_secret"`
	APIKey         string   `yaml:"api_key"`
	Timeout        Duration `yaml:"timeout"`
	MaxConcurrency int      `yaml:"max_concurrency"`
	RatePerMinute  int      `yaml:"rate_per_minute"`
}

// TokenURL is the OAuth2 token endpoint: oauth_url, else <url>/oauth2/access_token.
func (l LMS) TokenURL() string {
	if l.OAuthURL != "" {
		return l.OAuthURL
	}
	return strings.TrimRight(l.URL, "/") + "/oauth2/access_token"
}

// Auth says whose JWTs the API accepts.
type Auth struct {
	JWT        []Issuer `yaml:"jwt"`
	AdminClaim string   `yaml:"admin_claim"`
	// MaxTokenLifetime refuses tokens valid for longer (exp - iat), so a
	// leaked long-lived token is not a standing credential.
	MaxTokenLifetime Duration `yaml:"max_token_lifetime"`
}

// Issuer is one accepted JWT issuer: HS256 with a shared secret, or RS256/RS512
// with keys from a JWKS URL.
type Issuer struct {
	Issuer   string `yaml:"issuer"`
	Audience string `yaml:"audience"`
	Secret   string `yaml:"secret"`
	JWKSURL  string `yaml:"jwks_url"`
}

// Admin configures access to /admin/.
type Admin struct {
	BasicAuth []BasicAuthUser `yaml:"basic_auth"`
}

// BasicAuthUser is an operator allowed into /admin/ with a password.
type BasicAuthUser struct {
	User           string `yaml:"user"`
	PasswordBcrypt string `yaml:"password_bcrypt"`
}

// defaultWorkerServers is worker.servers' default, chosen by measurement
// (docs/performance.md): an asynq server takes one task per Redis round
// trip, and one kept up with neither the drain nor 3,000 orders/s.
const defaultWorkerServers = 4

// Worker configures task processing.
type Worker struct {
	Concurrency int    `yaml:"concurrency"`
	Queue       string `yaml:"queue"`
	Retry       Retry  `yaml:"retry"`
	// HTTPAddr is where `coordinator worker` serves /health and /metrics,
	// apart from http.addr so that an API and a worker can share a host
	// and a config file.
	HTTPAddr string `yaml:"http_addr"`
	// Retention is how long a finished task is kept in Redis, so that repeats
	// of the request are recognised and GET /orders/{n} can answer.
	Retention Duration `yaml:"retention"`
	// ReturnRetention is how long a returned line's return is kept in
	// Redis, whatever Retention is: while it is, no redelivery or later
	// update of the order enrolls the line again (the ledger keeps it for
	// good).
	ReturnRetention Duration `yaml:"return_retention"`
	// Servers is how many asynq servers a worker process runs, sharing
	// worker.concurrency and one Redis client: each takes one task per
	// Redis round trip, so several take tasks in parallel
	// (docs/performance.md).
	Servers int `yaml:"servers"`
}

// Retry bounds the retries of transient failures.
type Retry struct {
	MaxAttempts  int      `yaml:"max_attempts"`
	InitialDelay Duration `yaml:"initial_delay"`
	MaxDelay     Duration `yaml:"max_delay"`
}

// Database configures the optional Postgres tier.
type Database struct {
	URL               string   `yaml:"url"`
	ReconcileInterval Duration `yaml:"reconcile_interval"`
	SecretKey         string   `yaml:"secret_key"`
}

// Cache configures the optional shared cache.
type Cache struct {
	Memcached []string `yaml:"memcached"`
}

// Duration is a time.Duration written as a Go duration string ("7s", "1m").
type Duration time.Duration

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// UnmarshalYAML parses a Go duration string.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a duration such as 7s or 1m")
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil {
		return errors.New("not a duration such as 7s or 1m") // the value may be a secret: not echoed
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back as a string.
func (d Duration) MarshalYAML() (any, error) { return time.Duration(d).String(), nil }

// DefaultWorkerHTTPAddr is worker.http_addr's default: next to the API's
// default http.addr, so both run on one host from one file.
const DefaultWorkerHTTPAddr = "127.0.0.1:8141"

// DefaultRedisURL is redis.url when no Redis is configured: DB 2, clear of
// Tutor's DBs 0 and 1.
const DefaultRedisURL = "redis://127.0.0.1:6379/2"

// normalize fills in what depends on other keys once the file is decoded.
func (c *Config) normalize() {
	c.normalizeWebhooks()
	if c.Redis.URL == "" && c.Redis.Sentinel == nil && c.Redis.Cluster == nil {
		c.Redis.URL = DefaultRedisURL
	}
	// An entry that expanded to nothing ("${MEMCACHED_ADDR}" unset) means
	// no server, so one config file serves deployments with and without.
	c.Cache.Memcached = slices.DeleteFunc(c.Cache.Memcached, func(a string) bool { return strings.TrimSpace(a) == "" })
	// Likewise a basic-auth user whose name and hash both expanded to
	// nothing (ADMIN_USER and ADMIN_PASSWORD_BCRYPT unset) is no user: the
	// dashboard is then open to admin JWTs only.
	c.Admin.BasicAuth = slices.DeleteFunc(c.Admin.BasicAuth, func(u BasicAuthUser) bool {
		return strings.TrimSpace(u.User) == "" && strings.TrimSpace(u.PasswordBcrypt) == ""
	})
	c.normalizeIntegrations()
}

// Defaults returns the configuration used for every key a file leaves out.
func Defaults() Config {
	return Config{
		HTTP:            HTTP{Addr: "127.0.0.1:8140", MaxBodyBytes: 64 << 10},
		ShutdownTimeout: Duration(30 * time.Second),
		Log:             Log{Level: "info"},
		// redis.url's default is applied after decoding, and only when
		// neither sentinel nor cluster is set: see normalize.
		LMS: LMS{
			URL:            "http://127.0.0.1:18000",
			ClientID:       "coordinator-worker",
			Timeout:        Duration(7 * time.Second),
			MaxConcurrency: 20,
			RatePerMinute:  600,
		},
		Auth: Auth{AdminClaim: "administrator", MaxTokenLifetime: Duration(24 * time.Hour)},
		Worker: Worker{
			Concurrency: 50,
			Servers:     defaultWorkerServers,
			Queue:       "fulfillment",
			Retry: Retry{
				MaxAttempts:  20,
				InitialDelay: Duration(5 * time.Second),
				MaxDelay:     Duration(time.Hour),
			},
			Retention:       Duration(7 * 24 * time.Hour),
			ReturnRetention: Duration(400 * 24 * time.Hour),
			HTTPAddr:        DefaultWorkerHTTPAddr,
		},
		Database: Database{ReconcileInterval: Duration(30 * time.Second)},
	}
}

// Load reads, expands and validates the file at path. Problems that do not
// stop the process, such as secrets in a file others can read, are in the
// result's Warnings.
func Load(path string, getenv func(string) string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	cfg, literal, err := parse(data, getenv)
	if err != nil {
		return Config{}, fmt.Errorf("config %s: %w", path, err)
	}
	cfg.warnings = append(cfg.warnings, permissionWarnings(path, literal)...)
	return cfg, nil
}

// Parse expands ${NAME} references, applies defaults, and validates.
// COORDINATOR_DEV=1 in the environment accepts development secrets (a
// short or published HS256 secret) for a local trial.
func Parse(data []byte, getenv func(string) string) (Config, error) {
	cfg, _, err := parse(data, getenv)
	return cfg, err
}

// parse is Parse that also returns the secret keys whose values are
// written in the file itself rather than taken from the environment.
func parse(data []byte, getenv func(string) string) (Config, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return Config{}, nil, fmt.Errorf("not valid YAML: %s", fulfillment.Clip(err.Error(), 200))
	}
	cfg := Defaults()
	cfg.dev = getenv("COORDINATOR_DEV") == "1"
	if cfg.dev {
		cfg.warnings = append(cfg.warnings, "COORDINATOR_DEV=1: development secrets are accepted; never set it in production")
	}
	if len(doc.Content) == 0 { // empty file: all defaults
		cfg.normalize()
		return cfg, nil, cfg.Validate()
	}
	root := doc.Content[0]
	if err := looksLikeConfig(root); err != nil {
		return Config{}, nil, err
	}
	w := walker{getenv: getenv, unset: map[string][]string{}, env: map[string][]string{}, literal: map[string]bool{}}
	if err := w.walk(root, reflect.TypeOf(cfg), ""); err != nil {
		return Config{}, nil, w.redact(err)
	}
	if err := root.Decode(&cfg); err != nil {
		return Config{}, nil, fmt.Errorf("decode: %s", fulfillment.Clip(err.Error(), 200))
	}
	cfg.normalize()
	if err := cfg.Validate(); err != nil {
		var ke *KeyError
		if errors.As(err, &ke) {
			if vars := w.unsetUnder(ke.Key); len(vars) > 0 {
				ke.Reason += fmt.Sprintf(" (it refers to ${%s}, which is not set in the environment)", strings.Join(vars, "}, ${"))
			}
		}
		return Config{}, nil, w.redact(err)
	}
	cfg.warnings = append(cfg.warnings, w.droppedSecrets()...)
	var literal []string
	for k := range w.literal {
		literal = append(literal, k)
	}
	slices.Sort(literal)
	return cfg, literal, nil
}

// looksLikeConfig refuses a document that is not a Coordinator config
// without echoing any of it: --config pointing at another file (a key file,
// /etc/shadow through a symlink) must not print its content as "unknown
// keys".
func looksLikeConfig(root *yaml.Node) error {
	if root.Kind != yaml.MappingNode {
		return keyErr("(top level)", "must be a map of keys; this does not look like a Coordinator config file")
	}
	known := map[string]bool{}
	t := reflect.TypeOf(Config{})
	for i := 0; i < t.NumField(); i++ {
		known[yamlName(t.Field(i))] = true
	}
	for i := 0; i < len(root.Content); i += 2 {
		if known[root.Content[i].Value] {
			return nil
		}
	}
	return keyErr("(top level)", "none of the keys is a configuration key; this does not look like a Coordinator config file")
}

// KeyError is a problem with one configuration key.
type KeyError struct {
	Key    string // dotted path, e.g. "lms.timeout" or "auth.jwt[0].secret"
	Reason string

	// The offending value, when the message shows it: it comes before
	// Reason ("\"soon\" is not a duration"). A value taken from the
	// environment, or of a secret key, is replaced by where it came from.
	value    string
	hasValue bool
	hidden   string
}

func (e *KeyError) Error() string {
	if !e.hasValue {
		return e.Key + ": " + e.Reason
	}
	v := fmt.Sprintf("%q", redactUserinfo(fulfillment.Clip(e.value, 64)))
	if e.hidden != "" {
		v = "the value " + e.hidden
	}
	return e.Key + ": " + v + " " + e.Reason
}

func keyErr(key, format string, args ...any) error {
	return &KeyError{Key: key, Reason: fmt.Sprintf(format, args...)}
}

// KeyErr is the error an adapter validating its own part of the
// configuration returns: the key and the reason, never the value.
func KeyErr(key, format string, args ...any) error { return keyErr(key, format, args...) }

// ValueErr is KeyErr showing the offending value, unless the key holds a
// secret.
func ValueErr(key, value, reason string) error { return valueErr(key, value, reason) }

// valueErr is a KeyError showing the offending value, unless it is hidden
// later (see walker.redact).
func valueErr(key, value, reason string) error {
	e := &KeyError{Key: key, Reason: reason, value: value, hasValue: true}
	if isSecretKey(key) {
		e.hidden = "(a secret: not shown)"
	}
	return e
}

// secretKeys are the keys whose values are never shown, with list indexes
// written as [].
var secretKeys = map[string]bool{
	"lms.client_secret": true, "lms.api_key": true, "auth.jwt[].secret": true,
	"admin.basic_auth[].password_bcrypt": true, "database.secret_key": true, "database.url": true,
	"redis.url": true, "redis.sentinel.password": true, "redis.sentinel.sentinel_password": true,
	"integrations[].secrets[]": true, "integrations[].api_key": true, "integrations[].consumer_secret": true,
	"redis.cluster.password": true, "webhooks[].secrets[]": true, "webhooks[].url": true,
}

var listIndex = regexp.MustCompile(`\[\d+\]`)

// isSecretKey reports whether key (e.g. "auth.jwt[0].secret") holds a secret.
func isSecretKey(key string) bool { return secretKeys[listIndex.ReplaceAllString(key, "[]")] }

var userinfo = regexp.MustCompile(`//[^/@\s]*@`)

// redactUserinfo hides the user and password of URLs in s.
func redactUserinfo(s string) string { return userinfo.ReplaceAllString(s, "//REDACTED@") }

// RedactURL returns a URL fit for a log line: scheme, host and path, without
// user, password, query or fragment; "(unparsable)" when it does not parse.
func RedactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable)"
	}
	u.User, u.RawQuery, u.Fragment, u.RawFragment, u.ForceQuery = nil, "", "", "", false
	return u.String()
}

// keyName is a key from the file as it may appear in a message: as is when
// it is a plain name, else quoted and cut short.
func keyName(k string) string {
	if plainKey.MatchString(k) {
		return k
	}
	return fmt.Sprintf("%q", fulfillment.Clip(k, 32))
}

var plainKey = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// envRef is a ${NAME} or ${NAME:-default} reference: the default stands in
// when NAME is unset or empty, as in a shell, so one file serves a trial on
// other ports (make run) without every variable set.
var envRef = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}`)

// walker checks a YAML tree against the Config type before decoding, so that
// unknown keys and badly typed values are reported with their full key path,
// and expands ${NAME} in scalars.
type walker struct {
	getenv  func(string) string
	unset   map[string][]string // key path -> referenced variables that were empty
	env     map[string][]string // key path -> variables its value was expanded from
	literal map[string]bool     // secret key paths whose value is written in the file
}

// redact hides, in a KeyError, a value that came from the environment.
func (w walker) redact(err error) error {
	var ke *KeyError
	if errors.As(err, &ke) && ke.hasValue && ke.hidden == "" {
		if names := w.env[ke.Key]; len(names) > 0 {
			ke.hidden = "from ${" + strings.Join(names, "}, ${") + "}"
		}
	}
	return err
}

func (w walker) walk(n *yaml.Node, t reflect.Type, path string) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := path
	if name == "" {
		name = "(top level)"
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil // an explicit null keeps the default
	}
	switch {
	case t == reflect.TypeOf(Duration(0)) || n.Kind == yaml.ScalarNode:
		if n.Kind != yaml.ScalarNode {
			return keyErr(name, "must be a single value, not a list or map")
		}
		w.expand(n, path)
		v := reflect.New(t)
		if err := n.Decode(v.Interface()); err != nil {
			reason, show := scalarProblem(t)
			if show {
				return valueErr(name, n.Value, reason)
			}
			return keyErr(name, "%s", reason)
		}
		return nil
	case t.Kind() == reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return keyErr(name, "must be a map of keys")
		}
		fields := map[string]reflect.StructField{}
		for i := 0; i < t.NumField(); i++ {
			if f := t.Field(i); f.IsExported() {
				fields[yamlName(f)] = f
			}
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			f, ok := fields[k]
			if !ok {
				return keyErr(join(path, keyName(k)), "unknown key")
			}
			if err := w.walk(n.Content[i+1], f.Type, join(path, k)); err != nil {
				return err
			}
		}
		return nil
	case t == reflect.TypeFor[Product]() && n.Kind == yaml.MappingNode:
		return w.walk(n, t.Elem(), path) // one item, without the list
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return keyErr(name, "must be a list")
		}
		for i, c := range n.Content {
			if err := w.walk(c, t.Elem(), fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		return nil
	case t.Kind() == reflect.Map:
		if n.Kind != yaml.MappingNode {
			return keyErr(name, "must be a map")
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			if err := w.walk(n.Content[i+1], t.Elem(), join(path, keyName(n.Content[i].Value))); err != nil {
				return err
			}
		}
		return nil
	}
	return keyErr(name, "must be a single value, not a list or map")
}

// yamlName is a struct field's key in the file.
func yamlName(f reflect.StructField) string { return strings.Split(f.Tag.Get("yaml"), ",")[0] }

// unsetUnder is the variables that were empty in key or in its list
// entries (secrets: ["${A}", "${B}"] both unset leaves secrets empty).
func (w walker) unsetUnder(key string) []string {
	vars := slices.Clone(w.unset[key])
	var entries []string
	for k := range w.unset {
		if strings.HasPrefix(k, key+"[") {
			entries = append(entries, k)
		}
	}
	slices.Sort(entries)
	for _, k := range entries {
		vars = append(vars, w.unset[k]...)
	}
	return vars
}

// droppedSecret is an entry of an integration's signing secrets
// (integrations[0].secrets[1]), which are dropped when empty; a subscriber's
// empty secret is an error instead.
var droppedSecret = regexp.MustCompile(`^integrations\[\d+\]\.secrets\[\d+\]$`)

// droppedSecrets warns of each signing secret that expanded to nothing and
// was dropped while others of its list remain (all of them dropped is an
// error instead): a rotation's new secret left unset fails the deliveries
// signed with it, and nothing else would say why.
func (w walker) droppedSecrets() []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(w.unset)) {
		if droppedSecret.MatchString(k) {
			out = append(out, fmt.Sprintf("%s: ${%s} is not set in the environment, so this secret is dropped and only the others are used",
				k, strings.Join(w.unset[k], "}, ${")))
		}
	}
	return out
}

// expand replaces ${NAME} in a scalar. A plain scalar loses its resolved tag so
// that "${PORT}" can become an integer after expansion. It notes which
// variables a value came from, and which secret values are written in the
// file itself.
func (w walker) expand(n *yaml.Node, path string) {
	if isSecretKey(path) && secretInFile(path, n.Value) {
		w.literal[listIndex.ReplaceAllString(path, "[]")] = true
	}
	if !strings.Contains(n.Value, "${") {
		return
	}
	n.Value = envRef.ReplaceAllStringFunc(n.Value, func(ref string) string {
		m := envRef.FindStringSubmatch(ref)
		name, def := m[1], m[2]
		w.env[path] = append(w.env[path], name)
		v := w.getenv(name)
		if v == "" {
			v = def
		}
		if v == "" {
			w.unset[path] = append(w.unset[path], name)
		}
		return v
	})
	if n.Style == 0 {
		n.Tag = ""
	}
}

// secretInFile reports whether a secret key's value, before expansion, is
// written in the file: for URLs, a password in the user info; for others,
// anything besides ${NAME} references.
func secretInFile(path, raw string) bool {
	if strings.HasSuffix(path, ".url") {
		m := userinfo.FindString(raw)
		_, pass, ok := strings.Cut(strings.TrimSuffix(strings.TrimPrefix(m, "//"), "@"), ":")
		return ok && strings.TrimSpace(envRef.ReplaceAllString(pass, "$2")) != ""
	}
	// A ${NAME:-default}'s default is written in the file.
	return strings.TrimSpace(envRef.ReplaceAllString(raw, "$2")) != ""
}

// scalarProblem says why a scalar does not fit type t, and whether showing
// the value helps.
func scalarProblem(t reflect.Type) (string, bool) {
	if t == reflect.TypeOf(Duration(0)) {
		return "is not a duration such as 7s or 1m", true
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int64:
		return "is not an integer", true
	case reflect.Bool:
		return "is not true or false", true
	case reflect.Slice:
		return "must be a list", false
	case reflect.Struct, reflect.Map:
		return "must be a map of keys", false
	}
	return "has the wrong type", false
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

var queueName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,100}$`)

// Validate checks required keys, ranges and URLs. It does not check the
// signal map's receiver names: only the program knows its receivers.
func (c *Config) Validate() error {
	switch {
	case c.HTTP.Addr == "":
		return keyErr("http.addr", "required")
	case c.HTTP.MaxBodyBytes <= 0:
		return keyErr("http.max_body_bytes", "must be positive")
	case c.ShutdownTimeout <= 0:
		return keyErr("shutdown_timeout", "must be positive")
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		return valueErr("log.level", c.Log.Level, "is not debug, info, warn or error")
	}
	if err := c.Redis.validate(); err != nil {
		return err
	}
	if err := c.LMS.validate(); err != nil {
		return err
	}
	if len(c.Auth.JWT) == 0 {
		return keyErr("auth.jwt", "required: list at least one accepted issuer")
	}
	for i, is := range c.Auth.JWT {
		k := fmt.Sprintf("auth.jwt[%d]", i)
		switch {
		case is.Issuer == "":
			return keyErr(k+".issuer", "required")
		case is.Audience == "":
			return keyErr(k+".audience", "required")
		case is.Secret == "" && is.JWKSURL == "":
			return keyErr(k+".secret", "required: set secret (HS256) or jwks_url (RS256/RS512)")
		case is.Secret != "" && is.JWKSURL != "":
			return keyErr(k+".jwks_url", "set either secret or jwks_url, not both")
		}
		if is.JWKSURL != "" {
			if err := HTTPURL(k+".jwks_url", is.JWKSURL); err != nil {
				return err
			}
		}
		if is.Secret != "" && !c.dev {
			if err := strongSecret(k+".secret", is.Secret); err != nil {
				return err
			}
		}
	}
	switch {
	case c.Auth.AdminClaim == "":
		return keyErr("auth.admin_claim", "required")
	case c.Auth.MaxTokenLifetime <= 0:
		return keyErr("auth.max_token_lifetime", "must be positive")
	}
	for i, u := range c.Admin.BasicAuth {
		k := fmt.Sprintf("admin.basic_auth[%d]", i)
		if u.User == "" {
			return keyErr(k+".user", "required")
		}
		if _, err := bcrypt.Cost([]byte(u.PasswordBcrypt)); err != nil {
			return keyErr(k+".password_bcrypt", "required: a bcrypt hash ($2a$..., $2b$...), e.g. from coordinator admin hash-password")
		}
	}
	w := c.Worker
	switch {
	case w.Concurrency <= 0:
		return keyErr("worker.concurrency", "must be positive")
	case w.Servers <= 0 || w.Servers > 64:
		return keyErr("worker.servers", "must be 1-64")
	case !queueName.MatchString(w.Queue):
		return keyErr("worker.queue", "must be 1-100 of letters, digits, '_', '.' and '-'")
	case w.Retry.MaxAttempts <= 0:
		return keyErr("worker.retry.max_attempts", "must be positive")
	case w.Retry.InitialDelay <= 0:
		return keyErr("worker.retry.initial_delay", "must be positive")
	case w.Retry.MaxDelay < w.Retry.InitialDelay:
		return keyErr("worker.retry.max_delay", "must be at least worker.retry.initial_delay")
	case w.Retention <= 0:
		return keyErr("worker.retention", "must be positive")
	case w.ReturnRetention < w.Retention:
		return keyErr("worker.return_retention", "must be at least worker.retention: a return outlives the enrollment it undoes")
	case w.HTTPAddr == "":
		return keyErr("worker.http_addr", "required")
	}
	if err := c.validateTiers(); err != nil {
		return err
	}
	if err := c.validateIntegrations(); err != nil {
		return err
	}
	return c.validateWebhooks()
}

func (r Redis) validate() error {
	set := 0
	for _, b := range []bool{r.URL != "", r.Sentinel != nil, r.Cluster != nil} {
		if b {
			set++
		}
	}
	if set != 1 {
		return keyErr("redis", "set exactly one of url, sentinel or cluster")
	}
	switch {
	case r.URL != "":
		u, err := url.Parse(r.URL)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix") {
			return keyErr("redis.url", "must be a redis://, rediss:// or unix:// URL")
		}
		if db := strings.Trim(u.Path, "/"); u.Scheme != "unix" && db != "" {
			if _, err := strconv.Atoi(db); err != nil {
				return keyErr("redis.url", "the path must be a database number, such as /2")
			}
		}
	case r.Sentinel != nil:
		if r.Sentinel.MasterName == "" {
			return keyErr("redis.sentinel.master_name", "required")
		}
		if len(r.Sentinel.Addrs) == 0 {
			return keyErr("redis.sentinel.addrs", "required")
		}
	case r.Cluster != nil:
		if len(r.Cluster.Addrs) == 0 {
			return keyErr("redis.cluster.addrs", "required")
		}
	}
	return nil
}

func (l LMS) validate() error {
	if err := HTTPURL("lms.url", l.URL); err != nil {
		return err
	}
	if l.OAuthURL != "" {
		if err := HTTPURL("lms.oauth_url", l.OAuthURL); err != nil {
			return err
		}
	}
	switch {
	case l.ClientID == "":
		return keyErr("lms.client_id", "required")
	case l.ClientSecret == "":
		return keyErr("lms.client_secret", "required")
	case l.Timeout <= 0:
		return keyErr("lms.timeout", "must be positive")
	case l.MaxConcurrency <= 0:
		return keyErr("lms.max_concurrency", "must be positive")
	case l.RatePerMinute <= 0:
		return keyErr("lms.rate_per_minute", "must be positive")
	}
	return nil
}

func (c *Config) validateTiers() error {
	d := c.Database
	if d.URL != "" {
		u, err := url.Parse(d.URL)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
			return keyErr("database.url", "must be a postgres:// URL")
		}
	}
	if d.ReconcileInterval <= 0 {
		return keyErr("database.reconcile_interval", "must be positive")
	}
	if d.SecretKey != "" {
		if _, err := SecretKeyBytes(d.SecretKey); err != nil {
			return keyErr("database.secret_key", "%v", err)
		}
	}
	for i, a := range c.Cache.Memcached {
		if !strings.Contains(a, ":") {
			return keyErr(fmt.Sprintf("cache.memcached[%d]", i), "must be host:port")
		}
	}
	return nil
}

// MinHS256SecretBytes is the shortest HS256 secret accepted. RFC 7518 §3.2
// asks for 32 bytes, but Tutor, which most Open edX sites run on, generates
// the LMS's JWT_COMMON_SECRET_KEY as 24 random letters and digits (about 143
// bits): refusing it would refuse the LMS's own secret. 24 bytes keeps a
// 1-character or word-like secret out and Tutor's in.
const MinHS256SecretBytes = 24

// publishedSecrets are secrets printed in this project's documentation.
var publishedSecrets = []string{"dev-jwt-secret-change-me"}

// strongSecret refuses an HS256 secret anyone could forge tokens with: a
// short one, a published one, or a placeholder. The value is never shown.
func strongSecret(key, secret string) error {
	lower := strings.ToLower(secret)
	switch {
	case slices.Contains(publishedSecrets, secret), strings.Contains(lower, "change-me"), strings.Contains(lower, "changeme"):
		return keyErr(key, "is a published development secret or a placeholder: set your own (COORDINATOR_DEV=1 accepts it for a local trial)")
	case len(secret) < MinHS256SecretBytes:
		return keyErr(key, "is shorter than %d bytes: anyone could guess it and mint admin tokens (COORDINATOR_DEV=1 accepts it for a local trial)", MinHS256SecretBytes)
	}
	return nil
}

// permissionWarnings warns about a config file others may change (where
// orders and secrets go) or read while it holds secrets in clear.
func permissionWarnings(path string, literalSecrets []string) []string {
	fi, err := os.Stat(path)
	if err != nil {
		return nil
	}
	var out []string
	perm := fi.Mode().Perm()
	if perm&0o002 != 0 {
		out = append(out, fmt.Sprintf("config file %s is world-writable: anyone on this host can change it (chmod o-w)", path))
	}
	if perm&0o004 != 0 && len(literalSecrets) > 0 {
		out = append(out, fmt.Sprintf("config file %s is world-readable and holds secrets (%s): chmod o-r, or take them from the environment with ${NAME}",
			path, strings.Join(literalSecrets, ", ")))
	}
	return out
}

// SecretKeyBytes decodes a 32-byte key written in hex or base64.
func SecretKeyBytes(s string) ([]byte, error) {
	if b, err := hex.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	if b, err := base64.StdEncoding.DecodeString(s); err == nil && len(b) == 32 {
		return b, nil
	}
	return nil, errors.New("must be 32 bytes written as 64 hex digits or base64")
}

// HTTPURL checks that s is an absolute http(s) URL; key names it in the error.
func HTTPURL(key, s string) error {
	if s == "" {
		return keyErr(key, "required")
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return valueErr(key, s, "is not an absolute http(s) URL")
	}
	return nil
}
