package httpapi

import (
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/openedx/coordinator/internal/logtest"
)

const opsPassword = "right-password"

// countingCompare stands in for bcrypt: it counts comparisons and how many
// run at once, and holds each until release is closed when hold is set.
type countingCompare struct {
	calls, inflight, peak atomic.Int32
	hold                  bool
	release               chan struct{}
}

func (c *countingCompare) compare(hash, pass []byte) error {
	c.calls.Add(1)
	n := c.inflight.Add(1)
	defer c.inflight.Add(-1)
	for p := c.peak.Load(); n > p && !c.peak.CompareAndSwap(p, n); p = c.peak.Load() {
	}
	if c.hold {
		<-c.release
	}
	if string(pass) == opsPassword {
		return nil
	}
	return bcrypt.ErrMismatchedHashAndPassword
}

// opsHandler is /admin/ behind operators with user "ops", the given
// limits, a counting compare and a clock the test moves.
func opsHandler(t *testing.T, lim operatorLimits, cc *countingCompare) (http.Handler, *operators, *fakeClock, *logtest.Buffer) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(opsPassword), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	o := newOperators(NewAuthenticator(AuthOptions{AdminClaim: "administrator",
		Issuers: []Issuer{{Issuer: hsIssuer, Audience: audience, Secret: hsSecret}}}, http.DefaultClient),
		[]BasicAuthUser{{User: "ops", PasswordBcrypt: string(hash)}}, nil)
	o.setLimits(lim)
	o.compare = cc.compare
	clock := &fakeClock{t: time.Now()}
	o.now = clock.Now
	logs := &logtest.Buffer{}
	h := o.require(slog.New(slog.NewJSONHandler(logs, nil)))(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		encode(w, http.StatusOK, detail("dashboard"))
	}))
	return h, o, clock, logs
}

func basicReq(client, user, pass string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "/admin/queues/api/queues", nil)
	r.RemoteAddr = client
	r.SetBasicAuth(user, pass)
	return r
}

func serve(h http.Handler, r *http.Request) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, r)
	return rec
}

// Each client has a budget of guesses: 50 concurrent wrong passwords from
// one address cost 5 comparisons, the rest get 429 with Retry-After; other
// clients keep their own budget; an IPv6 /64 is one client; the budget
// refills with time; correct passwords cost nothing after the first.
func TestBasicAuthGuessesLimitedPerClient(t *testing.T) {
	t.Parallel()
	cc := &countingCompare{}
	lim := operatorLimits{Burst: 5, Refill: time.Minute, MaxClients: 100, Concurrent: 2, Queued: 100}
	h, _, clock, _ := opsHandler(t, lim, cc)

	var wg sync.WaitGroup
	var refused, limited atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			rec := serve(h, basicReq("203.0.113.7:4000", "ops", "guess-"+strconv.Itoa(i)))
			switch {
			case rec.Code == http.StatusUnauthorized:
				refused.Add(1)
			case rec.Code == http.StatusTooManyRequests && rec.Header().Get("Retry-After") != "":
				limited.Add(1)
			default:
				t.Errorf("wrong guess: %d (Retry-After %q)", rec.Code, rec.Header().Get("Retry-After"))
			}
		})
	}
	wg.Wait()
	if n := cc.calls.Load(); n != 5 {
		t.Errorf("50 concurrent wrong guesses cost %d comparisons, want 5", n)
	}
	if refused.Load() != 5 || limited.Load() != 45 {
		t.Errorf("%d refused (401), %d limited (429); want 5 and 45", refused.Load(), limited.Load())
	}
	rec := serve(h, basicReq("203.0.113.7:4001", "ops", "guess-again"))
	if got := rec.Header().Get("Retry-After"); rec.Code != http.StatusTooManyRequests || got != "60" {
		t.Errorf("spent client: %d, Retry-After %q; want 429 and 60", rec.Code, got)
	}

	// Another address has its own budget.
	if rec := serve(h, basicReq("203.0.113.8:4000", "ops", "guess")); rec.Code != http.StatusUnauthorized {
		t.Errorf("another client's first guess: %d, want 401", rec.Code)
	}
	// One IPv6 /64 is one client.
	for i := range 5 {
		serve(h, basicReq(fmt.Sprintf("[2001:db8:1:2::%x]:4000", i+1), "ops", "guess"))
	}
	if rec := serve(h, basicReq("[2001:db8:1:2:ffff::9]:4000", "ops", "guess")); rec.Code != http.StatusTooManyRequests {
		t.Errorf("sixth guess from the same /64: %d, want 429", rec.Code)
	}

	// A minute later, one more guess.
	clock.Advance(time.Minute)
	before := cc.calls.Load()
	statuses := []int{serve(h, basicReq("203.0.113.7:4000", "ops", "x1")).Code, serve(h, basicReq("203.0.113.7:4000", "ops", "x2")).Code}
	if statuses[0] != http.StatusUnauthorized || statuses[1] != http.StatusTooManyRequests || cc.calls.Load()-before != 1 {
		t.Errorf("after a minute: %v and %d comparisons, want [401 429] and 1", statuses, cc.calls.Load()-before)
	}

	// The right password: compared once, then remembered; it never uses
	// the budget up.
	before = cc.calls.Load()
	for range 20 {
		if rec := serve(h, basicReq("198.51.100.1:1", "ops", opsPassword)); rec.Code != http.StatusOK {
			t.Fatalf("operator with the right password: %d", rec.Code)
		}
	}
	if n := cc.calls.Load() - before; n != 1 {
		t.Errorf("20 logins with the right password cost %d comparisons, want 1", n)
	}
}

