package shop

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/openedx/coordinator/internal/config"
)

// maxRefundsBody bounds the store's answer listing an order's refunds.
const maxRefundsBody = 4 << 20

// hasAPI reports whether the integration may call the store's REST API:
// consumer key and secret, and a base URL they may travel to (https, or
// http to this machine; the configuration refuses anything else).
func (w wooCommerce) hasAPI() bool {
	in := w.s.in
	if in.ConsumerKey == "" || in.ConsumerSecret == "" || in.APIURL == "" {
		return false
	}
	u, err := url.Parse(in.APIURL)
	return err == nil && config.CredentialsSafe(u)
}

// readRefunds lists an order's refunds with their line items: GET
// /wp-json/wc/v3/orders/{id}/refunds with basic auth, one page of up to 100
// (an order has a handful). A redirect is not followed: it would take the
// credentials elsewhere. Errors name the store's answer, never the URL or
// the credentials.
func (w wooCommerce) readRefunds(ctx context.Context, orderID string) ([]wooRefund, error) {
	in := w.s.in
	u := strings.TrimRight(in.APIURL, "/") + "/wp-json/wc/v3/orders/" + url.PathEscape(orderID) + "/refunds?per_page=100"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, errors.New("bad api_url")
	}
	req.SetBasicAuth(in.ConsumerKey, in.ConsumerSecret)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "Coordinator")
	client := *in.HTTPClient
	client.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL
		}
		return nil, fmt.Errorf("GET the order's refunds: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRefundsBody+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("GET the order's refunds: reading the answer: %v", err)
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, fmt.Errorf("the store refused consumer_key/consumer_secret (%d)", resp.StatusCode)
	case resp.StatusCode == http.StatusNotFound:
		return nil, errors.New("the store does not know the order (404)")
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("the store answered %d", resp.StatusCode)
	case len(body) > maxRefundsBody:
		return nil, fmt.Errorf("the store's answer is larger than %d bytes", maxRefundsBody)
	}
	var refunds []wooRefund
	if err := json.Unmarshal(body, &refunds); err != nil {
		return nil, fmt.Errorf("the store's answer is not a list of refunds: %s", jsonProblem(err))
	}
	return refunds, nil
}
