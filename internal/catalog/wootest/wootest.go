// Package wootest is a fake WooCommerce REST API v3 store for tests of the
// catalog: products (GET /products with sku, status, per_page and page;
// POST /products/batch) and the general settings (currency, decimals), with
// WooCommerce's basic auth, batch limit (413 over 100 items), SKU uniqueness
// (400 product_invalid_sku, across products and variations, trashed
// products excluded), default status
// publish for both listing and creating, and scripted 429s.
package wootest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// BatchLimit is WooCommerce's default woocommerce_rest_batch_items_limit.
const BatchLimit = 100

// Meta is one product meta entry.
type Meta struct {
	ID    int64  `json:"id"`
	Key   string `json:"key"`
	Value string `json:"value"`
}

// Product is a product as the fake keeps and serves it.
type Product struct {
	ID               int64            `json:"id"`
	Name             string           `json:"name"`
	Type             string           `json:"type"`
	Status           string           `json:"status"` // draft, pending, private, publish, trash
	SKU              string           `json:"sku"`
	RegularPrice     string           `json:"regular_price"`
	Virtual          bool             `json:"virtual"`
	Downloadable     bool             `json:"downloadable"`
	Description      string           `json:"description"`
	ShortDescription string           `json:"short_description"`
	Images           []map[string]any `json:"images"`
	Categories       []map[string]any `json:"categories"`
	MetaData         []Meta           `json:"meta_data"`
}

// Meta returns the value of a meta key, "" when absent.
func (p Product) Meta(key string) string {
	for _, m := range p.MetaData {
		if m.Key == key {
			return m.Value
		}
	}
	return ""
}

// Store is the fake. Its methods are safe for concurrent use.
type Store struct {
	key, secret string

	mu        sync.Mutex
	currency  string
	decimals  int
	products  map[int64]*Product
	variation map[string]bool // SKUs of product variations
	nextID    int64
	throttle  int // the next calls answered 429
	after     string
	calls     map[string]int
	batchSize []int
}

// New returns an empty store selling in USD with 2 decimals, accepting the
// consumer key and secret.
func New(key, secret string) *Store {
	return &Store{key: key, secret: secret, currency: "USD", decimals: 2, products: map[int64]*Product{},
		variation: map[string]bool{}, nextID: 100, calls: map[string]int{}}
}

// Start serves the store on a loopback port until the test ends.
func Start(t interface{ Cleanup(func()) }, s *Store) *httptest.Server {
	srv := httptest.NewServer(s)
	t.Cleanup(srv.Close)
	return srv
}

// SetCurrency sets the store's currency (upper case, as WooCommerce keeps
// it) and price decimals.
func (s *Store) SetCurrency(code string, decimals int) {
	s.locked(func() { s.currency, s.decimals = code, decimals })
}

// Throttle answers the next n calls 429 with Retry-After: after seconds.
func (s *Store) Throttle(n int, after string) { s.locked(func() { s.throttle, s.after = n, after }) }

// Add stores a product as if made by hand; it returns its id.
func (s *Store) Add(p Product) int64 {
	var id int64
	s.locked(func() {
		s.nextID++
		p.ID, id = s.nextID, s.nextID
		s.products[id] = &p
	})
	return id
}

// AddVariation gives a variation of some variable product the SKU: /products
// does not list it, but no product may take its SKU.
func (s *Store) AddVariation(sku string) { s.locked(func() { s.variation[sku] = true }) }

// Edit changes a product as an operator would in WordPress.
func (s *Store) Edit(id int64, f func(*Product)) { s.locked(func() { f(s.products[id]) }) }

// Product returns a product by id.
func (s *Store) Product(id int64) (Product, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.products[id]
	if !ok {
		return Product{}, false
	}
	return clone(p), true
}

// BySKU returns the products (trash excluded) with a SKU.
func (s *Store) BySKU(sku string) []Product {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Product
	for _, id := range s.ids() {
		if p := s.products[id]; p.SKU == sku && p.Status != "trash" {
			out = append(out, clone(p))
		}
	}
	return out
}

// Len is how many products the store has.
func (s *Store) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.products)
}

// Calls is how many calls a route got ("GET /products", "POST
// /products/batch", "GET /settings/general"), refused ones included.
func (s *Store) Calls(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

// Batches lists the sizes of the batches the store accepted.
func (s *Store) Batches() []int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.batchSize)
}

