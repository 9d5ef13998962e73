package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/openedx/coordinator/internal/fulfillment"
)

// The WooCommerce product meta keys Coordinator owns.
const (
	MetaCourseID = "_coordinator_course_id"
	MetaMode     = "_coordinator_mode"
)

// wooBatch is WooCommerce's default limit on the items of one
// /products/batch call (create, update and delete together).
const wooBatch = 100

// wooFind is how many SKUs one look-up names.
const wooFind = 50

// WooCommerce is a WooCommerce store's products, through its REST API v3
// with a consumer key and secret.
type WooCommerce struct {
	base        string // <api_url>/wp-json/wc/v3
	key, secret string
	hc          *http.Client
	calls       int
}

// NewWooCommerce returns the store at baseURL (its root, as api_url).
func NewWooCommerce(baseURL, key, secret string, hc *http.Client) *WooCommerce {
	return &WooCommerce{base: strings.TrimRight(baseURL, "/") + "/wp-json/wc/v3", key: key, secret: secret, hc: hc}
}

// Calls is how many HTTP requests the store was sent, retries included.
func (w *WooCommerce) Calls() int { return w.calls }

// wooProduct is the part of a product Coordinator reads.
type wooProduct struct {
	ID           int64  `json:"id"`
	Name         string `json:"name"`
	SKU          string `json:"sku"`
	Status       string `json:"status"`
	RegularPrice string `json:"regular_price"`
	MetaData     []struct {
		Key   string `json:"key"`
		Value any    `json:"value"`
	} `json:"meta_data"`
}

func (p wooProduct) meta(key string) string {
	for _, m := range p.MetaData {
		if m.Key == key {
			if s, ok := m.Value.(string); ok {
				return s
			}
		}
	}
	return ""
}

type wooMeta struct {
	Key   string `json:"key"`
	Value string `json:"value"`
}

// wooWrite is one entry of a batch: a create (ID 0) or an update.
type wooWrite struct {
	ID           int64     `json:"id,omitempty"`
	Name         string    `json:"name,omitempty"`
	Type         string    `json:"type,omitempty"`
	Status       string    `json:"status,omitempty"`
	SKU          string    `json:"sku,omitempty"`
	RegularPrice string    `json:"regular_price,omitempty"`
	Virtual      *bool     `json:"virtual,omitempty"`
	Downloadable *bool     `json:"downloadable,omitempty"`
	MetaData     []wooMeta `json:"meta_data,omitempty"`
}

// wooError is WooCommerce's error body, also a batch entry's "error".
type wooError struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e wooError) String() string { return fulfillment.Clip(e.Code+": "+e.Message, 300) }

// store reads the store's currency and its prices' decimals from its
// general settings.
func (w *WooCommerce) store(ctx context.Context) (currency string, decimals int, err error) {
	var settings []struct {
		ID    string `json:"id"`
		Value any    `json:"value"`
	}
	if err := w.call(ctx, http.MethodGet, "/settings/general", nil, &settings); err != nil {
		return "", 0, fmt.Errorf("read the store's currency: %w", err)
	}
	decimals = 2
	for _, s := range settings {
		v := fmt.Sprint(s.Value)
		switch s.ID {
		case "woocommerce_currency":
			currency = strings.ToLower(v)
		case "woocommerce_price_num_decimals":
			if n, err := strconv.Atoi(v); err == nil && n >= 0 && n <= 8 {
				decimals = n
			}
		}
	}
	if currency == "" {
		return "", 0, fmt.Errorf("read the store's currency: no woocommerce_currency in /settings/general")
	}
	return currency, decimals, nil
}

// find reads the products, of any status but trash, that have the SKUs.
func (w *WooCommerce) find(ctx context.Context, skus []string) (map[string][]wooProduct, error) {
	found := map[string][]wooProduct{}
	for start := 0; start < len(skus); start += wooFind {
		q := url.Values{"sku": {strings.Join(skus[start:min(start+wooFind, len(skus))], ",")},
			"status": {"any"}, "per_page": {"100"}}
		for page := 1; ; page++ {
			q.Set("page", strconv.Itoa(page))
			var ps []wooProduct
			if err := w.call(ctx, http.MethodGet, "/products?"+q.Encode(), nil, &ps); err != nil {
				return nil, fmt.Errorf("find products by SKU: %w", err)
			}
			for _, p := range ps {
				found[p.SKU] = append(found[p.SKU], p)
			}
			if len(ps) < 100 {
				break
			}
		}
	}
	return found, nil
}

