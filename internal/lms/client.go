// Package lms is Coordinator's client for the Open edX LMS REST API: OAuth2
// client-credentials JWTs, username look-ups and enrollments, with the LMS's
// answers sorted into outcome classes (docs/lms.md).
package lms

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	"golang.org/x/time/rate"

	"github.com/openedx/coordinator/internal/cache"
	"github.com/openedx/coordinator/internal/fulfillment"
)

// Options configure a Client for one LMS site.
type Options struct {
	Site           string // names the site in cache keys and logs
	BaseURL        string // LMS_URL_ROOT, e.g. https://lms.example.com
	TokenURL       string // OAuth2 token endpoint
	ClientID       string
	ClientSecret   string
	APIKey         string        // optional X-Edx-Api-Key
	Timeout        time.Duration // per call
	MaxConcurrency int           // enrollment calls in flight
	// Callers bounds the calls this process has in flight at once (the
	// worker's concurrency: an attempt makes one call at a time); with
	// MaxConcurrency it sizes the idle connection pool.
	Callers       int
	RatePerMinute int         // token bucket for enrollment calls
	Cache         cache.Cache // tokens and username look-ups; shared across processes when memcached
	Logger        *slog.Logger
	// Observer, when set, is told of every LMS call and token request.
	Observer Observer
	// Transport is the HTTP transport; nil means a dedicated clone of
	// http.DefaultTransport whose idle pool fits MaxConcurrency and Callers.
	Transport http.RoundTripper
}

// Observer receives measurements (metrics) of LMS calls.
type Observer interface {
	LMS(site, endpoint string, status int, d time.Duration)
	Token(site string, err error)
}

type noObserver struct{}

func (noObserver) LMS(string, string, int, time.Duration) {}
func (noObserver) Token(string, error)                    {}

// Client talks to one LMS. It is safe for concurrent use.
type Client struct {
	base      string
	apiKey    string
	keyPrefix string // cache keys: the site and a digest of its URL, so deployments sharing a memcached never mix
	site      string
	obs       Observer
	hc        *http.Client
	tokens    *tokenCache
	cache     cache.Cache
	log       *slog.Logger
	slots     chan struct{}
	limiter   *rate.Limiter
}

// usernameTTL bounds how long a learner's username is trusted; Open edX
// usernames do not change in practice, so a day costs nothing.
const usernameTTL = 24 * time.Hour

// tokenMargin is how long before its expiry a token is replaced, so that a
// token never expires between being read and reaching the LMS.
const tokenMargin = 30 * time.Second

// New returns a client for the LMS described by opts.
func New(opts Options) *Client {
	tr := opts.Transport
	if tr == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		// Every call in flight may return its connection to the pool:
		// DefaultTransport's 100 idle connections in all would close the
		// rest, and each call beyond them would dial again (at
		// lms.max_concurrency 600, a fifth of the worker's CPU went to
		// dialing). Account look-ups are not bounded by MaxConcurrency,
		// only by the callers: at the defaults (20 enrollments, 50
		// attempts) a pool of 24 made 7 % of the CPU dialing.
		t.MaxIdleConnsPerHost = max(opts.MaxConcurrency, opts.Callers) + 4
		t.MaxIdleConns = t.MaxIdleConnsPerHost
		tr = t
	}
	hc := &http.Client{Transport: tr, Timeout: opts.Timeout,
		// The LMS API never redirects a correct call; following a redirect
		// would turn a POST into a GET on a login page.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	burst := max(1, opts.RatePerMinute/60)
	sum := sha256.Sum256([]byte(opts.BaseURL + "\x00" + opts.TokenURL))
	prefix := "site:" + opts.Site + ":" + hex.EncodeToString(sum[:6]) + ":"
	obs := opts.Observer
	if obs == nil {
		obs = noObserver{}
	}
	return &Client{
		site:      opts.Site,
		obs:       obs,
		base:      strings.TrimRight(opts.BaseURL, "/"),
		apiKey:    opts.APIKey,
		keyPrefix: prefix,
		hc:        hc,
		tokens: &tokenCache{hc: hc, shared: opts.Cache, log: opts.Logger, site: opts.Site, obs: obs,
			key: prefix + "token:" + opts.ClientID,
			cfg: clientcredentials.Config{
				ClientID:       opts.ClientID,
				ClientSecret:   opts.ClientSecret,
				TokenURL:       opts.TokenURL,
				EndpointParams: url.Values{"token_type": {"jwt"}},
				AuthStyle:      oauth2.AuthStyleInParams,
			}},
		cache:   opts.Cache,
		log:     opts.Logger,
		slots:   make(chan struct{}, opts.MaxConcurrency),
		limiter: rate.NewLimiter(rate.Limit(float64(opts.RatePerMinute)/60), burst),
	}
}

