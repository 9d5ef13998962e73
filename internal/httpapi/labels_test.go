package httpapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/openedx/coordinator/internal/logtest"
	"github.com/openedx/coordinator/internal/metrics"
)

// securityAPI is the API without Redis, with real metrics and a captured
// log, for the tests of what unauthenticated callers can do to it.
func securityAPI(t testing.TB, mod func(*Deps)) (http.Handler, *logtest.Buffer) {
	t.Helper()
	logs := &logtest.Buffer{}
	met := metrics.New()
	d := Deps{
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
		Auth: NewAuthenticator(AuthOptions{AdminClaim: "administrator", Issuers: []Issuer{
			{Issuer: hsIssuer, Audience: audience, Secret: hsSecret},
			{Issuer: rsIssuer, Audience: audience, JWKSURL: jwksServer(t) + "/jwks"},
		}}, &http.Client{Timeout: 2 * time.Second}),
		KnownSite:    func(context.Context, string) (bool, error) { return true, nil },
		Checks:       []Check{{Name: "redis", Ping: func(context.Context) error { return nil }}},
		MaxBodyBytes: 1024,
		Observer:     met,
		Metrics:      met.Handler(),
	}
	if mod != nil {
		mod(&d)
	}
	return NewHandler(d), logs
}

// Unknown paths and methods share one label: 20,000 distinct ones leave
// /metrics small.
func TestUnmatchedPathsDoNotGrowMetrics(t *testing.T) {
	t.Parallel()
	h, _ := securityAPI(t, nil)
	for i := range 20_000 {
		method := []string{"GET", "POST", "M" + strconv.Itoa(i)}[i%3]
		rec := do(h, method, "/probe/"+strconv.Itoa(i)+"/"+strings.Repeat("x", i%50), "", "", "")
		if rec.Code != http.StatusNotFound && rec.Code != http.StatusMethodNotAllowed {
			t.Fatalf("%s unknown path: %d", method, rec.Code)
		}
	}
	rec := do(h, "GET", "/metrics", "", "", "")
	if rec.Code != 200 {
		t.Fatalf("/metrics: %d", rec.Code)
	}
	size := rec.Body.Len()
	t.Logf("/metrics after 20,000 distinct unknown paths: %d bytes", size)
	if size > 1<<20 {
		t.Errorf("/metrics is %d bytes after 20,000 unknown paths, want under 1 MB", size)
	}
	text := rec.Body.String()
	for _, want := range []string{
		`coordinator_http_requests_total{method="GET",route="unmatched",status="404"} 6667`,
		`coordinator_http_requests_total{method="other",route="unmatched",status="405"} 6666`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	if strings.Contains(text, "/probe/") || strings.Contains(text, "M19") {
		t.Error("/metrics holds a caller's path or method")
	}
}

// A path that is not UTF-8 gets a clean 404 (the label used to panic), and
// what is logged of a path or method is bounded.
func TestHostilePathsAndMethods(t *testing.T) {
	t.Parallel()
	h, logs := securityAPI(t, nil)
	srv := httptest.NewServer(h)
	defer srv.Close()
	for _, path := range []string{"/%FF", "/%C0%AF", "/admin%00"} {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s: %v (the handler panicked?)", path, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound || !strings.Contains(string(body), `"detail":"Not found."`) {
			t.Errorf("GET %s: %d %s, want a JSON 404", path, resp.StatusCode, body)
		}
	}

	long := "/" + strings.Repeat("%FFabc", 10_000)
	req, _ := http.NewRequest("GET", srv.URL+long, nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != 404 {
		t.Fatalf("long path: %v %v", resp, err)
	}
	req, _ = http.NewRequest(strings.Repeat("X", 5000), srv.URL+"/health", nil)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode >= 500 {
		t.Fatalf("long method: %v %v", resp, err)
	}
	for _, line := range strings.Split(strings.TrimSpace(logs.String()), "\n") {
		if len(line) > 600 {
			t.Errorf("log line of %d bytes: %.200s...", len(line), line)
		}
		if strings.Contains(line, "XXXXXXXXXX") {
			t.Errorf("a caller's method is logged: %.200s", line)
		}
	}
	if !strings.Contains(logs.String(), `"route":"unmatched","status":404`) {
		t.Errorf("unmatched requests are not logged as such:\n%s", logs.String())
	}
}
