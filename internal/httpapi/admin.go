package httpapi

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// BasicAuthUser is an operator who may sign in to /admin/ with a password,
// kept as a bcrypt hash.
type BasicAuthUser struct {
	User           string
	PasswordBcrypt string
}

// operators checks the credentials of /admin/: an admin JWT, or a
// configured basic-auth user whose password matches its bcrypt hash.
//
// bcrypt is deliberately slow, so an unauthenticated caller could turn
// guesses into CPU: each client (IP address; an IPv6 /64) has a budget of
// guesses that refills slowly, only a few comparisons run at once with a
// short queue behind them, and identical credentials arriving together
// (the dashboard's page loads several resources at once) share one
// comparison. A successful check is remembered briefly, because the page
// polls its API every few seconds.
type operators struct {
	auth    *Authenticator
	users   map[string][]byte
	dummy   []byte // a hash of the users' cost, checked for unknown users
	compare func(hash, password []byte) error
	now     func() time.Time
	limits  operatorLimits
	csp     func() string // computed on the first admin request

	slots chan struct{} // bcrypt comparisons running
	queue chan struct{} // requests waiting for a slot

	mu      sync.Mutex
	recent  map[[32]byte]time.Time // sha256(user, password) → expiry
	pending map[[32]byte]*basicCheck
	clients map[string]*guessBudget
	swept   time.Time // when full buckets were last dropped
}

// operatorLimits bound what basic-auth guesses can cost.
type operatorLimits struct {
	Burst      float64       // guesses a client may make at once
	Refill     time.Duration // one more guess per Refill
	MaxClients int           // clients tracked; beyond, new ones share one budget
	Concurrent int           // bcrypt comparisons at once
	Queued     int           // requests waiting for a comparison; beyond, 429
}

func defaultOperatorLimits() operatorLimits {
	return operatorLimits{
		Burst:      10,
		Refill:     time.Minute,
		MaxClients: 4096,
		// Leave the other cores to the API and /health.
		Concurrent: max(1, runtime.GOMAXPROCS(0)/2),
		Queued:     8,
	}
}

const operatorMemory = 5 * time.Minute

// busyRetryAfter is what a 429 asks for when all comparison slots are taken.
const busyRetryAfter = time.Second

// overflowClient is the budget shared by clients beyond MaxClients.
const overflowClient = "(overflow)"

func newOperators(a *Authenticator, users []BasicAuthUser, dashboard http.Handler) *operators {
	lim := defaultOperatorLimits()
	o := &operators{
		auth: a, users: map[string][]byte{}, compare: bcrypt.CompareHashAndPassword, now: time.Now,
		limits: lim, csp: sync.OnceValue(func() string { return dashboardCSP(dashboard) }),
		slots: make(chan struct{}, lim.Concurrent), queue: make(chan struct{}, lim.Queued),
		recent: map[[32]byte]time.Time{}, pending: map[[32]byte]*basicCheck{}, clients: map[string]*guessBudget{},
	}
	cost := bcrypt.MinCost
	for _, u := range users {
		o.users[u.User] = []byte(u.PasswordBcrypt)
		if c, err := bcrypt.Cost([]byte(u.PasswordBcrypt)); err == nil {
			cost = max(cost, c)
		}
	}
	if len(users) > 0 {
		// An unknown user's check costs what a known one's does, so timing
		// does not tell which user names exist.
		o.dummy, _ = bcrypt.GenerateFromPassword([]byte("not a password"), cost)
	}
	return o
}

// setLimits replaces the limits (tests).
func (o *operators) setLimits(l operatorLimits) {
	o.limits = l
	o.slots, o.queue = make(chan struct{}, l.Concurrent), make(chan struct{}, l.Queued)
}

// basicResult is how a basic-auth check ended.
type basicResult int

const (
	basicWrong   basicResult = iota // wrong user or password
	basicOK                         // a configured user with its password
	basicLimited                    // the client's guesses are used up
	basicBusy                       // every comparison slot is taken
)

// basicCheck is one comparison that identical credentials wait for.
type basicCheck struct {
	done   chan struct{}
	result basicResult
}

// guessBudget is a client's token bucket of guesses.
type guessBudget struct {
	tokens float64
	at     time.Time
}

// refill brings the bucket to now.
func (b *guessBudget) refill(now time.Time, l operatorLimits) {
	b.tokens = min(l.Burst, b.tokens+float64(now.Sub(b.at))/float64(l.Refill))
	b.at = now
}