// Fulfill enrolls the order's learner in its course run. It returns nil when
// the learner is enrolled (now or already), else an *Error whose Class says
// whether to retry.
func (c *Client) Fulfill(ctx context.Context, o fulfillment.Order) error {
	user, err := c.Learner(ctx, o.Ref().Learner(), o.RequestID)
	if err != nil {
		return err
	}
	err = c.post(ctx, "enroll", NewEnrollmentData(o, user), o.RequestID)
	var le *Error
	if !errors.As(err, &le) || le.Status != http.StatusBadRequest {
		return err
	}
	// After enrollment closes, a repeat of an enrollment that did succeed
	// gets 400 (docs/lms.md#enroll): read it back before calling it a failure.
	got, rerr := c.ReadEnrollment(ctx, user, o.CourseID, o.RequestID)
	switch {
	case rerr != nil:
		return rerr // transient or not, the read decides
	case got != nil && got.IsActive && got.Mode == o.CourseMode:
		return nil
	}
	return err
}

// ChangeMode moves a learner's active enrollment in a course run to mode,
// sending nothing else (no attributes, which would replace the enrollment's;
// no email_opt_in, the learner's choice). It is what a return does when
// another line of the learner still holds the seat in another mode.
func (c *Client) ChangeMode(ctx context.Context, user, courseID, mode, requestID string) error {
	return c.post(ctx, "change_mode", EnrollmentData{User: user, Mode: mode, IsActive: true,
		CourseDetails: CourseDetails{CourseID: courseID}}, requestID)
}

// Unenroll takes back the seat a return names (docs/lms.md#unenroll). It returns nil when
// the learner holds no active enrollment in the course run afterwards, or
// holds one in another mode than the one bought (nothing of this order to
// revoke), else an *Error whose Class says whether to retry. It posts only
// when there is an active enrollment: a deactivating POST for a missing one
// would create an inactive one. A learner named by an email that has no
// account holds nothing: the email's enrollment_allowed for the course run,
// if any, is removed, so that they are not enrolled when they register.
func (c *Client) Unenroll(ctx context.Context, r fulfillment.Return) error {
	user, err := c.Learner(ctx, r.Ref().Learner(), r.RequestID)
	var none *NoAccountError
	if errors.As(err, &none) {
		// Nobody to unenroll; but a person allowed to enroll must not be
		// enrolled when they register (docs/lms.md#enrollment-allowed).
		return c.DisallowEnrollment(ctx, none.Email, r.CourseID, r.RequestID)
	}
	if err != nil {
		return err
	}
	got, err := c.ReadEnrollment(ctx, user, r.CourseID, r.RequestID)
	if err != nil {
		return err
	}
	if got == nil || !got.IsActive {
		if email := strings.TrimSpace(r.Email); email != "" && got != nil {
			// Deactivated already — perhaps by an earlier attempt of this
			// return that then failed to remove the enrollment_allowed
			// (unenrollAutoEnrolled): remove it now (404: none, done).
			return c.DisallowEnrollment(ctx, email, r.CourseID, r.RequestID)
		}
		return nil
	}
	err = c.post(ctx, "unenroll", NewUnenrollmentData(r, user), r.RequestID)
	var le *Error
	if errors.As(err, &le) && le.Status == http.StatusBadRequest && strings.HasPrefix(le.Message, "Enrollment mode mismatch") {
		return c.unenrollAutoEnrolled(ctx, r, user, got)
	}
	return err
}

