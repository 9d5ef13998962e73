// Package webhookstest is a subscriber for tests: an HTTP endpoint that
// checks every delivery's signature with its own reading of the Standard
// Webhooks specification (it does not use the sending code), records every
// attempt, and answers as a test scripts it.
package webhookstest

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Tolerance is how far webhook-timestamp may be from the receiver's clock
// (the specification's recommendation: five minutes).
const Tolerance = 5 * time.Minute

// Verify checks a delivery the way a subscriber must: the timestamp is
// recent, and one of the space-separated "v1,<base64>" signatures is the
// HMAC-SHA256, keyed by the base64 after "whsec_", of "<id>.<timestamp>.<body>".
func Verify(secret string, h http.Header, body []byte, now time.Time) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not unix seconds", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > Tolerance || d < -Tolerance {
		return fmt.Errorf("webhook-timestamp %s is %v away from now", ts, d)
	}
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	if err != nil {
		return fmt.Errorf("secret: %w", err)
	}
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%s.%s.", id, ts)
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(sigs) {
		version, value, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no signature matches")
}

// Attempt is one request the subscriber received.
type Attempt struct {
	ID        string
	Timestamp string
	Header    http.Header
	Body      []byte
	// Type and Event are read from the body: its type, and the data's
	// course, state and kind (for fulfillment_completed).
	Type     string
	Data     map[string]any
	Status   int   // what the subscriber answered
	Verified error // Verify's answer with the subscriber's secret
	// N counts the attempts of the same webhook-id, from 1.
	N int
}

// Subscriber is the test endpoint.
type Subscriber struct {
	secret string

	mu       sync.Mutex
	attempts []Attempt
	perID    map[string]int
	reply    func(a Attempt) int
	latency  time.Duration
	inFlight int
	maxIn    int
}

// New returns a subscriber that verifies with secret and answers 200.
func New(secret string) *Subscriber {
	return &Subscriber{secret: secret, perID: map[string]int{}}
}

// Start serves the subscriber on 127.0.0.1 until the test ends and returns
// its URL.
func (s *Subscriber) Start(t testing.TB) string {
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv.URL + "/hooks"
}

// Reply sets how the subscriber answers: a status per attempt (nil: 200).
func (s *Subscriber) Reply(f func(a Attempt) int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reply = f
}

// SetLatency makes every answer wait d.
func (s *Subscriber) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// ServeHTTP records an attempt and answers it.
func (s *Subscriber) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil {
		http.Error(w, "read", http.StatusBadRequest)
		return
	}
	a := Attempt{ID: r.Header.Get("webhook-id"), Timestamp: r.Header.Get("webhook-timestamp"), Header: r.Header.Clone(), Body: body,
		Verified: Verify(s.secret, r.Header, body, time.Now())}
	var env struct {
		Type string         `json:"type"`
		Data map[string]any `json:"data"`
	}
	if err := json.Unmarshal(body, &env); err == nil {
		a.Type, a.Data = env.Type, env.Data
	}
	s.mu.Lock()
	s.perID[a.ID]++
	a.N = s.perID[a.ID]
	a.Status = http.StatusOK
	if a.Verified != nil {
		a.Status = http.StatusUnauthorized
	} else if s.reply != nil {
		a.Status = s.reply(a)
	}
	latency := s.latency
	s.inFlight++
	s.maxIn = max(s.maxIn, s.inFlight)
	s.mu.Unlock()
	time.Sleep(latency)
	s.mu.Lock()
	s.inFlight--
	s.attempts = append(s.attempts, a)
	s.mu.Unlock()
	w.WriteHeader(a.Status)
}

// Attempts lists every attempt answered so far, in the order answered.
func (s *Subscriber) Attempts() []Attempt {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Attempt(nil), s.attempts...)
}

// Delivered lists the attempts answered with a 2xx.
func (s *Subscriber) Delivered() []Attempt {
	var out []Attempt
	for _, a := range s.Attempts() {
		if a.Status >= 200 && a.Status < 300 {
			out = append(out, a)
		}
	}
	return out
}

// MaxInFlight is the most attempts the subscriber held at once.
func (s *Subscriber) MaxInFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxIn
}