func (s *Store) locked(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func (s *Store) ids() []int64 {
	ids := make([]int64, 0, len(s.products))
	for id := range s.products {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

func clone(p *Product) Product {
	c := *p
	c.MetaData = slices.Clone(p.MetaData)
	c.Images = slices.Clone(p.Images)
	c.Categories = slices.Clone(p.Categories)
	return c
}

// ServeHTTP routes /wp-json/wc/v3/ as WooCommerce does.
func (s *Store) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	route := r.Method + " " + strings.TrimPrefix(r.URL.Path, "/wp-json/wc/v3")
	body, _ := io.ReadAll(io.LimitReader(r.Body, 8<<20))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls[route]++
	if user, pass, ok := r.BasicAuth(); !ok || user != s.key || pass != s.secret {
		fail(w, http.StatusUnauthorized, "woocommerce_rest_cannot_view", "Sorry, you cannot list resources.")
		return
	}
	if s.throttle > 0 {
		s.throttle--
		w.Header().Set("Retry-After", s.after)
		fail(w, http.StatusTooManyRequests, "too_many_requests", "Too many requests.")
		return
	}
	switch route {
	case "GET /settings/general":
		write(w, http.StatusOK, []map[string]any{
			{"id": "woocommerce_store_city", "label": "City", "value": ""},
			{"id": "woocommerce_currency", "label": "Currency", "value": s.currency},
			{"id": "woocommerce_price_num_decimals", "label": "Number of decimals", "value": strconv.Itoa(s.decimals)},
		})
	case "GET /products":
		s.list(w, r)
	case "POST /products/batch":
		s.batch(w, body)
	default:
		fail(w, http.StatusNotFound, "rest_no_route", "No route was found matching the URL and request method.")
	}
}

// list answers GET /products: sku (comma-separated, exact), status
// (default publish; any = every status but trash), per_page (1-100,
// default 10), page.
func (s *Store) list(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	perPage, page := 10, 1
	if v := q.Get("per_page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 100 {
			fail(w, http.StatusBadRequest, "rest_invalid_param", "Invalid parameter(s): per_page")
			return
		}
		perPage = n
	}
	if v := q.Get("page"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			fail(w, http.StatusBadRequest, "rest_invalid_param", "Invalid parameter(s): page")
			return
		}
		page = n
	}
	status := q.Get("status")
	if status == "" {
		status = "publish"
	}
	var skus []string
	if v := q.Get("sku"); v != "" {
		skus = strings.Split(v, ",")
	}
	var match []Product
	for _, id := range s.ids() {
		p := s.products[id]
		switch {
		case status == "any" && p.Status == "trash", status != "any" && p.Status != status:
		case skus != nil && !slices.Contains(skus, p.SKU):
		default:
			match = append(match, clone(p))
		}
	}
	pages := (len(match) + perPage - 1) / perPage
	w.Header().Set("X-WP-Total", strconv.Itoa(len(match)))
	w.Header().Set("X-WP-TotalPages", strconv.Itoa(pages))
	from := min((page-1)*perPage, len(match))
	out := match[from:min(from+perPage, len(match))]
	if out == nil {
		out = []Product{}
	}
	write(w, http.StatusOK, out)
}

type entryError struct {
	Code    string         `json:"code"`
	Message string         `json:"message"`
	Data    map[string]any `json:"data"`
}