// Comparisons are bounded across clients: with 2 slots and 2 waiting, 10
// clients guessing at once get 2 comparisons running, 2 waiting and 6
// answers of 429, while /health is answered.
func TestBasicAuthComparisonsBounded(t *testing.T) {
	t.Parallel()
	cc := &countingCompare{hold: true, release: make(chan struct{})}
	lim := operatorLimits{Burst: 100, Refill: time.Minute, MaxClients: 100, Concurrent: 2, Queued: 2}
	admin, _, _, _ := opsHandler(t, lim, cc)
	mux := http.NewServeMux()
	mux.Handle("/admin/", admin)
	mux.Handle("/health", handleHealth(nil))

	results := make(chan int, 10)
	for i := range 10 {
		go func() {
			rec := serve(mux, basicReq(fmt.Sprintf("192.0.2.%d:1", i+1), "ops", "guess-"+strconv.Itoa(i)))
			results <- rec.Code
		}()
	}
	for range 6 {
		select {
		case code := <-results:
			if code != http.StatusTooManyRequests {
				t.Errorf("guess beyond the slots and the queue: %d, want 429", code)
			}
		case <-time.After(30 * time.Second): // a watchdog, not a measurement
			t.Fatalf("guesses beyond the slots and the queue are not refused; %d comparisons running", cc.inflight.Load())
		}
	}
	if rec := serve(mux, httptest.NewRequest(http.MethodGet, "/health", nil)); rec.Code != http.StatusOK {
		t.Errorf("/health while comparisons run: %d", rec.Code)
	}
	close(cc.release)
	for range 4 {
		if code := <-results; code != http.StatusUnauthorized {
			t.Errorf("guess that waited: %d, want 401", code)
		}
	}
	if p, n := cc.peak.Load(), cc.calls.Load(); p > 2 || n != 4 {
		t.Errorf("%d comparisons, at most %d at once; want 4, at most 2", n, p)
	}
}

// The per-client table stays bounded however many addresses guess: beyond
// MaxClients, newcomers share one budget until old buckets refill.
func TestBasicAuthClientTableBounded(t *testing.T) {
	t.Parallel()
	cc := &countingCompare{}
	lim := operatorLimits{Burst: 5, Refill: time.Minute, MaxClients: 100, Concurrent: 2, Queued: 2}
	h, o, clock, _ := opsHandler(t, lim, cc)
	size := func() int {
		o.mu.Lock()
		defer o.mu.Unlock()
		return len(o.clients)
	}
	for i := range 2000 {
		serve(h, basicReq(fmt.Sprintf("10.%d.%d.1:1", i/256, i%256), "ops", "guess"))
	}
	if n := size(); n > 100 {
		t.Errorf("%d clients tracked, want at most 100", n)
	}
	if n := cc.calls.Load(); n > 100+5 {
		t.Errorf("2000 addresses cost %d comparisons, want at most 105 (100 own budgets and the shared one)", n)
	}
	clock.Advance(10 * time.Minute) // every bucket refilled: forgettable
	if rec := serve(h, basicReq("172.16.0.1:1", "ops", "guess")); rec.Code != http.StatusUnauthorized {
		t.Errorf("a new client once old buckets refilled: %d, want 401", rec.Code)
	}
	if n := size(); n > 100 {
		t.Errorf("%d clients tracked, want at most 100", n)
	}
}

