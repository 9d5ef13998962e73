package shop

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// verifyBase64HMAC checks a base64 HMAC-SHA256 of the raw body, as
// WooCommerce and Shopify sign, against every secret in constant time.
func verifyBase64HMAC(header string, body []byte, secrets []string) error {
	if header == "" {
		return fmt.Errorf("%w: no signature header", ErrSignature)
	}
	got, err := base64.StdEncoding.DecodeString(strings.TrimSpace(header))
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: signature is not base64 of 32 bytes", ErrSignature)
	}
	ok := false
	for _, s := range secrets {
		// Every secret is tried, so the time taken does not say which
		// one matched.
		if hmac.Equal(bodyHMAC(body, s), got) {
			ok = true
		}
	}
	if !ok {
		return fmt.Errorf("%w: signature does not match any secret", ErrSignature)
	}
	return nil
}

// SignBase64HMAC is the signature WooCommerce and Shopify send: base64
// HMAC-SHA256 of the body. Tests and tools sign deliveries with it.
func SignBase64HMAC(body []byte, secret string) string {
	return base64.StdEncoding.EncodeToString(bodyHMAC(body, secret))
}

// bodyHMAC is the HMAC-SHA256 of body with secret: what WooCommerce and
// Shopify sign, base64-encoded.
func bodyHMAC(body []byte, secret string) []byte {
	m := hmac.New(sha256.New, []byte(secret))
	m.Write(body)
	return m.Sum(nil)
}

// decode reads a delivery body that must be one JSON object into v.
func decode(body []byte, v any, what string) error {
	if t := bytes.TrimSpace(body); len(t) == 0 || t[0] != '{' {
		return badEvent("the body of %s is not a JSON object", what)
	}
	if err := json.Unmarshal(body, v); err != nil {
		return badEvent("the body of %s does not parse: %s", what, jsonProblem(err))
	}
	return nil
}

// jsonProblem describes a decoding error without echoing the body.
func jsonProblem(err error) string {
	switch e := err.(type) {
	case *json.SyntaxError:
		return fmt.Sprintf("invalid JSON at byte %d", e.Offset)
	case *json.UnmarshalTypeError:
		return fmt.Sprintf("field %s is a JSON %s, not the expected type", fulfillment.Clip(e.Field, 80), e.Value)
	}
	return "invalid JSON"
}

// id is a shop's identifier, sent as a JSON number (possibly beyond 2^53,
// as Shopify's are) or a string; it is kept as its decimal text.
type id string

func (i *id) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	switch {
	case string(b) == "null":
		*i = ""
	case len(b) > 0 && b[0] == '"':
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*i = id(s)
	default:
		var n json.Number
		if err := json.Unmarshal(b, &n); err != nil {
			return err
		}
		if _, err := n.Int64(); err != nil {
			return fmt.Errorf("id %s is not an integer", fulfillment.Clip(string(b), 30))
		}
		*i = id(n.String())
	}
	return nil
}

// String is the id as text; "0" (WooCommerce's "none") is empty.
func (i id) String() string {
	if i == "0" {
		return ""
	}
	return string(i)
}

// Shop order ids become part of order numbers (and of participants'
// "-p<k>"), so only the platform's own shape is accepted: WooCommerce and
// Shopify ids are positive integers (a JSON number or a digit string),
// Stripe's payment intents pi_<alphanumerics>.
var (
	intOrderID    = regexp.MustCompile(`^[1-9][0-9]{0,19}$`)
	stripeOrderID = regexp.MustCompile(`^pi_[A-Za-z0-9]{1,97}$`)
)

// orderIDProblem checks the order id read from field against the platform's
// shape; the problem names the field.
func orderIDProblem(field, s string, shape *regexp.Regexp) string {
	switch {
	case s == "":
		return field + ": the order has no id"
	case !shape.MatchString(s):
		if shape == stripeOrderID {
			return field + ": not a payment intent id (pi_ and letters and digits)"
		}
		return field + ": the order id is not a positive integer"
	}
	return ""
}

// parseShopTime reads a shop's timestamp: RFC 3339, or WooCommerce's
// "2006-01-02T15:04:05" in GMT.
// Dates before 1970 are refused: the LMS reads the order date for refund
// windows.
func parseShopTime(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t, err = time.ParseInLocation("2006-01-02T15:04:05", s, time.UTC)
	}
	if err != nil || t.Year() < 1970 {
		return time.Time{}, false
	}
	return t.UTC(), true
}