// batch answers POST /products/batch.
func (s *Store) batch(w http.ResponseWriter, body []byte) {
	var req struct {
		Create []json.RawMessage `json:"create"`
		Update []json.RawMessage `json:"update"`
		Delete []int64           `json:"delete"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		fail(w, http.StatusBadRequest, "rest_invalid_json", "Invalid JSON body passed.")
		return
	}
	if n := len(req.Create) + len(req.Update) + len(req.Delete); n > BatchLimit {
		fail(w, http.StatusRequestEntityTooLarge, "woocommerce_rest_request_entity_too_large",
			fmt.Sprintf("Unable to accept more than %d items for this request.", BatchLimit))
		return
	}
	s.batchSize = append(s.batchSize, len(req.Create)+len(req.Update)+len(req.Delete))
	resp := map[string][]any{"create": {}, "update": {}}
	for _, raw := range req.Create {
		p := &Product{Type: "simple", Status: "publish"}
		if e := s.set(p, raw); e != nil {
			resp["create"] = append(resp["create"], map[string]any{"id": 0, "error": e})
			continue
		}
		s.nextID++
		p.ID = s.nextID
		s.products[p.ID] = p
		resp["create"] = append(resp["create"], clone(p))
	}
	for _, raw := range req.Update {
		var ref struct {
			ID int64 `json:"id"`
		}
		_ = json.Unmarshal(raw, &ref)
		p, ok := s.products[ref.ID]
		if !ok {
			resp["update"] = append(resp["update"], map[string]any{"id": ref.ID,
				"error": entryError{"woocommerce_rest_product_invalid_id", "Invalid ID.", map[string]any{"status": 400}}})
			continue
		}
		c := clone(p)
		if e := s.set(&c, raw); e != nil {
			resp["update"] = append(resp["update"], map[string]any{"id": ref.ID, "error": e})
			continue
		}
		*p = c
		resp["update"] = append(resp["update"], clone(p))
	}
	write(w, http.StatusOK, resp)
}

// set applies the fields a create or update sends; meta_data entries
// update the entry with their key (or id), else are added.
func (s *Store) set(p *Product, raw json.RawMessage) *entryError {
	var in struct {
		Name         *string `json:"name"`
		Type         *string `json:"type"`
		Status       *string `json:"status"`
		SKU          *string `json:"sku"`
		RegularPrice *string `json:"regular_price"`
		Virtual      *bool   `json:"virtual"`
		Downloadable *bool   `json:"downloadable"`
		Description  *string `json:"description"`
		MetaData     []Meta  `json:"meta_data"`
	}
	if err := json.Unmarshal(raw, &in); err != nil {
		return &entryError{"rest_invalid_param", "Invalid parameter(s): " + err.Error(), map[string]any{"status": 400}}
	}
	if in.SKU != nil && *in.SKU != "" {
		if s.variation[*in.SKU] {
			return &entryError{"product_invalid_sku", "Invalid or duplicated SKU.", map[string]any{"status": 400, "unique_sku": *in.SKU + "-1"}}
		}
		for _, o := range s.products {
			if o.ID != p.ID && o.SKU == *in.SKU && o.Status != "trash" {
				return &entryError{"product_invalid_sku", "Invalid or duplicated SKU.",
					map[string]any{"status": 400, "resource_id": o.ID, "unique_sku": *in.SKU + "-1"}}
			}
		}
	}
	if in.Status != nil && !slices.Contains([]string{"draft", "pending", "private", "publish"}, *in.Status) {
		return &entryError{"rest_invalid_param", "Invalid parameter(s): status", map[string]any{"status": 400}}
	}
	if in.RegularPrice != nil && *in.RegularPrice != "" {
		if _, err := strconv.ParseFloat(*in.RegularPrice, 64); err != nil {
			return &entryError{"rest_invalid_param", "Invalid parameter(s): regular_price", map[string]any{"status": 400}}
		}
	}
	for _, f := range []struct {
		dst *string
		src *string
	}{{&p.Name, in.Name}, {&p.Type, in.Type}, {&p.Status, in.Status}, {&p.SKU, in.SKU}, {&p.RegularPrice, in.RegularPrice}, {&p.Description, in.Description}} {
		if f.src != nil {
			*f.dst = *f.src
		}
	}
	if in.Virtual != nil {
		p.Virtual = *in.Virtual
	}
	if in.Downloadable != nil {
		p.Downloadable = *in.Downloadable
	}
	for _, m := range in.MetaData {
		i := slices.IndexFunc(p.MetaData, func(o Meta) bool { return (m.ID != 0 && o.ID == m.ID) || o.Key == m.Key })
		if i >= 0 {
			p.MetaData[i].Value = m.Value
			continue
		}
		s.nextID++
		p.MetaData = append(p.MetaData, Meta{ID: s.nextID, Key: m.Key, Value: m.Value})
	}
	return nil
}

func fail(w http.ResponseWriter, status int, code, msg string) {
	write(w, status, map[string]any{"code": code, "message": msg, "data": map[string]int{"status": status}})
}

func write(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
