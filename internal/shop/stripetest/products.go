package stripetest

import (
	"crypto/sha256"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Products is a fake of Stripe's Products and Prices API and of the
// account's default currency, for tests of the catalog: form-encoded
// writes, a product id chosen by the caller (unique), default_price
// (expandable), immutable amounts, lookup_key unique among prices
// (transfer_lookup_key moves it), the default price not deactivatable, and
// Idempotency-Key replay (the same key with other parameters is an
// idempotency_error), with Stripe's error bodies. Tests script 429s.
type Products struct {
	key string

	mu       sync.Mutex
	currency string
	products map[string]*Product
	prices   map[string]*Price
	order    []string // price ids in creation order
	idem     map[string]idemEntry
	clock    int64
	throttle int
	after    string
	calls    int
	writes   int
	keys     []string // each write's Idempotency-Key, "" for none
}

// Product is a product as the fake keeps it.
type Product struct {
	ID           string
	Name         string
	Active       bool
	Description  string
	Images       []string
	Metadata     map[string]string
	DefaultPrice string
	Updated      int64
}

// Price is a price as the fake keeps it.
type Price struct {
	ID         string
	Product    string
	Currency   string
	UnitAmount int64
	Active     bool
	LookupKey  string
}

type idemEntry struct {
	digest string
	status int
	body   any
}

// NewProducts returns an empty account with default currency usd that
// accepts the API key.
func NewProducts(key string) *Products {
	return &Products{key: key, currency: "usd", products: map[string]*Product{}, prices: map[string]*Price{},
		idem: map[string]idemEntry{}, clock: 1700000000}
}

// SetCurrency sets the account's default currency.
func (s *Products) SetCurrency(c string) { s.locked(func() { s.currency = c }) }

// Throttle answers the next n calls 429, with Retry-After: after when it is
// not empty.
func (s *Products) Throttle(n int, after string) { s.locked(func() { s.throttle, s.after = n, after }) }

// Edit changes a product as an operator would in the Dashboard.
func (s *Products) Edit(id string, f func(*Product)) {
	s.locked(func() {
		f(s.products[id])
		s.clock++
		s.products[id].Updated = s.clock
	})
}

// Product returns a product.
func (s *Products) Product(id string) (Product, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.products[id]
	if !ok {
		return Product{}, false
	}
	c := *p
	c.Metadata = cloneMap(p.Metadata)
	c.Images = slices.Clone(p.Images)
	return c, true
}

// Prices lists a product's prices, oldest first.
func (s *Products) Prices(product string) []Price {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Price
	for _, id := range s.order {
		if p := s.prices[id]; p.Product == product {
			out = append(out, *p)
		}
	}
	return out
}

// Len is how many products the account has.
func (s *Products) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.products)
}

// Calls is how many requests the fake received, and how many of them were
// writes (POSTs).
func (s *Products) Calls() (calls, writes int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.writes
}

// IdempotencyKeys lists each write's Idempotency-Key ("" for none), in
// order.
func (s *Products) IdempotencyKeys() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys)
}

func (s *Products) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

// ServeHTTP routes /v1/account, /v1/products and /v1/prices.
func (s *Products) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if r.Header.Get("Authorization") != "Bearer "+s.key {
		stripeError(w, http.StatusUnauthorized, "invalid_request_error", "", "Invalid API Key provided.")
		return
	}
	if s.throttle > 0 {
		s.throttle--
		if s.after != "" {
			w.Header().Set("Retry-After", s.after)
		}
		stripeError(w, http.StatusTooManyRequests, "invalid_request_error", "rate_limit", "Request rate limit exceeded.")
		return
	}
	if err := r.ParseForm(); err != nil {
		stripeError(w, http.StatusBadRequest, "invalid_request_error", "", "Invalid request body.")
		return
	}
	if r.Method == http.MethodPost {
		s.writes++
		key := r.Header.Get("Idempotency-Key")
		s.keys = append(s.keys, key)
		if key != "" {
			digest := fmt.Sprintf("%x", sha256.Sum256([]byte(r.URL.Path+"?"+r.PostForm.Encode())))
			if e, ok := s.idem[key]; ok {
				if e.digest != digest {
					stripeError(w, http.StatusBadRequest, "idempotency_error", "",
						"Keys for idempotent requests can only be used with the same parameters they were first used with.")
					return
				}
				w.Header().Set("Idempotent-Replayed", "true")
				write(w, e.status, e.body)
				return
			}
			rec := &recorder{ResponseWriter: w}
			s.route(rec, r)
			s.idem[key] = idemEntry{digest: digest, status: rec.status, body: rec.body}
			return
		}
	}
	s.route(&recorder{ResponseWriter: w}, r)
}