// checkBasic checks a user and password for client, within the limits. For
// basicLimited and basicBusy it also says when to retry.
func (o *operators) checkBasic(ctx context.Context, client, user, pass string) (basicResult, time.Duration) {
	key := sha256.Sum256([]byte(user + "\x00" + pass))
	now := o.now()
	o.mu.Lock()
	if exp, ok := o.recent[key]; ok && now.Before(exp) {
		o.mu.Unlock()
		return basicOK, 0
	}
	if c := o.pending[key]; c != nil {
		o.mu.Unlock()
		select {
		case <-c.done:
			return c.result, busyRetryAfter
		case <-ctx.Done():
			return basicWrong, 0
		}
	}
	b := o.budget(client, now)
	if b.tokens < 1 {
		wait := time.Duration((1 - b.tokens) * float64(o.limits.Refill))
		o.mu.Unlock()
		return basicLimited, wait
	}
	b.tokens--
	c := &basicCheck{done: make(chan struct{})}
	o.pending[key] = c
	o.mu.Unlock()

	c.result = basicBusy
	if o.acquire(ctx) {
		c.result = basicWrong
		if o.verify(user, pass) {
			c.result = basicOK
		}
		<-o.slots
	}

	o.mu.Lock()
	delete(o.pending, key)
	if c.result != basicWrong { // no guess was spent: a success, or no comparison
		b := o.budget(client, now)
		b.tokens = min(o.limits.Burst, b.tokens+1)
	}
	if c.result == basicOK {
		for k, e := range o.recent { // keep the memory small
			if now.After(e) {
				delete(o.recent, k)
			}
		}
		o.recent[key] = now.Add(operatorMemory)
	}
	o.mu.Unlock()
	close(c.done)
	return c.result, busyRetryAfter
}

// budget returns client's bucket, refilled to now; o.mu is held. The table
// is bounded: when it is full, buckets that have refilled completely (they
// remember nothing) are dropped, at most once a second, and if none has,
// the new client shares one overflow bucket with the others beyond the
// limit.
func (o *operators) budget(client string, now time.Time) *guessBudget {
	b := o.clients[client]
	if b == nil {
		if len(o.clients) >= o.limits.MaxClients-1 && now.Sub(o.swept) >= time.Second {
			o.swept = now
			for k, v := range o.clients {
				if v.refill(now, o.limits); v.tokens >= o.limits.Burst && k != overflowClient {
					delete(o.clients, k)
				}
			}
		}
		if len(o.clients) >= o.limits.MaxClients-1 { // the last place is the overflow's
			client = overflowClient
		}
		if b = o.clients[client]; b == nil {
			b = &guessBudget{tokens: o.limits.Burst, at: now}
			o.clients[client] = b
		}
	}
	b.refill(now, o.limits)
	return b
}