// A refused login logs whether the user is configured, never a name that
// is not, nor the password.
func TestBasicAuthRefusalLog(t *testing.T) {
	t.Parallel()
	h, _, _, logs := opsHandler(t, defaultOperatorLimits(), &countingCompare{})
	serve(h, basicReq("192.0.2.1:1", "S3cr3t-canary-user-"+strings.Repeat("u", 5000), "S3cr3t-canary-password"))
	serve(h, basicReq("192.0.2.1:1", "ops", "S3cr3t-canary-password"))
	out := logs.String()
	if strings.Contains(out, "S3cr3t-canary") {
		t.Errorf("the log holds what the caller typed:\n%.300s", out)
	}
	for _, want := range []string{`"user_known":false`, `"user_known":true,"user":"ops"`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

// Unsafe requests to /admin/ from another site's page are refused, before
// any password is checked; every /admin/ response forbids framing and
// sniffing and carries a CSP allowing the dashboard's own inline script.
func TestAdminCrossSiteAndHeaders(t *testing.T) {
	t.Parallel()
	const page = `<html><head><script>window.FLAG_ROOT_PATH="/admin/queues"</script><script src="/admin/queues/app.js"></script></head></html>`
	var reached, rendered atomic.Int32
	dashboard := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/admin/queues/" { // the CSP's hashes are taken from one rendering of the page
			rendered.Add(1)
		} else {
			reached.Add(1)
		}
		w.Header().Set("Content-Type", "text/html")
		_, _ = w.Write([]byte(page))
	})
	hash, _ := bcrypt.GenerateFromPassword([]byte(opsPassword), bcrypt.MinCost)
	h, _ := securityAPI(t, func(d *Deps) {
		d.Dashboard = dashboard
		d.BasicAuth = []BasicAuthUser{{User: "ops", PasswordBcrypt: string(hash)}}
	})
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte("ops:"+opsPassword))
	jwtAdmin := "JWT " + hs(t, claims(nil))
	const pause = "/admin/queues/api/queues/fulfillment:pause"
	tests := []struct {
		name, method, auth string
		header             map[string]string
		want               int
	}{
		{"cross-site POST", "POST", basic, map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.example"}, 403},
		{"same-site POST (another port)", "POST", basic, map[string]string{"Sec-Fetch-Site": "same-site"}, 403},
		{"cross-site DELETE", "DELETE", basic, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"foreign Origin, no fetch metadata", "POST", basic, map[string]string{"Origin": "http://evil.example"}, 403},
		{"Origin null", "POST", basic, map[string]string{"Origin": "null"}, 403},
		{"Basic without Origin or fetch metadata", "POST", basic, nil, 403},
		{"cross-site POST with a JWT", "POST", jwtAdmin, map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"cross-site POST without credentials", "POST", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-origin POST", "POST", basic, map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://example.com"}, 200},
		{"own Origin, no fetch metadata", "POST", basic, map[string]string{"Origin": "http://example.com"}, 200},
		{"JWT without Origin (a script)", "POST", jwtAdmin, nil, 200},
		{"cross-site GET (a link)", "GET", basic, map[string]string{"Sec-Fetch-Site": "cross-site"}, 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := reached.Load()
			r := httptest.NewRequest(tt.method, pause, nil) // Host: example.com
			if tt.auth != "" {
				r.Header.Set("Authorization", tt.auth)
			}
			for k, v := range tt.header {
				r.Header.Set(k, v)
			}
			rec := serve(h, r)
			if rec.Code != tt.want {
				t.Fatalf("%s: %d %s, want %d", tt.name, rec.Code, rec.Body, tt.want)
			}
			if got := reached.Load() - before; (got == 1) != (tt.want == 200) {
				t.Errorf("dashboard reached %d times", got)
			}
		})
	}

	if n := rendered.Load(); n != 1 {
		t.Errorf("the dashboard page was rendered %d times for the CSP, want once", n)
	}
	sum := sha256.Sum256([]byte(`window.FLAG_ROOT_PATH="/admin/queues"`))
	for _, path := range []string{"/admin/queues/", "/admin/queues/api/queues"} {
		for _, auth := range []string{"", basic} {
			r := httptest.NewRequest("GET", path, nil)
			if auth != "" {
				r.Header.Set("Authorization", auth)
			}
			rec := serve(h, r)
			hd := rec.Header()
			csp := hd.Get("Content-Security-Policy")
			if hd.Get("X-Frame-Options") != "DENY" || hd.Get("X-Content-Type-Options") != "nosniff" ||
				!strings.Contains(csp, "frame-ancestors 'none'") ||
				!strings.Contains(csp, "script-src 'self' 'sha256-"+base64.StdEncoding.EncodeToString(sum[:])+"';") {
				t.Errorf("GET %s (%d): headers %v", path, rec.Code, hd)
			}
		}
	}
}
