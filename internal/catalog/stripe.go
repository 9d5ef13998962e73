package catalog

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/stripe/stripe-go/v82"
)

// Stripe is a Stripe account's Products and Prices. A product's id is
// derived from its run and mode, so creating it is idempotent and finding
// it needs no search (which lags behind writes); prices are immutable, so a
// new amount is a new Price that becomes the product's default_price, the
// old one deactivated.
type Stripe struct {
	api   *stripe.Client
	calls int
}

// NewStripe returns the account of the API key at baseURL (api_url).
func NewStripe(baseURL, key string, hc *http.Client) *Stripe {
	none := int64(0) // retried here, honouring Retry-After, which stripe-go does not
	backends := stripe.NewBackendsWithConfig(&stripe.BackendConfig{
		URL:               stripe.String(strings.TrimRight(baseURL, "/")),
		HTTPClient:        hc,
		MaxNetworkRetries: &none,
		LeveledLogger:     &stripe.LeveledLogger{Level: stripe.LevelNull},
	})
	return &Stripe{api: stripe.NewClient(key, stripe.WithBackends(backends))}
}

// Calls is how many API calls were made, retries included.
func (s *Stripe) Calls() int { return s.calls }

// StripeProductID is the id of a run's mode's product: "coordinator_" and a
// digest of both (a run key's ':' and '+' are not for URLs).
func StripeProductID(run, mode string) string {
	sum := sha256.Sum256([]byte(run + "\x00" + mode))
	return "coordinator_" + hex.EncodeToString(sum[:12])
}

// StripeLookupKey is the lookup_key of a run's mode's current price.
func StripeLookupKey(run, mode string) string { return "coordinator:" + run + ":" + mode }

// StripeAmount is a whole amount in Stripe's minor units of the currency:
// 49 usd is 4900, 5000 jpy is 5000 (a zero-decimal currency), 3 kwd is 3000
// (a three-decimal one).
func StripeAmount(amount int64, currency string) int64 {
	switch strings.ToLower(currency) {
	case "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd", "vuv", "xaf", "xof", "xpf":
		return amount
	case "bhd", "jod", "kwd", "omr", "tnd":
		return amount * 1000
	}
	return amount * 100
}

// stripeState is what apply needs of a planned Stripe item.
type stripeState struct {
	id       string
	exists   bool
	updated  int64  // the product's last change, part of update keys
	oldPrice string // the default price being replaced, if any
	name     bool   // write the name and metadata
	price    bool   // a new price
	amount   int64
}

func (s *Stripe) plan(ctx context.Context, items []Item) (string, []Result, error) {
	var acct *stripe.Account
	err := s.do(ctx, func() (err error) {
		acct, err = s.api.V1Accounts.Retrieve(ctx, nil)
		return err
	})
	if err != nil {
		return "", nil, fmt.Errorf("read the account's default currency: %w", err)
	}
	currency := strings.ToLower(string(acct.DefaultCurrency))
	results := make([]Result, 0, len(items))
	for _, it := range items {
		r, ok := decide(it, currency)
		if it.Skip == "" {
			r.Price = formatMinor(StripeAmount(it.Price, it.Currency), it.Currency)
		}
		if ok {
			if err := s.decide(ctx, &r); err != nil {
				r.fail(err)
			}
		}
		results = append(results, r)
	}
	return currency, results, nil
}

// formatMinor shows an amount as Stripe takes it, saying it is in minor
// units: "4900 USD (minor units)".
func formatMinor(minor int64, currency string) string {
	return strconv.FormatInt(minor, 10) + " " + strings.ToUpper(currency) + " (minor units)"
}