// wooPrice writes a whole amount as the store's decimal string: 49 with 2
// decimals is "49.00".
func wooPrice(amount int64, decimals int) string {
	s := strconv.FormatInt(amount, 10)
	if decimals > 0 {
		s += "." + strings.Repeat("0", decimals)
	}
	return s
}

// samePrice compares two decimal strings by value ("49" is "49.00"); a
// price that is not a number differs from every other.
func samePrice(a, b string) bool {
	x, ok1 := new(big.Rat).SetString(a)
	y, ok2 := new(big.Rat).SetString(b)
	return ok1 && ok2 && x.Cmp(y) == 0
}

func (w *WooCommerce) plan(ctx context.Context, items []Item) (string, []Result, error) {
	currency, decimals, err := w.store(ctx)
	if err != nil {
		return "", nil, err
	}
	var skus []string
	for _, it := range items {
		if it.SKU != "" && it.Skip == "" {
			skus = append(skus, it.SKU)
		}
	}
	found, err := w.find(ctx, skus)
	if err != nil {
		return "", nil, err
	}
	results := make([]Result, 0, len(items))
	for _, it := range items {
		r, ok := decide(it, currency)
		if ok {
			w.decide(&r, found[it.SKU], wooPrice(it.Price, decimals))
		}
		if it.Skip == "" {
			r.Price = wooPrice(it.Price, decimals) + " " + strings.ToUpper(it.Currency)
		}
		results = append(results, r)
	}
	return currency, results, nil
}

// decide compares an item with its product, if any.
func (w *WooCommerce) decide(r *Result, products []wooProduct, price string) {
	it := r.item
	if len(products) > 1 {
		ids := make([]string, len(products))
		for i, p := range products {
			ids[i] = "#" + strconv.FormatInt(p.ID, 10)
		}
		r.Action = Failed
		r.Error = fmt.Sprintf("%d products have this SKU (%s): keep one, change the others' SKU", len(products), strings.Join(ids, ", "))
		return
	}
	if len(products) == 0 {
		if it.Ended != "" {
			retireOrNot(r, false, false)
			return
		}
		yes, no := true, false
		r.Action, r.Reason = Create, "new product, as a draft"
		r.state = wooWrite{Name: it.Name, Type: "simple", Status: "draft", SKU: it.SKU, RegularPrice: price,
			Virtual: &yes, Downloadable: &no, MetaData: []wooMeta{{MetaCourseID, it.Run}, {MetaMode, it.Mode}}}
		return
	}
	p := products[0]
	r.Product = strconv.FormatInt(p.ID, 10)
	if it.Ended != "" {
		retireOrNot(r, true, p.Status != "draft")
		if r.Action == Retire {
			r.state = wooWrite{ID: p.ID, Status: "draft"}
		}
		return
	}
	up := wooWrite{ID: p.ID}
	var why []string
	if p.Name != it.Name {
		up.Name = it.Name
		r.Fields = append(r.Fields, "name")
	}
	if !samePrice(p.RegularPrice, price) {
		up.RegularPrice = price
		r.Fields = append(r.Fields, "regular_price")
		why = append(why, fmt.Sprintf("price %q → %q", p.RegularPrice, price))
	}
	if p.meta(MetaCourseID) == "" && p.meta(MetaMode) == "" {
		why = append(why, "a product made by hand with this SKU: Coordinator keeps its name and price from now on")
	}
	if p.meta(MetaCourseID) != it.Run || p.meta(MetaMode) != it.Mode {
		up.MetaData = []wooMeta{{MetaCourseID, it.Run}, {MetaMode, it.Mode}}
		r.Fields = append(r.Fields, "meta_data")
	}
	if len(r.Fields) == 0 {
		r.Action = Unchanged
		return
	}
	r.Action, r.Reason, r.state = Update, strings.Join(why, "; "), up
}