// unenrollAutoEnrolled handles a return whose learner is enrolled in another
// mode than the line's. Usually that seat is not the line's (the learner
// audits on their own) and is kept. But when the line waited for the
// learner's account (enroll_unregistered), the LMS enrolled them in the
// course's default mode on registering, from the enrollment_allowed
// Coordinator registered; refunded before the look that would have moved
// them to the mode bought, that seat is the line's: while an
// enrollment_allowed for the learner's email and the course is on record,
// the enrollment is deactivated in its own mode, then the allowed removed
// (a retry after a failure between the two finds the enrollment inactive and
// removes the allowed: Unenroll).
func (c *Client) unenrollAutoEnrolled(ctx context.Context, r fulfillment.Return, user string, got *Enrollment) error {
	email := strings.TrimSpace(r.Email)
	if email == "" {
		return nil // named by id or username: no enrollment_allowed to look for
	}
	ours, err := c.allowedFor(ctx, email, r.CourseID, r.RequestID)
	if err != nil || !ours {
		return err
	}
	data := NewUnenrollmentData(r, user)
	data.Mode = got.Mode
	if err := c.post(ctx, "unenroll", data, r.RequestID); err != nil {
		return err
	}
	return c.DisallowEnrollment(ctx, email, r.CourseID, r.RequestID)
}

// Username resolves an LMS user id to a username, from the cache when it can.
func (c *Client) Username(ctx context.Context, lmsUserID int64, requestID string) (string, error) {
	id := strconv.FormatInt(lmsUserID, 10)
	notFound := func() error {
		return &Error{Op: "account", Status: http.StatusNotFound, Class: Permanent,
			Message: fmt.Sprintf("no LMS user with lms_user_id %d", lmsUserID)}
	}
	return c.accountUsername(ctx, c.keyPrefix+"username:"+id, "lms_user_id="+id, notFound, false, requestID)
}

// post sends one enrollment change (op "enroll" or "unenroll"). It waits for
// a concurrency slot and the rate limiter, so a backlog never becomes a flood.
func (c *Client) post(ctx context.Context, op string, data EnrollmentData, requestID string) error {
	a, err := c.Call(ctx, op, http.MethodPost, "/api/enrollment/v1/enrollment", data, true, requestID)
	if err != nil {
		return err
	}
	if a.Status == http.StatusOK {
		return nil
	}
	e := a.Err(op)
	if a.Status == http.StatusNotFound && e.Message == "" {
		e.Message = "not found: is the OAuth application's user staff, and is lms.url right?"
	}
	return e
}

// Answer is the LMS's answer to a Call.
type Answer struct {
	Status int
	Body   []byte
	Header http.Header
}

// Err is the answer as the failure of op, classified as every LMS answer is
// (a 429's Retry-After kept).
func (a Answer) Err(op string) *Error {
	e := &Error{Op: op, Status: a.Status, Class: classify(a.Status), Message: message(a.Body)}
	if a.Status == http.StatusTooManyRequests {
		e.RetryAfter = parseRetryAfter(a.Header.Get("Retry-After"), time.Now())
	}
	return e
}

// Call makes one authenticated call to the LMS: method on path (under the
// site's lms.url, with its query if any), body sent as JSON unless nil. A
// write waits for a concurrency slot and the rate limiter first, as
// enrollments do. It returns whatever the LMS answered; an error only when
// no answer arrived (an *Error of class Transient) or body cannot be
// encoded. This is the client's one door for flows with their own
// endpoints (entitlements).
func (c *Client) Call(ctx context.Context, op, method, path string, body any, write bool, requestID string) (Answer, error) {
	var b []byte
	if body != nil {
		var err error
		if b, err = json.Marshal(body); err != nil {
			return Answer{}, fmt.Errorf("encode %s: %w", op, err)
		}
	}
	if write {
		release, err := c.acquire(ctx, op)
		if err != nil {
			return Answer{}, err
		}
		defer release()
	}
	status, resp, hdr, err := c.call(ctx, op, method, c.base+path, b, requestID)
	if err != nil {
		return Answer{}, err
	}
	return Answer{Status: status, Body: resp, Header: hdr}, nil
}

// acquire waits for a concurrency slot and the rate limiter before a write
// to the enrollment API (the LMS throttles it per caller); release frees the
// slot.
func (c *Client) acquire(ctx context.Context, op string) (release func(), err error) {
	select {
	case c.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, &Error{Op: op, Class: Transient, Err: ctx.Err()}
	}
	if err := c.limiter.Wait(ctx); err != nil {
		<-c.slots
		return nil, &Error{Op: op, Class: Transient, Err: err}
	}
	return func() { <-c.slots }, nil
}