// recorder keeps the answer of a keyed write for replay.
type recorder struct {
	http.ResponseWriter
	status int
	body   any
}

func (s *Products) route(w *recorder, r *http.Request) {
	p := r.URL.Path
	id, isProduct := strings.CutPrefix(p, "/v1/products/")
	priceID, isPrice := strings.CutPrefix(p, "/v1/prices/")
	switch {
	case p == "/v1/account" && r.Method == http.MethodGet:
		w.answer(http.StatusOK, map[string]any{"id": "acct_fake", "object": "account", "default_currency": s.currency})
	case p == "/v1/products" && r.Method == http.MethodPost:
		s.createProduct(w, r.PostForm)
	case isProduct && r.Method == http.MethodGet:
		s.getProduct(w, id, r.Form)
	case isProduct && r.Method == http.MethodPost:
		s.updateProduct(w, id, r.PostForm)
	case p == "/v1/prices" && r.Method == http.MethodPost:
		s.createPrice(w, r.PostForm)
	case p == "/v1/prices" && r.Method == http.MethodGet:
		s.listPrices(w, r.Form)
	case isPrice && r.Method == http.MethodPost:
		s.updatePrice(w, priceID, r.PostForm)
	default:
		w.fail(http.StatusNotFound, "invalid_request_error", "", "Unrecognized request URL ("+r.Method+": "+p+").")
	}
}

func (w *recorder) answer(status int, v any) {
	w.status, w.body = status, v
	write(w.ResponseWriter, status, v)
}

func (w *recorder) fail(status int, typ, code, msg string) {
	e := map[string]any{"type": typ, "message": msg}
	if code != "" {
		e["code"] = code
	}
	w.answer(status, map[string]any{"error": e})
}

func (s *Products) createProduct(w *recorder, f url.Values) {
	id := f.Get("id")
	if id == "" {
		id = fmt.Sprintf("prod_fake%d", len(s.products)+1)
	}
	if _, ok := s.products[id]; ok {
		w.fail(http.StatusBadRequest, "invalid_request_error", "resource_already_exists", "Product already exists.")
		return
	}
	if f.Get("name") == "" {
		w.fail(http.StatusBadRequest, "invalid_request_error", "parameter_missing", "Missing required param: name.")
		return
	}
	s.clock++
	p := &Product{ID: id, Name: f.Get("name"), Active: f.Get("active") != "false", Metadata: metadata(f, nil), Updated: s.clock}
	s.products[id] = p
	w.answer(http.StatusOK, s.productJSON(p, false))
}

func (s *Products) getProduct(w *recorder, id string, f url.Values) {
	p, ok := s.products[id]
	if !ok {
		w.fail(http.StatusNotFound, "invalid_request_error", "resource_missing", "No such product: '"+id+"'")
		return
	}
	w.answer(http.StatusOK, s.productJSON(p, expands(f, "default_price")))
}

func (s *Products) updateProduct(w *recorder, id string, f url.Values) {
	p, ok := s.products[id]
	if !ok {
		w.fail(http.StatusNotFound, "invalid_request_error", "resource_missing", "No such product: '"+id+"'")
		return
	}
	if v := f.Get("default_price"); v != "" {
		pr, ok := s.prices[v]
		switch {
		case !ok:
			w.fail(http.StatusBadRequest, "invalid_request_error", "resource_missing", "No such price: '"+v+"'")
			return
		case pr.Product != id || !pr.Active:
			w.fail(http.StatusBadRequest, "invalid_request_error", "", "The price must be an active price of this product.")
			return
		}
		p.DefaultPrice = v
	}
	if f.Has("name") {
		p.Name = f.Get("name")
	}
	if f.Has("active") {
		p.Active = f.Get("active") == "true"
	}
	p.Metadata = metadata(f, p.Metadata)
	s.clock++
	p.Updated = s.clock
	w.answer(http.StatusOK, s.productJSON(p, false))
}