func (w *WooCommerce) apply(ctx context.Context, results []Result) {
	var batch []int // indexes into results
	flush := func() {
		if len(batch) > 0 {
			w.batch(ctx, results, batch)
			batch = batch[:0]
		}
	}
	for i, r := range results {
		if _, ok := r.state.(wooWrite); ok && (r.Action == Create || r.Action == Update || r.Action == Retire) {
			batch = append(batch, i)
			if len(batch) == wooBatch {
				flush()
			}
		}
	}
	flush()
}

// batch writes the results at idx in one /products/batch call and records
// each one's outcome.
func (w *WooCommerce) batch(ctx context.Context, results []Result, idx []int) {
	var req struct {
		Create []wooWrite `json:"create,omitempty"`
		Update []wooWrite `json:"update,omitempty"`
	}
	var creates, updates []int
	for _, i := range idx {
		wr := results[i].state.(wooWrite)
		if wr.ID == 0 {
			req.Create, creates = append(req.Create, wr), append(creates, i)
		} else {
			req.Update, updates = append(req.Update, wr), append(updates, i)
		}
	}
	type entry struct {
		ID    int64     `json:"id"`
		Error *wooError `json:"error"`
	}
	var resp struct {
		Create []entry `json:"create"`
		Update []entry `json:"update"`
	}
	body, _ := json.Marshal(req)
	if err := w.call(ctx, http.MethodPost, "/products/batch", body, &resp); err != nil {
		for _, i := range idx {
			results[i].fail(fmt.Errorf("products/batch: %w", err))
		}
		return
	}
	record := func(is []int, es []entry) {
		for k, i := range is {
			switch {
			case k >= len(es):
				results[i].fail(fmt.Errorf("products/batch: no answer for this item"))
			case es[k].Error != nil:
				results[i].fail(fmt.Errorf("%s", es[k].Error))
			default:
				results[i].Written = true
				results[i].Product = strconv.FormatInt(es[k].ID, 10)
			}
		}
	}
	record(creates, resp.Create)
	record(updates, resp.Update)
}

// call makes one API call (retried on 429 and 5xx) and decodes the answer
// into out. The consumer key and secret travel as basic auth and are never
// part of an error.
func (w *WooCommerce) call(ctx context.Context, method, path string, body []byte, out any) error {
	return retrying(ctx, func() error {
		var rd io.Reader
		if body != nil {
			rd = bytes.NewReader(body)
		}
		req, err := http.NewRequestWithContext(ctx, method, w.base+path, rd)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, pathOnly(path), err)
		}
		req.SetBasicAuth(w.key, w.secret)
		req.Header.Set("Accept", "application/json")
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		w.calls++
		resp, err := w.hc.Do(req)
		if err != nil {
			return &transient{err: fmt.Errorf("%s %s: %w", method, pathOnly(path), urlErrorOnly(err))}
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
		if err != nil {
			return &transient{err: fmt.Errorf("%s %s: read answer: %w", method, pathOnly(path), err)}
		}
		if resp.StatusCode/100 != 2 {
			msg := fulfillment.Clip(strings.TrimSpace(string(b)), 200)
			if we := (wooError{}); json.Unmarshal(b, &we) == nil && we.Code != "" {
				msg = we.String()
			}
			err := fmt.Errorf("%s %s: status %d: %s", method, pathOnly(path), resp.StatusCode, msg)
			if retryable(resp.StatusCode) {
				return &transient{err: err, after: retryAfter(resp.Header, time.Now())}
			}
			return err
		}
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: unexpected answer: %w", method, pathOnly(path), err)
		}
		return nil
	})
}

// pathOnly drops a path's query (SKU lists) from error messages.
func pathOnly(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return p
}

// urlErrorOnly keeps a transport error's cause without its URL.
func urlErrorOnly(err error) error {
	if ue, ok := err.(*url.Error); ok {
		return ue.Err
	}
	return err
}