func (s *Stripe) decide(ctx context.Context, r *Result) error {
	it := r.item
	st := stripeState{id: StripeProductID(it.Run, it.Mode), amount: StripeAmount(it.Price, it.Currency)}
	r.Product = st.id
	if len(StripeLookupKey(it.Run, it.Mode)) > 200 {
		r.Action, r.Reason = Skip, "run key too long for a Stripe lookup_key (200 characters)"
		return nil
	}
	var p *stripe.Product
	err := s.do(ctx, func() (err error) {
		params := &stripe.ProductRetrieveParams{}
		params.AddExpand("default_price")
		p, err = s.api.V1Products.Retrieve(ctx, st.id, params)
		return err
	})
	var se *stripe.Error
	switch {
	case errors.As(err, &se) && se.HTTPStatusCode == http.StatusNotFound:
		p = nil
	case err != nil:
		return fmt.Errorf("read product %s: %w", st.id, err)
	}
	if it.Ended != "" {
		retireOrNot(r, p != nil, p != nil && p.Active)
		if r.Action == Retire {
			st.exists, st.updated = true, p.Updated
			r.state = st
		}
		return nil
	}
	if p == nil {
		st.name, st.price = true, true
		r.Action, r.Reason, r.state = Create, "new product, inactive, with its price", st
		return nil
	}
	st.exists, st.updated = true, p.Updated
	if p.Name != it.Name {
		st.name = true
		r.Fields = append(r.Fields, "name")
	}
	if p.Metadata["course_id"] != it.Run || p.Metadata["course_mode"] != it.Mode {
		st.name = true
		r.Fields = append(r.Fields, "metadata")
	}
	dp := p.DefaultPrice
	if dp == nil || dp.UnitAmount != st.amount || !strings.EqualFold(string(dp.Currency), it.Currency) || !dp.Active {
		st.price = true
		r.Fields = append(r.Fields, "default_price")
		if dp != nil {
			st.oldPrice = dp.ID
			r.Reason = fmt.Sprintf("price %d %s → %d: a new Price, %s deactivated", dp.UnitAmount, strings.ToUpper(string(dp.Currency)), st.amount, dp.ID)
		}
	}
	if len(r.Fields) == 0 {
		r.Action = Unchanged
		return nil
	}
	r.Action, r.state = Update, st
	return nil
}

func (s *Stripe) apply(ctx context.Context, results []Result) {
	for i := range results {
		r := &results[i]
		st, ok := r.state.(stripeState)
		if !ok || (r.Action != Create && r.Action != Update && r.Action != Retire) {
			continue
		}
		if err := s.write(ctx, r.item, st, r.Action); err != nil {
			r.fail(err)
			continue
		}
		r.Written = true
	}
}

// write makes one item's changes, each with an Idempotency-Key derived from
// what it writes and the state it was planned on (a repeat within Stripe's
// 24 hours replays, a new situation writes anew).
func (s *Stripe) write(ctx context.Context, it Item, st stripeState, a Action) error {
	key := func(parts ...any) *string {
		sum := sha256.Sum256([]byte(fmt.Sprint(append([]any{st.id, st.updated}, parts...)...)))
		return stripe.String("coordinator-catalog-" + hex.EncodeToString(sum[:16]))
	}
	meta := map[string]string{"course_id": it.Run, "course_mode": it.Mode}
	if a == Retire {
		params := &stripe.ProductUpdateParams{Active: stripe.Bool(false)}
		params.IdempotencyKey = key("retire")
		return s.do(ctx, func() error { _, err := s.api.V1Products.Update(ctx, st.id, params); return err })
	}
	if !st.exists {
		params := &stripe.ProductCreateParams{ID: stripe.String(st.id), Name: stripe.String(it.Name),
			Active: stripe.Bool(false), Metadata: meta}
		params.IdempotencyKey = key("create", it.Name)
		if err := s.do(ctx, func() error { _, err := s.api.V1Products.Create(ctx, params); return err }); err != nil {
			return fmt.Errorf("create product %s: %w", st.id, err)
		}
	} else if st.name {
		params := &stripe.ProductUpdateParams{Name: stripe.String(it.Name), Metadata: meta}
		params.IdempotencyKey = key("name", it.Name, it.Run, it.Mode)
		if err := s.do(ctx, func() error { _, err := s.api.V1Products.Update(ctx, st.id, params); return err }); err != nil {
			return fmt.Errorf("update product %s: %w", st.id, err)
		}
	}
	if !st.price {
		return nil
	}
	price, err := s.price(ctx, it, st, key("price", it.Currency, st.amount, st.oldPrice))
	if err != nil {
		return err
	}
	params := &stripe.ProductUpdateParams{DefaultPrice: stripe.String(price)}
	params.IdempotencyKey = key("default_price", price)
	if err := s.do(ctx, func() error { _, err := s.api.V1Products.Update(ctx, st.id, params); return err }); err != nil {
		return fmt.Errorf("set default_price of %s: %w", st.id, err)
	}
	if st.oldPrice == "" || st.oldPrice == price {
		return nil
	}
	deact := &stripe.PriceUpdateParams{Active: stripe.Bool(false)}
	deact.IdempotencyKey = key("deactivate", st.oldPrice)
	if err := s.do(ctx, func() error { _, err := s.api.V1Prices.Update(ctx, st.oldPrice, deact); return err }); err != nil {
		return fmt.Errorf("deactivate price %s: %w", st.oldPrice, err)
	}
	return nil
}