func (s *Products) createPrice(w *recorder, f url.Values) {
	prod, ok := s.products[f.Get("product")]
	if !ok {
		w.fail(http.StatusBadRequest, "invalid_request_error", "resource_missing", "No such product: '"+f.Get("product")+"'")
		return
	}
	amount, err := strconv.ParseInt(f.Get("unit_amount"), 10, 64)
	if err != nil || amount < 0 || f.Get("currency") == "" {
		w.fail(http.StatusBadRequest, "invalid_request_error", "parameter_invalid_integer", "Invalid unit_amount or currency.")
		return
	}
	lookup := f.Get("lookup_key")
	if lookup != "" {
		for _, o := range s.prices {
			if o.LookupKey != lookup {
				continue
			}
			if f.Get("transfer_lookup_key") != "true" {
				w.fail(http.StatusBadRequest, "invalid_request_error", "lookup_key_already_exists",
					"A price ("+o.ID+") already uses that lookup key.")
				return
			}
			o.LookupKey = ""
		}
	}
	pr := &Price{ID: fmt.Sprintf("price_fake%d", len(s.prices)+1), Product: prod.ID, Currency: strings.ToLower(f.Get("currency")),
		UnitAmount: amount, Active: true, LookupKey: lookup}
	s.prices[pr.ID] = pr
	s.order = append(s.order, pr.ID)
	w.answer(http.StatusOK, priceJSON(pr))
}

func (s *Products) listPrices(w *recorder, f url.Values) {
	var keys []string
	for k, vs := range f {
		if strings.HasPrefix(k, "lookup_keys[") {
			keys = append(keys, vs...)
		}
	}
	data := []any{}
	for _, id := range s.order {
		if pr := s.prices[id]; len(keys) == 0 || slices.Contains(keys, pr.LookupKey) {
			j := priceJSON(pr)
			if expands(f, "data.product") {
				j["product"] = s.productJSON(s.products[pr.Product], false)
			}
			data = append(data, j)
		}
	}
	w.answer(http.StatusOK, map[string]any{"object": "list", "data": data, "has_more": false, "url": "/v1/prices"})
}

func (s *Products) updatePrice(w *recorder, id string, f url.Values) {
	pr, ok := s.prices[id]
	if !ok {
		w.fail(http.StatusNotFound, "invalid_request_error", "resource_missing", "No such price: '"+id+"'")
		return
	}
	if f.Get("unit_amount") != "" || f.Get("currency") != "" {
		w.fail(http.StatusBadRequest, "invalid_request_error", "parameter_unknown", "Received unknown parameter: unit_amount")
		return
	}
	if f.Has("active") {
		if f.Get("active") == "false" && s.products[pr.Product].DefaultPrice == id {
			w.fail(http.StatusBadRequest, "invalid_request_error", "",
				"This price cannot be archived because it is the default price of its product.")
			return
		}
		pr.Active = f.Get("active") == "true"
	}
	w.answer(http.StatusOK, priceJSON(pr))
}

func (s *Products) productJSON(p *Product, expandPrice bool) map[string]any {
	var dp any
	if p.DefaultPrice != "" {
		dp = p.DefaultPrice
		if expandPrice {
			dp = priceJSON(s.prices[p.DefaultPrice])
		}
	}
	images := p.Images
	if images == nil {
		images = []string{}
	}
	meta := p.Metadata
	if meta == nil {
		meta = map[string]string{}
	}
	return map[string]any{"id": p.ID, "object": "product", "name": p.Name, "active": p.Active,
		"description": p.Description, "images": images, "metadata": meta, "default_price": dp, "updated": p.Updated}
}

func priceJSON(p *Price) map[string]any {
	var lookup any
	if p.LookupKey != "" {
		lookup = p.LookupKey
	}
	return map[string]any{"id": p.ID, "object": "price", "product": p.Product, "currency": p.Currency,
		"unit_amount": p.UnitAmount, "active": p.Active, "lookup_key": lookup, "type": "one_time"}
}

// metadata applies metadata[k]=v (an empty value removes k) to old.
func metadata(f url.Values, old map[string]string) map[string]string {
	m := cloneMap(old)
	for k, vs := range f {
		key, ok := strings.CutPrefix(k, "metadata[")
		if !ok || !strings.HasSuffix(key, "]") {
			continue
		}
		key = strings.TrimSuffix(key, "]")
		if vs[0] == "" {
			delete(m, key)
			continue
		}
		m[key] = vs[0]
	}
	return m
}

// expands reports whether expand[] (or expand[0]...) names field.
func expands(f url.Values, field string) bool {
	for k, vs := range f {
		if strings.HasPrefix(k, "expand[") && slices.Contains(vs, field) {
			return true
		}
	}
	return false
}

func cloneMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}