// acquire takes a comparison slot, waiting in the bounded queue if need be.
func (o *operators) acquire(ctx context.Context) bool {
	select {
	case o.slots <- struct{}{}:
		return true
	default:
	}
	select {
	case o.queue <- struct{}{}:
	default:
		return false
	}
	defer func() { <-o.queue }()
	select {
	case o.slots <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// verify compares the password with the user's hash, or with the dummy for
// an unknown user.
func (o *operators) verify(user, pass string) bool {
	hash, known := o.users[user]
	if !known {
		if o.dummy != nil {
			_ = o.compare(o.dummy, []byte(pass))
		}
		return false
	}
	return o.compare(hash, []byte(pass)) == nil
}

// clientKey names the client whose guesses are counted: its IP address, or
// its /64 for IPv6, where one holder has the whole prefix. Behind a reverse
// proxy every client is the proxy (X-Forwarded-For is not trusted: anyone
// can write it).
func clientKey(r *http.Request) string {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return "(unknown)"
	}
	a := ap.Addr().Unmap()
	if a.Is6() {
		p, _ := a.Prefix(64)
		return p.String()
	}
	return a.String()
}

// require lets operators through; anyone else gets 401 with a Basic
// challenge (so a browser asks), 403 for a valid non-admin JWT or a
// cross-site request, or 429 when basic-auth guesses are limited.
func (o *operators) require(log *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h.Set("X-Frame-Options", "DENY")
			h.Set("Content-Security-Policy", o.csp())
			h.Set("X-Content-Type-Options", "nosniff")
			h.Set("Referrer-Policy", "same-origin")
			if why := crossSite(r); why != "" {
				log.InfoContext(r.Context(), "admin_cross_site_refused", "request_id", RequestID(r.Context()),
					"method", methodLabel(r.Method), "reason", why)
				encode(w, http.StatusForbidden, detail("Cross-site request refused."))
				return
			}
			if user, pass, ok := r.BasicAuth(); ok {
				client := clientKey(r)
				res, retry := o.checkBasic(r.Context(), client, user, pass)
				switch res {
				case basicOK:
					setOperator(r.Context(), "basic:"+user)
					next.ServeHTTP(w, r)
					return
				case basicLimited, basicBusy:
					log.WarnContext(r.Context(), "admin_throttled", "request_id", RequestID(r.Context()),
						"client", client, "busy", res == basicBusy)
					h.Set("Retry-After", strconv.Itoa(int(max(1, (retry+time.Second-1)/time.Second))))
					encode(w, http.StatusTooManyRequests, detail("Too many attempts; retry later."))
					return
				}
				// A name that is not configured is whatever the caller
				// typed: only a configured one is worth logging.
				attrs := []any{"request_id", RequestID(r.Context()), "client", client, "user_known", o.users[user] != nil}
				if o.users[user] != nil {
					attrs = append(attrs, "user", user)
				}
				log.InfoContext(r.Context(), "admin_refused", attrs...)
			} else if a := r.Header.Get("Authorization"); a != "" && !strings.HasPrefix(strings.ToLower(a), "basic ") {
				claims, err := o.auth.Verify(r.Context(), a)
				if err == nil {
					setOperator(r.Context(), jwtOperator(claims))
					next.ServeHTTP(w, r)
					return
				}
				if errors.Is(err, ErrNotAdmin) {
					encode(w, http.StatusForbidden, detail("You do not have permission to perform this action."))
					return
				}
			}
			h.Set("WWW-Authenticate", `Basic realm="coordinator admin", charset="UTF-8"`)
			encode(w, http.StatusUnauthorized, detail("Authentication credentials were not provided or are invalid."))
		})
	}
}

// crossSite says why an unsafe request may have been sent by another site's
// page, riding on the credentials a browser attaches by itself (Basic
// auth), or "" when it may not. Current browsers send Sec-Fetch-Site on
// every request and Origin on every POST; a request with neither is not
// from a current browser, and is let through only with a JWT in
// Authorization, which no browser attaches on its own.
func crossSite(r *http.Request) string {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return ""
	}
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		if site == "same-origin" || site == "none" {
			return ""
		}
		return "sec-fetch-site " + fulfillment.Clip(site, 16)
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		if u, err := url.Parse(origin); err == nil && u.Host != "" && u.Host == r.Host {
			return ""
		}
		return "origin"
	}
	scheme, _, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if strings.EqualFold(scheme, "JWT") || strings.EqualFold(scheme, "Bearer") {
		return ""
	}
	return "no origin"
}

// inlineScript matches a script element and its content.
var inlineScript = regexp.MustCompile(`(?is)<script\b([^>]*)>(.*?)</script>`)

// dashboardCSP is the Content-Security-Policy of /admin/ responses. The
// dashboard's page carries two inline scripts (its settings and webpack's
// loader); they are allowed by hash, taken from the page the dashboard
// renders, so that no other inline script runs. Its styles are injected at
// run time and its fonts come from Google Fonts.
func dashboardCSP(dashboard http.Handler) string {
	scripts := "'self'"
	if dashboard != nil {
		rec := httptest.NewRecorder()
		dashboard.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/admin/queues/", nil))
		if rec.Code == http.StatusOK {
			for _, m := range inlineScript.FindAllStringSubmatch(rec.Body.String(), -1) {
				if strings.Contains(strings.ToLower(m[1]), "src=") {
					continue
				}
				sum := sha256.Sum256([]byte(m[2]))
				scripts += " 'sha256-" + base64.StdEncoding.EncodeToString(sum[:]) + "'"
			}
		}
	}
	return "default-src 'self'; script-src " + scripts + "; style-src 'self' 'unsafe-inline' https://fonts.googleapis.com; " +
		"font-src 'self' https://fonts.gstatic.com; img-src 'self' data:; connect-src 'self'; object-src 'none'; " +
		"base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
}