// price returns the id of an active price of the product with the amount:
// the one holding the item's lookup_key when it matches (a sync that failed
// after creating it), else a new one that takes the lookup_key over.
func (s *Stripe) price(ctx context.Context, it Item, st stripeState, idem *string) (string, error) {
	lookup := StripeLookupKey(it.Run, it.Mode)
	var found string
	err := s.do(ctx, func() error {
		found = ""
		params := &stripe.PriceListParams{LookupKeys: []*string{stripe.String(lookup)}}
		for p, err := range s.api.V1Prices.List(ctx, params) {
			if err != nil {
				return err
			}
			if p.Active && p.UnitAmount == st.amount && strings.EqualFold(string(p.Currency), it.Currency) &&
				p.Product != nil && p.Product.ID == st.id {
				found = p.ID
			}
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("find price %s: %w", lookup, err)
	}
	if found != "" {
		return found, nil
	}
	params := &stripe.PriceCreateParams{Product: stripe.String(st.id), Currency: stripe.String(it.Currency),
		UnitAmount: stripe.Int64(st.amount), LookupKey: stripe.String(lookup), TransferLookupKey: stripe.Bool(true)}
	params.IdempotencyKey = idem
	var p *stripe.Price
	if err := s.do(ctx, func() (err error) { p, err = s.api.V1Prices.Create(ctx, params); return err }); err != nil {
		return "", fmt.Errorf("create price of %s: %w", st.id, err)
	}
	return p.ID, nil
}

// do makes one Stripe call, retried on 429 and 5xx (and unreachable
// Stripe) after its Retry-After; errors carry Stripe's message, never the
// key.
func (s *Stripe) do(ctx context.Context, f func() error) error {
	return retrying(ctx, func() error {
		s.calls++
		err := f()
		var se *stripe.Error
		switch {
		case err == nil:
			return nil
		case errors.As(err, &se):
			e := &stripeError{status: se.HTTPStatusCode, code: string(se.Code), msg: se.Msg}
			if retryable(se.HTTPStatusCode) {
				var after time.Duration
				if se.LastResponse != nil {
					after = retryAfter(se.LastResponse.Header, time.Now())
				}
				return &transient{err: e, after: after}
			}
			return wrapStripe{e, se}
		case ctx.Err() != nil:
			return err
		}
		return &transient{err: err}
	})
}

// stripeError is Stripe's answer in a line: status, code and message.
type stripeError struct {
	status    int
	code, msg string
}

func (e *stripeError) Error() string {
	if e.code != "" {
		return fmt.Sprintf("stripe: status %d: %s: %s", e.status, e.code, e.msg)
	}
	return fmt.Sprintf("stripe: status %d: %s", e.status, e.msg)
}

// wrapStripe reads as stripeError and unwraps to stripe-go's error (a 404
// is told by its status).
type wrapStripe struct {
	*stripeError
	se *stripe.Error
}

func (w wrapStripe) Unwrap() error { return w.se }