// ReadEnrollment reads a learner's enrollment in a course run; nil when none.
func (c *Client) ReadEnrollment(ctx context.Context, user, courseID, requestID string) (*Enrollment, error) {
	// Both parts are escaped as path segments: '+' and ':' stay as they are
	// (docs/lms.md#reading-an-enrollment-back), a legacy key's '/' and '%' do not, so the LMS decodes
	// the key it was given and the request stays inside the enrollment API.
	if err := checkPathKey(courseID); err != nil {
		return nil, &Error{Op: "read_enrollment", Class: Permanent, Err: err}
	}
	u := c.base + "/api/enrollment/v1/enrollment/" + url.PathEscape(user) + "," + url.PathEscape(courseID)
	status, body, _, err := c.call(ctx, "read_enrollment", http.MethodGet, u, nil, requestID)
	if err != nil {
		return nil, err
	}
	if status != http.StatusOK {
		return nil, &Error{Op: "read_enrollment", Status: status, Class: classify(status), Message: message(body)}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return nil, nil
	}
	var e Enrollment
	if err := json.Unmarshal(body, &e); err != nil {
		return nil, &Error{Op: "read_enrollment", Status: status, Class: Transient, Message: "unexpected enrollment answer"}
	}
	return &e, nil
}

// call makes an authenticated call. A 401 means the token expired or was
// revoked: the token is dropped and the call made once more with a new one.
func (c *Client) call(ctx context.Context, op, method, u string, body []byte, requestID string) (int, []byte, http.Header, error) {
	for attempt := 0; ; attempt++ {
		tok, err := c.tokens.get(ctx)
		if err != nil {
			return 0, nil, nil, &Error{Op: "token", Class: Transient, Err: err}
		}
		start := time.Now()
		status, resp, hdr, err := c.do(ctx, method, u, body, tok, requestID)
		c.obs.LMS(c.site, op, status, time.Since(start))
		if err != nil {
			return 0, nil, nil, &Error{Op: op, Class: Transient, Err: err}
		}
		if status != http.StatusUnauthorized {
			return status, resp, hdr, nil
		}
		c.tokens.drop(ctx, tok)
		if attempt == 1 {
			return 0, nil, nil, &Error{Op: op, Status: status, Class: Transient, Message: message(resp)}
		}
		c.log.WarnContext(ctx, "lms_token_refused", "op", op)
	}
}

