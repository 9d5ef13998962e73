package webhooks

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/openedx/coordinator/internal/pipeline"
)

// Response bodies are read at most this far (to reuse the connection) and
// quoted in last_error at most this far; response headers are read at most
// this far (more fails the attempt).
const (
	maxDrain          = 64 << 10
	maxQuote          = 200
	maxResponseHeader = 32 << 10
)

// deliver POSTs a signed body to the subscriber once. A 2xx is delivered; a
// 410 says the subscriber is gone, which no retry fixes; a redirect is not
// followed; anything else, and no answer within the timeout, is retried.
func (s *subscriber) deliver(ctx context.Context, id string, body []byte, now time.Time) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.URL, bytes.NewReader(body))
	if err != nil {
		return pipeline.Permanent(fmt.Errorf("deliver to %s: bad url", s.Name))
	}
	for k, v := range s.Headers {
		req.Header.Set(k, v)
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "Coordinator-Webhooks/1")
	}
	ts := now.Unix()
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Webhook-Id", id)
	req.Header.Set("Webhook-Timestamp", strconv.FormatInt(ts, 10))
	req.Header.Set("Webhook-Signature", Sign(s.keys, id, ts, body))
	resp, err := s.client.Do(req)
	if err != nil {
		return fmt.Errorf("deliver to %s: %s", s.Name, transportError(err, s.Timeout))
	}
	defer resp.Body.Close()
	quote := readQuote(resp.Body)
	code := resp.StatusCode
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusGone:
		return pipeline.Permanent(fmt.Errorf("subscriber %s answered 410 Gone: no more attempts%s", s.Name, quote))
	case code >= 300 && code < 400:
		return fmt.Errorf("subscriber %s answered %d: redirects are not followed (set webhooks[].url to the final address)", s.Name, code)
	case code == http.StatusTooManyRequests:
		if d, ok := retryAfter(resp.Header.Get("Retry-After")); ok {
			return retryIn{fmt.Errorf("subscriber %s answered 429%s", s.Name, quote), d}
		}
	}
	return fmt.Errorf("subscriber %s answered %d%s", s.Name, code, quote)
}

// transportError says why no answer came, without the URL (it may carry a
// token): a timeout, or the network's reason.
func transportError(err error, timeout time.Duration) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		if ue.Timeout() {
			return fmt.Sprintf("no answer within %v", timeout)
		}
		err = ue.Err
	}
	return err.Error()
}

// readQuote drains a bounded part of a response body and returns its start,
// printable, for last_error.
func readQuote(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, maxDrain))
	s := strings.ToValidUTF8(string(b[:min(len(b), maxQuote)]), "")
	s = strings.TrimSpace(strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s))
	if s == "" {
		return ""
	}
	if len(b) > maxQuote {
		s += "..."
	}
	return ": " + s
}

// retryAfter reads a Retry-After in seconds.
func retryAfter(v string) (time.Duration, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n <= 0 {
		return 0, false
	}
	return time.Duration(min(n, 3600)) * time.Second, true
}

// retryIn is a failure that asks for a delay before the next attempt.
type retryIn struct {
	err error
	d   time.Duration
}

func (r retryIn) Error() string          { return r.err.Error() }
func (r retryIn) Unwrap() error          { return r.err }
func (r retryIn) RetryIn() time.Duration { return r.d }