func (c *Client) do(ctx context.Context, method, u string, body []byte, token, requestID string) (int, []byte, http.Header, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return 0, nil, nil, withoutQuery(err)
	}
	req.Header.Set("Authorization", "JWT "+token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if requestID != "" {
		req.Header.Set("X-Request-ID", requestID)
	}
	if c.apiKey != "" {
		req.Header.Set("X-Edx-Api-Key", c.apiKey)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return 0, nil, nil, withoutQuery(err)
	}
	defer resp.Body.Close()
	b, err := readAnswer(resp)
	if err != nil {
		return 0, nil, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, b, resp.Header, nil
}

// maxAnswer bounds what is read of an LMS answer.
const maxAnswer = 1 << 20

// readAnswer reads an answer's body, up to maxAnswer bytes: into a buffer of
// its size when the LMS gives it (Content-Length, as on its JSON answers),
// instead of one grown by doubling from 512 bytes, which was a sixth of the
// worker's allocation.
func readAnswer(resp *http.Response) ([]byte, error) {
	if n := resp.ContentLength; n >= 0 && n <= maxAnswer {
		b := make([]byte, n)
		_, err := io.ReadFull(resp.Body, b)
		return b, err
	}
	return io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
}

// withoutQuery drops the query from the URL a transport error names: it may
// carry a learner's email (GET /api/user/v1/accounts?email=), which would
// reach last_error and task_attempt logs, percent-encoded past their
// masking. The error stays a *url.Error (Timeout() still works).
func withoutQuery(err error) error {
	var ue *url.Error
	if !errors.As(err, &ue) {
		return err
	}
	u := ue.URL
	if i := strings.IndexAny(u, "?#"); i >= 0 {
		u = u[:i]
	}
	return &url.Error{Op: ue.Op, URL: u, Err: ue.Err}
}

// message extracts the LMS's message from an error body: {"message": ...} or
// {"detail": ...}, else the start of the body.
func message(body []byte) string {
	var m struct {
		Message string `json:"message"`
		Detail  string `json:"detail"`
	}
	if json.Unmarshal(body, &m) == nil {
		if m.Message != "" {
			return m.Message
		}
		if m.Detail != "" {
			return m.Detail
		}
	}
	// Valid UTF-8, cut on a character's boundary: the text is stored in the
	// task (asynq's message is protobuf, whose strings must be UTF-8).
	return fulfillment.Clip(strings.TrimSpace(string(body)), 200)
}

// parseRetryAfter reads a Retry-After header: seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

// tokenCache holds the current access token and fetches a new one when it is
// missing or about to expire. Within a process one fetch runs at a time; with
// a shared cache (memcached) the token is shared by every process of the
// site, and a short lock in the cache lets one of them refresh it while the
// others wait for its result.
type tokenCache struct {
	cfg    clientcredentials.Config
	hc     *http.Client
	shared cache.Cache
	key    string
	log    *slog.Logger
	site   string
	obs    Observer

	mu  sync.Mutex
	tok *oauth2.Token
}

// How long a process waits for another one's token fetch before fetching
// itself, and how long the refresh lock lives if its holder dies.
const (
	tokenWait    = 5 * time.Second
	tokenLockTTL = 10 * time.Second
)

type sharedToken struct {
	AccessToken string    `json:"access_token"`
	Expiry      time.Time `json:"expiry"`
}

func usable(t *oauth2.Token) bool { return t != nil && time.Until(t.Expiry) > tokenMargin }

func (t *tokenCache) get(ctx context.Context) (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if usable(t.tok) {
		return t.tok.AccessToken, nil
	}
	// Take the fleet's token, or the refresh lock; while another process
	// holds the lock, wait (up to tokenWait) for the token it is fetching.
	// The token is read again after the lock is taken (double-checked
	// locking): its holder may have stored one and let go in between.
	lock := t.key + ":lock"
	var locked bool
	for deadline := time.Now().Add(tokenWait); ; {
		if tok := t.load(ctx); usable(tok) {
			if locked {
				_ = t.shared.Delete(ctx, lock)
			}
			t.tok = tok
			return tok.AccessToken, nil
		}
		if locked {
			break // our turn
		}
		var err error
		locked, err = t.shared.Add(ctx, lock, []byte("1"), tokenLockTTL)
		if locked {
			continue // check once more, then fetch
		}
		if err != nil || time.Now().After(deadline) {
			break // no shared cache, or its holder is stuck: fetch ourselves
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	if locked {
		// Released only after the new token is stored, so that whoever
		// takes the lock next finds it.
		defer t.shared.Delete(ctx, lock) // it would also expire by itself
	}
	tok, err := t.cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, t.hc))
	t.obs.Token(t.site, err)
	if err != nil {
		return "", fmt.Errorf("fetch token: %w", tokenError(err))
	}
	if tok.Expiry.IsZero() { // no expires_in: trust it for a minute
		tok.Expiry = time.Now().Add(time.Minute)
	}
	t.tok = tok
	if b, err := json.Marshal(sharedToken{tok.AccessToken, tok.Expiry}); err == nil {
		if err := t.shared.Set(ctx, t.key, b, time.Until(tok.Expiry)); err != nil {
			t.log.WarnContext(ctx, "token_cache_failed", "err", err.Error())
		}
	}
	return tok.AccessToken, nil
}

// load reads the shared token; a cache failure is a miss.
func (t *tokenCache) load(ctx context.Context) *oauth2.Token {
	b, ok, err := t.shared.Get(ctx, t.key)
	if err != nil || !ok {
		return nil
	}
	var st sharedToken
	if json.Unmarshal(b, &st) != nil {
		return nil
	}
	return &oauth2.Token{AccessToken: st.AccessToken, Expiry: st.Expiry}
}

// drop forgets tok, here and in the shared cache, if it is still current.
func (t *tokenCache) drop(ctx context.Context, tok string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.tok != nil && t.tok.AccessToken == tok {
		t.tok = nil
	}
	if cur := t.load(ctx); cur != nil && cur.AccessToken == tok {
		_ = t.shared.Delete(ctx, t.key)
	}
}

// tokenError strips the response body from oauth2's error, which can echo
// request details, keeping the status and the OAuth error code.
func tokenError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil {
		if re.ErrorCode != "" {
			return fmt.Errorf("token endpoint answered %d: %s", re.Response.StatusCode, re.ErrorCode)
		}
		return fmt.Errorf("token endpoint answered %d", re.Response.StatusCode)
	}
	return err
}
